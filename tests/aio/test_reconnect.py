"""framecodec.aio's opt-in reconnect (aio/reconnecting.py), on both loops.

Real aio servers on loopback, stopped and started again on the same
address: what was in flight when the connection was lost raises
ConnectionClosed and is never sent again, the next call reconnects (a round
of attempts as the Backoff says), on_reconnect sees each new connection,
a round that finds nothing listening gives up after its attempts, and
close() ends it all.  The rounds' plan itself (Round) is tested with a fake
clock in tests/net/test_reconnect.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, List

import pytest

from framecodec import Backoff, ConnectionClosed, Reconnected, aio
from framecodec.aio.reconnecting import ReconnectingConnection

from ..net_support import bind_address
from .support import until

pytestmark = pytest.mark.usefixtures("no_leaks")

# Small waits: a round of these takes well under a second.
FAST = Backoff(initial=0.01, maximum=0.02, jitter=0, attempts=100)


def recorder(received: List[bytes]) -> Callable[[aio.Connection[bytes]], Awaitable[None]]:
    """A per-connection handler: answers each frame with itself, records
    them all; on b"drop ..." closes the connection without an answer, and
    leaves b"hold ..." unanswered."""

    async def handler(conn: aio.Connection[bytes]) -> None:
        async for frame in conn:
            received.append(frame)
            if frame.startswith(b"drop"):
                return  # the connection closes, the frame unanswered
            if not frame.startswith(b"hold"):
                await conn.send(frame)

    return handler


async def serve(address: Any, received: List[bytes], net: Any = None) -> aio.Server:
    context = net.server_context() if net is not None else None
    return await aio.start_server(address, recorder(received), per_connection=True,
                                  ssl_context=context)  # fmt: skip


async def stop(server: aio.Server) -> None:
    """The server gone: the listener and its connections closed."""
    server.close()
    await server.wait_closed()


def test_a_request_in_flight_is_never_sent_again(net: Any, run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        events: List[Reconnected] = []
        async with await serve(bind_address(net.family), received, net) as server:
            conn = await aio.open_connection(
                server.address, reconnect=FAST, on_reconnect=lambda c, e: events.append(e),
                **net.client_options(),
            )  # fmt: skip
            async with conn:
                assert isinstance(conn, ReconnectingConnection)
                assert await conn.request(b"echo 1") == b"echo 1"
                with pytest.raises(ConnectionClosed) as caught:
                    await conn.request(b"drop 2")  # received, and closed without an answer
                assert "what was in flight is not sent again" in str(caught.value)
                assert conn.reconnects == 0 and events == []
                assert await conn.request(b"echo 3") == b"echo 3"  # reconnects first
                assert received == [b"echo 1", b"drop 2", b"echo 3"]  # "drop 2" only once
                assert conn.reconnects == 1 and len(events) == 1
                assert events[0].attempts >= 1 and events[0].address == conn.address
                assert isinstance(events[0].cause, ConnectionClosed)
                assert server.stats["accepted"] == 2

    run(main)


def test_a_server_stopped_and_started_again_on_the_same_address(net: Any, run: Any) -> None:
    async def main() -> None:
        before: List[bytes] = []
        after: List[bytes] = []
        events: List[Reconnected] = []

        async def hook(conn: aio.Connection[Any], event: Reconnected) -> None:
            events.append(event)  # a coroutine hook, awaited before the call goes on

        server = await serve(bind_address(net.family), before, net)
        address = server.address
        conn = await aio.open_connection(
            address, reconnect=FAST, on_reconnect=hook, **net.client_options()
        )
        async with conn:
            assert await conn.request(b"echo before") == b"echo before"
            in_flight = asyncio.ensure_future(conn.request(b"hold"))
            await until(lambda: b"hold" in before, "the server to get it")
            await stop(server)  # the request in flight is never answered...
            with pytest.raises(ConnectionClosed, match="what was in flight is not sent again"):
                await in_flight  # ...nor sent again

            restarted: List[aio.Server] = []

            async def start_later() -> None:
                await asyncio.sleep(0.1)  # a few attempts find nothing listening
                restarted.append(await serve(address, after, net))

            starter = asyncio.ensure_future(start_later())
            try:
                assert await conn.request(b"echo after") == b"echo after"
                assert await conn.request(b"echo again") == b"echo again"
            finally:
                await starter
                await stop(restarted[0])
        assert before == [b"echo before", b"hold"]
        assert after == [b"echo after", b"echo again"]  # "hold" never came back
        assert conn.reconnects == 1 and len(events) == 1
        assert events[0].attempts >= 2  # the first came before the server was back
        assert events[0].elapsed >= 0.01 * (events[0].attempts - 1)

    run(main)


def test_a_round_that_finds_nothing_gives_up_after_its_attempts(run: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="framecodec.client")

    async def main() -> None:
        received: List[bytes] = []
        policy = Backoff(initial=0.01, maximum=0.01, jitter=0, attempts=3)
        server = await serve("127.0.0.1:0", received)
        address = server.address
        conn = await aio.open_connection(address, reconnect=policy)
        assert await conn.request(b"echo 1") == b"echo 1"
        await stop(server)
        await until(lambda: conn.closed, "the client to see the end")
        with pytest.raises(ConnectionClosed):
            await conn.request(b"echo 2")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(
            ConnectionClosed, match=r"gave up reconnecting .* after 3 attempts"
        ) as gave:
            await conn.request(b"echo 3")
        spent = loop.time() - started
        assert spent >= 3 * 0.01 * 0.99  # it waited before each attempt
        assert isinstance(gave.value.__cause__, ConnectionRefusedError)
        async with await serve(address, received):
            with pytest.raises(ConnectionClosed, match="gave up"):
                await conn.request(b"echo 4")  # closed for good: no new round
            with pytest.raises(ConnectionClosed, match="gave up"):
                await conn.recv()
        assert received == [b"echo 1"]
        await conn.close()

    run(main)
    messages = [record.getMessage() for record in caplog.records]
    assert any("connection lost" in m for m in messages)
    assert sum("reconnect attempt" in m for m in messages) == 3
    assert any("gave up reconnecting after 3 attempts" in m for m in messages)


def test_without_reconnect_a_lost_connection_stays_lost(run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        server = await serve("127.0.0.1:0", received)
        address = server.address
        conn = await aio.open_connection(address)
        assert type(conn) is aio.Connection
        assert await conn.request(b"echo 1") == b"echo 1"
        with pytest.raises(ConnectionClosed):
            await conn.request(b"drop 2")
        await stop(server)
        async with await serve(address, received) as again:
            for _ in range(2):
                with pytest.raises(ConnectionClosed):
                    await conn.request(b"echo 3")
            assert again.stats["accepted"] == 0
        assert received == [b"echo 1", b"drop 2"]
        await conn.close()

    run(main)


def test_the_options_are_checked(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="Backoff"):
            await aio.open_connection("127.0.0.1:9", reconnect=3)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="needs reconnect"):
            await aio.open_connection("127.0.0.1:9", on_reconnect=lambda c, e: None)

    run(main)


def test_close_stops_reconnecting(run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        async with await serve("127.0.0.1:0", received) as server:
            conn = await aio.open_connection(server.address, reconnect=FAST)
            assert await conn.request(b"echo 1") == b"echo 1"
            await conn.close()
            for _ in range(2):
                with pytest.raises(ConnectionClosed):
                    await conn.request(b"echo 2")
            assert server.stats["accepted"] == 1 and conn.reconnects == 0

            # The same after a loss: close() is for good.
            lost = await aio.open_connection(server.address, reconnect=FAST)
            with pytest.raises(ConnectionClosed):
                await lost.request(b"drop 3")
            lost.abort()
            with pytest.raises(ConnectionClosed):
                await lost.request(b"echo 4")
            assert server.stats["accepted"] == 2 and lost.reconnects == 0
        assert received == [b"echo 1", b"drop 3"]

    run(main)


def test_close_ends_a_rounds_wait_at_once(run: Any) -> None:
    async def main() -> None:
        server = await serve("127.0.0.1:0", [])
        slow = Backoff(initial=30.0, maximum=30.0, jitter=0, attempts=2)
        conn = await aio.open_connection(server.address, reconnect=slow)
        await stop(server)
        await until(lambda: conn.closed, "the client to see the end")
        with pytest.raises(ConnectionClosed):
            await conn.send(b"lost")
        waiting = asyncio.ensure_future(conn.request(b"in a round"))
        await asyncio.sleep(0.05)  # in the round's first wait (30 s)
        assert not waiting.done()
        await conn.close()
        # Bounded far below the 30 s wait: close() ended it.
        with pytest.raises(ConnectionClosed, match="closed while reconnecting"):
            await asyncio.wait_for(waiting, 5.0)

    run(main)


def test_a_caller_cancelled_in_a_round_leaves_the_next_call_a_round(run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        server = await serve("127.0.0.1:0", received)
        address = server.address
        policy = Backoff(initial=0.2, maximum=0.2, jitter=0, attempts=20)
        conn = await aio.open_connection(address, reconnect=policy)
        async with conn:
            await stop(server)
            await until(lambda: conn.closed, "the client to see the end")
            with pytest.raises(ConnectionClosed):
                await conn.send(b"lost")
            waiting = asyncio.ensure_future(conn.request(b"cancelled"))
            await asyncio.sleep(0.05)  # in the round's first wait
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            async with await serve(address, received):
                assert await conn.request(b"echo 1") == b"echo 1"  # a new round
        assert received == [b"echo 1"] and conn.reconnects == 1

    run(main)


def test_the_hook_runs_before_other_calls_and_a_failing_hook_fails_the_call(run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        fail_next = [True]

        async def log_in(conn: aio.Connection[Any], event: Reconnected) -> None:
            assert await conn.request(b"login") == b"login"
            if fail_next[0]:
                fail_next[0] = False
                raise RuntimeError("the login was refused")

        async with await serve("127.0.0.1:0", received) as server:
            conn = await aio.open_connection(server.address, reconnect=FAST, on_reconnect=log_in)
            async with conn:
                with pytest.raises(ConnectionClosed):
                    await conn.request(b"drop 1")
                with pytest.raises(RuntimeError, match="refused"):
                    await conn.request(b"echo 2")  # never sent: the hook failed first
                # Three tasks at once: one round, its login before all of them.
                replies = await asyncio.gather(*(conn.request(b"echo %d" % n) for n in (3, 4, 5)))
                assert replies == [b"echo 3", b"echo 4", b"echo 5"]
                assert conn.reconnects == 2
        assert received == [b"drop 1", b"login", b"login", b"echo 3", b"echo 4", b"echo 5"]

    run(main)


def test_a_call_while_the_hook_runs_waits_for_it(run: Any) -> None:
    async def main() -> None:
        received: List[bytes] = []
        gate = asyncio.Event()

        async def log_in(conn: aio.Connection[Any], event: Reconnected) -> None:
            assert await conn.request(b"login") == b"login"
            await gate.wait()  # the new connection is up, the hook not done

        async with await serve("127.0.0.1:0", received) as server:
            conn = await aio.open_connection(server.address, reconnect=FAST, on_reconnect=log_in)
            async with conn:
                with pytest.raises(ConnectionClosed):
                    await conn.request(b"drop 1")
                first = asyncio.ensure_future(conn.request(b"echo A"))
                await until(lambda: b"login" in received, "the hook's login")
                second = asyncio.ensure_future(conn.request(b"echo B"))
                await asyncio.sleep(0.05)
                assert received == [b"drop 1", b"login"]  # B waits for the hook
                assert not second.done()
                gate.set()
                assert [await first, await second] == [b"echo A", b"echo B"]
        assert received == [b"drop 1", b"login", b"echo A", b"echo B"]

    run(main)


def test_frames_of_the_lost_connection_come_first(run: Any) -> None:
    async def three_then_close(conn: aio.Connection[bytes]) -> None:
        await conn.recv()
        await conn.send_many([b"one", b"two", b"three"])

    async def main() -> None:
        server = await aio.start_server("127.0.0.1:0", three_then_close, per_connection=True)
        async with server:
            conn = await aio.open_connection(server.address, reconnect=FAST)
            async with conn:
                await conn.send(b"go")
                await until(lambda: conn.closed, "the server to close")
                assert await conn.recv() == b"one"
                with pytest.raises(ConnectionClosed, match="lost"):
                    await conn.send(b"early")  # the loss, told once
                with pytest.raises(ConnectionClosed, match="2 frames of the lost connection"):
                    await conn.send(b"early")  # its replies could pass for theirs
                assert [await conn.recv(), await conn.recv()] == [b"two", b"three"]
                await conn.send(b"go")  # reconnects
                assert [await conn.recv() for _ in range(3)] == [b"one", b"two", b"three"]
                assert conn.reconnects == 1

    run(main)
