"""The blocking client: ``connect(address, ...) -> Client``.

A socket, a decoder and a deque of decoded frames.  recv() reads with
``recv_into(decoder.get_buffer())`` until a frame is complete; send() writes
a frame's header and payload with one vectored call.

Timeouts: ``timeout`` bounds connecting, each recv() as a whole (the frame
must be complete in time), and each wait of a send for progress.  A recv()
that times out consumed nothing that is lost, so the client stays usable; a
send that times out after part of a frame went out leaves the stream
unusable, so the client closes itself and says so.

Reconnecting (opt-in, backoff.py): a lost connection is ConnectionClosed for
the call that found it, and the next call opens a new one.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Deque,
    Generic,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Union,
    overload,
)

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from ..errors import BufferTooSmallError, IncompleteFrameError, ProtocolError
from .addresses import Address, AddressLike, parse_address
from .backoff import Backoff, Opener, Reconnected, ReconnectHook, as_lost, logger, resume
from .protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol
from .tls import (
    check_starttls_input,
    connect_stream,
    handshake_failed,
    refused_after_handshake,
    tolerate_bare_eof,
)
from .transport import ConnectionClosed, OutputQueue, close_socket, receive
from .types import ItemT

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from .types import FrameData, MessageContent

__all__ = ["Backoff", "BufferTooSmallError", "Client", "Reconnected", "connect"]


class Client(Generic[ItemT]):
    """A connected blocking client; make one with connect().

    ``recv()`` returns the next frame (bytes) or Message; at a clean end of
    stream it raises ConnectionClosed, and IncompleteFrameError if the peer
    vanished inside a frame.  Frames completed before a protocol error are
    delivered first; the error is raised after them.  Iterating yields
    frames until the peer closes.  ``Client[bytes]`` receives frames,
    ``Client[Message]`` messages.

    With ``connect(..., reconnect=Backoff(...))`` a lost connection raises
    ConnectionClosed in the call that found out (its request is never sent
    again) and the next call reconnects first (``reconnects`` counts them).
    One thread at a time uses a client; close() may come from any.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: Protocol,
        *,
        timeout: Optional[float] = None,
        address: Optional[Address] = None,
    ) -> None:
        self._sock = sock
        self.protocol = protocol
        self.address = address
        self._decoder = protocol.new_decoder()
        self._tls = isinstance(sock, ssl.SSLSocket)
        # TLS 1.3: the server's verdict on our certificate comes after our
        # side of the handshake, as an alert at the first read.
        self._verdict_pending = self._tls
        self._output = OutputQueue(tls=self._tls)
        self._frames: Deque[ItemT] = deque()
        self._error: Optional[BaseException] = None  # raised once _frames is empty
        self._closed = False
        self.timeout = timeout
        # Reconnecting (set by connect()): the error that ended the connection
        # is raised once (_reported); the next call reconnects unless closed.
        self._policy: Optional[Backoff] = None
        self._opener: Optional[Opener] = None
        self._on_reconnect: Optional[ReconnectHook] = None
        self._reported = False
        self._closed_by_user = False
        self._woken = threading.Event()
        self.reconnects = 0
        """How many times this client has reconnected."""

    # -- properties -----------------------------------------------------------------

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        if value is not None and value <= 0:
            raise ValueError("timeout must be positive or None")
        self._timeout = value
        self._sock.settimeout(value)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- sending --------------------------------------------------------------------

    @overload
    def send(self: Client[bytes], item: FrameData, *, prefix: Optional[bytes] = ...) -> None: ...

    @overload
    def send(
        self: Client[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> None: ...

    def send(self, item: Any, **options: Any) -> None:
        """Send one frame (or message: content or Message, with content_type=...)."""
        self._write(self.protocol.encode(item, **options))

    @overload
    def send_many(self: Client[bytes], items: Iterable[FrameData]) -> None: ...

    @overload
    def send_many(self: Client[Message], items: Iterable[MessageContent]) -> None: ...

    def send_many(self, items: Iterable[Any]) -> None:
        """Send several frames in one vectored write."""
        self._write(self.protocol.encode_many(items))

    def send_file(self: Client[bytes], file: BinaryIO, count: Optional[int] = None) -> int:
        """Send one frame whose payload is ``count`` bytes of ``file`` from its
        current position (all the rest by default); return the payload size.

        The kernel copies the bytes (socket.sendfile), except where it cannot
        (TLS, files without a descriptor), where they are read and sent.
        With a checksum, the bytes are read once first to compute it.
        """
        protocol = self._frame_protocol("send_file")
        start = file.tell()
        size = count if count is not None else file.seek(0, os.SEEK_END) - start
        file.seek(start)
        header = protocol.header(size)
        trailer = protocol.file_trailer(header, file, start, size)
        self._write([header])
        try:
            sent = self._sock.sendfile(file, start, size) if size else 0
        except BaseException as exc:
            raise self._cut_short(exc, "a frame was cut short while sending a file") from exc
        if sent != size:
            raise self._cut_short(
                None, f"the file ended after {sent} of the {size} bytes announced"
            )
        if trailer:
            self._write([trailer])
        return size

    def _write(self, buffers: List[Any]) -> None:
        if self._closed:
            self._resume(sending=True)
        output = self._output
        sock = self._sock
        total = 0
        intact = True  # no byte of these buffers has gone out yet
        try:
            if len(buffers) == 1 and not self._tls:
                # The usual write, one buffer (a small frame, a batch): send()
                # it without the queue's bookkeeping.
                buffer = buffers[0]
                sent = sock.send(buffer)
                if sent == len(buffer):
                    return
                intact = False
                buffers = [memoryview(buffer)[sent:]]
            output.push(buffers)
            total = output.size
            output.flush(sock)
        except BaseException as exc:
            if intact and output.size == total:  # nothing went out: the stream is intact
                output.clear()
                if isinstance(exc, socket.timeout):
                    raise TimeoutError(f"send made no progress in {self._timeout} s") from None
                if self._policy is not None and isinstance(exc, OSError):
                    # A reset or a broken pipe: this connection is gone.
                    self._fail(exc)
                    self._raise_error()
                raise
            raise self._cut_short(exc, "a frame was cut short while sending") from exc

    # -- receiving ------------------------------------------------------------------

    def recv(self) -> ItemT:
        """The next frame (a Message for protocol="messages")."""
        frames = self._frames
        if not frames:
            if self._timeout is None and self._error is None and not self._closed:
                self._read_until_frame(None)  # no deadline to keep: straight to reading
            else:
                self._fill()
        return frames.popleft()

    def recv_into(self: Client[bytes], buffer: WriteableBuffer, offset: int = 0) -> int:
        """Copy the next frame's payload into ``buffer`` at ``offset``; return its size.

        A buffer too small raises BufferTooSmallError (with ``.needed``) and
        keeps the frame for the next call.
        """
        self._frame_protocol("recv_into")
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError("recv_into needs a writable buffer")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        if not 0 <= offset <= len(view):
            raise ValueError(f"offset must be between 0 and {len(view)}")
        if not self._frames:
            self._fill()
        frame = self._frames[0]
        size = len(frame)
        if size > len(view) - offset:
            raise BufferTooSmallError(size, len(view) - offset)
        view[offset : offset + size] = frame
        self._frames.popleft()
        return size

    @overload
    def request(
        self: Client[bytes], item: FrameData, *, prefix: Optional[bytes] = ...
    ) -> bytes: ...

    @overload
    def request(
        self: Client[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> Message: ...

    def request(self, item: Any, **options: Any) -> Any:
        """send(item), then recv()."""
        self._write(self.protocol.encode(item, **options))
        return self.recv()

    def __iter__(self) -> Iterator[ItemT]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def _fill(self) -> None:
        """Read until at least one frame is queued."""
        if self._error is not None or self._closed:
            self._resume(sending=False)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            self._read_until_frame(deadline)
        finally:
            if deadline is not None and not self._closed:
                self._sock.settimeout(self._timeout)  # sends wait for progress, not a deadline

    def _read_until_frame(self, deadline: Optional[float]) -> None:
        sock = self._sock
        decoder = self._decoder
        frames = self._frames
        while not frames:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no complete frame within {self._timeout} s")
                sock.settimeout(remaining)
            try:
                completed = receive(sock, decoder)
                if completed is not None:
                    self._verdict_pending = False
                    frames.extend(completed)
                    continue
                self._fail(ConnectionClosed("the peer closed the connection"))
            except TimeoutError:
                raise TimeoutError(f"no complete frame within {self._timeout} s") from None
            except ProtocolError as exc:
                frames.extend(exc.frames)
                self._fail(exc)
            except ConnectionResetError as exc:
                try:
                    decoder.eof()  # between frames: report the reset itself
                except IncompleteFrameError as incomplete:
                    incomplete.__cause__ = exc
                    self._fail(incomplete)
                else:
                    self._fail(exc)
            except OSError as exc:
                if self._verdict_pending and refused_after_handshake(exc):
                    error = handshake_failed(self.address, exc)
                    error.__cause__ = exc
                    exc = error  # type: ignore[assignment]
                self._fail(exc)
            if not frames:
                self._raise_error()

    # -- STARTTLS -------------------------------------------------------------------

    def start_tls(
        self, ssl_context: ssl.SSLContext, *, server_hostname: Optional[str] = None
    ) -> None:
        """Upgrade this plain connection to TLS, after the exchange that
        agreed on it (the server's "go ahead" reply, received with recv()).

        ``server_hostname`` defaults to the address's host, as connect()'s.
        Frames or bytes received but not yet delivered at this point came in
        the clear after the "go ahead", which a correct server never sends:
        they raise StartTLSError (framecodec.errors) and close the client.
        The decoder carries over: it is between two frames with nothing
        buffered.  The handshake is bounded by ``timeout``; a failed one
        (ssl.SSLError, TimeoutError) closes the client.
        """
        self._check_open()
        if self._tls:
            raise ValueError("the connection is already TLS")
        try:
            check_starttls_input(self._decoder, list(self._frames))
        except BaseException as exc:
            self._frames.clear()  # they are the error's now (exc.frames)
            self._fail(exc)
            self._reported = True
            raise
        if server_hostname is None and self.address is not None:
            server_hostname = self.address.host
        if server_hostname is None and ssl_context.check_hostname:
            raise ValueError("start_tls() needs server_hostname here (a Unix socket has no host)")
        context = tolerate_bare_eof(ssl_context)
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=server_hostname)
        except BaseException as exc:
            if isinstance(exc, socket.timeout):
                exc = TimeoutError(f"TLS handshake timed out after {self._timeout} s")
            self._fail(exc)
            self._reported = True
            raise exc from None
        self._tls = True
        self._output = OutputQueue(tls=True)

    # -- closing -----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Close; recv() raises ``exc`` once the queued frames are read (and,
        reconnecting, the call after that reconnects)."""
        if self._policy is not None and self._error is None:
            exc = as_lost(exc, self.address)
            logger.info("%s: connection lost: %s; the next call reconnects", self.address, exc)
        self._error = exc
        self._reported = False
        self._shut()

    def _raise_error(self) -> None:
        self._reported = True
        raise self._error  # type: ignore[misc]

    def _resume(self, *, sending: bool) -> None:
        """A call on a closed client: raise why, or reconnect (backoff.py)."""
        resume(self, sending=sending)

    def _cut_short(self, cause: Optional[BaseException], what: str) -> BaseException:
        """A write stopped inside a frame: the stream is unusable, so close."""
        if isinstance(cause, (socket.timeout, TimeoutError)):
            error: BaseException = TimeoutError(
                f"send made no progress in {self._timeout} s; {what}; the client is closed"
            )
        else:
            error = ConnectionClosed(f"{what}; the client is closed")
        self._fail(error)
        self._reported = True  # the caller raises it
        return error

    def _check_open(self) -> None:
        if self._closed:
            if self._error is not None:
                raise ConnectionClosed(f"the client is closed: {self._error}")
            raise ConnectionClosed("the client is closed")

    def _frame_protocol(self, method: str) -> FrameProtocol:
        if not isinstance(self.protocol, FrameProtocol):
            raise TypeError(f"{method}() works on protocol='frames' only")
        return self.protocol

    def close(self) -> None:
        """Close the connection (idempotent), for good: a reconnecting client
        stops reconnecting (a reconnect's wait ends at once).  Frames
        already received stay readable."""
        self._closed_by_user = True
        self._woken.set()
        self._shut()

    def _shut(self) -> None:
        if not self._closed:
            self._closed = True
            close_socket(self._sock)

    def __enter__(self) -> Client[ItemT]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Client {self.protocol.name} {self.address} {state}>"


# For type checkers the options are keyword arguments, each overload with
# those of its protocol (frame format options, or MessageDecoder's), and the
# protocol (a literal name or a protocol object) says what recv() returns.
# The implementation passes them on to make_protocol, which refuses others.
@overload
def connect(
    address: AddressLike,
    *,
    protocol: Literal["frames"] = ...,
    timeout: Optional[float] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[ReconnectHook] = ...,
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
) -> Client[bytes]: ...


@overload
def connect(
    address: AddressLike,
    *,
    protocol: Literal["messages"],
    timeout: Optional[float] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[ReconnectHook] = ...,
    format: None = ...,
    max_header_size: int = ...,
    max_content_size: int = ...,
    read_size: int = ...,
    prealloc_limit: int = ...,
    on_oversized: Literal["fail", "discard", "raise"] = ...,
) -> Client[Message]: ...


@overload
def connect(
    address: AddressLike,
    *,
    protocol: FrameProtocol,
    timeout: Optional[float] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[ReconnectHook] = ...,
) -> Client[bytes]: ...


@overload
def connect(
    address: AddressLike,
    *,
    protocol: MessageProtocol,
    timeout: Optional[float] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[ReconnectHook] = ...,
) -> Client[Message]: ...


def connect(
    address: AddressLike,
    *,
    protocol: Union[str, Protocol] = "frames",
    timeout: Optional[float] = None,
    ssl_context: Optional[ssl.SSLContext] = None,
    server_hostname: Optional[str] = None,
    reconnect: Optional[Backoff] = None,
    on_reconnect: Optional[ReconnectHook] = None,
    format: Union[str, FrameFormat, None] = None,
    **options: Any,
) -> Client[Any]:
    """Connect to ``address`` (see framecodec.net.addresses) and return a Client.

    ``protocol`` is "frames" (``format`` preset plus frame options) or
    "messages" (MessageDecoder's options); a Client[bytes] receives frames,
    a Client[Message] messages.  With ``ssl_context`` the connection is TLS;
    ``server_hostname`` defaults to the address's host (give it for Unix
    sockets).  Certificate and host name errors raise ssl.SSLCertVerificationError.

    ``reconnect=Backoff(...)`` makes a client that reconnects (same
    address, TLS and options) on the call after the one that found its
    connection lost, waiting as the Backoff says; ``on_reconnect(client,
    Reconnected)`` is called on each new connection (a login or STARTTLS
    exchange goes there).  This first connection is not retried: its
    failure raises here.
    """
    if reconnect is not None and not isinstance(reconnect, Backoff):
        raise TypeError(f"reconnect must be a Backoff, not {type(reconnect).__name__}")
    if on_reconnect is not None and reconnect is None:
        raise ValueError("on_reconnect needs reconnect=Backoff(...)")
    proto = make_protocol(protocol, format, **options)
    target = parse_address(address)
    context = tolerate_bare_eof(ssl_context) if ssl_context is not None else None
    hostname = server_hostname if server_hostname is not None else target.host

    open_socket: Opener = lambda limit: connect_stream(target, limit, context, hostname)  # noqa: E731
    sock = open_socket(timeout)
    try:
        client: Client[Any] = Client(sock, proto, timeout=timeout, address=target)
    except BaseException:
        sock.close()
        raise
    if reconnect is not None:
        client._policy, client._opener, client._on_reconnect = reconnect, open_socket, on_reconnect
    return client
