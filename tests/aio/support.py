"""Helpers of framecodec.aio's tests: the loops they run on, and waiting
for a condition; the ``run`` fixture is in conftest.py."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Callable

import pytest

TEST_TIMEOUT = 10.0  # a bound on each test's coroutine; every test takes far less


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop  # a dependency of the test extra on CPython
    except ImportError:
        if sys.implementation.name == "cpython":
            pytest.fail("uvloop is missing: install the test extra ('.[test]')")
        pytest.skip("uvloop is built for CPython only: the test extra leaves it out here")
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
