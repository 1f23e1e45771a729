"""STARTTLS: a plain connection upgraded to TLS after an exchange of frames,
between the blocking and asyncio clients and every server backend
(selector, threads, aio), with real TLS (trustme certificates)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import socket
import ssl
import threading
from typing import Any, Iterator

import pytest

import framecodec
from framecodec import FrameEncoder, aio
from framecodec.errors import ConnectionClosed, StartTLSError
from framecodec.net import StartTLS

from ..net_fixtures import require_trustme
from ..net_support import TIMEOUT, recv_exactly, thread, unix_path, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")
require_trustme(allow_module_level=True)  # every test here runs real TLS

SERVERS = ("selector", "threads", "aio", "aio-per-connection")
PROTOCOLS = ("frames", "messages")
encoder = FrameEncoder()


# -- the protocol the tests speak: "STARTTLS", then echoes ------------------------


def is_starttls(item: Any) -> bool:
    return item == b"STARTTLS" or getattr(item, "value", None) == "STARTTLS"


def go_ahead(protocol: str) -> Any:
    return b"go ahead" if protocol == "frames" else "go ahead"


def echo(item: Any) -> Any:
    """The reply to one frame or message: the STARTTLS request is answered
    with StartTLS(go ahead), anything else with its upper-cased echo."""
    if is_starttls(item):
        return StartTLS(go_ahead("frames" if isinstance(item, bytes) else "messages"))
    if isinstance(item, bytes):
        return item.upper()
    return item.value.upper()


def reply_value(reply: Any) -> Any:
    """A frame, or a Message's value, or what was sent (bytes or str)."""
    return getattr(reply, "value", reply)


def request_item(protocol: str, text: str) -> Any:
    return text.encode() if protocol == "frames" else text


# -- servers of each backend, started for a block ---------------------------------


class AioServerThread:
    """framecodec.aio.start_server on an event loop in its own thread."""

    def __init__(self, handler: Any, **options: Any) -> None:
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._handler = handler
        self._options = options
        self.server: Any = None
        self.error: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start(), on the test's thread
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self.server = await aio.start_server("127.0.0.1:0", self._handler, **self._options)
        self._ready.set()
        await self.server.serve_forever()

    def __enter__(self) -> Any:
        self._thread.start()
        assert self._ready.wait(TIMEOUT), "the aio server did not start"
        if self.error is not None:
            raise self.error
        return self.server

    def __exit__(self, *exc_info: Any) -> None:
        if self.server is not None:
            self._loop.call_soon_threadsafe(self.server.close)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the aio server did not stop"


@contextlib.contextmanager
def serving(
    kind: str, pki: Any, handler: Any = echo, starttls: bool = True, **options: Any
) -> Iterator[Any]:
    """A plain server of ``kind`` whose handlers may ask for STARTTLS (with
    the test certificates unless ``starttls`` is False)."""
    if starttls:
        options["starttls_context"] = framecodec.server_context(pki.cert, pki.key)
    if kind == "aio-per-connection":
        handler, options["per_connection"] = per_connection(handler), True
    if kind.startswith("aio"):
        with AioServerThread(handler, **options) as server:
            yield server
    else:
        with framecodec.serve("127.0.0.1:0", handler, backend=kind, **options).start() as server:
            yield server


def per_connection(handler: Any) -> Any:
    """``handler`` run by an aio per_connection handler, which answers a
    StartTLS itself: sends the reply, then ``await conn.start_tls()``."""

    async def conversation(conn: Any) -> None:
        async for frame in conn:
            reply = handler(frame)
            if type(reply) is StartTLS:
                await conn.send(reply.reply)
                await conn.start_tls()
            elif reply is not None:
                await conn.send(reply)

    return conversation


def connect(server: Any) -> framecodec.Client:
    """A plain blocking client of ``server``."""
    return framecodec.connect(server.address, timeout=TIMEOUT)


def client_context(pki: Any) -> ssl.SSLContext:
    return framecodec.client_context(pki.ca)


