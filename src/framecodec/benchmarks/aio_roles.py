"""framecodec.aio as a benchmark contender: the roles a socket benchmark plays.

Coroutines to run in the benchmark's worker processes (``asyncio.run(...)``,
or on a uvloop loop), one role each, written as an asyncio user would
write them:

- ``receive_frames(listener, count)``: accept one connection and receive
  ``count`` frames through a plain handler; return ``(frames, end)``, where
  ``end`` is ``time.perf_counter()`` when the last arrived;
- ``send_frames(address, payload, count)``: connect and send ``count``
  copies of ``payload`` with ``await conn.send`` (or ``send_many`` batches);
  return ``perf_counter()`` from just before the first;
- ``serve_echo(listener, clients)``: echo every frame until ``clients``
  connections have come and gone;
- ``request_latencies(address, payload, rounds, warmup, budget)``: one
  ``await conn.request`` at a time; the seconds each took.

``listener`` is an address or a bound socket (one the benchmark opened
beforehand to know its address).  Frames are the default format (a 4-byte
big-endian length), so the other side may be any contender speaking it.
Options (``ssl_context``, ``server_hostname``, ``format``, ...) go to
start_server / open_connection.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, List, Tuple, Union

from .. import aio
from ..net.addresses import AddressLike
from .base import batches, check_count

__all__ = ["receive_frames", "request_latencies", "send_frames", "serve_echo"]

perf_counter = time.perf_counter
# How often the roles that wait for connections to end look (not while measuring).
POLL = 0.005


async def _until_closed(server: aio.Server, connections: int, timeout: float) -> None:
    deadline = perf_counter() + timeout
    while server.stats["closed"] < connections:
        if perf_counter() > deadline:
            raise TimeoutError(f"{connections} connections did not end within {timeout} s")
        await asyncio.sleep(POLL)


async def receive_frames(
    listener: Union[AddressLike, socket.socket],
    count: int,
    *,
    batch: bool = False,
    timeout: float = 60.0,
    **options: Any,
) -> Tuple[int, float]:
    """Receive one stream of ``count`` frames; return (frames, perf_counter at the last).

    The stream must end right after them: ValueError if it goes on, EOFError
    if it ends short.  ``batch=True`` takes the frames of each read in one
    handler call (the batch handler shape) instead of one call per frame.
    """
    received = 0
    end = 0.0

    def on_frame(frame: bytes) -> None:
        nonlocal received, end
        received += 1
        if received == count:
            end = perf_counter()

    def on_frames(frames: List[bytes]) -> None:
        nonlocal received, end
        received += len(frames)
        if received >= count and not end:
            end = perf_counter()

    handler = on_frames if batch else on_frame
    server = await aio.start_server(listener, handler, batch=batch, **options)
    async with server:
        await _until_closed(server, 1, timeout)
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
    """Send ``count`` frames of ``payload``; return perf_counter() at the start.

    ``batch_bytes`` above 0 sends small payloads in send_many batches of
    about that many bytes (one write each) instead of one send per frame.
    The connection is closed (everything sent) before this returns.
    """
    conn = await aio.open_connection(address, **options)
    try:
        start = perf_counter()
        per_batch = batch_bytes // (len(payload) + 4) if batch_bytes else 0
        if per_batch > 1:
            for batch in batches(payload, count, per_batch):
                await conn.send_many(batch)
        else:
            send = conn.send
            for _ in range(count):
                await send(payload)
    finally:
        await conn.close(timeout=None)
    return start


async def serve_echo(
    listener: Union[AddressLike, socket.socket],
    clients: int,
    *,
    timeout: float = 600.0,
    **options: Any,
) -> None:
    """Echo every frame back until ``clients`` connections have come and gone."""
    server = await aio.start_server(listener, _echo, **options)
    async with server:
        await _until_closed(server, clients, timeout)


def _echo(frame: bytes) -> bytes:
    return frame


async def request_latencies(
    address: AddressLike,
    payload: bytes,
    rounds: int,
    warmup: int = 0,
    budget: float = float("inf"),
    **options: Any,
) -> List[float]:
    """Time ``rounds`` requests (after ``warmup`` untimed ones), one at a
    time; stop early once ``budget`` seconds have passed."""
    samples: List[float] = []
    async with await aio.open_connection(address, **options) as conn:
        request = conn.request
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
