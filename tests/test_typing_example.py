"""The typed usage example runs as well as type-checks."""

from .typing_example import header_of, implementation, messages, round_trip


def test_typed_example_runs():
    assert round_trip([b"a", b"bc"]) == [b"a", b"bc"]
    assert messages([{"k": 1}, "text"]) == [{"k": 1}, "text"]
    assert header_of(77) == 77
    assert implementation() in ("cython", "python")
