"""framecodec.aio's connection: the asyncio protocol a client gets from
open_connection(), and the base of a server's connections (see __init__ for
the whole story: handlers, flow control, reads and writes, TLS)."""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    cast,
    overload,
)

from ..codec.messages import Message
from ..errors import ConnectionClosed, IncompleteFrameError, ProtocolError
from ..net.addresses import Address
from ..net.lowwater import LowWater, low_water
from ..net.protocols import ASYNC_READ_SIZE, FrameProtocol, Protocol
from ..net.server.endings import DEFAULT_HIGH_WATER
from ..net.tls import handshake_failed, refused_after_handshake
from ..net.transport import ConnectionState, keep_stream_start, stream_start
from ..net.types import ItemT
from .starttls import check_upgrade, upgrade

if TYPE_CHECKING:
    from ..net.types import FrameData, MessageContent

__all__ = ["Connection"]

OPEN, CLOSING, CLOSED = ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED

# Frames sent in one pass of the event loop are joined into one write at the
# end of the pass, or at once when this much is waiting: a loop of small
# sends costs a system call per batch, not per frame.
CORK_BYTES = 64 * 1024
# Bytes read per system call unless read_size says otherwise.
READ_SIZE = ASYNC_READ_SIZE
# How often a pause the transport did not signal checks for drain: soon at
# first (a reader that is merely slow), then at most this seldom.
_DRAIN_POLL_FIRST = 0.001
_DRAIN_POLL_LAST = 0.05
# What get_buffer offers once input is over (a protocol error, or closing):
# bytes the loop still reads are dropped there, never given to a failed
# decoder.  One for all connections: what lands in it is never read, and an
# event loop reads into one buffer at a time.
_SCRATCH = memoryview(bytearray(16 * 1024))


def _scratch(sizehint: int) -> memoryview:
    return _SCRATCH


def _message_size(message: Message) -> int:
    return len(message.content) + 64  # the header's share, roughly