# -- the blocking client against each backend -------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", SERVERS)
def test_blocking_client_upgrades(kind: str, protocol: str, pki: Any) -> None:
    with serving(kind, pki, protocol=protocol) as server:
        with framecodec.connect(server.address, protocol=protocol, timeout=TIMEOUT) as client:
            assert reply_value(client.request(request_item(protocol, "plain"))) == reply_value(
                request_item(protocol, "PLAIN")
            )
            assert reply_value(client.request(request_item(protocol, "STARTTLS"))) == reply_value(
                go_ahead(protocol)
            )
            client.start_tls(client_context(pki), server_hostname="localhost")
            assert isinstance(client.socket, ssl.SSLSocket)
            assert client.socket.version() in ("TLSv1.2", "TLSv1.3")
            for i in range(20):
                item = request_item(protocol, f"secret {i}")
                assert reply_value(client.request(item)) == reply_value(
                    request_item(protocol, f"SECRET {i}")
                )
            client.send_many([request_item(protocol, "a"), request_item(protocol, "b")])
            assert [reply_value(client.recv()) for _ in range(2)] == [
                reply_value(request_item(protocol, "A")),
                reply_value(request_item(protocol, "B")),
            ]
        wait_until(lambda: server.stats["closed"] == 1, message="the connection's end")
        assert server.stats["clean_closes"] == 1
        assert server.stats["tls_failures"] == 0


# -- the asyncio client against each backend ---------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", SERVERS)
def test_aio_client_upgrades(kind: str, protocol: str, pki: Any) -> None:
    async def main(address: Any) -> None:
        conn = await aio.open_connection(address, protocol=protocol)
        async with conn:
            assert reply_value(await conn.request(request_item(protocol, "plain"))) == (
                reply_value(request_item(protocol, "PLAIN"))
            )
            assert reply_value(await conn.request(request_item(protocol, "STARTTLS"))) == (
                reply_value(go_ahead(protocol))
            )
            await conn.start_tls(client_context(pki), server_hostname="localhost")
            assert conn.transport is not None
            assert conn.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            replies = await asyncio.gather(
                *(conn.request(request_item(protocol, f"secret {i}")) for i in range(20))
            )
            assert [reply_value(r) for r in replies] == [
                reply_value(request_item(protocol, f"SECRET {i}")) for i in range(20)
            ]

    with serving(kind, pki, protocol=protocol) as server:
        asyncio.run(asyncio.wait_for(main(server.address), TIMEOUT))
        wait_until(lambda: server.stats["closed"] == 1, message="the connection's end")
        assert server.stats["clean_closes"] == 1


# -- the other handler shapes -------------------------------------------------------


class UpgradingHandler(framecodec.ConnectionHandler):
    """A ConnectionHandler that answers STARTTLS itself, then says whether
    each later frame came over TLS."""

    def frames_received(self, frames: list) -> None:
        for frame in frames:
            if frame == b"STARTTLS":
                self.connection.send(b"go ahead")
                self.connection.start_tls()
            else:
                over_tls = isinstance(self.connection.sock, ssl.SSLSocket)
                self.connection.send(frame + (b" over TLS" if over_tls else b" in the clear"))


def batch_echo(frames: list) -> list:
    return [echo(frame) for frame in frames]


async def async_echo(frame: bytes) -> Any:
    await asyncio.sleep(0)
    return echo(frame)


async def async_batch_echo(frames: list) -> list:
    await asyncio.sleep(0)
    return [echo(frame) for frame in frames]


async def per_connection_echo(conn: Any) -> None:
    async for frame in conn:
        if frame == b"STARTTLS":
            await conn.send(b"go ahead")
            await conn.start_tls()
        else:
            over_tls = conn.transport.get_extra_info("ssl_object") is not None
            await conn.send(frame + (b" over TLS" if over_tls else b" in the clear"))


SHAPES = [
    ("selector", UpgradingHandler, {}),
    ("threads", UpgradingHandler, {}),
    ("selector", batch_echo, {"batch": True}),
    ("threads", batch_echo, {"batch": True}),
    ("aio", batch_echo, {"batch": True}),
    ("aio", async_echo, {}),
    ("aio", async_batch_echo, {"batch": True}),
    ("aio", per_connection_echo, {"per_connection": True}),
]


@pytest.mark.parametrize(
    "kind, handler, options", SHAPES, ids=[f"{k}-{h.__name__}" for k, h, _ in SHAPES]
)
def test_handler_shapes_upgrade(kind: str, handler: Any, options: dict, pki: Any) -> None:
    telling = handler in (UpgradingHandler, per_connection_echo)
    with serving(kind, pki, handler, **options) as server:
        with connect(server) as client:
            expected = b"plain in the clear" if telling else b"PLAIN"
            assert client.request(b"plain") == expected
            assert client.request(b"STARTTLS") == b"go ahead"
            client.start_tls(client_context(pki), server_hostname="localhost")
            for i in range(5):
                expected = f"secret {i} over TLS" if telling else f"SECRET {i}"
                assert client.request(f"secret {i}".encode()) == expected.encode()
        wait_until(lambda: server.stats["closed"] == 1, message="the connection's end")
        assert server.stats["clean_closes"] == 1


