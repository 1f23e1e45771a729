"""asyncio integration: ``open_connection`` and ``start_server`` on the codec.

Each connection is an ``asyncio.BufferedProtocol`` whose ``get_buffer`` is
the decoder's own ``get_buffer`` and whose ``buffer_updated`` hands the
received byte count straight to the decoder's: the event loop reads into
the decoder's memory and no intermediate ``bytes`` object is made.  The same
addresses, protocols ("frames" with a format, or "messages") and TLS
contexts as the blocking layer apply; it runs on the default event loop and
on uvloop alike.

Client::

    conn = await open_connection("127.0.0.1:9000")
    reply = await conn.request(b"ping")      # send, then the next frame
    await conn.send(b"one-way")               # waits while the peer is slow
    async for frame in conn: ...              # until the peer closes
    await conn.close()

Server::

    async def handler(frame):                 # or a plain function
        return frame.upper()                  # the reply, or None for none

    server = await start_server("127.0.0.1:9000", handler)
    print(server.address)
    await server.serve_forever()

Handler shapes: a plain or coroutine function of one frame returning the
reply (or None); with ``batch=True``, of the list of frames one read
completed, returning a list of replies; with ``per_connection=True``, a
coroutine function called once per connection with its Connection (the
same object open_connection returns), for conversations of any shape.  A
plain function runs inside the read callback (the fastest path); coroutine
handlers run one frame (or batch) at a time per connection, in order.  A
handler exception or a protocol error closes that connection only, and is
logged on the "framecodec.server" logger.

Flow control: frames waiting for ``recv()`` or for a coroutine handler
count against ``high_water`` bytes; above it the connection stops reading
(pause_reading) until the backlog falls to half.  A server connection also
stops reading while its replies wait in the transport above ``high_water``
(the peer is not reading them).  ``send`` returns once the frame is handed
to the transport, or, when the transport holds more than ``high_water``
unsent bytes, once it has drained below its low-water mark.  Those bytes
are measured after each write, so the bound holds on transports that never
call pause_writing() from writelines() (CPython 3.12.0-3.12.8 and
3.13.0-3.13.1).

Reads and writes: the loop reads up to ``read_size`` bytes per call (256
KiB unless the options say otherwise, as asyncio's own transports read)
straight into the decoder.  Frames sent in one pass of the event loop are
joined into one write at its end (at once from 64 KiB on), so a loop of
small sends costs a system call per batch, not per frame; a small mutable
buffer is copied when sent, so the caller may reuse it at once.

uvloop keeps the read buffer exported until buffer_updated returns, and the
decoder never hands over memory still viewed: there, a frame of 64 KiB or
more is delivered as a copy, which the default loop avoids.

TLS: asyncio gives TLS no half-close, so a TLS peer's close_notify ends the
connection; replies to its last frames still pending in a coroutine handler
are dropped.  Plain connections stay open for those replies.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import socket
import ssl
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Deque,
    List,
    Optional,
    Set,
    Tuple,
    Union,
    cast,
)

from .addresses import Address, AddressLike, BoundSocket, bind_socket, parse_address
from .errors import IncompleteFrameError, ProtocolError
from .formats import FrameFormat
from .messages import Message
from .protocols import FrameProtocol, Protocol, make_protocol
from .service import logger
from .transport import ConnectionClosed

__all__ = ["Connection", "Server", "open_connection", "start_server"]

DEFAULT_HIGH_WATER = 1024 * 1024
# Frames sent in one pass of the event loop are joined into one write at the
# end of the pass, or at once when this much is waiting: a loop of small
# sends costs a system call per batch, not per frame.
CORK_BYTES = 64 * 1024
# Bytes read per system call unless read_size says otherwise: asyncio's own
# transports read this much, and a 64 KiB frame then costs no extra read.
READ_SIZE = 256 * 1024
# How often a pause the transport did not signal checks for drain: soon at
# first (a reader that is merely slow), then at most this seldom.
_DRAIN_POLL_FIRST = 0.001
_DRAIN_POLL_LAST = 0.05
# What get_buffer offers once input is over (a protocol error, or closing):
# bytes the loop still reads are dropped there, never given to a failed decoder.
_SCRATCH_SIZE = 64 * 1024

# Server handler modes.
_FRAME, _BATCH, _ASYNC_FRAME, _ASYNC_BATCH, _PER_CONNECTION = range(5)


def _message_size(message: Message) -> int:
    return len(message.content) + 64  # the header's share, roughly


class Connection(asyncio.BufferedProtocol):
    """One framed connection: the object open_connection returns.

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
        self._get_buffer: Callable[[int], memoryview] = self._decoder.get_buffer
        self._size: Callable[[Any], int] = (
            len if isinstance(protocol, FrameProtocol) else _message_size
        )
        self._loop = asyncio.get_running_loop()
        self._transport: Optional[asyncio.Transport] = None
        self._tls = False
        self._frames: Deque[Any] = collections.deque()
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
    def closed(self) -> bool:
        """True once the transport is closed (or closing)."""
        return self._lost.done() or self._transport is None or self._transport.is_closing()

    @property
    def reading_paused(self) -> bool:
        """Whether flow control has stopped reading (the backlog is over high_water)."""
        return self._reading_paused

    # -- sending ----------------------------------------------------------------------

    async def send(self, item: Any, **options: Any) -> None:
        """Send one frame (or message: content or Message, with content_type=...)."""
        self._write(self.protocol.encode(item, **options))
        if self._writing_paused:
            await self._drain()

    async def send_many(self, items: Any) -> None:
        """Send several frames with one write."""
        self._write(self.protocol.encode_many(items))
        if self._writing_paused:
            await self._drain()

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
        if transport is None or transport.is_closing():
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
        if transport is None or transport.is_closing():
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
        if not self._writing_paused or transport is None or self._lost.done():
            return  # resumed by the transport meanwhile, or gone
        low, _ = transport.get_write_buffer_limits()
        if transport.get_write_buffer_size() <= low:
            self.resume_writing()
        else:
            self._loop.call_later(delay, self._watch_drain, min(delay * 2, _DRAIN_POLL_LAST))

    def _close_transport(self) -> None:
        """Close after sending what is queued (here and in the transport)."""
        self._flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def _drain(self) -> None:
        if self._lost.done():
            raise ConnectionClosed("the connection is closed")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- receiving ----------------------------------------------------------------------

    async def recv(self) -> Any:
        """The next frame (a Message for protocol="messages")."""
        if self._frames:
            return self._take()
        if self._error is not None:
            raise self._error
        waiter: asyncio.Future[Any] = self._loop.create_future()
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

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._frames:
            return self._take()
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def _take(self) -> Any:
        frame = self._frames.popleft()
        self._queued -= self._size(frame)
        if self._reading_paused:
            self._update_reading()
        return frame

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

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- asyncio protocol callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._tls = transport.get_extra_info("sslcontext") is not None
        transport.set_write_buffer_limits(high=self.high_water)
        peer = transport.get_extra_info("peername")
        self.peer = Address.from_sockaddr(peer) if peer else None

    def get_buffer(self, sizehint: int) -> memoryview:
        # The decoder's own memory: the loop reads into it.  A method, not the
        # decoder's bound method set as an attribute, because loops (uvloop,
        # asyncio's TLS) keep the callable they are given at connection time.
        return self._get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._input_over:
            return  # scratch bytes after the end of input
        try:
            frames = self._decoder.buffer_updated(nbytes)
        except ProtocolError as exc:
            self._end_input()
            if exc.frames:
                self._deliver(exc.frames)
            self._protocol_error(exc)
            return
        if frames:
            self._deliver(frames)

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
        if self._error is None:
            error: BaseException
            if exc is None:
                error = ConnectionClosed("the connection is closed")
            else:
                error = exc
                if not self._input_over:
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
        if transport is None or self._input_over or transport.is_closing():
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
        scratch = memoryview(bytearray(_SCRATCH_SIZE))
        self._get_buffer = lambda sizehint: scratch

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


