"""Many client connections from one thread: the classic multiconn-client, done right.

::

    with MultiClient(timeout=5) as clients:
        for address in servers:
            clients.connect(address).send(b"ping")
        for conn, frame in clients:      # (connection, frame) as they arrive
            print(conn.address, frame)
            conn.close()

Connects are non-blocking (each resolved address tried in turn; resolving
a name is a blocking getaddrinfo in connect()), TLS
handshakes are stepped without blocking, sends are queued and flushed when
the socket is writable, and frames arrive through poll(), iteration or
run(callback).  A connection that fails or ends leaves the set, with the
reason in its ``error`` (None for a clean end); the others go on.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import ssl
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Set,
    Tuple,
    Union,
    overload,
)

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from .addresses import Address, AddressLike, candidates, parse_address, tune
from .protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol
from .tls import handshake_failed, refused_after_handshake, tolerate_bare_eof
from .transport import ConnectionClosed, ConnectionState, Stream
from .types import ItemT

if TYPE_CHECKING:
    from .types import FrameData, MessageContent

__all__ = ["ClientConnection", "MultiClient"]

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
# A Unix listener with a full backlog answers a non-blocking connect with
# EAGAIN (not EINPROGRESS): try again after this long, doubling each time
# up to the maximum.
UNIX_RETRY = 0.002
UNIX_RETRY_MAX = 0.05

# Module-level names: the loop compares them on every event.
OPEN, CLOSING, CLOSED = ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED


class ClientConnection(Generic[ItemT]):
    """One connection of a MultiClient.

    ``send``/``send_many`` queue frames (usable before the connection is
    established); ``close()`` sends what is queued, then closes.  ``data`` is
    free for the caller's state.
    """

    def __init__(
        self, owner: MultiClient[ItemT], address: Address, server_hostname: Optional[str], data: Any
    ) -> None:
        self.address = address
        self.data = data
        self.error: Optional[BaseException] = None
        self.state = OPEN  # ``ready`` says whether it is established yet
        self.stream: Optional[Stream] = None  # once the socket is connected
        self._owner = owner
        self._server_hostname = server_hostname
        self._candidates = candidates(address)
        self._sock: Optional[socket.socket] = None  # while connecting
        self._retry_at: Optional[float] = None
        self._retry_delay = UNIX_RETRY
        self._first_error: Optional[OSError] = None  # reported if no address works
        self._verdict_pending = False  # TLS, and nothing read yet after the handshake
        self._early: List[Any] = []  # buffers sent before the connection is up
        self._started = time.monotonic()

    def __repr__(self) -> str:
        state = self.state.value
        if self.state is not CLOSED and not self.ready:
            state += ", connecting"
        return f"<ClientConnection {self.address} {state}>"

    @property
    def closed(self) -> bool:
        """The connection is gone (``error`` says why, None for a clean end)."""
        return self.state is CLOSED

    @property
    def closing(self) -> bool:
        """close() was called; the connection is not closed yet."""
        return self.state is CLOSING

    @property
    def ready(self) -> bool:
        """Connected, and past the TLS handshake."""
        return self.stream is not None and not self.stream.handshaking

    @property
    def pending(self) -> int:
        """Bytes queued, not yet sent."""
        if self.stream is None:
            return sum(map(len, self._early))
        return self.stream.output.size

    @overload
    def send(
        self: ClientConnection[bytes], item: FrameData, *, prefix: Optional[bytes] = ...
    ) -> None: ...

    @overload
    def send(
        self: ClientConnection[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> None: ...

    def send(self, item: Any, **options: Any) -> None:
        self._queue(self._owner.protocol.encode(item, **options))

    @overload
    def send_many(self: ClientConnection[bytes], items: Iterable[FrameData]) -> None: ...

    @overload
    def send_many(self: ClientConnection[Message], items: Iterable[MessageContent]) -> None: ...

    def send_many(self, items: Iterable[Any]) -> None:
        self._queue(self._owner.protocol.encode_many(items))

    def close(self) -> None:
        """Stop reading; close once queued frames are sent."""
        if self.state is OPEN:
            self.state = CLOSING
        self._owner._settle(self)

    def _queue(self, buffers: List[Any]) -> None:
        if self.state is not OPEN:
            raise ConnectionClosed(f"connection to {self.address} is closed")
        if self.stream is None:
            self._early += [bytes(buffer) for buffer in buffers]
        else:
            self.stream.output.push(buffers)
            self._owner._settle(self)


class MultiClient(Generic[ItemT]):
    """A set of client connections served by one selector.

    ``timeout`` bounds connecting (and the TLS handshake) of each connection;
    ``on_close(connection)`` is called when one ends.  All connections share
    ``protocol`` and its options, and ``ssl_context`` when given.
    ``MultiClient[bytes]`` receives frames, ``MultiClient[Message]`` messages.
    """

    @overload
    def __init__(
        self: MultiClient[bytes],
        *,
        protocol: Union[Literal["frames"], FrameProtocol] = ...,
        ssl_context: Optional[ssl.SSLContext] = ...,
        timeout: Optional[float] = ...,
        on_close: Optional[Callable[[ClientConnection[bytes]], None]] = ...,
        format: Union[str, FrameFormat, None] = ...,
        width: int = ...,
        byteorder: str = ...,
        length_offset: int = ...,
        length_adjustment: int = ...,
        strip: Optional[int] = ...,
        max_frame_size: int = ...,
        discard_oversized: bool = ...,
        prealloc_limit: int = ...,
        read_size: int = ...,
        large_length_escape: bool = ...,
        max_frame_length: Optional[int] = ...,
        on_oversized: Literal["fail", "discard", "raise"] = ...,
        checksum: Optional[Literal["crc32c"]] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: MultiClient[Message],
        *,
        protocol: Union[Literal["messages"], MessageProtocol],
        ssl_context: Optional[ssl.SSLContext] = ...,
        timeout: Optional[float] = ...,
        on_close: Optional[Callable[[ClientConnection[Message]], None]] = ...,
        format: None = ...,
        max_header_size: int = ...,
        max_content_size: int = ...,
        read_size: int = ...,
        prealloc_limit: int = ...,
        on_oversized: Literal["fail", "discard", "raise"] = ...,
    ) -> None: ...

    def __init__(
        self,
        *,
        protocol: Union[str, Protocol] = "frames",
        ssl_context: Optional[ssl.SSLContext] = None,
        timeout: Optional[float] = None,
        on_close: Optional[Callable[[Any], None]] = None,
        format: Union[str, FrameFormat, None] = None,
        **options: Any,
    ) -> None:
        self.protocol = make_protocol(protocol, format, **options)
        self.ssl_context = ssl_context if ssl_context is None else tolerate_bare_eof(ssl_context)
        self.timeout = timeout
        self.on_close = on_close
        self._selector = selectors.DefaultSelector()
        self._open: Set[ClientConnection[ItemT]] = set()
        self._connecting: Set[ClientConnection[ItemT]] = set()
        self._received: List[Tuple[ClientConnection[ItemT], ItemT]] = []

    @property
    def connections(self) -> List[ClientConnection[ItemT]]:
        return list(self._open)

    def connect(
        self, address: AddressLike, *, server_hostname: Optional[str] = None, data: Any = None
    ) -> ClientConnection[ItemT]:
        """Start connecting to ``address``; returns at once."""
        target = parse_address(address)
        conn = ClientConnection(self, target, server_hostname, data)
        self._open.add(conn)
        self._connecting.add(conn)
        self._try_next(conn)
        return conn

    # -- receiving ------------------------------------------------------------------

    def poll(self, timeout: Optional[float] = None) -> List[Tuple[ClientConnection[ItemT], ItemT]]:
        """Wait up to ``timeout`` for I/O once; return the (connection, frame)
        pairs it completed (maybe none)."""
        self._retry_due()
        if not self._open:
            return []
        wait = self._next_deadline()
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        for key, mask in self._selector.select(wait):
            conn = key.data
            if conn.stream is None:
                self._connect_done(conn)
            else:
                self._service(conn, mask)
        self._expire_connects()
        received, self._received = self._received, []
        return received

    def frames(
        self, timeout: Optional[float] = None
    ) -> Iterator[Tuple[ClientConnection[ItemT], ItemT]]:
        """(connection, frame) pairs until no connection is left; TimeoutError
        if none arrives for ``timeout`` seconds."""
        last = time.monotonic()
        while self._open:
            remaining = None if timeout is None else last + timeout - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no frame in {timeout} s from {len(self._open)} connection(s)")
            received = self.poll(remaining)
            if received:
                last = time.monotonic()
                yield from received

    __iter__ = frames

    def run(
        self,
        callback: Callable[[ClientConnection[ItemT], ItemT], None],
        timeout: Optional[float] = None,
    ) -> None:
        """Call ``callback(connection, frame)`` for each frame until no
        connection is left (the callback closes them when done)."""
        for conn, frame in self.frames(timeout):
            callback(conn, frame)

    def close(self) -> None:
        """Close every connection now, sent or not."""
        for conn in list(self._open):
            self._end(conn, None)
        self._selector.close()

    def __enter__(self) -> MultiClient[ItemT]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- connecting -------------------------------------------------------------------

    def _try_next(self, conn: ClientConnection[ItemT]) -> None:
        """Start a non-blocking connect to the next resolved address."""
        while conn._candidates:
            family, type_, proto, sockaddr = conn._candidates[0]
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            err = sock.connect_ex(sockaddr)
            if err == errno.EAGAIN and family == socket.AF_UNIX:
                sock.close()
                conn._retry_at = time.monotonic() + conn._retry_delay
                conn._retry_delay = min(UNIX_RETRY_MAX, conn._retry_delay * 2)
                return
            conn._candidates.pop(0)
            if err == 0:
                self._connected(conn, sock)
                return
            if err == errno.EINPROGRESS:
                conn._sock = sock
                self._selector.register(sock, EVENT_WRITE, conn)
                return
            sock.close()
            conn._first_error = conn._first_error or _os_error(err, conn.address)
        self._end(conn, conn._first_error or OSError(f"cannot connect to {conn.address}"))

    def _connect_done(self, conn: ClientConnection[ItemT]) -> None:
        sock = conn._sock
        assert sock is not None
        self._selector.unregister(sock)
        conn._sock = None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            conn._first_error = conn._first_error or _os_error(err, conn.address)
            self._try_next(conn)
        else:
            self._connected(conn, sock)

    def _connected(self, conn: ClientConnection[ItemT], sock: socket.socket) -> None:
        try:
            tune(sock)
            if self.ssl_context is not None:
                hostname = (
                    conn._server_hostname
                    if conn._server_hostname is not None
                    else conn.address.host
                )
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=hostname, do_handshake_on_connect=False
                )
        except (OSError, ValueError) as exc:
            sock.close()
            self._end(conn, exc)
            return
        conn.stream = Stream(sock, self.protocol.new_decoder())
        conn.stream.output.push(conn._early)
        conn._early = []
        self._service(conn, EVENT_WRITE)

    def _not_ready(self) -> List[ClientConnection[ItemT]]:
        """Connections still connecting or in their handshake (the others are
        dropped from the set, so each poll looks at these only)."""
        for conn in list(self._connecting):
            if conn.ready or conn.state is CLOSED:
                self._connecting.discard(conn)
        return list(self._connecting)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for conn in self._not_ready():
            if conn._retry_at is not None and now >= conn._retry_at:
                conn._retry_at = None
                self._try_next(conn)

    def _next_deadline(self) -> Optional[float]:
        """Seconds until a connect retry is due or a connect times out."""
        pending = self._not_ready()
        due = [c._retry_at for c in pending if c._retry_at is not None]
        if self.timeout is not None:
            due += [c._started + self.timeout for c in pending]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _expire_connects(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for conn in self._not_ready():
            if now - conn._started >= self.timeout:
                what = "TLS handshake" if conn.stream is not None else "connect"
                self._end(
                    conn, TimeoutError(f"{what} to {conn.address} timed out after {self.timeout} s")
                )

    # -- I/O ---------------------------------------------------------------------------

    def _service(self, conn: ClientConnection[ItemT], mask: int) -> None:
        stream = conn.stream
        assert stream is not None
        handshaking = stream.handshaking
        try:
            if handshaking:
                if not stream.handshake():
                    stream.watch(self._selector, True, conn)
                    return
                handshaking = False
                conn._verdict_pending = True  # see Client._verdict_pending
                mask |= EVENT_READ  # the first frames may already sit inside OpenSSL
            readable = mask & EVENT_READ or (mask & EVENT_WRITE and stream.read_wants_write)
            if readable and not (stream.at_eof or conn.state is CLOSING):
                frames = stream.read()
                if frames:
                    conn._verdict_pending = False
                self._received += [(conn, frame) for frame in frames]
            self._settle(conn)
        except Exception as exc:  # OSError, ssl.SSLError: this connection only
            if handshaking or (conn._verdict_pending and refused_after_handshake(exc)):
                error = handshake_failed(conn.address, exc)
                error.__cause__ = exc
                exc = error  # type: ignore[assignment]
            self._end(conn, exc)

    def _settle(self, conn: ClientConnection[ItemT]) -> None:
        """Send what is queued; close if finished; else re-arm the selector."""
        stream = conn.stream
        if stream is None or conn.state is CLOSED or stream.handshaking:
            if conn.state is CLOSING and stream is None and not conn._early:
                self._end(conn, None)
            return
        if stream.output:
            stream.flush()
        if stream.at_eof:
            self._end(conn, stream.error)  # None: the server closed between frames
        elif conn.state is CLOSING and not stream.output:
            self._end(conn, None)
        else:
            stream.watch(self._selector, conn.state is not CLOSING, conn)

    def _end(self, conn: ClientConnection[ItemT], error: Optional[BaseException]) -> None:
        if conn.state is CLOSED:
            return
        conn.state = CLOSED
        conn.error = error
        self._open.discard(conn)
        if conn._sock is not None:
            self._selector.unregister(conn._sock)
            conn._sock.close()
            conn._sock = None
        if conn.stream is not None:
            conn.stream.close(self._selector)
        if self.on_close is not None:
            self.on_close(conn)


def _os_error(err: int, address: Address) -> OSError:
    # OSError(errno, ...) is built as its subclass: ConnectionRefusedError...
    return OSError(err, f"{os.strerror(err)}: {address}")
