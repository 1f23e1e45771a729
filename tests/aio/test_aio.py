"""framecodec.aio on real sockets, on the default event loop and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
from typing import Any, AsyncIterator, Tuple

import pytest

from framecodec import FrameEncoder, IncompleteFrameError, ProtocolError, TLSHandshakeError, aio
from framecodec.net.addresses import REUSE_PORT_OPTION
from framecodec.net.protocols import FrameProtocol
from framecodec.net.transport import ConnectionClosed, ConnectionState

from ..net_support import (
    bind_address,
    check_handshake_error,
    closing_listener,
    half_closing_client,
    unix_path,
)
from .support import TEST_TIMEOUT, until, uvloop_factory

pytestmark = pytest.mark.usefixtures("no_leaks")

encoder = FrameEncoder()


def upper(frame: bytes) -> bytes:
    return frame.upper()


@contextlib.asynccontextmanager
async def served(
    handler: Any, client: Any = None, **options: Any
) -> AsyncIterator[Tuple[aio.Server, aio.Connection]]:
    """A server on 127.0.0.1 and a connection to it, both closed after the block."""
    server = await aio.start_server("127.0.0.1:0", handler, **options)
    async with server, await aio.open_connection(server.address, **(client or {})) as conn:
        yield server, conn


# -- every family, plain and TLS, on both loops ------------------------------------


def test_request_response(net: Any, run: Any) -> None:
    async def main() -> None:
        server = await aio.start_server(
            bind_address(net.family), upper, ssl_context=net.server_context()
        )
        async with server:
            conn = await aio.open_connection(server.address, **net.client_options())
            async with conn:
                assert await conn.request(b"hello") == b"HELLO"
                await conn.send_many([b"a", b"", b"c" * 5000])
                assert [await conn.recv() for _ in range(3)] == [b"A", b"", b"C" * 5000]
                big = os.urandom(3 << 20)  # received in place by the decoder
                assert await conn.request(big) == big.upper()
            assert server.stats["accepted"] == 1
        if net.family == "unix":
            assert server.address.path.startswith("/tmp/fc-")
            assert not os.path.exists(server.address.path)  # removed at close
        else:
            assert server.address.port > 0

    run(main)


# -- handler shapes ------------------------------------------------------------------


async def async_upper(frame: bytes) -> bytes:
    await asyncio.sleep(0)
    return frame.upper()


async def per_connection_upper(conn: aio.Connection) -> None:
    async for frame in conn:
        await conn.send(frame.upper())


async def async_batch_upper(frames: list) -> list:
    await asyncio.sleep(0)
    return [frame.upper() for frame in frames]


class AsyncCallable:
    async def __call__(self, frame: bytes) -> bytes:
        return frame.upper()


@pytest.mark.parametrize(
    "handler, options",
    [
        (upper, {}),
        (async_upper, {}),
        (AsyncCallable(), {}),
        (lambda frames: [f.upper() for f in frames], {"batch": True}),
        (async_batch_upper, {"batch": True}),
        (per_connection_upper, {"per_connection": True}),
    ],
    ids=["plain", "coroutine", "async-callable", "batch", "async-batch", "per-connection"],
)
def test_handler_shapes(run: Any, handler: Any, options: dict) -> None:
    async def main() -> None:
        async with served(handler, **options) as (_server, conn):
            assert await conn.request(b"one") == b"ONE"
            # Concurrent requests from several tasks each get their own reply.
            replies = await asyncio.gather(*(conn.request(b"r%d" % i) for i in range(50)))
            assert replies == [b"R%d" % i for i in range(50)]

    run(main)


def test_handler_returning_none_sends_nothing(run: Any) -> None:
    async def main() -> None:
        seen = []

        async def sink(frame: bytes) -> None:
            seen.append(frame)
            return None if frame != b"ping" else b"pong"  # type: ignore[return-value]

        async with served(sink) as (_server, conn):
            await conn.send_many([b"a", b"b"])
            assert await conn.request(b"ping") == b"pong"
        assert seen == [b"a", b"b", b"ping"]

    run(main)


def test_bad_handlers_are_refused_before_binding() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="coroutine function"):
            await aio.start_server("127.0.0.1:0", upper, per_connection=True)
        with pytest.raises(TypeError, match="function"):
            await aio.start_server("127.0.0.1:0", b"not callable")
        with pytest.raises(ValueError, match="combine"):
            await aio.start_server(
                "127.0.0.1:0", per_connection_upper, batch=True, per_connection=True
            )

    asyncio.run(main())


def test_messages_keep_content_type(run: Any) -> None:
    async def main() -> None:
        async with await aio.start_server(
            "[::1]:0" if _ipv6() else "127.0.0.1:0", lambda m: m, protocol="messages"
        ) as server:
            conn = await aio.open_connection(server.address, protocol="messages")
            async with conn:
                reply = await conn.request({"query": "ü", "n": [1, 2]})
                assert (reply.content_type, reply.value) == (
                    "text/json",
                    {"query": "ü", "n": [1, 2]},
                )
                reply = await conn.request(b"\x00\xff", content_type="binary/custom")
                assert (reply.content_type, reply.content) == ("binary/custom", b"\x00\xff")

    run(main)


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_frame_formats_and_abstract_unix_names(run: Any) -> None:
    async def main() -> None:
        server = await aio.start_server("unix:@", upper, format="multiprocessing")
        async with server:
            assert server.address.path.startswith("@")
            conn = await aio.open_connection(server.address, format="multiprocessing")
            async with conn:
                assert await conn.request(b"abc") == b"ABC"

    run(main)


def test_reads_go_straight_into_the_decoder(run: Any) -> None:
    """The loop fills the decoder's get_buffer view: feed() is never used."""
    calls = {"get_buffer": 0, "buffer_updated": 0, "feed": 0}

    class Spy:
        def __init__(self, decoder: Any) -> None:
            self.decoder = decoder

        def get_buffer(self, sizehint: int = -1) -> memoryview:
            calls["get_buffer"] += 1
            return self.decoder.get_buffer(sizehint)  # type: ignore[no-any-return]

        def buffer_updated(self, nbytes: int) -> list:
            calls["buffer_updated"] += 1
            return self.decoder.buffer_updated(nbytes)  # type: ignore[no-any-return]

        def feed(self, data: bytes) -> list:
            calls["feed"] += 1
            return self.decoder.feed(data)  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> Any:
            return getattr(self.decoder, name)

    class SpyProtocol(FrameProtocol):
        def new_decoder(self) -> Any:
            return Spy(super().new_decoder())

    async def main() -> None:
        async with served(upper, protocol=SpyProtocol(), client={"protocol": SpyProtocol()}) as (
            _server,
            conn,
        ):
            for size in (10, 100_000, 2 << 20):
                assert await conn.request(b"x" * size) == b"X" * size

    run(main)
    assert calls["feed"] == 0
    assert calls["get_buffer"] >= calls["buffer_updated"] > 6


