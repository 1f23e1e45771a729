"""Helpers shared by the network tests (tests/net, tests/aio, ...); their
fixtures are in net_fixtures.py."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import pytest

import framecodec

FAMILIES = ("tcp4", "tcp6", "unix")
BACKENDS = ("selector", "threads")
TIMEOUT = 10.0  # the bound on every blocking socket call and join in the tests


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def unix_path() -> str:
    return f"/tmp/fc-{uuid.uuid4().hex[:12]}.sock"  # short: sun_path holds 108 bytes


def bind_address(family: str) -> str:
    if family == "tcp4":
        return "127.0.0.1:0"
    if family == "tcp6":
        if not has_ipv6_loopback():
            pytest.skip("this machine has no IPv6 loopback")
        return "[::1]:0"
    return "unix:" + unix_path()


class Net:
    """One point of the test matrix (family x TLS): serves and connects with
    the right addresses and TLS settings, and closes all it made."""

    def __init__(self, family: str, tls: bool, pki: Optional[SimpleNamespace]) -> None:
        self.family = family
        self.tls = tls
        self.pki = pki
        self._stack = contextlib.ExitStack()

    def __repr__(self) -> str:
        return f"{self.family}{'-tls' if self.tls else ''}"

    def server_context(self) -> Any:
        return framecodec.server_context(self.pki.cert, self.pki.key) if self.tls else None

    def client_options(self) -> dict:
        if not self.tls:
            return {}
        return {
            "ssl_context": framecodec.client_context(self.pki.ca),
            "server_hostname": "localhost",
        }

    def serve(self, handler: Any, **options: Any) -> framecodec.Server:
        options.setdefault("ssl_context", self.server_context())
        server = framecodec.serve(bind_address(self.family), handler, **options)
        return self._stack.enter_context(server.start())  # type: ignore[return-value]

    def connect(self, server: Any, **options: Any) -> framecodec.Client:
        options.setdefault("timeout", TIMEOUT)
        options = {**self.client_options(), **options}
        return self._stack.enter_context(framecodec.connect(server.address, **options))

    def raw(self, server: Any, tls: Any = None) -> socket.socket:
        """A plain socket (TLS-wrapped on TLS points unless tls=False) to ``server``."""
        sock = socket.socket(server.address.family, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        self._stack.callback(sock.close)
        sock.connect(server.address.sockaddr)
        if self.tls if tls is None else tls:
            wrapped = framecodec.client_context(self.pki.ca).wrap_socket(
                sock, server_hostname="localhost"
            )
            self._stack.callback(wrapped.close)
            return wrapped
        return sock

    def close(self) -> None:
        self._stack.close()


def wait_until(condition: Any, timeout: float = TIMEOUT, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.005)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError(f"{size} bytes short")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@contextlib.contextmanager
def thread(target: Any, *args: Any) -> Iterator[threading.Thread]:
    """Run ``target`` in a thread for the block; join it (bounded) after."""
    worker = threading.Thread(target=target, args=args, daemon=True)
    worker.start()
    try:
        yield worker
    finally:
        worker.join(TIMEOUT)
        assert not worker.is_alive(), "helper thread did not finish"


def half_closing_client(
    address: Any,
    frames: Any,
    *,
    context: Any = None,
    close_notify: bool = False,
    server_hostname: str = "localhost",
) -> list:
    """Send ``frames`` on a plain blocking socket, end our side with a TCP
    FIN (under TLS with no close_notify, or after one if ``close_notify``),
    then read replies until the server closes; returns the replies.

    TLS runs over memory buffers so that the close_notify is written
    without reading: ssl.SSLSocket.unwrap() waits for the server's and
    fails on the replies that come first.
    """
    from framecodec import FrameEncoder
    from framecodec.net.addresses import parse_address

    target = parse_address(address)
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(target.sockaddr)
        encoded = b"".join(FrameEncoder().encode(frame) for frame in frames)
        if context is None:
            sock.sendall(encoded)
            sock.shutdown(socket.SHUT_WR)
            return _read_replies(lambda: sock.recv(1 << 16))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)

        def send_out() -> None:
            data = outgoing.read()
            if data:
                sock.sendall(data)

        def read_in() -> bool:
            data = sock.recv(1 << 16)
            incoming.write(data)
            return bool(data)

        for _ in range(100):  # a handshake takes a few round trips
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                send_out()
                if not read_in():
                    raise ConnectionError("closed during the handshake") from None
        tls.write(encoded)
        if close_notify:
            try:
                tls.unwrap()  # writes close_notify; stops there, with nothing read
            except ssl.SSLWantReadError:
                pass
        send_out()
        sock.shutdown(socket.SHUT_WR)

        def read() -> bytes:
            while True:
                try:
                    return tls.read(1 << 16)  # type: ignore[no-any-return]
                except ssl.SSLWantReadError:
                    if not read_in():
                        return b""
                except ssl.SSLZeroReturnError:
                    return b""  # the server's close_notify

        return _read_replies(read)
    finally:
        sock.close()


def _read_replies(read: Any) -> list:
    from framecodec import FrameDecoder

    decoder, replies = FrameDecoder(), []
    for _ in range(100_000):  # bounded: each read takes at least a byte or ends
        data = read()
        if not data:
            break
        replies += decoder.feed(data)
    decoder.eof()
    return replies


@contextlib.contextmanager
def closing_listener(count: int = 1) -> Iterator[str]:
    """A plain TCP listener on 127.0.0.1 that closes each of ``count``
    connections as soon as it accepts it (a TLS client's handshake then
    meets the end of the stream); yields its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        for _ in range(count):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    worker = threading.Thread(target=serve)
    worker.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        worker.join(TIMEOUT)
        listener.close()


def check_handshake_error(exc: BaseException, address: str) -> None:
    """What every client raises for a TLS handshake the server ended."""
    from framecodec import TLSHandshakeError

    assert isinstance(exc, TLSHandshakeError), repr(exc)
    assert isinstance(exc, OSError) and isinstance(exc, type(exc.__cause__))  # still caught so
    assert isinstance(exc.__cause__, OSError)
    assert str(exc).startswith(f"TLS handshake with {address} failed: the server closed")
