"""framecodec.aio's server side: start_server(), the Server it returns, and
the connections that hand frames to the handler."""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from typing import Any, Deque, List, Optional, Set, Union

from ..codec.formats import FrameFormat
from ..errors import ConnectionClosed, PeerStalled, ProtocolError
from ..net.addresses import Address, AddressLike, BoundSocket, bind_socket
from ..net.protocols import Protocol, make_protocol, with_read_size
from ..net.server.base import DEFAULT_OVERFLOW, handler_failed, handshake_limit
from ..net.server.budget import DEFAULT_MEMORY_BUDGET
from ..net.server.endings import DEFAULT_HIGH_WATER, count_ending, log_ending, peer_label
from ..net.server.handlers import ASYNC_SHAPES, HandlerShape, StartTLS, handler_shape
from ..net.service import logger
from . import starttls
from .admission import Admission, BudgetedConnection, MemoryFigures, hold_reading
from .connection import CLOSED, CLOSING, Connection
from .tlseof import EOFHold, HeldFIN, hold_peer_eof, raw_transport_of

__all__ = ["Server", "start_server"]


class _ServerConnection(BudgetedConnection, HeldFIN):
    """A server's connection: frames go to the handler instead of a queue
    (except per_connection handlers, which read with recv())."""

    _stop_reading_while_writes_wait = True
    _client_side = False

    def __init__(self, server: Server) -> None:
        super().__init__(server.protocol, high_water=server.high_water)
        self.server = server
        self._mode = server._mode
        self._handler = server._handler
        self._pending: Deque[Any] = collections.deque()
        self._task: Optional[asyncio.Task[None]] = None
        self._ending: Optional[BaseException] = None  # why it ends, when not the transport's word
        self._stall_timer: Optional[asyncio.TimerHandle] = None  # see pause_writing
        # For the deadlines and overflow="close_idle" (see admission.py).
        self.last_activity = self._loop.time()
        self.frame_started: Optional[float] = None  # when the frame now arriving began
        self._completed = False  # the last read completed frames
        self._refused = False  # reset at once: max_connections
        # TLS: the peer's FIN, held until the replies are out (tlseof.py).
        self._eof_hold: Optional[EOFHold] = None
        self._fin_check: Optional[asyncio.Handle] = None
        self._read_since_check = False
        self._dropped_logged = False  # see _reply_lost_to_close_notify

    @property
    def label(self) -> str:
        return peer_label(self.peer, self.server.address)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.server.admission.admit(self):
            self._refused = True
            transport.close()  # the client reads the end of the stream at once
            return
        self.server._added(self)
        if self._tls:
            self._eof_hold = hold_peer_eof(raw_transport_of(transport), self)
        if self._mode == HandlerShape.PER_CONNECTION:
            self._start(self._run_per_connection())

    def _start(self, work: Any) -> None:
        task = self._loop.create_task(work)
        task.add_done_callback(self._work_done)
        self._task = task

    # -- frames to the handler -------------------------------------------------------

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self._read_since_check = True
        now = self.last_activity = self._loop.time()
        if self._decoder.mid_frame:
            if self.frame_started is None or self._completed:
                self.frame_started = now  # a steady stream is not one endless frame
        else:
            self.frame_started = None
        self._completed = False
        self.server.admission.account(self)

    def _update_reading(self) -> None:
        if self.held_since is None:
            super()._update_reading()
        else:
            hold_reading(self)  # held by the memory budget

    @property
    def idle(self) -> bool:
        """Between frames with nothing in hand: overflow="close_idle" may close it."""
        return (
            self.frame_started is None
            and self._task is None
            and self._state is not CLOSED
            and not (self._upgrading or self._out or self._unsent())
        )

    def _deliver(self, frames: List[Any]) -> None:
        self._completed = True
        mode = self._mode
        if mode == HandlerShape.FRAME:
            handler = self._handler
            try:
                replies = starttls.answer_frames(self, handler, frames)  # stops at a StartTLS
                if replies:
                    self._reply(self.protocol.encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
        elif mode == HandlerShape.BATCH:
            try:
                replies = starttls.as_list(self._handler(frames))  # looked at twice
                if replies and StartTLS in map(type, replies):
                    starttls.reply_then_start_tls(self, replies, ())
                elif replies:
                    self._reply(self.protocol.encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
        elif mode == HandlerShape.PER_CONNECTION:
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
        # Else the peer is gone (3.10's TLS transport says it is not closing
        # after it was lost, and then fails every write).
        if transport is not None and not transport.is_closing() and self._state is not CLOSED:
            self._write_to(transport, buffers)

    def _reply_later(self, buffers: List[Any]) -> None:
        """A coroutine handler's reply: joined with the others of this loop pass."""
        transport = self._transport
        if transport is not None and not transport.is_closing() and self._state is not CLOSED:
            self._queue(buffers)
        elif self._tls and self._ending is None and isinstance(self._error, ConnectionClosed):
            self._reply_lost_to_close_notify()

    async def _run_async(self) -> None:
        pending = self._pending
        handler = self._handler
        encode_many = self.protocol.encode_many
        batch = self._mode == HandlerShape.ASYNC_BATCH
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
                    replies = starttls.as_list(await handler(frames))  # looked at twice
                else:
                    reply = await handler(frame)
                    replies = [reply] if reply is not None else None
                if replies and StartTLS in map(type, replies):
                    await starttls.start_tls_after(self, replies)  # empties pending
                    continue
                if replies:
                    self._reply_later(encode_many(replies))
            except Exception as exc:
                self._handler_failed(exc)
                return
            if self._writing_paused and self._state is not CLOSED:
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
        except (ConnectionClosed, ProtocolError, *starttls.UPGRADE_ENDINGS):
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
        if self._mode == HandlerShape.PER_CONNECTION or self._state is CLOSING:
            self._close_transport()
        else:
            self._flush()  # the last replies, now rather than at the end of the pass
        if self._state is CLOSED:
            self.server._forget(self)

    start_tls = starttls.start_tls_here  # per_connection handlers: see starttls.py

    # -- a peer that does not read: write_timeout ---------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None and self.server.write_timeout is not None:
            self._stall_timer = self._loop.call_later(
                self.server.write_timeout, self._check_stall, self._unsent()
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_stall_timer()

    def _stop_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _unsent(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _check_stall(self, unsent_before: int) -> None:
        """Writing has been paused write_timeout seconds: close the
        connection unless the peer took some of the replies meanwhile."""
        self._stall_timer = None
        limit = self.server.write_timeout
        if not self._writing_paused or self._state is CLOSED or limit is None:
            return
        unsent = self._unsent()
        if unsent < unsent_before:  # slow, not stalled: watch on
            self._stall_timer = self._loop.call_later(limit, self._check_stall, unsent)
            return
        self._ending = PeerStalled(f"took none of its replies for {limit} s")
        self._cancel()

    def _time_out(self, why: str) -> None:
        self._ending = TimeoutError(why)
        self._cancel()

    def _evict(self) -> None:
        """Closed to make room for a new connection: a clean end."""
        self._end_input()
        self._close_transport()

    # -- endings ------------------------------------------------------------------

    def _handler_failed(self, exc: Exception) -> None:
        error = handler_failed(self._handler)
        error.__cause__ = exc
        self._ending = error  # counted and logged as the connection ends
        self._pending.clear()
        self._backlog_extra = 0
        if not self._input_over:
            self._end_input()
        self.abort()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._ending = exc
        self._set_error(exc)
        self._close_after_work()

    def _peer_finished(self) -> Optional[bool]:
        self._set_error(ConnectionClosed("the peer closed the connection"))
        hold = self._eof_hold
        if self._task is None or (self._tls and not (hold is not None and hold.held)):
            return False  # closed once our replies are sent (by TLS now, if not held)
        self._closing()  # once the handler is done
        return True  # half-open: the handler's replies still go out

    def _close_after_work(self) -> None:
        if self._task is None:
            self._close_transport()
        else:
            self._closing()  # once the handler is done

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
        if self._lost.done() or self._refused:
            return  # reported already (a failed STARTTLS handshake), or never let in
        self._stop_stall_timer()
        super().connection_lost(exc)
        self.server._lost_connection(self, self._ending or exc)
        if self._task is None:
            self.server._forget(self)

    def _cancel(self) -> None:
        self.abort()
        if self._task is not None:
            self._task.cancel()


class Server(MemoryFigures):
    """A listening asyncio server; make one with start_server().

    ``address`` is the bound address (the real port when 0 was asked for),
    ``connections`` the open connections, ``stats`` a Counter (accepted,
    rejected, evicted, closed, handler_errors, protocol_errors, timeouts,
    ...).  ``close()`` stops accepting and closes each connection once the
    work in hand is done and its replies are sent, aborting what remains
    after ``shutdown_timeout``;
    ``await wait_closed()`` waits for that.  ``await serve_forever()`` runs
    until close() or cancellation.  ``async with`` closes on exit.
    """

    def __init__(
        self,
        bound: BoundSocket,
        handler: Any,
        mode: HandlerShape,
        *,
        protocol: Protocol,
        ssl_context: Optional[ssl.SSLContext],
        high_water: int,
        shutdown_timeout: float,
        write_timeout: Optional[float] = 60.0,
        starttls_context: Optional[ssl.SSLContext] = None,
        **limits: Any,  # Admission's: max_connections, overflow, deadlines, memory_budget
    ) -> None:
        if write_timeout is not None and write_timeout <= 0:
            raise ValueError("write_timeout must be positive or None")
        self._bound = bound
        self.admission = Admission(self, **limits)
        self._handler = handler
        self._mode = mode
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.starttls_context = starttls_context
        self.ssl_handshake_timeout: Optional[float] = 60.0  # set by _start()
        self.high_water = high_water
        self.shutdown_timeout = shutdown_timeout
        self.write_timeout = write_timeout
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
    def connections(self) -> List[Connection[Any]]:
        return list(self._open)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    async def _start(self, backlog: int, handshake_timeout: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        self.ssl_handshake_timeout = handshake_timeout
        options: dict[str, Any] = {"backlog": backlog}
        if self.ssl_context is not None:
            options["ssl"] = self.ssl_context
            options["ssl_handshake_timeout"] = handshake_timeout
        sock = self._bound.sock
        self.admission.start(loop)
        try:
            if sock.family == socket.AF_UNIX:
                self._server = await loop.create_unix_server(
                    lambda: _ServerConnection(self), sock=sock, **options
                )
            else:
                self._server = await loop.create_server(
                    lambda: _ServerConnection(self), sock=sock, **options
                )
        except BaseException:
            self.admission.stop()
            raise

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
        """Count and log how ``conn`` ended, as the blocking servers do."""
        self.admission.forget(conn)
        count_ending(self.stats, exc)
        log_ending(
            self.address, conn.label, exc, stopping=self._closing, handshaking=conn._upgrading
        )

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
        self.admission.stop()
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


async def start_server(
    address: Union[AddressLike, socket.socket],
    handler: Any,
    *,
    protocol: Union[str, Protocol] = "frames",
    batch: bool = False,
    per_connection: bool = False,
    ssl_context: Optional[ssl.SSLContext] = None,
    ssl_handshake_timeout: Optional[float] = 60.0,
    starttls_context: Optional[ssl.SSLContext] = None,
    high_water: int = DEFAULT_HIGH_WATER,
    shutdown_timeout: float = 5.0,
    write_timeout: Optional[float] = 60.0,
    frame_timeout: Optional[float] = 60.0,
    idle_timeout: Optional[float] = None,
    max_connections: Optional[int] = None,
    overflow: str = DEFAULT_OVERFLOW,
    memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
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
    connections over them (SO_REUSEPORT; see framecodec.net.server.workers).

    ``handler``, ``batch`` and ``per_connection``: see the module docstring.
    ``protocol``, ``format`` and the options are those of framecodec.serve;
    ``ssl_context`` (framecodec.server_context) serves TLS;
    ``starttls_context`` lets handlers upgrade plain connections to TLS
    after a reply (StartTLS, or ``await conn.start_tls()``; see
    docs/starttls.md), their handshakes bounded by ssl_handshake_timeout.
    ``high_water`` bounds each connection's frames waiting for a coroutine
    handler and unsent replies (see Flow control above).  The deadlines
    (``write_timeout``, ``frame_timeout``, ``idle_timeout``),
    ``max_connections`` with ``overflow`` ("wait" is not available here) and
    ``memory_budget`` are serve()'s, with its defaults, stats and log lines
    (docs/servers.md).
    Running out of file descriptors is logged once per burst, and the
    clients waiting meanwhile are reset at once (a spare descriptor accepts
    and closes them).
    """
    mode = handler_shape(
        handler,
        batch=batch,
        per_connection=per_connection,
        accepted=ASYNC_SHAPES,
        server="framecodec.aio.start_server",
    )
    if high_water < 2:
        raise ValueError("high_water must be at least 2 bytes")
    proto = make_protocol(protocol, format, **with_read_size(protocol, options))
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
            write_timeout=write_timeout,
            starttls_context=starttls_context,
            max_connections=max_connections,
            overflow=overflow,
            idle_timeout=idle_timeout,
            frame_timeout=frame_timeout,
            memory_budget=memory_budget,
        )
        tls = ssl_context is not None or starttls_context is not None
        limit = handshake_limit(ssl_handshake_timeout, frame_timeout, idle_timeout)
        await server._start(backlog, limit if tls else None)
    except BaseException:
        bound.close()
        raise
    return server
