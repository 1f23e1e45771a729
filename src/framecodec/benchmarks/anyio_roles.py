"""framecodec.anyio as a benchmark contender: the roles a socket benchmark plays.

Coroutines to run in the benchmark's worker processes with
``anyio.run(role, ..., backend="asyncio" or "trio")``, one role each,
written as an anyio user would write them; the same four roles as
aio_roles (see there for what each returns):

- ``receive_frames(listener, count)``: serve one connection with a batch
  handler that counts frames;
- ``send_frames(address, payload, count)``: ``await stream.send`` (or
  ``send_many`` batches);
- ``serve_echo(listener, clients)``: echo until ``clients`` connections
  have come and gone;
- ``request_latencies(address, payload, rounds, warmup, budget)``: one
  ``await stream.request`` at a time.
"""

from __future__ import annotations

import functools
import socket
import time
from typing import Any, List, Tuple, Union

import anyio

from .. import anyio as framed
from ..net.addresses import AddressLike
from .base import batches, check_count

__all__ = ["receive_frames", "request_latencies", "send_frames", "serve_echo"]

perf_counter = time.perf_counter
# How often the roles that wait for connections to end look (not while measuring).
POLL = 0.005


async def _serve_until_closed(
    listener: Union[AddressLike, socket.socket],
    handler: Any,
    connections: int,
    timeout: float,
    **options: Any,
) -> None:
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(framed.serve, listener, handler, **options))
            while server.stats["closed"] < connections:
                await anyio.sleep(POLL)
            tg.cancel_scope.cancel()


async def receive_frames(
    listener: Union[AddressLike, socket.socket],
    count: int,
    *,
    timeout: float = 60.0,
    **options: Any,
) -> Tuple[int, float]:
    """Receive one stream of ``count`` frames; return (frames, perf_counter at the last)."""
    received = 0
    end = 0.0

    def on_frames(frames: List[bytes]) -> None:
        nonlocal received, end
        received += len(frames)
        if received >= count and not end:
            end = perf_counter()

    await _serve_until_closed(listener, on_frames, 1, timeout, batch=True, **options)
    check_count(received, count)
    return received, end


async def send_frames(
    address: AddressLike,
    payload: bytes,
    count: int,
    *,
    batch_bytes: int = 0,
    **options: Any,
) -> float:
    """Send ``count`` frames of ``payload``; return perf_counter() at the start."""
    async with await framed.connect(address, **options) as stream:
        start = perf_counter()
        per_batch = batch_bytes // (len(payload) + 4) if batch_bytes else 0
        if per_batch > 1:
            for batch in batches(payload, count, per_batch):
                await stream.send_many(batch)
        else:
            send = stream.send
            for _ in range(count):
                await send(payload)
    return start


def _echo(frame: bytes) -> bytes:
    return frame


async def serve_echo(
    listener: Union[AddressLike, socket.socket],
    clients: int,
    *,
    timeout: float = 600.0,
    **options: Any,
) -> None:
    """Echo every frame back until ``clients`` connections have come and gone."""
    await _serve_until_closed(listener, _echo, clients, timeout, **options)


async def request_latencies(
    address: AddressLike,
    payload: bytes,
    rounds: int,
    warmup: int = 0,
    budget: float = float("inf"),
    **options: Any,
) -> List[float]:
    """Time ``rounds`` requests (after ``warmup`` untimed ones), one at a time."""
    samples: List[float] = []
    async with await framed.connect(address, **options) as stream:
        request = stream.request
        stop = perf_counter() + budget
        for i in range(warmup + rounds):
            begin = perf_counter()
            reply = await request(payload)
            finish = perf_counter()
            if len(reply) != len(payload):
                raise ValueError("the reply is not the request")
            if i >= warmup:
                samples.append(finish - begin)
                if finish > stop:
                    break
    return samples