# -- ends and errors -------------------------------------------------------------------


def test_async_for_ends_at_clean_close(run: Any) -> None:
    async def five(conn: aio.Connection) -> None:
        await conn.send_many([b"%d" % i for i in range(5)])

    async def main() -> None:
        async with served(five, per_connection=True) as (_server, conn):
            assert [frame async for frame in conn] == [b"0", b"1", b"2", b"3", b"4"]
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            with pytest.raises(ConnectionClosed):
                await conn.send(b"late")

    run(main)


def test_connection_states_on_both_sides(run: Any) -> None:
    seen = []

    async def conversation(conn: aio.Connection) -> None:
        await conn.recv()
        seen.append(conn.state)
        with pytest.raises(ConnectionClosed):
            await conn.recv()  # the client half-closed: this side is closing
        seen.append(conn.state)
        await conn.send(b"after the peer's end")  # half-open: still sent

    async def main() -> None:
        async with served(conversation, per_connection=True) as (_server, conn):
            assert conn.state is ConnectionState.OPEN and not conn.closed
            await conn.send(b"hello")
            conn.write_eof()
            assert await conn.recv() == b"after the peer's end"
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            closing = asyncio.ensure_future(conn.close())
            await asyncio.sleep(0)
            assert conn.state in (ConnectionState.CLOSING, ConnectionState.CLOSED) and conn.closed
            await closing
            assert conn.state is ConnectionState.CLOSED
        assert seen == [ConnectionState.OPEN, ConnectionState.CLOSING]

    run(main)