class Connection(asyncio.BufferedProtocol, Generic[ItemT]):
    """One framed connection: the object open_connection returns
    (``Connection[bytes]`` for frames, ``Connection[Message]`` for messages).

    ``await send(item)``, ``await send_many(items)``, ``await recv()``,
    ``await request(item)`` (send, then receive the reply), ``async for
    frame in conn``, ``await close()``; also an async context manager.

    recv() returns frames (bytes) or Messages in order; once they are all
    taken it raises ConnectionClosed at a clean end of stream, or the error
    that ended the connection (IncompleteFrameError if the peer vanished
    inside a frame, another ProtocolError, an OSError).  request() reserves
    its place among the receivers when it sends, so concurrent requests
    from several tasks each get their own reply (the peer answers in
    order); a request cancelled while waiting drops its reply when it comes.

    It is also the asyncio protocol of its transport: ``get_buffer`` is the
    decoder's, and ``buffer_updated`` passes the byte count to the decoder's.
    """

    _stop_reading_while_writes_wait = False  # a client must keep reading: no deadlock
    _client_side = True  # a server's connections: False

    def __init__(
        self,
        protocol: Protocol,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        address: Optional[Address] = None,
    ) -> None:
        if high_water < 2:
            raise ValueError("high_water must be at least 2 bytes")
        self.protocol = protocol
        self.address = address
        self.peer: Optional[Address] = None
        self.high_water = high_water
        self.low_water = high_water // 2
        self._decoder = protocol.new_decoder()
        # Swapped for a scratch buffer once input is over (see get_buffer).
        # Until the first bytes arrive, the view handed out is kept here, so
        # that buffer_updated can keep them; then the loop reads straight
        # into the decoder.
        self._get_buffer: Callable[[int], memoryview] = self._get_first_buffer
        self._first_view: Optional[memoryview] = None
        self._size: Callable[[Any], int] = (
            len if isinstance(protocol, FrameProtocol) else _message_size
        )
        self._loop = asyncio.get_running_loop()
        self._state = OPEN  # CLOSING once closing was asked for, CLOSED when the transport is lost
        self._transport: Optional[asyncio.Transport] = None
        self._tls = False
        self._receive_mark: Optional[LowWater] = None
        self._upgrading = False  # a STARTTLS handshake under way (see starttls.py)
        self._held: List[Any] = []  # frames that came as it ended
        self._frames: Deque[ItemT] = collections.deque()
        self._queued = 0  # bytes of _frames
        self._backlog_extra = 0  # bytes a server holds for its handler
        # recv() and request() callers waiting, oldest first; True marks a
        # request, whose reply is dropped if it was cancelled meanwhile.
        self._waiters: Deque[Tuple[asyncio.Future[Any], bool]] = collections.deque()
        self._error: Optional[BaseException] = None  # raised once _frames is empty
        self._input_over = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: List[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._out: List[Any] = []  # buffers waiting for the end of this loop pass
        self._out_size = 0
        self._flush_handle: Optional[asyncio.Handle] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.protocol.name} {self.address or self.peer} {state}>"

    # -- properties -------------------------------------------------------------------

    @property
    def transport(self) -> Optional[asyncio.Transport]:
        return self._transport

    @property
    def state(self) -> ConnectionState:
        """OPEN, CLOSING once closing was asked for (by close(), or by a
        server once its handler is done), CLOSED once the transport is gone."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once the transport is closed (or closing)."""
        return self._state is CLOSED or self._transport is None or self._transport.is_closing()

    @property
    def reading_paused(self) -> bool:
        """Whether flow control has stopped reading (the backlog is over high_water)."""
        return self._reading_paused

    # -- sending ----------------------------------------------------------------------

    @overload
    async def send(
        self: Connection[bytes], item: FrameData, *, prefix: Optional[bytes] = ...
    ) -> None: ...

    @overload
    async def send(
        self: Connection[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> None: ...

    async def send(self, item: Any, **options: Any) -> None:
        """Send one frame (or message: content or Message, with content_type=...)."""
        self._write(self.protocol.encode(item, **options))
        if self._writing_paused:
            await self._drain()

    @overload
    async def send_many(self: Connection[bytes], items: Iterable[FrameData]) -> None: ...

    @overload
    async def send_many(self: Connection[Message], items: Iterable[MessageContent]) -> None: ...

    async def send_many(self, items: Iterable[Any]) -> None:
        """Send several frames with one write."""
        self._write(self.protocol.encode_many(items))
        if self._writing_paused:
            await self._drain()

    @overload
    async def request(
        self: Connection[bytes], item: FrameData, *, prefix: Optional[bytes] = ...
    ) -> bytes: ...

    @overload
    async def request(
        self: Connection[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> Message: ...

    async def request(self, item: Any, **options: Any) -> Any:
        """Send ``item`` and return the reply: the next frame in receiving order."""
        self._write(self.protocol.encode(item, **options))
        if self._frames:
            reply = self._take()
        else:
            if self._error is not None:
                raise self._error
            waiter: asyncio.Future[Any] = self._loop.create_future()
            self._waiters.append((waiter, True))  # our place, taken as the bytes leave
            if self._writing_paused:
                await self._drain()
            reply = await waiter
        if self._writing_paused:
            await self._drain()
        return reply

    def _write(self, buffers: List[Any]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._upgrading:
            reason = f": {self._error}" if self._error is not None else ""
            raise ConnectionClosed(f"the connection is closed{reason}")
        self._queue(buffers)

    def _queue(self, buffers: List[Any]) -> None:
        """Add to this pass's write; a large one goes out at once."""
        out = self._out
        size = self._out_size
        for buffer in buffers:
            if type(buffer) is not bytes and len(buffer) < CORK_BYTES:
                buffer = bytes(buffer)  # the caller may reuse a bytearray once send returns
            out.append(buffer)
            size += len(buffer)
        self._out_size = size
        if size >= CORK_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand what is queued to the transport, in one write."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        out = self._out
        if not out:
            return
        self._out = []
        self._out_size = 0
        transport = self._transport
        if transport is None or transport.is_closing() or self._state is CLOSED:
            return  # lost meanwhile: nowhere to send
        self._write_to(transport, out)

    def _write_to(self, transport: asyncio.Transport, buffers: List[Any]) -> None:
        """One write of ``buffers``, then flow control by the bytes it left queued."""
        if len(buffers) == 1:
            transport.write(buffers[0])
        else:
            transport.writelines(buffers)
        if not self._writing_paused and transport.get_write_buffer_size() > self.high_water:
            # The transport should have called pause_writing() and did not:
            # CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never do from
            # writelines() (gh-127655), and so never call resume_writing()
            # either.  Pause by the buffer's real size and watch it drain.
            self.pause_writing()
            self._watch_drain(_DRAIN_POLL_FIRST)

    def _watch_drain(self, delay: float) -> None:
        """Resume writing once the transport's buffer is at its low-water
        mark, for a pause the transport itself does not know about."""
        transport = self._transport
        if not self._writing_paused or transport is None or self._state is CLOSED:
            return  # resumed by the transport meanwhile, or gone
        low, _ = transport.get_write_buffer_limits()
        if transport.get_write_buffer_size() <= low:
            self.resume_writing()
        else:
            self._loop.call_later(delay, self._watch_drain, min(delay * 2, _DRAIN_POLL_LAST))

    def _closing(self) -> None:
        if self._state is OPEN:
            self._state = CLOSING

    def _close_transport(self) -> None:
        """Close after sending what is queued (here and in the transport)."""
        self._closing()
        self._flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def _drain(self) -> None:
        if self._state is CLOSED:
            raise ConnectionClosed("the connection is closed")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- receiving ----------------------------------------------------------------------

    async def recv(self) -> ItemT:
        """The next frame (a Message for protocol="messages")."""
        if self._frames:
            return self._take()
        if self._error is not None:
            raise self._error
        waiter: asyncio.Future[ItemT] = self._loop.create_future()
        entry = (waiter, False)
        self._waiters.append(entry)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # The frame came as we were cancelled: it stays first in line.
                frame = waiter.result()
                self._frames.appendleft(frame)
                self._queued += self._size(frame)
            else:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
            raise

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self

    async def __anext__(self) -> ItemT:
        if self._frames:
            return self._take()
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def _take(self) -> ItemT:
        frame = self._frames.popleft()
        self._queued -= self._size(frame)
        if self._reading_paused:
            self._update_reading()
        return frame

    # -- STARTTLS ---------------------------------------------------------------------

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: Optional[str] = None,
        ssl_handshake_timeout: Optional[float] = 60.0,
    ) -> None:
        """Upgrade this plain connection to TLS after the exchange that agreed
        on it, as framecodec.Client.start_tls does (see aio/starttls.py):
        bytes received in the clear and not yet taken raise StartTLSError; a
        failed handshake (ssl.SSLError, ConnectionAbortedError after
        ``ssl_handshake_timeout`` s) is raised; either closes the connection."""
        check_upgrade(self)
        if server_hostname is None and self.address is not None:
            server_hostname = self.address.host
        await upgrade(self, ssl_context, False, server_hostname, ssl_handshake_timeout)

    # -- closing ----------------------------------------------------------------------

    async def close(self, timeout: Optional[float] = 5.0) -> None:
        """Send what is queued, close, and wait until the transport is gone;
        after ``timeout`` seconds (None: no limit) abort instead.  Frames
        already received stay readable."""
        transport = self._transport
        if self._error is None:
            self._set_error(ConnectionClosed("the connection was closed here"))
        if transport is None:
            return
        self._close_transport()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except asyncio.TimeoutError:
            transport.abort()
            await asyncio.shield(self._lost)

    def abort(self) -> None:
        """Close at once, dropping unsent data."""
        self._out = []
        self._out_size = 0
        if self._transport is not None:
            self._transport.abort()

    def write_eof(self) -> None:
        """Send what is queued, then end our direction of the stream
        (TCP and Unix sockets; not TLS): the peer sees a clean end while
        its replies can still come back."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionClosed("the connection is closed")
        self._flush()
        self._transport.write_eof()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    async def __aenter__(self) -> Connection[ItemT]:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- asyncio protocol callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._tls = transport.get_extra_info("sslcontext") is not None
        # A large frame wakes the loop once, not per segment (net/lowwater.py).
        self._receive_mark = low_water(transport.get_extra_info("socket"), tls=self._tls)
        transport.set_write_buffer_limits(high=self.high_water)
        peer = transport.get_extra_info("peername")
        self.peer = Address.from_sockaddr(peer) if peer else None

    def get_buffer(self, sizehint: int) -> memoryview:
        # The decoder's own memory: the loop reads into it.  A method, not the
        # decoder's bound method set as an attribute, because loops (uvloop,
        # asyncio's TLS) keep the callable they are given at connection time.
        # The loop's hint is not passed on (asyncio allows a buffer of any
        # size): uvloop asks for 256 KiB every time, and the decoder sizes
        # its room by how the last reads went (up to read_size) instead.
        return self._get_buffer(-1)

    def _get_first_buffer(self, sizehint: int) -> memoryview:
        view: memoryview = self._decoder.get_buffer(sizehint)
        self._first_view = view  # the latest: a read may fail and be retried
        return view

    def buffer_updated(self, nbytes: int) -> None:
        if self._input_over:
            return  # scratch bytes after the end of input
        start = None
        if self._first_view is not None:  # the first read: keep the stream's first bytes
            start = stream_start(self._first_view, nbytes)
            self._first_view = None
            self._get_buffer = self._decoder.get_buffer
        try:
            frames = self._decoder.buffer_updated(nbytes)
        except ProtocolError as exc:
            if start is not None:
                keep_stream_start(exc, start)
            self._end_input()
            if exc.frames:
                self._deliver(exc.frames)
            self._protocol_error(exc)
            return
        if self._receive_mark is not None:
            self._receive_mark.follow(self._decoder)
        if frames:  # those of a TLS handshake's last read wait for its transport
            self._held.extend(frames) if self._upgrading else self._deliver(frames)

    def eof_received(self) -> Optional[bool]:
        if self._input_over:
            return False
        self._end_input()
        try:
            self._decoder.eof()
        except IncompleteFrameError as exc:
            self._protocol_error(exc)
            return False
        return self._peer_finished()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._lost.done():
            return  # reported already (a failed STARTTLS handshake: see starttls.py)
        if self._error is None:
            error: BaseException
            if exc is None:
                error = ConnectionClosed("the connection is closed")
            else:
                error = exc
                if (
                    self._tls
                    and self._client_side
                    and self._get_buffer == self._get_first_buffer
                    and refused_after_handshake(exc)
                ):
                    error = handshake_failed(self.address or self.peer, exc)  # TLS 1.3
                    error.__cause__ = exc
                elif not self._input_over:
                    try:
                        self._decoder.eof()  # lost between frames: report the loss itself
                    except IncompleteFrameError as incomplete:
                        incomplete.__cause__ = exc
                        error = incomplete
            self._set_error(error)
        self._input_over = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out = []
        self._out_size = 0
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("the connection was lost"))
        self._state = CLOSED
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._stop_reading_while_writes_wait:
            self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._stop_reading_while_writes_wait:
            self._update_reading()

    # -- delivery and flow control -------------------------------------------------------

    def _deliver(self, frames: List[Any]) -> None:
        """Hand frames to waiting receivers in order; queue the rest."""
        waiters = self._waiters
        if waiters:
            for index, frame in enumerate(frames):
                while waiters:
                    waiter, is_request = waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(frame)
                        break
                    if is_request:
                        break  # the reply of a cancelled request: dropped
                else:
                    frames = frames[index:]
                    break
            else:
                return
        self._frames.extend(frames)
        self._queued += sum(map(self._size, frames))
        if self._queued > self.high_water:
            self._update_reading()

    def _update_reading(self) -> None:
        """Pause or resume reading by the backlog (and, for servers, by
        replies waiting for a peer that does not read them)."""
        transport = self._transport
        if transport is None or self._input_over or transport.is_closing() or self._upgrading:
            return
        backlog = self._queued + self._backlog_extra
        blocked = self._writing_paused and self._stop_reading_while_writes_wait
        if self._reading_paused:
            if not blocked and backlog <= self.low_water:
                self._reading_paused = False
                transport.resume_reading()
        elif blocked or backlog > self.high_water:
            self._reading_paused = True
            transport.pause_reading()

    def _end_input(self) -> None:
        """No more frames: bytes the loop still reads go to a scratch buffer."""
        self._input_over = True
        self._get_buffer = _scratch

    def _set_error(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        waiters = self._waiters
        while waiters:
            waiter, _ = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._set_error(exc)
        self._close_transport()

    def _peer_finished(self) -> Optional[bool]:
        """The peer closed its side after whole frames; True keeps ours open."""
        self._set_error(ConnectionClosed("the peer closed the connection"))
        return False