# -- loop kinds: the aio server and client on uvloop too ----------------------------


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        pytest.skip("uvloop is built for CPython only: the test extra leaves it out here")
    return uvloop


def test_aio_on_uvloop_both_sides(pki: Any) -> None:
    uvloop = _uvloop()

    async def main() -> None:
        server = await aio.start_server(
            "127.0.0.1:0",
            echo,
            starttls_context=framecodec.server_context(pki.cert, pki.key),
        )
        async with server, await aio.open_connection(server.address) as conn:
            assert await conn.request(b"STARTTLS") == b"go ahead"
            await conn.start_tls(client_context(pki), server_hostname="localhost")
            for i in range(10):
                assert await conn.request(b"x%d" % i) == b"X%d" % i

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.close()


# -- bytes in the clear after the exchange: a protocol error -------------------------


def raw_server() -> socket.socket:
    """A listening socket for serve_once, a hand-written peer."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    return listener


def serve_once(listener: socket.socket, reply: bytes) -> None:
    """Answer the first frame with ``reply`` (raw bytes), then wait for the
    client to close."""
    sock, _ = listener.accept()
    with sock:
        sock.settimeout(TIMEOUT)
        header = recv_exactly(sock, 4)
        recv_exactly(sock, int.from_bytes(header, "big"))
        sock.sendall(reply)
        while sock.recv(1024):  # until the client closes
            pass


CLEAR_AFTER_GO_AHEAD = [
    ("a whole frame", encoder.encode(b"go ahead") + encoder.encode(b"injected"), 1, 0),
    ("part of a frame", encoder.encode(b"go ahead") + b"\x00\x00", 0, 2),
]


@pytest.mark.parametrize(
    "what, wire, frames, buffered", CLEAR_AFTER_GO_AHEAD, ids=[c[0] for c in CLEAR_AFTER_GO_AHEAD]
)
def test_blocking_client_refuses_bytes_after_go_ahead(
    what: str, wire: bytes, frames: int, buffered: int, pki: Any
) -> None:
    with raw_server() as listener, thread(serve_once, listener, wire):
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with framecodec.connect(address, timeout=TIMEOUT) as client:
            assert client.request(b"STARTTLS") == b"go ahead"
            # Both arrived in one read: the decoder holds them when start_tls comes.
            wait_until(lambda: client._decoder.buffered or client._frames, message="the bytes")
            with pytest.raises(StartTLSError) as caught:
                client.start_tls(client_context(pki), server_hostname="localhost")
            assert caught.value.buffered == buffered
            assert caught.value.frames == [b"injected"] * frames
            assert "in the clear" in str(caught.value)
            assert client.closed
            with pytest.raises(ConnectionClosed):
                client.send(b"more")


@pytest.mark.parametrize(
    "what, wire, frames, buffered", CLEAR_AFTER_GO_AHEAD, ids=[c[0] for c in CLEAR_AFTER_GO_AHEAD]
)
def test_aio_client_refuses_bytes_after_go_ahead(
    what: str, wire: bytes, frames: int, buffered: int, pki: Any
) -> None:
    async def main(address: str) -> None:
        conn = await aio.open_connection(address)
        async with conn:
            assert await conn.request(b"STARTTLS") == b"go ahead"
            for _ in range(1000):  # both came in one read, but let the loop deliver them
                if conn._decoder.buffered or conn._frames:
                    break
                await asyncio.sleep(0.001)
            with pytest.raises(StartTLSError) as caught:
                await conn.start_tls(client_context(pki), server_hostname="localhost")
            assert caught.value.buffered == buffered
            assert caught.value.frames == [b"injected"] * frames
            await conn.wait_closed()
            with pytest.raises(StartTLSError):
                await conn.recv()

    with raw_server() as listener, thread(serve_once, listener, wire):
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        asyncio.run(asyncio.wait_for(main(address), TIMEOUT))


def read_to_the_end(sock: socket.socket) -> bytes:
    """What ``sock`` receives until the peer closes (or resets)."""
    data = b""
    try:
        while chunk := sock.recv(1024):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class Recorder:
    """echo(), remembering every frame it was given."""

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, frame: bytes) -> Any:
        self.seen.append(frame)
        return echo(frame)


INJECTIONS = [
    ("a whole frame", encoder.encode(b"STARTTLS") + encoder.encode(b"injected")),
    ("part of a frame", encoder.encode(b"STARTTLS") + b"\x00\x00\x00"),
]


@pytest.mark.parametrize("what, wire", INJECTIONS, ids=[c[0] for c in INJECTIONS])
@pytest.mark.parametrize("kind", SERVERS)
def test_server_refuses_bytes_after_the_request(
    kind: str, what: str, wire: bytes, pki: Any, caplog: Any
) -> None:
    """What a client sent in the clear after its STARTTLS request (the
    command injection of CVE-2011-0411) is never handled: that connection
    is closed as a protocol error, unanswered, while another is served."""
    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="framecodec.server")
    with serving(kind, pki, recorder) as server, connect(server) as good:
        assert good.request(b"first") == b"FIRST"
        with socket.create_connection(server.address.sockaddr, TIMEOUT) as bad:
            bad.sendall(wire)  # one write, one segment on loopback: one read
            # Closed, unanswered (a per-connection handler sent its "go
            # ahead" before its start_tls() found the injected bytes).
            assert read_to_the_end(bad) in (b"", encoder.encode(b"go ahead"))
        wait_until(lambda: server.stats["protocol_errors"] == 1, message="the error")
        assert good.request(b"STARTTLS") == b"go ahead"
        good.start_tls(client_context(pki), server_hostname="localhost")
        assert good.request(b"still served") == b"STILL SERVED"
    assert b"injected" not in recorder.seen
    assert recorder.seen.count(b"STARTTLS") == 2
    assert any("in the clear" in record.getMessage() for record in caplog.records)


# -- refusals and failed handshakes close that connection only -----------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_starttls_refused_without_a_context(kind: str, pki: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="framecodec.server")
    with serving(kind, pki, starttls=False) as server, connect(server) as good:
        assert good.request(b"first") == b"FIRST"
        with connect(server) as refused:
            refused.send(b"STARTTLS")
            with pytest.raises((ConnectionClosed, ConnectionResetError)):
                for _ in range(2):  # a per-connection handler sent its reply first
                    assert refused.recv() == b"go ahead"
        wait_until(lambda: server.stats["tls_failures"] == 1, message="the refusal")
        assert good.request(b"second") == b"SECOND"
    messages = [record.getMessage() for record in caplog.records]
    assert any("STARTTLS refused" in m and "starttls_context" in m for m in messages), messages


def untrusting_context() -> ssl.SSLContext:
    """A client context that trusts another CA than the server's."""
    stranger = require_trustme().CA()
    return ssl.create_default_context(cadata=stranger.cert_pem.bytes().decode())


