"""framecodec.anyio.serve()'s memory budget (net/server/budget.py's rules,
anyio/budgeted.py's glue), on asyncio and trio: what the server holds
stays bounded while peers pile up input or unread replies, a steady client
is answered meanwhile, and the peers whose replies back up are closed,
counted in ``over_budget`` (tests/net/test_memory_budget.py's scenarios).

Every loop is bounded in count and in time (TIMEOUT); nothing is timed.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
from typing import Any, AsyncIterator, List

import anyio
import pytest

import framecodec
from framecodec import FrameEncoder
from framecodec import anyio as fa
from framecodec.net.server.budget import DEFAULT_MEMORY_BUDGET

from .support import TIMEOUT, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaks")]

encoder = FrameEncoder()
PEERS = 40
BUDGET = 4 << 20
# The start of a 1 MiB frame: 256 KiB of it, the rest never comes.
PART = encoder.encode(b"h" * (1 << 20))[: 256 * 1024]


def echo(frame: bytes) -> bytes:
    return frame


async def echo_later(frame: bytes) -> bytes:
    return frame


async def echo_stream(stream: Any) -> None:
    async for frame in stream:
        await stream.send(frame)


# A plain function is answered in the read callback (asyncio) or the task's
# tight loop (trio: answering.py), a coroutine function by the server's
# receive loop, a per-connection one by its own receive() calls.
SHAPES = {
    "plain": (echo, {}),
    "coroutine": (echo_later, {}),
    "per_connection": (echo_stream, {"per_connection": True}),
}


def holding(server: fa.Server) -> int:
    """What the server's connections hold now (decoders' storage, reserved
    room included, and replies being sent), counted afresh."""
    return sum(conn.memory for conn in list(server._open))


class Peak:
    """The most the server held, sampled every few milliseconds by a task
    of the test's (bounded in count)."""

    def __init__(self, server: fa.Server) -> None:
        self.server = server
        self.held = 0  # holding(), counted afresh
        self.recorded = 0  # server.memory, as the budget recorded it
        self.ever_held = 0  # connections held at once, at most

    async def run(self) -> None:
        budget = self.server.budget
        for _ in range(int(TIMEOUT * 500)):
            self.held = max(self.held, holding(self.server))
            self.recorded = max(self.recorded, self.server.memory)
            if budget is not None:
                self.ever_held = max(self.ever_held, len(budget.held))
            await anyio.sleep(0.002)


@contextlib.asynccontextmanager
async def watched(server: fa.Server) -> AsyncIterator[Peak]:
    peak = Peak(server)
    async with anyio.create_task_group() as tg:
        tg.start_soon(peak.run)
        yield peak
        tg.cancel_scope.cancel()


