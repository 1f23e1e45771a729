"""framecodec.anyio's server side: serve() and the Server it reports.

serve() listens with anyio.create_tcp_listener or create_unix_listener and
runs each connection as a task of its own task group.  Cancelling the
scope serve() runs in (or calling Server.close()) is a graceful shutdown:
accepting stops, each connection finishes the frame in hand and sends its
reply, and after ``shutdown_timeout`` seconds what is still busy is
cancelled.  Connections count and log their ends with the words of every
other framecodec server (framecodec.net.server.endings).
"""

from __future__ import annotations

import collections
import functools
import socket
import ssl
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    List,
    Literal,
    Optional,
    Set,
    Union,
    overload,
)

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from ..codec.formats import FrameFormat
from ..errors import ConnectionClosed, HandlerError, ProtocolError
from ..net.addresses import Address, AddressLike
from ..net.protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol, with_read_size
from ..net.server.base import DEFAULT_OVERFLOW, FullLog, check_overflow, handler_failed, idlest
from ..net.server.budget import DEFAULT_MEMORY_BUDGET, check_memory_budget, make_budget
from ..net.server.endings import count_ending, log_ending, peer_label
from ..net.server.handlers import ASYNC_SHAPES, HandlerShape, handler_shape
from ..net.service import logger
from ..net.tls import tolerate_bare_eof
from .answering import answering, can_answer_in_callback
from .budgeted import BudgetedConnection, BudgetedServer
from .sockio import TrioSocketIO
from .stream import FramedStream, check_timeouts
from .streams import accept, listen

if TYPE_CHECKING:
    from typing import Awaitable

    from ..codec.messages import Message
    from ..net.types import (
        AsyncBatchHandler,
        AsyncFrameHandler,
        FrameData,
        ItemT,
        MessageContent,
        ReplyT,
    )

    # A plain or coroutine function of a frame, of a batch (batch=True), or
    # of the connection's FramedStream (per_connection=True).
    Handler = Union[
        AsyncFrameHandler[ItemT, ReplyT],
        AsyncBatchHandler[ItemT, ReplyT],
        Callable[[FramedStream[ItemT]], Awaitable[object]],
    ]

__all__ = ["Server", "serve"]

# The handler shapes answered without awaiting anything.
_PLAIN = (HandlerShape.FRAME, HandlerShape.BATCH)


class _Connection(BudgetedConnection):
    """A server's connection as its task sees it: the FramedStream, and why it ended."""

    def __init__(self, server: Server, stream: anyio.abc.ByteStream) -> None:
        self.server = server
        self.raw = stream
        self.framed: Optional[FramedStream[Any]] = None
        remote = stream.extra(SocketAttribute.remote_address, None)
        self.peer: Optional[Address] = Address.from_sockaddr(remote) if remote else None
        self.label = peer_label(self.peer, server.address)
        # For overflow="close_idle": when it last received or answered, and
        # whether a handler holds its frames now.
        self.last_activity = anyio.current_time()
        self.busy = False
        self.evicted = False

    @property
    def idle(self) -> bool:
        """Between frames with nothing in hand: overflow="close_idle" may close it."""
        framed = self.framed
        return framed is not None and not self.busy and not framed.mid_frame

    def evict(self) -> None:
        """Closed to make room for a new connection: a clean end."""
        self.evicted = True
        if self.framed is not None:
            self.framed.shut_input(ConnectionClosed("closed to make room (max_connections)"))

    def stop(self) -> None:
        """The server is closing: no frame after the one in hand."""
        if self.framed is not None:
            self.framed.shut_input(ConnectionClosed("the server is closing"))


