"""Stands in for the ``cython`` module when Cython is not installed.

The pure-Python twin (_codec.py run uncompiled) only asks ``cython.compiled``
and enters ``cython.critical_section(obj)``, a no-op outside compiled code.
"""

compiled = False


class critical_section:
    """``with cython.critical_section(obj):``: does nothing uncompiled."""

    __slots__ = ()

    def __init__(self, obj: object) -> None:
        pass

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass
