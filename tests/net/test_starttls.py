"""STARTTLS: a plain connection upgraded to TLS after an exchange of frames,
between the blocking and asyncio clients and every server backend
(selector, threads, aio), with real TLS (trustme certificates)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from typing import Any, Iterator

import pytest

import framecodec
from framecodec import FrameEncoder, aio
from framecodec.net import StartTLS

from ..net_fixtures import require_trustme
from ..net_support import TIMEOUT, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")
require_trustme(allow_module_level=True)  # every test here runs real TLS

SERVERS = ("selector", "threads", "aio")
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
    if kind == "aio":
        with AioServerThread(handler, **options) as server:
            yield server
    else:
        with framecodec.serve("127.0.0.1:0", handler, backend=kind, **options).start() as server:
            yield server


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
        with framecodec.connect(server.address, timeout=TIMEOUT) as client:
            expected = b"plain in the clear" if telling else b"PLAIN"
            assert client.request(b"plain") == expected
            assert client.request(b"STARTTLS") == b"go ahead"
            client.start_tls(client_context(pki), server_hostname="localhost")
            for i in range(5):
                expected = f"secret {i} over TLS" if telling else f"SECRET {i}"
                assert client.request(f"secret {i}".encode()) == expected.encode()
        wait_until(lambda: server.stats["closed"] == 1, message="the connection's end")
        assert server.stats["clean_closes"] == 1