@pytest.mark.parametrize("kind", SERVERS)
def test_failed_handshake_closes_that_connection_only(kind: str, pki: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="framecodec.server")
    with serving(kind, pki) as server, connect(server) as good:
        assert good.request(b"STARTTLS") == b"go ahead"
        good.start_tls(client_context(pki), server_hostname="localhost")
        assert good.request(b"first") == b"FIRST"
        # One client that does not trust the certificate, one that
        # answers the go-ahead with bytes that are not TLS.
        with connect(server) as doubting:
            assert doubting.request(b"STARTTLS") == b"go ahead"
            with pytest.raises(ssl.SSLCertVerificationError):
                doubting.start_tls(untrusting_context(), server_hostname="localhost")
            assert doubting.closed
        with socket.create_connection(server.address.sockaddr, TIMEOUT) as confused:
            confused.sendall(encoder.encode(b"STARTTLS"))
            assert recv_exactly(confused, 12) == encoder.encode(b"go ahead")
            confused.sendall(b"HELO, this is not TLS\r\n")
            try:
                while confused.recv(1024):
                    pass
            except ConnectionResetError:
                pass
        wait_until(lambda: server.stats["tls_failures"] == 2, message="two failures")
        assert good.request(b"second") == b"SECOND"
    failed = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert len(failed) == 2, failed


def test_start_tls_twice_is_refused(pki: Any) -> None:
    with serving("selector", pki) as server, connect(server) as client:
        assert client.request(b"STARTTLS") == b"go ahead"
        client.start_tls(client_context(pki), server_hostname="localhost")
        with pytest.raises(ValueError, match="already TLS"):
            client.start_tls(client_context(pki), server_hostname="localhost")
        assert client.request(b"again") == b"AGAIN"  # still usable


