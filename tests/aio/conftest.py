"""framecodec.aio's tests run on the default event loop and on uvloop:
the ``run`` fixture (tests/aio/test_aio.py, test_reconnect.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from .support import TEST_TIMEOUT, uvloop_factory


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: Any) -> Callable[..., Any]:
    """run(coroutine_function, *args): runs it on a fresh loop of each kind, bounded."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop_factory()

    def runner(function: Any, *args: Any, timeout: float = TEST_TIMEOUT) -> Any:
        loop = factory()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(asyncio.wait_for(function(*args), timeout))
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=TEST_TIMEOUT))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    runner.kind = request.param  # type: ignore[attr-defined]
    return runner