def peer(server: fa.Server, rcvbuf: int = 0) -> socket.socket:
    """A raw non-blocking client socket (a small receive window if ``rcvbuf``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect(server.address.sockaddr)
    sock.setblocking(False)
    return sock


def send_some(sock: socket.socket, pending: memoryview) -> memoryview:
    """What is left of ``pending`` once the socket took what it takes now."""
    with contextlib.suppress(BlockingIOError, ConnectionError):
        while pending:
            pending = pending[sock.send(pending) :]
    return pending


async def wait_for(condition: Any, rounds: int = int(TIMEOUT * 200)) -> bool:
    """Poll ``condition`` (bounded): whether it held."""
    for _ in range(rounds):
        if condition():
            return True
        await anyio.sleep(0.005)
    return bool(condition())


async def steady_and_fresh(server: fa.Server, steady: Any, rounds: int) -> int:
    """``rounds`` requests of the steady client and of a fresh one each; the answers."""
    answered = 0
    with anyio.fail_after(TIMEOUT):
        for i in range(rounds):
            assert await steady.request(b"steady %d" % i) == b"steady %d" % i
            async with await fa.connect(server.address) as fresh:
                assert await fresh.request(b"fresh %d" % i) == b"fresh %d" % i
            answered += 2
    return answered


async def half_frames(server: fa.Server, peaks: Peak) -> List[socket.socket]:
    """PEERS peers each send PART, as much of it as the server takes (it
    stops reading those it holds), and never read."""
    bad = [peer(server) for _ in range(PEERS)]
    assert await wait_for(lambda: len(server.connections) >= PEERS)
    pending = [memoryview(PART) for _ in bad]
    for _ in range(100):  # bounded: held peers never finish
        pending = [send_some(sock, rest) for sock, rest in zip(bad, pending)]
        if not any(pending):
            break
        await anyio.sleep(0.01)
    return bad


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_half_frames_stay_within_the_budget_and_a_steady_client_is_served(
    anyio_backend, shape, caplog
):
    """40 peers each begin a 1 MiB frame (256 KiB of it) and stall: 10 MiB
    of input, more with the room their frames would reserve, against a
    4 MiB budget.  What the server holds, reserved room included, stays
    within 3/2 of the budget (budget.py: frames begun before the near mark
    reserve up to prealloc_limit), connections are held, and a steady
    client and fresh ones are answered throughout."""
    caplog.set_level(logging.INFO, logger="framecodec.server")
    handler, options = SHAPES[shape]
    async with serving(handler, memory_budget=BUDGET, **options) as (server, _):
        assert server.memory_budget == BUDGET
        bad: List[socket.socket] = []
        try:
            async with (
                watched(server) as peaks,
                await fa.connect(server.address) as steady,
            ):
                answered = await steady_and_fresh(server, steady, 5)
                bad = await half_frames(server, peaks)
                assert await wait_for(lambda: server.memory >= BUDGET * 3 // 8)
                answered += await steady_and_fresh(server, steady, 10)
                assert await wait_for(lambda: peaks.ever_held > 0)
            assert peaks.held <= BUDGET * 3 // 2, f"held {peaks.held} bytes, budget {BUDGET}"
            assert peaks.recorded <= BUDGET * 3 // 2
            assert answered == 30
            assert server.stats["handler_errors"] == 0
        finally:
            for sock in bad:
                sock.close()
    assert any("held of a memory budget of 4096 KiB" in r.message for r in caplog.records)


async def test_half_frames_over_tls_stay_within_the_budget(anyio_backend, pki):
    """The same over TLS, where reads go through receive() and feed(): each
    is accounted after, so the held connections stop reading all the same."""
    context = framecodec.server_context(pki.cert, pki.key)
    client_context = framecodec.client_context(pki.ca)

    async def send_part(stream: Any) -> None:
        with anyio.move_on_after(1.0):  # a held peer's send never ends
            await stream.stream.send(PART)

    async with serving(echo, ssl_context=context, memory_budget=BUDGET) as (server, _):
        bad: List[Any] = []
        try:
            async with (
                watched(server) as peaks,
                await fa.connect(
                    server.address, ssl_context=client_context, server_hostname="localhost"
                ) as steady,
            ):
                for _ in range(PEERS):
                    bad.append(
                        await fa.connect(
                            server.address,
                            ssl_context=client_context,
                            server_hostname="localhost",
                            timeout=TIMEOUT,
                        )
                    )
                async with anyio.create_task_group() as tg:
                    for stream in bad:
                        tg.start_soon(send_part, stream)
                assert await wait_for(lambda: server.memory >= BUDGET * 3 // 8)
                with anyio.fail_after(TIMEOUT):
                    for i in range(5):
                        assert await steady.request(b"steady %d" % i) == b"steady %d" % i
                assert await wait_for(lambda: peaks.ever_held > 0)
            assert peaks.held <= BUDGET * 3 // 2, f"held {peaks.held} bytes, budget {BUDGET}"
        finally:
            with anyio.CancelScope(shield=True):
                for stream in bad:
                    await anyio.aclose_forcefully(stream.stream)


async def test_peers_that_take_no_replies_are_closed_over_the_budget(anyio_backend, caplog):
    """16 peers with tiny receive windows send 256 KiB requests (echoed)
    and never read: their replies back up, they are held, and closed over
    the budget (``over_budget``, logged), while a steady client is answered."""
    caplog.set_level(logging.INFO, logger="framecodec.server")
    request = encoder.encode(b"r" * (256 * 1024))
    budget = 1 << 20
    async with serving(echo, memory_budget=budget) as (server, _):
        bad: List[socket.socket] = []
        try:
            async with await fa.connect(server.address) as steady:
                bad = [peer(server, rcvbuf=4096) for _ in range(16)]
                assert await wait_for(lambda: len(server.connections) >= 17)
                pending = [memoryview(request) for _ in bad]
                answered = 0
                for _ in range(300):  # bounded; ends once some are closed
                    pending = [
                        send_some(sock, rest) or memoryview(request)
                        for sock, rest in zip(bad, pending)
                    ]
                    answered += await steady_and_fresh(server, steady, 1)
                    if server.stats["over_budget"]:
                        break
                    await anyio.sleep(0.01)
                assert await wait_for(lambda: server.stats["over_budget"] > 0)
                answered += await steady_and_fresh(server, steady, 3)
            assert answered >= 8
            assert server.stats["network_errors"] >= server.stats["over_budget"] > 0
            assert server.stats["handler_errors"] == 0
        finally:
            for sock in bad:
                sock.close()
    assert any("closed over the memory budget" in r.message for r in caplog.records)


async def test_no_budget_holds_what_the_peers_send(anyio_backend):
    """memory_budget=None: nobody is held or closed; the same 40 half
    frames are all read (the server holds more than the budget would let)."""
    async with serving(echo, memory_budget=None) as (server, _):
        assert server.memory_budget is None and server.budget is None
        bad: List[socket.socket] = []
        try:
            async with (
                watched(server) as peaks,
                await fa.connect(server.address) as steady,
            ):
                bad = await half_frames(server, peaks)
                assert await wait_for(lambda: holding(server) >= PEERS * len(PART))
                assert await steady_and_fresh(server, steady, 3) == 6
            assert peaks.held > BUDGET * 2
            assert server.stats["over_budget"] == 0
        finally:
            for sock in bad:
                sock.close()


async def test_the_default_budget_is_every_server_s():
    parameter = inspect.signature(fa.serve).parameters["memory_budget"]
    assert parameter.default == DEFAULT_MEMORY_BUDGET == 16 << 20
    assert parameter.kind == inspect.Parameter.KEYWORD_ONLY
    async with serving(echo) as (server, _):
        assert server.memory_budget == DEFAULT_MEMORY_BUDGET
        async with await fa.connect(server.address) as client:
            assert await client.request(b"ok") == b"ok"
        assert await wait_for(lambda: server.memory == 0)  # the client is gone


@pytest.mark.parametrize("value", [0, 10, 1023, -1])
async def test_a_budget_too_small_is_refused_at_serve(value):
    with pytest.raises(ValueError, match="memory_budget must be at least 1024 bytes"):
        await fa.serve("127.0.0.1:0", echo, memory_budget=value)