def test_peer_vanishing_inside_a_frame(run: Any) -> None:
    async def main() -> None:
        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encoder.encode(b"whole") + encoder.encode(b"cut short")[:7])
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(cut, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            conn = await aio.open_connection(f"127.0.0.1:{port}")
            async with conn:
                assert await conn.recv() == b"whole"
                with pytest.raises(IncompleteFrameError):
                    await conn.recv()

    run(main)


def test_protocol_error_closes_that_connection_only(run: Any, caplog: Any) -> None:
    async def main() -> None:
        async with await aio.start_server("127.0.0.1:0", upper, max_frame_size=100) as server:
            bad = await aio.open_connection(server.address)
            good = await aio.open_connection(server.address)
            # The frame before the oversized header is still answered.
            bad.transport.write(encoder.encode(b"first") + encoder.header(1000))  # type: ignore[union-attr]
            assert await bad.recv() == b"FIRST"
            with pytest.raises(ConnectionClosed):
                await bad.recv()
            assert await good.request(b"still fine") == b"STILL FINE"
            await bad.close()
            await good.close()
            assert server.stats["protocol_errors"] == 1

    with caplog.at_level(logging.WARNING, "framecodec.server"):
        run(main)
    assert "protocol error" in caplog.text


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "coroutine"])
def test_handler_error_closes_that_connection_only(
    run: Any, caplog: Any, asynchronous: bool
) -> None:
    def fragile(frame: bytes) -> bytes:
        if frame == b"boom":
            raise RuntimeError("handler bug")
        return frame.upper()

    async def async_fragile(frame: bytes) -> bytes:
        return fragile(frame)

    async def main() -> None:
        handler = async_fragile if asynchronous else fragile
        async with await aio.start_server("127.0.0.1:0", handler) as server:
            bad = await aio.open_connection(server.address)
            good = await aio.open_connection(server.address)
            assert await bad.request(b"ok") == b"OK"
            with pytest.raises((ConnectionError, IncompleteFrameError)):
                await bad.request(b"boom")
            assert await good.request(b"fine") == b"FINE"
            await bad.close()
            await good.close()
            assert server.stats["handler_errors"] == 1

    with caplog.at_level(logging.ERROR, "framecodec.server"):
        run(main)
    assert "handler failed" in caplog.text and "handler bug" in caplog.text


def test_client_protocol_error(run: Any) -> None:
    async def main() -> None:
        async with served(lambda f: b"x" * 500, client={"max_frame_size": 100}) as (_server, conn):
            with pytest.raises(ProtocolError, match="100"):
                await conn.request(b"give me a big one")

    run(main)


def test_cancelled_request_drops_its_late_reply(run: Any) -> None:
    async def slow_first(frame: bytes) -> bytes:
        if frame == b"slow":
            await asyncio.sleep(0.3)
        return frame.upper()

    async def main() -> None:
        async with served(slow_first) as (_server, conn):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.request(b"slow"), 0.05)
            assert await conn.request(b"next") == b"NEXT"  # not SLOW

    run(main)


def test_cancelled_recv_loses_no_frame(run: Any) -> None:
    async def later(conn: aio.Connection) -> None:
        await conn.recv()
        await asyncio.sleep(0.1)
        await conn.send(b"late")

    async def main() -> None:
        async with served(later, per_connection=True) as (_server, conn):
            await conn.send(b"go")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.recv(), 0.02)
            assert await conn.recv() == b"late"

    run(main)


def test_connect_failures(run: Any, pki: Any) -> None:
    async def main() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await aio.open_connection(f"127.0.0.1:{port}", timeout=5)
        with pytest.raises(FileNotFoundError):
            await aio.open_connection("unix:" + unix_path())
        context = aio_server_context(pki)
        async with await aio.start_server("127.0.0.1:0", upper, ssl_context=context) as server:
            client = aio_client_context(pki)
            with pytest.raises(ssl.SSLCertVerificationError):
                await aio.open_connection(
                    server.address, ssl_context=client, server_hostname="wrong.example"
                )

    run(main)


def aio_server_context(pki: Any) -> ssl.SSLContext:
    import framecodec

    return framecodec.server_context(pki.cert, pki.key)


def aio_client_context(pki: Any) -> ssl.SSLContext:
    import framecodec

    return framecodec.client_context(pki.ca)


# -- flow control ----------------------------------------------------------------------


def test_client_pauses_reading_when_frames_pile_up(run: Any) -> None:
    chunk = b"z" * 65536
    count = 64  # 4 MiB pushed at a client that reads nothing for now

    async def push(conn: aio.Connection) -> None:
        for _ in range(count):
            await conn.send(chunk)

    async def main() -> None:
        async with await aio.start_server("127.0.0.1:0", push, per_connection=True) as server:
            conn = await aio.open_connection(server.address, high_water=256 * 1024)
            async with conn:
                await until(lambda: conn.reading_paused, "the client to pause reading")
                await asyncio.sleep(0.05)
                assert conn._queued <= 256 * 1024 + 256 * 1024  # high water plus one read
                frames = [await conn.recv() for _ in range(count)]
                assert frames == [chunk] * count
                assert not conn.reading_paused

    run(main)


