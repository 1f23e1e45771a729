"""framecodec.anyio on real sockets: connect() and serve() over TCP, Unix
and TLS, limits, timeouts, shutdown, and the blocking layer on the other end."""

from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import time

import anyio
import pytest

import framecodec
from framecodec import ConnectionClosed, FrameEncoder, FrameTooLargeError
from framecodec import anyio as fa
from framecodec.net.server import ConnectionHandler
from framecodec.net.server.base import IDLE_AGE

from ..net_support import check_handshake_error, closing_listener, half_closing_client, unix_path
from .support import TIMEOUT, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaks")]


def upper(frame: bytes) -> bytes:
    return frame.upper()


async def wait_for(condition, message: str = "condition") -> None:
    """Poll a server's counters (they have no event of their own), bounded."""
    with anyio.fail_after(TIMEOUT):
        while not condition():
            await anyio.sleep(0.005)


@pytest.mark.parametrize(
    "protocol, options, items",
    [
        ("frames", {}, [b"", b"a", b"b" * 70_000, b"c" * 3_000_000]),
        ("frames", {"format": "uint16"}, [b"", b"short", b"d" * 65_535]),
        ("frames", {"format": "multiprocessing"}, [b"x" * 10, b"y" * 300_000]),
        ("frames", {"checksum": "crc32c"}, [b"", b"z" * 70_000, b"c" * 3_000]),
        ("frames", {"format": "grpc", "checksum": "crc32c"}, [b"\x00\x00\x00\x00\x01!"]),
        ("messages", {}, [{"key": [1, 2]}, "text", b"\x00" * 100_000]),
    ],
)
async def test_echo_over_tcp(anyio_backend, protocol, options, items):
    async def echo(item):
        return item

    async with (
        serving(echo, protocol=protocol, **options) as (server, _),
        await fa.connect(server.address, protocol=protocol, **options) as stream,
    ):
        assert stream.receives_into_buffer  # a plain socket, on either backend
        with anyio.fail_after(TIMEOUT):
            for item in items:
                reply = await stream.request(item)
                if protocol == "messages":
                    assert reply.value == item
                else:
                    assert reply == item
            await stream.send_many(items)
            assert len([await stream.receive() for _ in items]) == len(items)
    assert server.stats["clean_closes"] == 1


async def test_echo_over_a_unix_socket():
    path = unix_path()
    async with serving(upper, f"unix:{path}") as (server, _):
        assert str(server.address) == f"unix:{path}"
        async with await fa.connect(f"unix:{path}") as stream:
            assert stream.receives_into_buffer
            with anyio.fail_after(TIMEOUT):
                assert await stream.request(b"over unix") == b"OVER UNIX"
    await wait_for(lambda: not os.path.exists(path), "the socket file's removal")


async def test_echo_over_tls(pki):
    context = framecodec.server_context(pki.cert, pki.key)
    async with serving(upper, ssl_context=context) as (server, _):
        client_context = framecodec.client_context(pki.ca)
        stream = await fa.connect(
            server.address, ssl_context=client_context, server_hostname="localhost", timeout=TIMEOUT
        )
        async with stream:
            assert not stream.receives_into_buffer  # TLS: through feed()
            with anyio.fail_after(TIMEOUT):
                assert await stream.request(b"secret") == b"SECRET"
                assert await stream.request(b"z" * 1_000_000) == b"Z" * 1_000_000


async def test_a_client_that_does_not_trust_the_server_fails_its_handshake(pki, caplog):
    context = framecodec.server_context(pki.cert, pki.key)
    async with serving(upper, ssl_context=context) as (server, _):
        with pytest.raises(ssl.SSLError):
            await fa.connect(
                server.address, ssl_context=framecodec.client_context(), timeout=TIMEOUT
            )
        await wait_for(lambda: server.stats["tls_failures"] == 1, "the failed handshake's count")


async def test_connect_timeout_bounds_the_handshake():
    with socket.socket() as silent:  # accepts (in the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        context = ssl.create_default_context()
        with pytest.raises(TimeoutError, match=r"timed out after 0\.2 s"):
            await fa.connect(silent.getsockname(), ssl_context=context, timeout=0.2)