@pytest.mark.parametrize("kind", SERVERS)
def test_handshake_never_begun_times_out(kind: str, pki: Any, caplog: Any) -> None:
    """A client that asks for TLS and then sends nothing is closed after the
    handshake timeout (frame_timeout; ssl_handshake_timeout for aio), while
    another is served."""
    caplog.set_level(logging.INFO, logger="framecodec.server")
    limit = {"ssl_handshake_timeout": 0.2} if kind.startswith("aio") else {"frame_timeout": 0.2}
    with serving(kind, pki, **limit) as server, connect(server) as good:
        with socket.create_connection(server.address.sockaddr, TIMEOUT) as silent:
            silent.sendall(encoder.encode(b"STARTTLS"))
            assert recv_exactly(silent, 12) == encoder.encode(b"go ahead")
            try:
                assert silent.recv(1024) == b""  # the server gave up on the handshake
            except ConnectionResetError:
                pass
        wait_until(lambda: server.stats["closed"] == 1, message="the silent one's end")
        assert server.stats["clean_closes"] == 0
        assert good.request(b"STARTTLS") == b"go ahead"
        good.start_tls(client_context(pki), server_hostname="localhost")
        assert good.request(b"served") == b"SERVED"


# -- the example of docs/starttls.md ----------------------------------------------------

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "starttls.md"


def test_the_documented_example_runs(pki: Any, capsys: Any) -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(example, str(DOC), "exec"), namespace)  # the docs block, as written
    namespace["main"](pki.cert, pki.key, pki.ca)
    version, reply = capsys.readouterr().out.split(" ", 1)
    assert version in ("TLSv1.2", "TLSv1.3")  # the docs show 1.3, what OpenSSL 3 picks
    assert reply.strip() == "b'SECRET'"


def test_the_documented_aio_client_runs(pki: Any) -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("```python\n", 2)[2].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(example, str(DOC), "exec"), namespace)  # the docs block, as written
    server = framecodec.serve(
        "127.0.0.1:0", echo, starttls_context=framecodec.server_context(pki.cert, pki.key)
    )
    with server.start():
        client = namespace["aio_client"](server.address, pki.ca)
        reply = asyncio.run(asyncio.wait_for(client, TIMEOUT))
    assert reply == b"SECRET"


def test_start_tls_over_a_unix_socket_needs_a_server_hostname(pki: Any) -> None:
    path = unix_path()
    context = framecodec.server_context(pki.cert, pki.key)
    server = framecodec.serve(f"unix:{path}", echo, starttls_context=context)
    with server.start(), connect(server) as client:
        assert client.request(b"STARTTLS") == b"go ahead"
        with pytest.raises(ValueError, match="server_hostname"):
            client.start_tls(client_context(pki))
        assert not client.closed  # nothing was touched: the caller can retry
        client.start_tls(client_context(pki), server_hostname="localhost")
        assert client.request(b"over unix") == b"OVER UNIX"


def test_aio_start_tls_over_a_unix_socket_needs_a_server_hostname(pki: Any) -> None:
    async def main() -> None:
        server = await aio.start_server(
            f"unix:{unix_path()}",
            echo,
            starttls_context=framecodec.server_context(pki.cert, pki.key),
        )
        async with server, await aio.open_connection(server.address) as conn:
            assert await conn.request(b"STARTTLS") == b"go ahead"
            with pytest.raises(ValueError, match="server_hostname"):
                await conn.start_tls(client_context(pki))
            assert not conn.closed  # nothing was touched: the caller can retry
            await conn.start_tls(client_context(pki), server_hostname="localhost")
            assert await conn.request(b"over unix") == b"OVER UNIX"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def generator_batch_echo(frames: list) -> Any:
    return (echo(frame) for frame in frames)


async def async_generator_batch_echo(frames: list) -> Any:
    return (echo(frame) for frame in frames)


@pytest.mark.parametrize(
    "kind, handler",
    [
        ("selector", generator_batch_echo),
        ("threads", generator_batch_echo),
        ("aio", generator_batch_echo),
        ("aio", async_generator_batch_echo),
    ],
)
def test_batch_handlers_may_return_generators(kind: str, handler: Any, pki: Any) -> None:
    """Replies looked at for a StartTLS are still all sent, whatever the
    iterable (a generator is read once)."""
    with serving(kind, pki, handler, batch=True) as server, connect(server) as client:
        client.send_many([b"a", b"b", b"c"])
        assert sorted(client.recv() for _ in range(3)) == [b"A", b"B", b"C"]
        assert client.request(b"STARTTLS") == b"go ahead"
        client.start_tls(client_context(pki), server_hostname="localhost")
        assert client.request(b"d") == b"D"
