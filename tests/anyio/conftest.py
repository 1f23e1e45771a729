"""framecodec.anyio's tests run on both anyio backends, through anyio's
pytest plugin: every test marked ``anyio`` runs once on asyncio, once on trio."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from ..net_fixtures import _watched_fds


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


# Worker threads the backends keep for reuse (and end after 10 s idle):
# trio's thread cache and anyio's own, made by to_thread and by trio's
# resolver.  Not leaks of ours; every other thread still is.
POOLED_THREADS = ("Trio thread", "AnyIO worker thread")


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """tests/net_fixtures.py's no_leaks, less the backends' pooled threads."""
    threads_before = set(threading.enumerate())
    fds_before = _watched_fds()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        threads = [
            t
            for t in threading.enumerate()
            if t not in threads_before and t.is_alive() and not t.name.startswith(POOLED_THREADS)
        ]
        fds = _watched_fds() - fds_before
        if (not threads and not fds) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not threads, f"threads left behind: {threads}"
    assert not fds, f"sockets or selectors left open: {sorted(fds)}"