async def test_a_frame_past_the_server_limit_closes_that_connection(caplog):
    caplog.set_level(logging.INFO, "framecodec.server")
    async with (
        serving(upper, max_frame_size=100) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await stream.request(b"a" * 100) == b"A" * 100
            await stream.send(b"a" * 101)
            with pytest.raises(ConnectionClosed):
                await stream.receive()
        await wait_for(lambda: server.stats["closed"] == 1)
    assert server.stats["protocol_errors"] == 1
    assert "protocol error from" in caplog.text


async def test_the_client_limit_raises_frame_too_large():
    async with (
        serving(lambda frame: b"r" * 1000) as (server, _),
        await fa.connect(server.address, max_frame_size=999) as stream,
    ):
        with anyio.fail_after(TIMEOUT), pytest.raises(FrameTooLargeError):
            await stream.request(b"x")


async def test_a_handler_error_closes_its_connection_only(caplog):
    def handler(frame: bytes) -> bytes:
        if frame == b"boom":
            raise RuntimeError("the handler's bug")
        return frame

    async with serving(handler) as (server, _):
        async with (
            await fa.connect(server.address) as bad,
            await fa.connect(server.address) as good,
        ):
            with anyio.fail_after(TIMEOUT):
                await bad.send(b"boom")
                with pytest.raises(ConnectionClosed):
                    await bad.receive()
                assert await good.request(b"fine") == b"fine"
        await wait_for(lambda: server.stats["closed"] == 2)
    assert server.stats["handler_errors"] == 1
    assert "handler failed on" in caplog.text
    assert "the handler's bug" in caplog.text


@pytest.mark.parametrize("shape", ["batch", "async batch", "per connection"])
async def test_handler_shapes(shape):
    options = {}
    if shape == "batch":
        handler = lambda frames: [frame.upper() for frame in frames]  # noqa: E731
        options = {"batch": True}
    elif shape == "async batch":

        async def handler(frames):
            return [frame.upper() for frame in frames]

        options = {"batch": True}
    else:

        async def handler(stream):
            async for frame in stream:
                await stream.send(frame.upper())
                await stream.send(b"and more")

        options = {"per_connection": True}

    async with (
        serving(handler, **options) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await stream.request(b"hi") == b"HI"
            if shape == "per connection":
                assert await stream.receive() == b"and more"


async def test_handlers_of_a_shape_it_does_not_run_are_refused():
    class PerConnection(ConnectionHandler):
        pass

    with pytest.raises(TypeError, match=r"framecodec\.serve does"):
        await fa.serve("127.0.0.1:0", PerConnection)


async def test_idle_and_frame_timeouts_end_connections():
    async with serving(upper, idle_timeout=0.1, frame_timeout=0.2) as (server, _):
        idle = await fa.connect(server.address)
        slow = await fa.connect(server.address)
        async with idle, slow:
            await slow.stream.send(FrameEncoder().encode(b"never finished")[:6])
            with anyio.fail_after(TIMEOUT):
                for stream in (idle, slow):
                    with pytest.raises(ConnectionClosed):
                        await stream.receive()
        await wait_for(lambda: server.stats["closed"] == 2)
    assert server.stats["timeouts"] == 2


async def test_max_connections_makes_the_next_client_wait():
    async with serving(upper, max_connections=1, overflow="wait") as (server, _):
        first = await fa.connect(server.address)
        second = await fa.connect(server.address)  # waits in the listen backlog
        async with second:
            async with first:
                with anyio.fail_after(TIMEOUT):
                    assert await first.request(b"one") == b"ONE"
                await second.send(b"two")
                with anyio.move_on_after(0.2) as waited:
                    await second.receive()
                assert waited.cancelled_caught  # not served while the first is open
            with anyio.fail_after(TIMEOUT):
                assert await second.receive() == b"TWO"


async def test_shutdown_lets_the_frame_in_hand_finish():
    started = anyio.Event()
    release = anyio.Event()

    async def slow(frame: bytes) -> bytes:
        started.set()
        await release.wait()
        return frame.upper()

    async with serving(slow) as (server, scope), await fa.connect(server.address) as stream:
        with anyio.fail_after(TIMEOUT):
            await stream.send(b"in flight")
            await started.wait()
            scope.cancel()  # shutdown begins with the handler busy
            await anyio.sleep(0)
            release.set()
            assert await stream.receive() == b"IN FLIGHT"
            with pytest.raises(ConnectionClosed):
                await stream.receive()  # then the server closes it
    assert server.stats["clean_closes"] == 1


async def test_shutdown_cancels_what_is_still_busy_after_its_timeout(caplog):
    async def stuck(frame: bytes) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    started = anyio.current_time()
    async with (
        serving(stuck, shutdown_timeout=0.2) as (server, scope),
        await fa.connect(server.address) as stream,
    ):
        await stream.send(b"work")
        await wait_for(lambda: server.stats["accepted"] == 1)
        await anyio.sleep(0.05)  # let the handler start
        scope.cancel()
    assert anyio.current_time() - started < TIMEOUT / 2
    assert "still busy after 0.2 s; aborting them" in caplog.text
    assert server.stats["closed"] == 1


async def test_server_close_is_a_graceful_shutdown():
    async with serving(upper) as (server, _), await fa.connect(server.address) as stream:
        with anyio.fail_after(TIMEOUT):
            assert await stream.request(b"x") == b"X"
            server.close()
            with pytest.raises(ConnectionClosed):
                await stream.receive()


async def test_backpressure_against_a_peer_that_does_not_read():
    blocked = anyio.Event()

    async def never_reads(stream):
        await blocked.wait()

    async with (
        serving(never_reads, per_connection=True) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        chunk = b"p" * 65_536
        sent = 0
        with anyio.move_on_after(0.5) as scope:
            while sent < 1 << 30:
                await stream.send(chunk)
                sent += len(chunk)
        assert scope.cancelled_caught  # the send waited for the peer
        assert sent < 64 << 20  # the kernel's buffers, not a gigabyte
        blocked.set()


async def test_blocking_server_with_an_anyio_client():
    server = framecodec.serve("127.0.0.1:0", upper)
    with server.start():
        async with await fa.connect(server.address, timeout=TIMEOUT) as stream:
            with anyio.fail_after(TIMEOUT):
                assert await stream.request(b"to blocking") == b"TO BLOCKING"
                assert await stream.request(b"q" * 2_000_000) == b"Q" * 2_000_000


async def test_anyio_server_with_a_blocking_client():
    def talk(address):
        with framecodec.connect(address, protocol="messages", timeout=TIMEOUT) as client:
            return client.request({"n": 1}).value, client.request(b"raw").value

    async def echo(message):
        return message

    async with serving(echo, protocol="messages") as (server, _):
        with anyio.fail_after(TIMEOUT):
            replies = await anyio.to_thread.run_sync(talk, server.address)
    assert replies == ({"n": 1}, b"raw")


async def test_the_first_bytes_of_every_connection_arrive():
    """Regression: on asyncio, a connection's first bytes were now and then
    lost (anyio's transport read them ahead, and the receive meant to stop
    it could complete with them; the echo benchmark hung 1 run in 4).
    Clients here send their first frame the moment they connect, and
    pipeline a second, many times over: every reply must come."""
    header = FrameEncoder()
    rounds = 300

    def clients(address) -> int:
        replies = 0
        for i in range(rounds):
            frame = header.encode(b"r%d" % i)
            with socket.create_connection((address.host, address.port), timeout=TIMEOUT) as sock:
                # Not a synchronisation: spreads the first frame's arrival over
                # the server's first loop iterations, where the bytes went missing.
                time.sleep((i % 20) * 20e-6)
                sock.sendall(frame + frame)
                expected = frame.upper() * 2
                got = b""
                while len(got) < len(expected):
                    chunk = sock.recv(65536)
                    assert chunk, f"connection {i} ended after {len(got)} bytes"
                    got += chunk
                assert got == expected
                replies += 2
        return replies

    async with serving(upper) as (server, _):
        with anyio.fail_after(TIMEOUT * 3):
            assert await anyio.to_thread.run_sync(clients, server.address) == 2 * rounds
        await wait_for(lambda: server.stats["closed"] == rounds, "every connection's end")
    assert server.stats["clean_closes"] == rounds


# -- a client that half-closes after a large request (issue 13) ----------------------


def first_three(frame: bytes) -> bytes:
    return frame[:3]


@pytest.mark.parametrize(
    "tls, close_notify",
    [(False, False), (True, False), (True, True)],
    ids=["plain", "tls-fin", "tls-close_notify"],
)
async def test_every_reply_reaches_a_client_that_half_closed(pki, tls, close_notify):
    """The aio server lost the last reply here under TLS; this one must not."""
    server_ctx = framecodec.server_context(pki.cert, pki.key) if tls else None
    client_ctx = framecodec.client_context(pki.ca) if tls else None
    async with serving(first_three, ssl_context=server_ctx) as (server, _):
        for _ in range(3):
            replies = await anyio.to_thread.run_sync(
                functools.partial(
                    half_closing_client,
                    server.address,
                    [b"a" * (1 << 20), b"xyz"],
                    context=client_ctx,
                    close_notify=close_notify,
                )
            )
            assert replies == [b"aaa", b"xyz"]
        await wait_for(lambda: server.stats["clean_closes"] == 3, "the connections to close")


# trio's side is left open: its handshake waits for the connect timeout
# instead of seeing the end of the stream (CHANGELOG, issue 13).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_connect_to_a_server_that_closes_in_the_handshake(pki):
    with closing_listener() as address, pytest.raises(framecodec.TLSHandshakeError) as caught:
        await fa.connect(address, ssl_context=framecodec.client_context(pki.ca), timeout=TIMEOUT)
    check_handshake_error(caught.value, address)


# -- overflow at max_connections, as the other servers (issue 13) --------------------


async def test_overflow_close_idle_closes_the_longest_idle_connection(caplog):
    async with serving(upper, max_connections=2) as (server, _):  # close_idle: the default
        async with (
            await fa.connect(server.address) as old,
            await fa.connect(server.address) as recent,
        ):
            with anyio.fail_after(TIMEOUT):
                assert await old.request(b"a") == b"A"
                await anyio.sleep(IDLE_AGE + 0.1)  # both idle long enough; old the longest
                assert await recent.request(b"b") == b"B"
                await anyio.sleep(IDLE_AGE + 0.1)
                async with await fa.connect(server.address) as new:
                    assert await new.request(b"new") == b"NEW"
                    with pytest.raises(ConnectionClosed):
                        await old.receive()  # closed cleanly to make room
                    assert await recent.request(b"still") == b"STILL"
        await wait_for(lambda: server.stats["closed"] == 3)
    assert server.stats["evicted"] == 1 and server.stats["rejected"] == 0
    assert server.stats["clean_closes"] == 3
    assert "max_connections (2) reached; closing the longest-idle connection" in caplog.text


async def test_overflow_close_idle_refuses_when_none_is_idle():
    async with (
        serving(upper, max_connections=1) as (server, _),
        await fa.connect(server.address) as busy,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await busy.request(b"a") == b"A"  # active just now: not idle for 1 s
            async with await fa.connect(server.address) as refused:
                with pytest.raises((ConnectionClosed, OSError)):
                    await refused.request(b"no room")
            assert await busy.request(b"b") == b"B"
    assert server.stats["rejected"] == 1 and server.stats["evicted"] == 0


async def test_overflow_reject_refuses_at_once(caplog):
    async with (
        serving(upper, max_connections=1, overflow="reject") as (server, _),
        await fa.connect(server.address) as first,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await first.request(b"a") == b"A"
            await anyio.sleep(IDLE_AGE + 0.1)  # idle, but "reject" never closes it
            async with await fa.connect(server.address) as refused:
                with pytest.raises((ConnectionClosed, OSError)):
                    await refused.request(b"no room")
            assert await first.request(b"b") == b"B"
    assert server.stats["rejected"] == 1 and server.stats["evicted"] == 0
    assert "max_connections (1) reached; turning new clients away" in caplog.text


async def test_overflow_is_checked_before_binding():
    with pytest.raises(ValueError, match="overflow must be"):
        await fa.serve("127.0.0.1:0", upper, max_connections=1, overflow="later")