class Server(BudgetedServer):
    """What serve() reports through task_status: the bound ``address`` (the
    real port when 0 was asked for), ``connections`` (their peers' labels),
    ``stats`` (a Counter: accepted, rejected, evicted, closed, clean_closes,
    handler_errors, protocol_errors, tls_failures, timeouts, network_errors,
    over_budget), ``memory`` and ``memory_budget`` (budgeted.py), and
    ``close()``, a graceful shutdown like cancelling serve()."""

    def __init__(
        self,
        address: Address,
        handler: Any,
        mode: HandlerShape,
        *,
        protocol: Protocol,
        ssl_context: Optional[ssl.SSLContext],
        max_connections: Optional[int],
        idle_timeout: Optional[float],
        frame_timeout: Optional[float],
        shutdown_timeout: float,
        overflow: str = DEFAULT_OVERFLOW,
        memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        check_overflow(overflow, max_connections)
        self.budget = make_budget(memory_budget, address)
        self.address = address
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.overflow = overflow
        self._full_log = FullLog()
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.shutdown_timeout = shutdown_timeout
        self.stats: collections.Counter[str] = collections.Counter()
        self._handler = handler
        self._mode = mode
        self._open: Set[_Connection] = set()
        # overflow="wait": new clients wait in the listen backlog for a slot.
        self._slots = (
            anyio.Semaphore(max_connections) if max_connections and overflow == "wait" else None
        )
        self._closing = False
        self._close_requested = anyio.Event()
        self._accepting: Optional[anyio.CancelScope] = None
        self._drained = anyio.Event()  # set when closing and the last connection is gone

    def __repr__(self) -> str:
        tls = " TLS" if self.ssl_context is not None else ""
        return f"<anyio{tls} Server {self.protocol.name} {self.address}>"

    @property
    def connections(self) -> List[str]:
        return sorted(conn.label for conn in self._open)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def close(self) -> None:
        """Stop accepting; each connection closes once its work in hand is done."""
        if self._closing:
            return
        self._closing = True
        self._close_requested.set()
        if self._accepting is not None:
            self._accepting.cancel()
        for conn in list(self._open):
            conn.stop()

    # -- running ---------------------------------------------------------------------

    async def _run(self, listeners: List[anyio.abc.SocketListener]) -> None:
        """Accept and serve until close(); then drain for shutdown_timeout seconds."""
        async with anyio.create_task_group() as connections:
            self._tasks = connections  # the memory budget's review runs there too
            with anyio.CancelScope() as self._accepting:
                if not self._closing:
                    async with anyio.create_task_group() as accepting:
                        for listener in listeners:
                            accepting.start_soon(self._accept_loop, listener, connections)
            for listener in listeners:
                await anyio.aclose_forcefully(listener)
            with anyio.move_on_after(self.shutdown_timeout):
                while self._open:
                    await self._drained.wait()
            if self._open:
                logger.warning(
                    "%s: %d connections still busy after %s s; aborting them",
                    self.address,
                    len(self._open),
                    self.shutdown_timeout,
                )
                connections.cancel_scope.cancel()

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, connections: anyio.abc.TaskGroup
    ) -> None:
        while True:
            if self._slots is not None:
                # Full: new clients wait in the listen backlog.
                await self._slots.acquire()
            try:
                stream = await accept(listener)
            except BaseException:
                if self._slots is not None:
                    self._slots.release()
                raise
            if self._admit(stream):
                connections.start_soon(self._serve_connection, stream)
            else:
                await anyio.aclose_forcefully(stream)  # the client reads the end at once

    def _admit(self, stream: anyio.abc.ByteStream) -> bool:
        """Whether a new client may stay, at max_connections under "close_idle"
        (the longest-idle connection, idle >= 1 s, is closed to make room:
        ``evicted``) or "reject" (``rejected``), as the other servers do."""
        limit = self.max_connections
        if limit is None or self._slots is not None or len(self._open) < limit:
            self._full_log.below()
            return True
        remote = stream.extra(SocketAttribute.remote_address, None)
        self._full_log.full(
            self.address,
            limit,
            self.overflow,
            peer_label(Address.from_sockaddr(remote) if remote else None, self.address),
        )
        if self.overflow == "close_idle":
            now = anyio.current_time()
            victim = idlest(((c.last_activity, c) for c in self._open if c.idle), now)
            if victim is not None:
                self.count("evicted")
                victim.evict()
                return True
        self.count("rejected")
        return False

    async def _serve_connection(self, stream: anyio.abc.ByteStream) -> None:
        conn = _Connection(self, stream)
        self._open.add(conn)
        self.stats["accepted"] += 1
        logger.info("%s: connection from %s", self.address, conn.label)
        ending: Optional[BaseException] = None
        handshaking = self.ssl_context is not None
        try:
            if self.ssl_context is not None:
                stream = await self._handshake(stream)
                handshaking = False
            framed = conn.framed = FramedStream(
                stream,
                protocol=self.protocol,
                idle_timeout=self.idle_timeout,
                frame_timeout=self.frame_timeout,
            )
            framed._interruptible = True  # close() ends the reads of idle connections
            conn.attach_budget(framed)
            if self._closing:
                conn.stop()
            with conn.budgeted_scope():  # cancelled to close it over the memory budget
                ending = await self._converse(conn, framed)
        except (ProtocolError, HandlerError, OSError, TimeoutError) as exc:
            ending = exc
        except anyio.BrokenResourceError as exc:
            ending = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        finally:
            with anyio.CancelScope(shield=True):
                ending = conn.over_budget or ending
                conn.detach_budget()
                if ending is None:
                    await _close(stream)
                else:
                    await anyio.aclose_forcefully(stream)
                self._open.discard(conn)
                if self._slots is not None:
                    self._slots.release()
                count_ending(self.stats, ending)
                log_ending(
                    self.address,
                    conn.label,
                    ending,
                    stopping=self._closing,
                    handshaking=handshaking,
                )
                if self._closing and not self._open:
                    self._drained.set()

    async def _handshake(self, stream: anyio.abc.ByteStream) -> anyio.abc.ByteStream:
        """A TLS handshake counts as a frame: it must finish in frame_timeout."""
        assert self.ssl_context is not None
        limit = self.frame_timeout if self.frame_timeout is not None else self.idle_timeout
        try:
            with anyio.fail_after(limit):
                return await TLSStream.wrap(
                    stream,
                    server_side=True,
                    ssl_context=self.ssl_context,
                    standard_compatible=False,
                )
        except TimeoutError:
            raise TimeoutError(f"TLS handshake took longer than {limit} s") from None

    async def _converse(
        self, conn: _Connection, framed: FramedStream[Any]
    ) -> Optional[BaseException]:
        """Hand the frames to the handler until the stream ends; why it ended."""
        handler = self._handler
        mode = self._mode
        try:
            if mode == HandlerShape.PER_CONNECTION:
                try:
                    await handler(framed)
                except (ConnectionClosed, ProtocolError, OSError, TimeoutError):
                    if framed._error is None:
                        raise
                    # The stream ended under the handler: that is the ending.
                    return _ending(framed._error)
                except Exception as exc:
                    raise _handler_error(handler, exc) from exc
                return _ending(framed._error) if framed._error is not None else None
            # A plain function's answers come from the read callback on
            # asyncio, from a tight loop on trio (answering.py).
            answer = None
            if mode in _PLAIN and can_answer_in_callback(framed):
                answer = functools.partial(self._answer_for, conn)
            if isinstance(framed._io, TrioSocketIO):
                framed._io.interrupt_by_closing = True  # this task alone reads and sends
            while True:
                if answer is not None:
                    await answering(framed, answer)
                try:
                    frames = await framed.receive_batch()
                except ConnectionClosed:
                    return None
                conn.busy = True
                try:
                    replies = await self._handle(handler, mode, frames)
                    if replies:
                        await framed.send_many(replies)
                finally:
                    conn.busy = False
                    conn.last_activity = anyio.current_time()
        except ConnectionClosed:
            return None

    def _answer_for(self, conn: _Connection, frames: List[Any]) -> Any:
        conn.last_activity = anyio.current_time()
        return self._answer(frames)

    def _answer(self, frames: List[Any]) -> Any:
        """A plain function's replies to ``frames`` (answering.py's callback)."""
        handler = self._handler
        try:
            if self._mode == HandlerShape.FRAME:
                return [reply for reply in map(handler, frames) if reply is not None]
            return handler(frames)
        except Exception as exc:
            raise _handler_error(handler, exc) from exc

    @staticmethod
    async def _handle(handler: Any, mode: HandlerShape, frames: List[Any]) -> Any:
        try:
            if mode == HandlerShape.FRAME:
                return [reply for reply in map(handler, frames) if reply is not None]
            if mode == HandlerShape.BATCH:
                return handler(frames)
            if mode == HandlerShape.ASYNC_BATCH:
                return await handler(frames)
            replies = []
            for frame in frames:
                reply = await handler(frame)
                if reply is not None:
                    replies.append(reply)
            return replies
        except Exception as exc:
            raise _handler_error(handler, exc) from exc


