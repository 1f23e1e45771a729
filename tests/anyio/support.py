"""Helpers of framecodec.anyio's tests: a served address, and an in-memory
pair of byte streams."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, AsyncIterator, Tuple

import anyio
import anyio.abc
from anyio.streams.stapled import StapledObjectStream

from framecodec import anyio as fa

TIMEOUT = 10.0  # the bound on every wait in these tests; each takes far less


@contextlib.asynccontextmanager
async def serving(
    handler: Any, address: str = "127.0.0.1:0", **options: Any
) -> AsyncIterator[Tuple[fa.Server, anyio.CancelScope]]:
    """A server for the block; cancelling the scope it yields shuts it down
    (gracefully), and leaving the block does too."""
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(fa.serve, address, handler, **options))
            yield server, tg.cancel_scope
            tg.cancel_scope.cancel()


def memory_pair() -> Tuple[anyio.abc.ObjectStream[bytes], anyio.abc.ObjectStream[bytes]]:
    """Two connected in-memory streams of byte chunks."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](10_000)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](10_000)
    return StapledObjectStream(a_send, a_receive), StapledObjectStream(b_send, b_receive)