def test_slow_coroutine_handler_pauses_reading_and_send_waits(run: Any) -> None:
    gate: asyncio.Event

    async def slow(frame: bytes) -> bytes:
        await gate.wait()
        return frame[:1]

    async def main() -> None:
        nonlocal gate
        gate = asyncio.Event()
        frame = b"q" * 65536
        server = await aio.start_server("127.0.0.1:0", slow, high_water=256 * 1024)
        async with server:
            conn = await aio.open_connection(server.address, high_water=256 * 1024)
            async with conn:
                sent = 0

                async def sender() -> None:
                    nonlocal sent
                    while True:
                        await conn.send(frame)
                        sent += 1

                # Reading stops on the server; kernel buffers fill; then
                # the transport holds high_water and send() waits for drain.
                task = asyncio.ensure_future(sender())
                try:
                    await until(
                        lambda: (
                            conn._writing_paused
                            and server.connections
                            and server.connections[0].reading_paused
                        ),
                        "the server to stop reading and send to wait for drain",
                        timeout=8,
                    )
                    stalled_at = sent
                    await asyncio.sleep(0.1)
                    assert sent == stalled_at  # send() waits; nothing buffers without bound
                finally:
                    task.cancel()
                    gate.set()
                replies = [await conn.recv() for _ in range(sent)]
                assert replies == [b"q"] * sent

    run(main)


def test_server_stops_reading_while_replies_wait(run: Any) -> None:
    frame = b"e" * 65536
    count = 256  # 16 MiB of echoes the client does not read at first

    async def main() -> None:
        async with await aio.start_server(
            "127.0.0.1:0", lambda f: f, high_water=128 * 1024
        ) as server:
            conn = await aio.open_connection(server.address, high_water=64 << 20)
            async with conn:
                conn.transport.pause_reading()  # type: ignore[union-attr]
                for _ in range(count):
                    await conn.send(frame)
                await until(
                    lambda: server.connections and server.connections[0].reading_paused,
                    "the server to stop reading",
                )
                conn.transport.resume_reading()  # type: ignore[union-attr]
                for _ in range(count):
                    assert await conn.recv() == frame

    run(main)


def test_send_is_bounded_by_what_the_transport_really_holds(run: Any) -> None:
    """A loop of large sends to a server that stops reading stalls with a
    transport buffer near high_water, whether or not the transport calls
    pause_writing() (CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never do from
    writelines(), gh-127655)."""
    high_water = 256 * 1024
    attempts = 1500
    gate: asyncio.Event

    async def waits(frame: bytes) -> bytes:
        await gate.wait()
        return frame[:1]

    async def main() -> None:
        nonlocal gate
        gate = asyncio.Event()
        async with served(waits, {"high_water": high_water}, high_water=high_water) as (_, conn):
            transport = conn.transport
            assert transport is not None
            sent = 0
            most_queued = 0

            async def sender() -> None:
                nonlocal sent, most_queued
                for _ in range(attempts):
                    await conn.send(bytes(65536))
                    sent += 1
                    most_queued = max(most_queued, transport.get_write_buffer_size())

            task = asyncio.ensure_future(sender())
            try:
                # Stalled: no send has returned for a while (or all returned).
                last = -1
                while sent != last and not task.done():
                    last = sent
                    await asyncio.sleep(0.3)
                assert sent < attempts, f"all {attempts} sends returned: nothing waited"
                assert most_queued <= 2 * high_water, f"{most_queued} bytes queued"
            finally:
                gate.set()
            await asyncio.wait_for(task, 8)  # and it resumes once the server reads again
            replies = [await conn.recv() for _ in range(attempts)]
            assert replies == [b"\0"] * attempts

    run(main, timeout=30)


def test_replies_to_a_peer_that_does_not_read_are_bounded(run: Any) -> None:
    """A plain handler's replies wait in the server's transport only up to
    about high_water: then the server stops reading the peer's requests."""
    high_water = 128 * 1024
    count = 256

    async def main() -> None:
        async with served(lambda f: f, {"high_water": 64 << 20}, high_water=high_water) as (
            server,
            conn,
        ):
            conn.transport.pause_reading()  # type: ignore[union-attr]
            for _ in range(count):
                await conn.send(bytes(65536))
            await until(
                lambda: server.connections and server.connections[0].reading_paused,
                "the server to stop reading",
            )
            await asyncio.sleep(0.2)  # what it would still queue, if it did
            queued = server.connections[0].transport.get_write_buffer_size()  # type: ignore[union-attr]
            # One read's replies may land above high_water before the pause.
            assert queued <= high_water + aio.READ_SIZE + 65536, f"{queued} bytes queued"
            conn.transport.resume_reading()  # type: ignore[union-attr]
            for _ in range(count):
                assert await conn.recv() == bytes(65536)

    run(main, timeout=30)