def _handler_error(handler: Callable[..., Any], exc: Exception) -> HandlerError:
    error = handler_failed(handler)
    error.__cause__ = exc
    return error


def _ending(exc: BaseException) -> Optional[BaseException]:
    """A stream's error as a connection's ending: a clean close is None."""
    return None if isinstance(exc, ConnectionClosed) else exc


async def _close(stream: anyio.abc.ByteStream) -> None:
    """Close after a clean end, bounded: a TLS peer may not take close_notify."""
    with anyio.move_on_after(1.0):
        await stream.aclose()
        return
    await anyio.aclose_forcefully(stream)


# The options and the handler's frames follow the protocol, as for
# framecodec.serve (a protocol object takes no options beside it).
@overload
async def serve(
    address: Union[AddressLike, socket.socket],
    handler: Handler[bytes, FrameData],
    *,
    protocol: Union[Literal["frames"], FrameProtocol] = ...,
    batch: bool = ...,
    per_connection: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    memory_budget: Optional[int] = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    shutdown_timeout: float = ...,
    backlog: int = ...,
    reuse_port: bool = ...,
    task_status: anyio.abc.TaskStatus[Server] = ...,
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
async def serve(
    address: Union[AddressLike, socket.socket],
    handler: Handler[Message, MessageContent],
    *,
    protocol: Union[Literal["messages"], MessageProtocol],
    batch: bool = ...,
    per_connection: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    memory_budget: Optional[int] = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    shutdown_timeout: float = ...,
    backlog: int = ...,
    reuse_port: bool = ...,
    task_status: anyio.abc.TaskStatus[Server] = ...,
    format: None = ...,
    max_header_size: int = ...,
    max_content_size: int = ...,
    read_size: int = ...,
    prealloc_limit: int = ...,
    on_oversized: Literal["fail", "discard", "raise"] = ...,
) -> None: ...


async def serve(
    address: Union[AddressLike, socket.socket],
    handler: Handler[Any, Any],
    *,
    protocol: Union[str, Protocol] = "frames",
    batch: bool = False,
    per_connection: bool = False,
    ssl_context: Optional[ssl.SSLContext] = None,
    max_connections: Optional[int] = None,
    overflow: str = DEFAULT_OVERFLOW,
    memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
    idle_timeout: Optional[float] = None,
    frame_timeout: Optional[float] = 60.0,
    shutdown_timeout: float = 5.0,
    backlog: int = 512,
    reuse_port: bool = False,
    format: Union[str, FrameFormat, None] = None,
    task_status: anyio.abc.TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``address`` until cancelled (or Server.close()), then shut down gracefully.

    Start it with ``server = await task_group.start(serve, address, handler)``
    to get the Server once it listens.  ``address`` may also be a bound
    socket, which the server takes over and closes.  ``handler``, ``batch`` and
    ``per_connection`` take the shapes of framecodec.aio.start_server (the
    per-connection coroutine is given the connection's FramedStream);
    ``protocol``, ``format`` and the options are those of framecodec.serve,
    and so are ``max_connections`` (None: no limit) with ``overflow``
    ("close_idle", the default: the connection idle longest, for 1 s at
    least with nothing in hand, is closed to make room, counted in
    ``evicted``, else the client is refused; "reject": refused at once,
    counted in ``rejected``; "wait": new clients wait in the listen
    backlog), ``idle_timeout`` (seconds a connection may wait for a
    frame to begin) and ``frame_timeout`` (seconds a frame, or the TLS
    handshake, may take: 60 as there, against peers that trickle bytes),
    and ``memory_budget`` (16 MiB; None: none), one ceiling on what all
    connections hold (their decoders' input, the replies being sent): near
    it those holding the most stop reading, and those held a second whose
    peers take no replies are closed (``over_budget``), as there
    (net/server/budget.py; ``server.memory`` is the total counted).
    ``ssl_context`` (framecodec.server_context) serves TLS.  At shutdown
    each connection finishes the frame in hand; after ``shutdown_timeout``
    seconds the rest are cancelled.
    """
    mode = handler_shape(
        handler,
        batch=batch,
        per_connection=per_connection,
        accepted=ASYNC_SHAPES,
        server="framecodec.anyio.serve",
    )
    check_overflow(overflow, max_connections)
    check_memory_budget(memory_budget)
    check_timeouts(idle_timeout, frame_timeout)
    proto = make_protocol(protocol, format, **with_read_size(protocol, options))
    if ssl_context is not None:
        ssl_context = tolerate_bare_eof(ssl_context)
    listeners, bound = await listen(address, backlog, reuse_port)
    server = Server(
        bound.address,
        handler,
        mode,
        protocol=proto,
        ssl_context=ssl_context,
        max_connections=max_connections,
        overflow=overflow,
        memory_budget=memory_budget,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    try:
        async with anyio.create_task_group() as outer:
            # The serving runs shielded in a task of its own, so that the
            # cancellation of the scope serve() runs in reaches it only as
            # close(): a graceful shutdown, bounded by shutdown_timeout.
            outer.start_soon(_shielded, server, listeners)
            task_status.started(server)
            try:
                await server._close_requested.wait()
            finally:
                server.close()
    finally:
        with anyio.CancelScope(shield=True):  # serve() is most often left cancelled
            for listener in listeners:
                await anyio.aclose_forcefully(listener)
            bound.close()


async def _shielded(server: Server, listeners: List[anyio.abc.SocketListener]) -> None:
    with anyio.CancelScope(shield=True):
        await server._run(listeners)
