"""The typed usage example runs as well as type-checks, and the mistakes that
mypy must catch (typing_mistakes.py) that are also errors at run time raise
a clear TypeError, before any connection is made."""

import asyncio
import inspect

import anyio
import pytest

from . import typing_mistakes
from .typing_example import (
    aio_reconnecting,
    aio_round_trip,
    anyio_round_trip,
    batch_server,
    frames_client,
    header_of,
    implementation,
    messages,
    messages_client,
    reconnecting_client,
    round_trip,
)

LOOPBACK = "127.0.0.1:0"


def test_typed_example_runs():
    assert round_trip([b"a", b"bc"]) == [b"a", b"bc"]
    assert messages([{"k": 1}, "text"]) == [{"k": 1}, "text"]
    assert header_of(77) == 77
    assert implementation() in ("cython", "python")


def test_typed_network_example_runs():
    assert frames_client(LOOPBACK) == [b"PING", b"PONG", b"A", b"B"]
    assert messages_client(LOOPBACK) == [{"seen": 1, "echo": {"n": 1}}, {"seen": 2, "echo": "text"}]
    assert batch_server(LOOPBACK) == [b"3"]
    assert reconnecting_client(LOOPBACK) == [b"AGAIN", 0, []]


def test_typed_aio_example_runs():
    assert asyncio.run(aio_round_trip(LOOPBACK)) == [b"HI!", {"k": [1, 2]}]
    assert asyncio.run(aio_reconnecting(LOOPBACK)) == [b"AGAIN", []]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_typed_anyio_example_runs(backend):
    assert anyio.run(anyio_round_trip, LOOPBACK, backend=backend) == [b"cba", b"x", b"zy"]


@pytest.mark.parametrize("mistake", typing_mistakes.RAISE_TYPE_ERROR, ids=lambda f: f.__name__)
def test_mistakes_mypy_catches_raise_type_error_at_run_time(mistake):
    with pytest.raises(TypeError) as caught:
        if inspect.iscoroutinefunction(mistake):
            asyncio.run(mistake())
        else:
            mistake()
    assert str(caught.value)  # says what is wrong