# -- server -------------------------------------------------------------------------------


class _ServerConnection(Connection):
    """A server's connection: frames go to the handler instead of a queue
    (except per_connection handlers, which read with recv())."""

    _stop_reading_while_writes_wait = True

    def __init__(self, server: Server) -> None:
        super().__init__(server.protocol, high_water=server.high_water)
        self.server = server
        self._mode = server._mode
        self._handler = server._handler
        self._pending: Deque[Any] = collections.deque()
        self._task: Optional[asyncio.Task[None]] = None
        self._close_when_idle = False

    @property
    def label(self) -> str:
        return str(self.peer) if self.peer else f"unnamed peer of {self.server.address}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._added(self)
        if self._mode == _PER_CONNECTION:
            self._start(self._run_per_connection())

    def _start(self, work: Any) -> None:
        task = self._loop.create_task(work)
        task.add_done_callback(self._work_done)
        self._task = task

    # -- frames to the handler -------------------------------------------------------

    def _deliver(self, frames: List[Any]) -> None:
        mode = self._mode
        if mode == _FRAME:
            handler = self._handler
            try:
                replies = [reply for reply in map(handler, frames) if reply is not None]
                if replies:
                    self._reply(self.protocol.encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
        elif mode == _BATCH:
            try:
                replies = self._handler(frames)
                if replies:
                    self._reply(self.protocol.encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
        elif mode == _PER_CONNECTION:
            super()._deliver(frames)
        else:
            self._pending.extend(frames)
            self._backlog_extra += sum(map(self._size, frames))
            if self._task is None:
                self._start(self._run_async())
            if self._backlog_extra > self.high_water:
                self._update_reading()

    def _reply(self, buffers: List[Any]) -> None:
        """A plain handler's replies to one read: written at once, one write."""
        transport = self._transport
        if transport is not None and not transport.is_closing():  # else the peer is gone
            self._write_to(transport, buffers)

    def _reply_later(self, buffers: List[Any]) -> None:
        """A coroutine handler's reply: joined with the others of this loop pass."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._queue(buffers)

    async def _run_async(self) -> None:
        pending = self._pending
        handler = self._handler
        encode_many = self.protocol.encode_many
        batch = self._mode == _ASYNC_BATCH
        while pending:
            if batch:
                frames = list(pending)
                pending.clear()
                self._backlog_extra = 0
            else:
                frame = pending.popleft()
                self._backlog_extra -= self._size(frame)
            if self._reading_paused:
                self._update_reading()
            try:
                if batch:
                    replies = await handler(frames)
                else:
                    reply = await handler(frame)
                    replies = [reply] if reply is not None else None
                if replies:
                    self._reply_later(encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
                return
            if self._writing_paused and not self._lost.done():
                try:
                    await self._drain()
                except ConnectionClosed:
                    pass  # what is still pending runs; its replies are dropped
        # Done, with no await since the last look at pending: frames that
        # arrive from now on start a new task.
        self._task = None

    async def _run_per_connection(self) -> None:
        try:
            await self._handler(self)
        except (ConnectionClosed, ProtocolError):
            pass  # the connection ended under the handler: already logged
        except Exception as exc:
            self._handler_failed(exc)

    def _work_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "%s: internal error on %s",
                self.server.address,
                self.label,
                exc_info=task.exception(),
            )
            self.abort()
        if self._task is not None:
            return  # a newer task carries on
        if self._mode == _PER_CONNECTION or self._close_when_idle:
            self._close_transport()
        else:
            self._flush()  # the last replies, now rather than at the end of the pass
        if self._lost.done():
            self.server._forget(self)

    # -- endings ------------------------------------------------------------------

    def _handler_failed(self, exc: Exception) -> None:
        self.server.count("handler_errors")
        logger.error(
            "%s: handler failed on %s; closing it", self.server.address, self.label, exc_info=exc
        )
        self._pending.clear()
        self._backlog_extra = 0
        if not self._input_over:
            self._end_input()
        self.abort()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.server.count("protocol_errors")
        logger.warning(
            "%s: protocol error from %s, closing it: %s", self.server.address, self.label, exc
        )
        self._set_error(exc)
        self._close_after_work()

    def _peer_finished(self) -> Optional[bool]:
        self._set_error(ConnectionClosed("the peer closed the connection"))
        if self._task is None or self._tls:
            return False  # the transport closes once our replies are sent
        self._close_when_idle = True
        return True  # half-open: the handler's replies still go out

    def _close_after_work(self) -> None:
        if self._task is None:
            self._close_transport()
        else:
            self._close_when_idle = True

    def _server_closing(self) -> None:
        """The server is closing: stop reading, finish the work in hand, close."""
        if not self._input_over:
            transport = self._transport
            if transport is not None and not transport.is_closing() and not self._tls:
                # Not under TLS: the TLS layer must still read the peer's
                # close_notify to finish closing (asyncio before 3.11 pauses
                # the socket itself, and then waits for it until aborted).
                # What is read after this goes to the scratch buffer.
                transport.pause_reading()
            self._end_input()
        self._set_error(ConnectionClosed("the server is closing"))
        self._close_after_work()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.server._lost_connection(self, exc)
        if self._task is None:
            self.server._forget(self)

    def _cancel(self) -> None:
        self.abort()
        if self._task is not None:
            self._task.cancel()


class Server:
    """A listening asyncio server; make one with start_server().

    ``address`` is the bound address (the real port when 0 was asked for),
    ``connections`` the open connections, ``stats`` a Counter (accepted,
    closed, handler_errors, protocol_errors).  ``close()`` stops accepting
    and closes each connection once the work in hand is done and its
    replies are sent, aborting what remains after ``shutdown_timeout``;
    ``await wait_closed()`` waits for that.  ``await serve_forever()`` runs
    until close() or cancellation.  ``async with`` closes on exit.
    """

    def __init__(
        self,
        bound: BoundSocket,
        handler: Any,
        mode: int,
        *,
        protocol: Protocol,
        ssl_context: Optional[ssl.SSLContext],
        high_water: int,
        shutdown_timeout: float,
    ) -> None:
        self._bound = bound
        self._handler = handler
        self._mode = mode
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.high_water = high_water
        self.shutdown_timeout = shutdown_timeout
        self.stats: collections.Counter[str] = collections.Counter()
        self._open: Set[_ServerConnection] = set()
        self._server: Optional[asyncio.AbstractServer] = None
        self._closing = False
        self._close_requested = asyncio.Event()
        self._all_closed = asyncio.Event()
        self._abort_timer: Optional[asyncio.TimerHandle] = None

    def __repr__(self) -> str:
        tls = " TLS" if self.ssl_context is not None else ""
        return f"<aio{tls} Server {self.protocol.name} {self.address}>"

    @property
    def address(self) -> Address:
        return self._bound.address

    @property
    def connections(self) -> List[Connection]:
        return list(self._open)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    async def _start(self, backlog: int, handshake_timeout: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"backlog": backlog}
        if self.ssl_context is not None:
            options["ssl"] = self.ssl_context
            options["ssl_handshake_timeout"] = handshake_timeout
        sock = self._bound.sock
        if sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(
                lambda: _ServerConnection(self), sock=sock, **options
            )
        else:
            self._server = await loop.create_server(
                lambda: _ServerConnection(self), sock=sock, **options
            )

    # -- bookkeeping -----------------------------------------------------------------

    def _added(self, conn: _ServerConnection) -> None:
        self._open.add(conn)
        self.stats["accepted"] += 1
        logger.info("%s: connection from %s", self.address, conn.label)
        if self._closing:  # its TLS handshake finished after close(): close it too
            self._all_closed.clear()
            conn._server_closing()
            self._arm_abort_timer()

    def _lost_connection(self, conn: _ServerConnection, exc: Optional[BaseException]) -> None:
        self.stats["closed"] += 1
        if exc is None:
            logger.info("%s: %s closed", self.address, conn.label)
        else:
            logger.info("%s: %s lost: %r", self.address, conn.label, exc)

    def _forget(self, conn: _ServerConnection) -> None:
        self._open.discard(conn)
        if self._closing and not self._open:
            self._finish()

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; close every connection once its work is done."""
        if self._closing:
            return
        self._closing = True
        self._close_requested.set()
        if self._server is not None:
            self._server.close()
        self._bound.close()  # removes a Unix socket file
        for conn in list(self._open):
            conn._server_closing()
        if self._open:
            self._arm_abort_timer()
        else:
            self._finish()

    def _arm_abort_timer(self) -> None:
        """Abort what is still open shutdown_timeout seconds from now."""
        if self._abort_timer is None:
            self._abort_timer = asyncio.get_running_loop().call_later(
                self.shutdown_timeout, self._abort_all
            )

    def _abort_all(self) -> None:
        if self._open:
            logger.warning(
                "%s: %d connections still busy after %s s; aborting them",
                self.address,
                len(self._open),
                self.shutdown_timeout,
            )
        for conn in list(self._open):
            conn._cancel()

    def _finish(self) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        self._all_closed.set()

    async def wait_closed(self) -> None:
        """Wait until close() has finished: listener and connections gone.

        A TLS handshake still under way at close() is invisible until it
        completes (asyncio shows no connection before); that connection is
        then closed at once, and wait_closed() called later waits for it.
        """
        await self._all_closed.wait()
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until close() is called; cancelling it closes the server."""
        try:
            await self._close_requested.wait()
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise
        await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()
        await self.wait_closed()


def _with_read_size(protocol: Union[str, Protocol], options: dict[str, Any]) -> dict[str, Any]:
    if isinstance(protocol, str) and "read_size" not in options:
        return {**options, "read_size": READ_SIZE}
    return options


def _is_coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    )


def _handler_mode(handler: Any, batch: bool, per_connection: bool) -> int:
    if not callable(handler) or isinstance(handler, type):
        raise TypeError(
            f"handler must be a function or coroutine function, not {handler!r} "
            "(ConnectionHandler classes are for framecodec.serve)"
        )
    asynchronous = _is_coroutine_function(handler)
    if per_connection:
        if batch:
            raise ValueError("batch=True and per_connection=True do not combine")
        if not asynchronous:
            raise TypeError("per_connection=True needs a coroutine function (async def)")
        return _PER_CONNECTION
    if asynchronous:
        return _ASYNC_BATCH if batch else _ASYNC_FRAME
    return _BATCH if batch else _FRAME


async def start_server(
    address: Union[AddressLike, socket.socket],
    handler: Any,
    *,
    protocol: Union[str, Protocol] = "frames",
    batch: bool = False,
    per_connection: bool = False,
    ssl_context: Optional[ssl.SSLContext] = None,
    ssl_handshake_timeout: Optional[float] = 60.0,
    high_water: int = DEFAULT_HIGH_WATER,
    shutdown_timeout: float = 5.0,
    backlog: int = 512,
    reuse_address: bool = True,
    reuse_port: bool = False,
    format: Union[str, FrameFormat, None] = None,
    **options: Any,
) -> Server:
    """Bind ``address``, start accepting, and return the Server.

    ``address`` may also be a bound socket (listening or not), which the
    server takes over and closes when it closes.  ``reuse_port=True`` lets
    servers in several processes share a TCP port, the kernel spreading
    connections over them (SO_REUSEPORT; see framecodec.workers).

    ``handler``, ``batch`` and ``per_connection``: see the module docstring.
    ``protocol``, ``format`` and the options are those of framecodec.serve;
    ``ssl_context`` (framecodec.server_context) serves TLS.  ``high_water``
    is each connection's budget in bytes for frames waiting for a
    coroutine handler and for unsent replies (see Flow control above).
    """
    mode = _handler_mode(handler, batch, per_connection)
    if high_water < 2:
        raise ValueError("high_water must be at least 2 bytes")
    proto = make_protocol(protocol, format, **_with_read_size(protocol, options))
    if isinstance(address, socket.socket):
        bound = BoundSocket(address)
    else:
        bound = bind_socket(
            address,
            socket.SOCK_STREAM,
            backlog=backlog,
            reuse_address=reuse_address,
            reuse_port=reuse_port,
        )
    try:
        server = Server(
            bound,
            handler,
            mode,
            protocol=proto,
            ssl_context=ssl_context,
            high_water=high_water,
            shutdown_timeout=shutdown_timeout,
        )
        await server._start(backlog, ssl_handshake_timeout if ssl_context is not None else None)
    except BaseException:
        bound.close()
        raise
    return server


async def open_connection(
    address: AddressLike,
    *,
    protocol: Union[str, Protocol] = "frames",
    ssl_context: Optional[ssl.SSLContext] = None,
    server_hostname: Optional[str] = None,
    timeout: Optional[float] = None,
    high_water: int = DEFAULT_HIGH_WATER,
    format: Union[str, FrameFormat, None] = None,
    **options: Any,
) -> Connection:
    """Connect to ``address`` and return a Connection.

    ``protocol``, ``format`` and the options are those of framecodec.connect;
    with ``ssl_context`` the connection is TLS, checked against
    ``server_hostname`` (default: the address's host; give it for Unix
    sockets).  ``timeout`` bounds connecting and the TLS handshake
    (TimeoutError).
    """
    proto = make_protocol(protocol, format, **_with_read_size(protocol, options))
    target = parse_address(address)
    loop = asyncio.get_running_loop()
    hostname = server_hostname if server_hostname is not None else target.host
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        tls = {"ssl": ssl_context, "server_hostname": hostname}

    def factory() -> Connection:
        return Connection(proto, high_water=high_water, address=target)

    async def connect() -> Connection:
        conn: Connection
        if target.is_unix:
            # Connected here, not by the loop, so that abstract names
            # (unix:@name) work on every loop.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, target.sockaddr)
                _, conn = await loop.create_unix_connection(factory, sock=sock, **tls)
            except BaseException:
                sock.close()
                raise
        else:
            host, port = target.sockaddr
            _, conn = await loop.create_connection(factory, host, port, **tls)
        return conn

    if timeout is None:
        return await connect()
    try:
        return await asyncio.wait_for(connect(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"connecting to {target} timed out after {timeout} s") from None