# -- closing ----------------------------------------------------------------------------


def test_close_finishes_work_in_hand(run: Any) -> None:
    started = []

    async def slow(frame: bytes) -> bytes:
        started.append(frame)
        await asyncio.sleep(0.1)
        return frame.upper()

    async def main() -> None:
        server = await aio.start_server("127.0.0.1:0", slow)
        conn = await aio.open_connection(server.address)
        await conn.send(b"in flight")
        await until(lambda: started, "the handler to start")
        server.close()
        await server.wait_closed()
        assert await conn.recv() == b"IN FLIGHT"
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        await conn.close()
        with pytest.raises(ConnectionRefusedError):
            await aio.open_connection(server.address)

    run(main)


def test_shutdown_timeout_aborts_stuck_handlers(run: Any) -> None:
    started = []

    async def stuck(frame: bytes) -> bytes:
        started.append(frame)
        await asyncio.sleep(3600)
        return frame

    async def main() -> None:
        server = await aio.start_server("127.0.0.1:0", stuck, shutdown_timeout=0.2)
        conn = await aio.open_connection(server.address)
        await conn.send(b"never answered")
        await until(lambda: started, "the handler to start")
        loop = asyncio.get_running_loop()
        began = loop.time()
        server.close()
        await server.wait_closed()
        assert 0.15 < loop.time() - began < 3
        with pytest.raises((ConnectionError, IncompleteFrameError)):
            await conn.recv()
        await conn.close()

    run(main)


def test_serve_forever_until_cancelled(run: Any) -> None:
    async def main() -> None:
        path = unix_path()
        server = await aio.start_server("unix:" + path, upper)
        task = asyncio.ensure_future(server.serve_forever())
        async with await aio.open_connection(server.address) as conn:
            assert await conn.request(b"x") == b"X"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not os.path.exists(path)

    run(main)


