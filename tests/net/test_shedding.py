"""Limits under abuse, on every backend (selector, threads, aio): the
default deadlines, max_connections with its overflow policy ("close_idle",
the default, or "reject"), and a steady client that bad peers do not starve.

The aio server runs on a loop of its own thread, so that one blocking test
body drives all three backends alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
import time
from typing import Any, Iterator, List

import pytest

import framecodec
from framecodec import FrameEncoder, aio
from framecodec.net.server import threads as threads_backend
from framecodec.net.server.base import IDLE_AGE
from framecodec.net.transport import ConnectionClosed

from ..net_support import TIMEOUT, bind_address, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")

ALL_BACKENDS = ("selector", "threads", "aio")
encoder = FrameEncoder()


def echo(frame: bytes) -> bytes:
    return frame


class AioServer:
    """An aio server in a thread of its own, seen as a blocking one."""

    def __init__(self, handler: Any, options: dict) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self._stop: Any = None

        async def main() -> None:
            server = await aio.start_server(bind_address("tcp4"), handler, **options)
            self.server = server
            self._stop = asyncio.Event()
            started.set()
            await self._stop.wait()
            server.close()
            await server.wait_closed()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self.thread.start()
        if not started.wait(TIMEOUT):
            raise AssertionError("the aio server did not start")
        self.address = self.server.address
        self.stats = self.server.stats

    @property
    def connections(self) -> List[Any]:
        return self.server.connections

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(TIMEOUT)
        self.loop.close()


@contextlib.contextmanager
def serving(backend: str, handler: Any = echo, **options: Any) -> Iterator[Any]:
    if backend == "aio":
        server = AioServer(handler, options)
        try:
            yield server
        finally:
            server.close()
    else:
        with framecodec.serve(bind_address("tcp4"), handler, backend=backend, **options) as s:
            s.start()
            yield s


@pytest.fixture(params=ALL_BACKENDS)
def any_backend(request: Any) -> str:
    return request.param  # type: ignore[no-any-return]


def raw(server: Any) -> socket.socket:
    sock = socket.create_connection(server.address.sockaddr, timeout=TIMEOUT)
    return sock


def test_every_backend_has_the_same_default_limits(any_backend):
    with serving(any_backend) as server:
        limits = server.server.admission if any_backend == "aio" else server
        assert limits.frame_timeout == 60.0
        assert limits.idle_timeout is None
        assert limits.overflow == "close_idle"
        if any_backend == "aio":
            assert server.server.write_timeout == 60.0
            assert limits.max_connections is None  # one loop, no thread per connection
        else:
            assert server.write_timeout == 60.0
            assert server.ssl_handshake_timeout == server.handshake_timeout == 60.0
            assert server.max_connections == 1024  # threads too: socketserver has no cap


SHARED_LIMITS = (
    "ssl_handshake_timeout",
    "frame_timeout",
    "idle_timeout",
    "write_timeout",
    "max_connections",
    "overflow",
)


def test_serve_and_start_server_share_the_names_and_defaults_of_their_limits():
    blocking = inspect.signature(framecodec.serve).parameters
    asynchronous = inspect.signature(aio.server.start_server).parameters
    defaults = {name: blocking[name].default for name in SHARED_LIMITS}
    assert defaults == {name: asynchronous[name].default for name in SHARED_LIMITS}
    assert defaults["max_connections"] is None  # the backend's own: see above
    assert defaults["ssl_handshake_timeout"] == defaults["frame_timeout"] == 60.0


def test_bad_peers_do_not_starve_a_steady_client(any_backend):
    """With default options: 12 peers that never read the replies to their
    1 MiB requests, 30 that send half a frame header and stop, 30 that send
    a byte now and then (72 in all: more than the threads backend's former
    capacity of 64); beside them a steady client sees zero errors."""
    with serving(any_backend) as server:
        bad: List[socket.socket] = []
        try:
            request = encoder.encode(b"x" * (1 << 20))
            for _ in range(12):
                sock = raw(server)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    for _ in range(8):  # until the kernel buffers are full
                        sock.send(request)
                bad.append(sock)
            for _ in range(30):
                sock = raw(server)
                sock.sendall(b"\0\0")
                bad.append(sock)
            dribblers = [raw(server) for _ in range(30)]
            bad.extend(dribblers)
            header = b"\0\0\0\x10"
            with framecodec.connect(server.address, timeout=TIMEOUT) as steady:
                for i in range(40):
                    assert steady.request(b"%d" % i) == b"%d" % i
                    if i < len(header):
                        for sock in dribblers:
                            sock.sendall(header[i : i + 1])
            assert server.stats["handler_errors"] == 0
        finally:
            for sock in bad:
                sock.close()


def test_frame_and_idle_deadlines_close_bad_peers(any_backend):
    """The deadlines, short: half a header is cut at frame_timeout, silence
    at idle_timeout, on every backend (aio had no frame deadline)."""
    with serving(any_backend, frame_timeout=0.3, idle_timeout=0.6) as server:
        half = raw(server)
        half.sendall(b"\0\0")
        silent = raw(server)
        assert half.recv(1) == b""  # closed by the server
        assert silent.recv(1) == b""
        wait_until(lambda: server.stats["timeouts"] == 2)
        half.close()
        silent.close()


def idle_clients(server: Any, count: int) -> List[framecodec.Client]:
    clients = [framecodec.connect(server.address, timeout=TIMEOUT) for _ in range(count)]
    for client in clients:
        assert client.request(b"hi") == b"hi"
    return clients


def test_reject_turns_new_clients_away_at_once(any_backend, caplog):
    """Refused at once (the end of the stream, well before the client's own
    timeout), counted in ``rejected``, logged once for the burst."""
    caplog.set_level(logging.WARNING, logger="framecodec.server")
    with serving(any_backend, max_connections=3, overflow="reject") as server:
        clients = idle_clients(server, 3)
        try:
            for _ in range(3):
                with framecodec.connect(server.address, timeout=TIMEOUT) as late:
                    began = time.monotonic()
                    with pytest.raises((ConnectionClosed, ConnectionError)):
                        late.request(b"let me in")
                    waited = time.monotonic() - began
                assert waited < TIMEOUT / 2, "refused at once, not at the client's timeout"
            wait_until(lambda: server.stats["rejected"] == 3)
            full = [r for r in caplog.records if "max_connections (3) reached" in r.message]
            assert len(full) == 1, [r.message for r in caplog.records]
            for client in clients:  # the clients in already keep working
                assert client.request(b"still") == b"still"
            assert server.stats["evicted"] == 0
        finally:
            for client in clients:
                client.close()


def test_close_idle_makes_room_for_a_new_client(any_backend):
    """At max_connections the longest-idle connection (silent for a second
    at least) is closed for the new one; the busy ones are left alone."""
    with serving(any_backend, max_connections=3) as server:
        clients = idle_clients(server, 3)
        idlest = clients[0]
        try:
            time.sleep(IDLE_AGE + 0.1)  # clients[0] is idle longest; the others speak again
            for client in clients[1:]:
                assert client.request(b"busy") == b"busy"
            with framecodec.connect(server.address, timeout=TIMEOUT) as late:
                assert late.request(b"let me in") == b"let me in"
                with pytest.raises((ConnectionClosed, ConnectionError)):
                    idlest.request(b"are you there")
                for client in clients[1:]:
                    assert client.request(b"still") == b"still"
            assert server.stats["evicted"] == 1
            assert server.stats["rejected"] == 0
        finally:
            for client in clients:
                client.close()


def test_threads_request_racing_its_eviction_is_not_run(monkeypatch):
    """The threads backend ends an idle connection's input to make room; a
    worker that wakes only after the client's next request has come (on a
    busy machine) reads it after the eviction: it is not run, and the
    client sees the connection end, as on the other backends."""
    ran: List[bytes] = []
    late_wake = threading.Event()

    def handler(frame: Any) -> bytes:
        ran.append(bytes(frame))
        return bytes(frame)

    real_receive = threads_backend.receive_at_most  # under the default memory budget

    def receive(sock: socket.socket, decoder: Any, limit: int) -> Any:
        if late_wake.is_set() and sock.getpeername()[1] == idle_port:
            late_wake.clear()
            time.sleep(IDLE_AGE + 1.0)  # asleep, counted as waiting, not in recv
        return real_receive(sock, decoder, limit)

    monkeypatch.setattr(threads_backend, "receive_at_most", receive)
    with serving("threads", handler, max_connections=1) as server:
        idle = framecodec.connect(server.address, timeout=TIMEOUT)
        idle_port = idle.socket.getsockname()[1]
        try:
            late_wake.set()
            assert idle.request(b"hi") == b"hi"  # its worker's next read sleeps
            time.sleep(IDLE_AGE + 0.1)
            with framecodec.connect(server.address, timeout=TIMEOUT) as late:
                assert late.request(b"let me in") == b"let me in"
                assert server.stats["evicted"] == 1
                with pytest.raises((ConnectionClosed, ConnectionError)):
                    idle.request(b"are you there")  # sent before the worker reads
            assert b"are you there" not in ran
        finally:
            idle.close()


def test_close_idle_refuses_when_no_connection_is_idle(any_backend):
    """Every connection inside a frame: none to close, so the new client is
    turned away at once, not left waiting."""
    with serving(any_backend, max_connections=2) as server:
        busy = [raw(server) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(b"\0\0\0\x10ab")  # a frame begun
            wait_until(lambda: len(server.connections) == 2)
            time.sleep(0.05)  # let the server read those bytes
            late = framecodec.connect(server.address, timeout=TIMEOUT)
            with late, pytest.raises((ConnectionClosed, ConnectionError)):
                late.request(b"let me in")
            wait_until(lambda: server.stats["rejected"] == 1)
            for sock in busy:  # they finish their frames and are answered
                sock.sendall(b"c" * 14)
                assert sock.recv(18)[:4] == b"\0\0\0\x10"
        finally:
            for sock in busy:
                sock.close()


def test_threads_capacity_plus_one_is_served():
    """A threads server at capacity (default overflow) serves one client
    more at once, closing its idlest connection, never leaving it in the
    backlog; with overflow="wait" that client would wait."""
    with serving("threads", max_connections=4) as server:
        clients = idle_clients(server, 4)
        try:
            time.sleep(IDLE_AGE + 0.1)
            with framecodec.connect(server.address, timeout=TIMEOUT) as fifth:
                assert fifth.request(b"5") == b"5"
            assert server.stats["evicted"] == 1
        finally:
            for client in clients:
                client.close()


def test_overflow_wait_is_refused_by_aio():
    async def start() -> None:
        await aio.start_server(bind_address("tcp4"), echo, overflow="wait")

    with pytest.raises(ValueError, match="overflow='wait' is for the blocking servers"):
        asyncio.run(start())


def test_dribbled_tls_handshakes_do_not_starve_a_steady_client(any_backend, pki):
    """With default options: 70 TLS peers (more than the threads backend's
    former capacity of 64) that send the start of a ClientHello, then a
    byte now and then; a steady TLS client is served meanwhile, zero errors."""
    context = framecodec.server_context(pki.cert, pki.key)
    with serving(any_backend, ssl_context=context) as server:
        dribblers = [raw(server) for _ in range(70)]
        try:
            for sock in dribblers:
                sock.sendall(b"\x16\x03\x01")  # a handshake record begins
            client_context = framecodec.client_context(pki.ca)
            options = {"ssl_context": client_context, "server_hostname": "localhost"}
            for _ in range(5):
                with framecodec.connect(server.address, timeout=TIMEOUT, **options) as steady:
                    for i in range(5):
                        assert steady.request(b"%d" % i) == b"%d" % i
                for sock in dribblers:
                    sock.sendall(b"\x00")
            assert server.stats["tls_failures"] == 0
        finally:
            for sock in dribblers:
                sock.close()


def test_close_idle_leaves_connections_silent_for_a_moment_alone(any_backend):
    """A steady client between two requests is not idle: at max_connections
    with every connection silent for less than IDLE_AGE, a new client is
    refused, and the others keep working."""
    with serving(any_backend, max_connections=2) as server:
        clients = idle_clients(server, 2)
        try:
            late = framecodec.connect(server.address, timeout=TIMEOUT)
            with late, pytest.raises((ConnectionClosed, ConnectionError)):
                late.request(b"let me in")
            for client in clients:
                assert client.request(b"still") == b"still"
            assert server.stats["evicted"] == 0
        finally:
            for client in clients:
                client.close()