def test_half_close_still_gets_replies(run: Any) -> None:
    async def slow(frame: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return frame.upper()

    async def main() -> None:
        async with served(slow) as (_server, conn):
            await conn.send_many([b"a", b"b", b"c"])
            conn.write_eof()
            assert [frame async for frame in conn] == [b"A", b"B", b"C"]

    run(main)


def test_sends_of_one_loop_pass_are_joined(run: Any) -> None:
    class CountingTransport:
        def __init__(self, transport: Any) -> None:
            self.transport = transport
            self.writes = 0

        def write(self, data: Any) -> None:
            self.writes += 1
            self.transport.write(data)

        def writelines(self, data: Any) -> None:
            self.writes += 1
            self.transport.writelines(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    async def main() -> None:
        async with served(upper) as (_server, conn):
            counting = CountingTransport(conn._transport)
            conn._transport = counting  # type: ignore[assignment]
            for i in range(1000):
                await conn.send(b"%d" % i)
            assert counting.writes <= 1  # one at the end of this pass at most
            assert [await conn.recv() for _ in range(1000)] == [b"%d" % i for i in range(1000)]
            assert counting.writes == 1
            await conn.send(b"x" * 100_000)  # a large one goes at once
            assert counting.writes == 2
            assert await conn.recv() == b"X" * 100_000

    run(main)


def test_a_buffer_can_be_reused_once_send_returns(run: Any) -> None:
    async def main() -> None:
        async with served(lambda frame: frame) as (_server, conn):
            buffer = bytearray(b"first")
            await conn.send(buffer)
            buffer[:] = b"again"
            await conn.send(memoryview(buffer))
            buffer[:] = b"third"
            assert [await conn.recv(), await conn.recv()] == [b"first", b"again"]

    run(main)


# -- the benchmark roles (framecodec.benchmarks.aio_roles) ------------------------------


def test_benchmark_roles(run: Any) -> None:
    from framecodec.benchmarks import aio_roles

    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for batch, batch_bytes in ((False, 0), (True, 65536)):
            receiving = asyncio.ensure_future(
                aio_roles.receive_frames(listener.dup(), 1000, batch=batch)
            )
            await asyncio.sleep(0.01)
            start = await aio_roles.send_frames(address, b"p" * 100, 1000, batch_bytes=batch_bytes)
            frames, end = await receiving
            assert frames == 1000 and end > start
        listener.close()

        # A stream that goes on, and one that ends short, are errors.
        for sent, error in ((11, ValueError), (9, EOFError)):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                probe.listen()
                where = f"127.0.0.1:{probe.getsockname()[1]}"
                receiving = asyncio.ensure_future(aio_roles.receive_frames(probe.dup(), 10))
            await asyncio.sleep(0.01)
            await aio_roles.send_frames(where, b"q", sent)
            with pytest.raises(error):
                await receiving

        listener = socket.create_server(("127.0.0.1", 0))
        where = f"127.0.0.1:{listener.getsockname()[1]}"
        serving = asyncio.ensure_future(aio_roles.serve_echo(listener, clients=1))
        await asyncio.sleep(0.01)
        samples = await aio_roles.request_latencies(where, b"r" * 64, rounds=50, warmup=5)
        assert len(samples) == 50 and all(sample > 0 for sample in samples)
        await asyncio.wait_for(serving, 5)  # done once its one client has gone

    run(main)


@pytest.mark.skipif(REUSE_PORT_OPTION is None, reason="no balancing SO_REUSEPORT here")
def test_servers_share_a_port_with_reuse_port(run: Any) -> None:
    async def main() -> None:
        first = await aio.start_server("127.0.0.1:0", lambda f: b"1", reuse_port=True)
        second = await aio.start_server(first.address, lambda f: b"2", reuse_port=True)
        async with first, second:
            assert second.address == first.address
            replies = set()
            for _ in range(64):
                async with await aio.open_connection(first.address) as conn:
                    replies.add(await conn.request(b"which"))
            assert replies == {b"1", b"2"}  # the kernel spreads the connections

    run(main)


DOCS_ASYNCIO = pathlib.Path(__file__).resolve().parents[2] / "docs" / "asyncio.md"


@pytest.mark.skipif(not DOCS_ASYNCIO.is_file(), reason="the suite was copied without docs/")
def test_docs_example_runs() -> None:
    guide = DOCS_ASYNCIO.read_text()
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TEST_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["b'HELLO'", "b'MORE'"]


def test_close_while_a_tls_handshake_is_pending(run: Any, pki: Any) -> None:
    """A connection whose handshake ends after close() is closed at once,
    and wait_closed() waits for it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await aio.start_server("127.0.0.1:0", upper, ssl_context=aio_server_context(pki))
        sock = socket.create_connection(server.address.sockaddr)
        sock.setblocking(False)
        # Connected already (loopback): the loop accepts it at its next poll,
        # and its handshake then waits for us.
        await asyncio.sleep(0.05)
        server.close()
        transport, _ = await loop.create_connection(
            asyncio.Protocol, sock=sock, ssl=aio_client_context(pki), server_hostname="localhost"
        )
        try:
            await until(lambda: server.stats["accepted"] == 1, "the late connection")
            await asyncio.wait_for(server.wait_closed(), 5)
            assert not server.connections
            assert server.stats["closed"] == 1
        finally:
            transport.close()

    run(main)


def test_closing_a_tls_server_with_an_idle_client_is_prompt(
    run: Any, pki: Any, caplog: Any
) -> None:
    """An idle TLS connection closes at once when its server does: closing
    reads on for the peer's close_notify instead of waiting for the abort
    (asyncio before 3.11 waited the whole shutdown_timeout)."""

    async def main() -> None:
        server = await aio.start_server(
            "127.0.0.1:0", upper, ssl_context=aio_server_context(pki), shutdown_timeout=60
        )
        conn = await aio.open_connection(server.address, ssl_context=aio_client_context(pki))
        assert await conn.request(b"idle next") == b"IDLE NEXT"
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert server.stats["closed"] == 1
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        await conn.close()

    with caplog.at_level(logging.WARNING, logger="framecodec.server"):
        run(main)
    assert "still busy" not in caplog.text


def test_endings_are_counted_and_logged_as_the_blocking_servers_do(run: Any, caplog: Any) -> None:
    """One vocabulary: the same stats keys and log words as framecodec.serve."""

    def fragile(frame: bytes) -> bytes:
        if frame == b"boom":
            raise RuntimeError("handler bug")
        return frame

    async def main() -> None:
        async with await aio.start_server("127.0.0.1:0", fragile, max_frame_size=100) as server:
            clean = await aio.open_connection(server.address)
            assert await clean.request(b"ok") == b"ok"
            await clean.close()
            failing = await aio.open_connection(server.address)
            with pytest.raises((ConnectionError, IncompleteFrameError)):
                await failing.request(b"boom")
            await failing.close()
            broken = await aio.open_connection(server.address)
            broken.transport.write(encoder.header(1000))  # type: ignore[union-attr]
            with pytest.raises(ConnectionClosed):
                await broken.recv()
            await broken.close()
            await until(lambda: server.stats["closed"] == 3, "all three ends counted")
            assert {
                k: server.stats[k] for k in ("clean_closes", "handler_errors", "protocol_errors")
            } == {
                "clean_closes": 1,
                "handler_errors": 1,
                "protocol_errors": 1,
            }

    with caplog.at_level(logging.INFO, "framecodec.server"):
        run(main)
    assert "closed" in caplog.text
    assert "handler failed on" in caplog.text and "handler bug" in caplog.text
    assert "protocol error from" in caplog.text


def test_the_blocking_server_refuses_coroutine_handlers_and_names_aio() -> None:
    import framecodec

    with pytest.raises(TypeError, match=r"framecodec\.aio\.start_server does"):
        framecodec.serve("127.0.0.1:0", per_connection_upper)


def test_close_answers_every_request_whose_handler_ran(run: Any) -> None:
    """As the blocking servers' shutdown: a request whose handler ran gets
    its reply before the close, trial after trial."""

    async def main() -> None:
        lost = []
        seen: list = []

        def handler(frame: bytes) -> bytes:
            seen.append(frame)
            return frame.upper()

        for trial in range(50):
            seen.clear()
            server = await aio.start_server("127.0.0.1:0", handler)
            conn = await aio.open_connection(server.address)
            assert await conn.request(b"warm") == b"WARM"
            await conn.send(b"req")
            await until(lambda: len(seen) == 2, "the handler to run")
            server.close()
            await server.wait_closed()
            try:
                reply = await conn.recv()
            except (ConnectionError, IncompleteFrameError) as exc:
                reply = exc
            if reply != b"REQ":
                lost.append((trial, reply))
            await conn.close()
        assert not lost

    run(main, timeout=30)


def test_a_peer_that_stops_reading_is_closed_as_stalled(run: Any, caplog: Any) -> None:
    def huge(frame: bytes) -> bytes:
        return frame * (8 << 20)

    async def main() -> None:
        server = await aio.start_server("127.0.0.1:0", huge, write_timeout=0.5)
        async with server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, server.address.sockaddr)
                await asyncio.get_running_loop().sock_sendall(sock, encoder.encode(b"x"))
                began = asyncio.get_running_loop().time()
                await until(lambda: server.stats["closed"] == 1, "the close")
                assert asyncio.get_running_loop().time() - began < 3
            finally:
                sock.close()
        assert server.stats["network_errors"] == 1 and server.stats["handler_errors"] == 0

    with caplog.at_level(logging.INFO, "framecodec.server"):
        run(main)
    assert "stalled: took none of its replies for 0.5 s" in caplog.text


FD_LIMIT_SERVER = """
import asyncio, os, resource, sys
from framecodec import aio

async def main():
    server = await aio.start_server("127.0.0.1:0", lambda frame: frame.upper())
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
    print(server.address.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(server.stats["rejected"], flush=True)
    server.close()
    await server.wait_closed()
    # The loop runs on past the retry asyncio armed at the last failed
    # accept (1 s): a retry on the closed listener would log a traceback.
    await asyncio.sleep(1.5)

if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_out_of_descriptors_resets_waiting_clients_and_logs_once(loop_kind: str) -> None:
    """A server at its descriptor limit (lowered in its own process) resets
    the clients it cannot take at once, logs that once, not per attempt,
    and serves new clients once descriptors are free again."""
    import framecodec

    if loop_kind == "uvloop":
        uvloop_factory()
    child = subprocess.Popen(
        [sys.executable, "-c", FD_LIMIT_SERVER, loop_kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        clients, turned_away = [], 0
        try:
            for _ in range(8):
                began = time.monotonic()
                try:
                    # The reset can come before connect() has returned (PyPy is
                    # slow enough to see it there): that is turned away too.
                    client = framecodec.connect(f"127.0.0.1:{port}", timeout=5)
                    clients.append(client)
                    assert client.request(b"x") == b"X"
                except (ConnectionError, IncompleteFrameError):
                    turned_away += 1
                    assert time.monotonic() - began < 2, "a client waited for its timeout"
            assert 0 < turned_away < 8
        finally:
            for client in clients:
                client.close()
        time.sleep(0.3)
        with framecodec.connect(f"127.0.0.1:{port}", timeout=5) as client:
            assert client.request(b"again") == b"AGAIN"
        _, errors = child.communicate("\n", timeout=10)
    finally:
        child.kill()
        child.wait(10)
    assert errors.count("cannot accept") <= 2, errors  # per burst, not per attempt
    assert "Traceback" not in errors, errors


# -- a client that half-closes after its requests (issue 13) --------------------------

# uvloop only plain: its TLS layer is out of reach, and closes at the peer's
# FIN whatever the protocol says (docs/aio.md).
HALF_CLOSE_POINTS = [
    pytest.param("asyncio", False, False, id="asyncio-plain"),
    pytest.param("uvloop", False, False, id="uvloop-plain"),
    pytest.param("asyncio", True, False, id="asyncio-tls-fin"),  # a bare FIN: no close_notify
    pytest.param("asyncio", True, True, id="asyncio-tls-close_notify"),  # close_notify, then FIN
]


def first_three(frame: bytes) -> bytes:
    return frame[:3]


async def async_first_three(frame: bytes) -> bytes:
    await asyncio.sleep(0.01)  # still working when the FIN comes
    return frame[:3]


def _half_close_exchange(run: Any, pki: Any, handler: Any, tls: bool, close_notify: bool) -> None:
    server_ctx = aio_server_context(pki) if tls else None
    client_ctx = aio_client_context(pki) if tls else None

    async def main() -> None:
        server = await aio.start_server("127.0.0.1:0", handler, ssl_context=server_ctx)
        async with server:
            for _ in range(3):  # it lost the last reply every time
                replies = await asyncio.to_thread(
                    half_closing_client,
                    server.address,
                    [b"a" * (1 << 20), b"xyz"],
                    context=client_ctx,
                    close_notify=close_notify,
                )
                assert replies == [b"aaa", b"xyz"]
            await until(lambda: server.stats["closed"] == 3, "the connections to close")
            assert server.stats["clean_closes"] == 3

    run(main)


@pytest.mark.parametrize(("run", "tls", "close_notify"), HALF_CLOSE_POINTS, indirect=["run"])
def test_every_reply_reaches_a_client_that_half_closed(
    run: Any, pki: Any, tls: bool, close_notify: bool
) -> None:
    _half_close_exchange(run, pki, first_three, tls, close_notify)


@pytest.mark.parametrize(("run", "tls", "close_notify"), HALF_CLOSE_POINTS[:3], indirect=["run"])
def test_a_coroutine_handler_still_answers_after_the_fin(
    run: Any, pki: Any, tls: bool, close_notify: bool
) -> None:
    _half_close_exchange(run, pki, async_first_three, tls, close_notify)


def test_a_reply_lost_to_the_peers_close_notify_is_counted_and_logged(
    pki: Any, caplog: Any
) -> None:
    """asyncio's TLS layer shuts the session down at a close_notify (no
    half-close): a coroutine handler that answers after it cannot reply,
    and that is counted and logged, once per connection."""
    server_ctx, client_ctx = aio_server_context(pki), aio_client_context(pki)

    async def main() -> None:
        server: Any = None

        async def answers_once_closed(frame: bytes) -> bytes:
            await until(lambda: all(c.closed for c in server.connections), "TLS to end")
            return frame[:3]

        server = await aio.start_server("127.0.0.1:0", answers_once_closed, ssl_context=server_ctx)
        async with server:
            replies = await asyncio.to_thread(
                half_closing_client,
                server.address,
                [b"abcd", b"xyz"],
                context=client_ctx,
                close_notify=True,
            )
            assert replies == []
            await until(lambda: server.stats["replies_dropped"] == 2, "the count")
        lines = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
        assert len(lines) == 1 and "close_notify ended TLS" in lines[0]

    with caplog.at_level(logging.WARNING, logger="framecodec"):
        asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT))


def test_open_connection_to_a_server_that_closes_in_the_handshake(run: Any, pki: Any) -> None:
    async def main() -> None:
        with closing_listener() as address, pytest.raises(TLSHandshakeError) as caught:
            await aio.open_connection(
                address, ssl_context=aio_client_context(pki), server_hostname="localhost"
            )
        check_handshake_error(caught.value, address)

    run(main)
