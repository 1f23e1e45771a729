"""Stream servers: ``serve(address, handler, ...)`` and the handler shapes.

Three handler shapes, all turned into a ConnectionHandler per connection:

- a function of one frame (or Message) returning the reply, or None for none;
- with ``batch=True``, a function of the list of frames one read completed,
  returning a list of replies (or None): one Python call per read instead of
  one per frame, the fast path for high rates of small messages;
- a ConnectionHandler subclass, for handlers that keep state or send several
  frames (``self.connection.send``) per request.

An exception from a handler is logged and closes that connection only.
This module holds what the backends share (Server, Connection, the handler
shapes); the backends ("selector", one thread for all connections;
"threads", a thread per connection) live in selector.py
and threads.py, and ``serve()`` in this package's __init__.
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
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    overload,
)

from ...errors import HandlerError, StartTLSRefused
from ..addresses import Address, BoundSocket
from ..protocols import Protocol
from ..service import Service, logger
from ..tls import check_starttls_input, tolerate_bare_eof, wrap_accepted
from ..transport import ConnectionState
from ..types import ItemT
from .budget import DEFAULT_MEMORY_BUDGET, kernel_input, make_budget
from .endings import count_ending, log_ending, peer_label
from .handlers import ConnectionHandler, handler_factory

if TYPE_CHECKING:
    from ...codec.messages import Message
    from ..types import FrameData, MessageContent

__all__ = ["Connection", "ConnectionHandler", "HandlerError", "Server"]

# Connections taken per wake-up of the listening socket.
ACCEPT_BATCH = 64
# accept() failures that mean "no file descriptor or memory for now".
FD_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# After such a failure accepting pauses this long, or until a connection ends.
ACCEPT_PAUSE = 0.5
# Out of descriptors, a server gives its spare one up to accept and close a
# pending connection at once: the client sees a reset, not a hang.
DESCRIPTORS_EXHAUSTED = {errno.EMFILE, errno.ENFILE}
# What a server does with a new client at max_connections (see serve()).
OVERFLOW_POLICIES = ("close_idle", "reject", "wait")
DEFAULT_OVERFLOW = "close_idle"


def check_overflow(overflow: str, max_connections: Optional[int]) -> None:
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be 'close_idle', 'reject' or 'wait', not {overflow!r}")
    if max_connections is not None and max_connections < 1:
        raise ValueError("max_connections must be at least 1")


def handshake_limit(
    ssl_handshake_timeout: Optional[float],
    frame_timeout: Optional[float],
    idle_timeout: Optional[float] = None,
) -> Optional[float]:
    """A TLS handshake is bounded by ssl_handshake_timeout and, as the first
    frame of its connection, by frame_timeout (idle_timeout when that is
    None): the smaller of those set, on every server."""
    frame = frame_timeout if frame_timeout is not None else idle_timeout
    limits = [t for t in (ssl_handshake_timeout, frame) if t is not None]
    return min(limits) if limits else None


# A connection silent for less than this is between requests, not idle:
# overflow="close_idle" leaves it alone (a steady client's connection is
# silent for a millisecond at a time, and must not be cut in a burst).
IDLE_AGE = 1.0


def idlest(candidates: Iterable[Tuple[float, Any]], now: float) -> Any:
    """The connection idle longest of (last activity, connection) pairs, if
    it has been for IDLE_AGE, else None: the one overflow="close_idle"
    closes to make room."""
    best = min(candidates, key=lambda pair: pair[0], default=None)
    return None if best is None or now - best[0] < IDLE_AGE else best[1]


class FullLog:
    """Logs a server's reaching max_connections once per burst: a warning
    when new clients start to be turned away (or make room), then nothing
    until a client is accepted below the limit again."""

    def __init__(self) -> None:
        self.in_burst = False

    def full(self, address: Any, limit: int, policy: str, peer: Any) -> None:
        if not self.in_burst:
            self.in_burst = True
            what = (
                "closing the longest-idle connection for each new client (or turning it away"
                " when none is idle)"
                if policy == "close_idle"
                else "turning new clients away"
            )
            logger.warning("%s: max_connections (%d) reached; %s", address, limit, what)
        logger.info("%s: at max_connections, for %s", address, peer or "a peer")

    def below(self) -> None:
        self.in_burst = False


def open_reserve() -> Optional[int]:
    """A spare descriptor, kept for when the process runs out (shed_pending)."""
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # already out: accepting pauses instead, until one is free


def shed_pending(listener: socket.socket, reserve: int) -> Tuple[Optional[int], bool]:
    """Close ``reserve``, accept one pending connection and reset it, reopen
    the reserve: (the new reserve, whether a connection was shed).  A client
    waiting in the backlog of a server out of descriptors learns it at once
    instead of at its timeout.  ``listener`` is non-blocking."""
    os.close(reserve)
    try:
        sock, _ = listener.accept()
    except OSError:  # none pending, or still no descriptor (another thread took it)
        return open_reserve(), False
    if sock.family != socket.AF_UNIX:  # a reset, not a clean end
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    sock.close()
    return open_reserve(), True


# Module-level names: the backends compare them on every request.
OPEN, CLOSING, CLOSED = ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED


class Connection(Generic[ItemT]):
    """One client connection, as handlers see it (``Connection[bytes]`` for frames).

    ``send`` and ``send_many`` queue replies, which go out when the current
    handler callback returns (or sooner, once the queue is large); call them
    from the handler's callbacks.  ``close()`` stops reading, sends what is
    queued, then closes.
    """

    def __init__(self, server: Server, sock: socket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer: Optional[Address] = Address.from_sockaddr(peer) if peer else None
        self.handler: Optional[ConnectionHandler[ItemT]] = None
        self.state = OPEN
        # STARTTLS: asked for by the handler (replies still to send), then
        # the handshake under way.
        self.tls_requested = False
        self.tls_upgrading = False
        self._unhandled: List[Any] = []
        # The memory budget's (budget.py): bytes last recorded, and since
        # when it has been held (not reading), None while it reads.
        self.accounted = 0
        self.held_since: Optional[float] = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    @property
    def label(self) -> str:
        return peer_label(self.peer, self.server.address)

    @property
    def memory(self) -> int:
        """Bytes this connection holds: buffered input plus unsent output
        (with the whole of a reply partly sent: it is freed once all is)."""
        raise NotImplementedError

    @property
    def unsent(self) -> int:
        """Bytes of replies its peer has not taken: unsent (part of
        ``memory``) or in the kernel's send queue."""
        raise NotImplementedError

    @property
    def pending_input(self) -> int:
        """Bytes its peer sent that the kernel holds, unread."""
        return kernel_input(self.sock.fileno())

    @overload
    def send(
        self: Connection[bytes], item: FrameData, *, prefix: Optional[bytes] = ...
    ) -> None: ...

    @overload
    def send(
        self: Connection[Message],
        item: MessageContent,
        *,
        content_type: Optional[str] = ...,
        content_encoding: Optional[str] = ...,
        headers: Optional[Mapping[str, Any]] = ...,
    ) -> None: ...

    def send(self, item: Any, **options: Any) -> None:
        """Queue one reply (frame payload, or message content / Message)."""
        self._queue(self.server.protocol.encode(item, **options))

    @overload
    def send_many(self: Connection[bytes], items: Iterable[FrameData]) -> None: ...

    @overload
    def send_many(self: Connection[Message], items: Iterable[MessageContent]) -> None: ...

    def send_many(self, items: Iterable[Any]) -> None:
        self._queue(self.server.protocol.encode_many(items))

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    def close(self) -> None:
        """Close once the replies queued are sent."""
        if self.state is OPEN:
            self.state = CLOSING

    def start_tls(self, unhandled: Sequence[Any] = ()) -> None:
        """Upgrade this connection to TLS (the server's ``starttls_context``)
        once the replies queued so far are sent: call it from a handler
        callback, after sending the "go ahead".  ``unhandled``: frames of
        this read left unanswered, which came in the clear before the
        handshake; they, like bytes already buffered, are a protocol error
        (StartTLSError) that closes the connection."""
        self.tls_requested = True
        self._unhandled = list(unhandled)

    def _queue(self, buffers: List[Any]) -> None:
        raise NotImplementedError


def call_handler(method: Callable[..., Any], *args: Any) -> Any:
    try:
        return method(*args)
    except Exception as exc:
        raise handler_failed(method) from exc


def handler_failed(method: Callable[..., Any]) -> HandlerError:
    """The error to raise from an exception of handler ``method``."""
    return HandlerError(f"handler {getattr(method, '__qualname__', method)} failed")


class Server(Service):
    """A listening stream server; make one with serve().

    ``serve_forever()`` or ``start()`` runs it; ``shutdown(timeout)`` stops
    accepting, lets in-flight replies drain, then closes; as a context
    manager it shuts down on exit.  ``address`` is the bound address,
    ``connections`` the open connections, ``stats`` a Counter of events
    (accepted, rejected, evicted, over_budget, closed, handler_errors,
    protocol_errors, timeouts, tls_failures, ...); ``memory`` the bytes its
    connections hold, as its memory budget counts them (see budget.py).
    """

    backend = ""
    default_max_connections = 0  # each backend sets its own
    _selector: selectors.BaseSelector  # set by _listen(), when serving starts

    def __init__(
        self,
        bound: BoundSocket,
        handler: Any,
        *,
        protocol: Protocol,
        batch: bool,
        ssl_context: Optional[ssl.SSLContext],
        max_connections: int,
        overflow: str,
        idle_timeout: Optional[float],
        frame_timeout: Optional[float],
        write_timeout: Optional[float],
        high_water: int,
        starttls_context: Optional[ssl.SSLContext] = None,
        ssl_handshake_timeout: Optional[float] = 60.0,
        memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        check_overflow(overflow, max_connections)
        for name, value in (
            ("idle_timeout", idle_timeout),
            ("frame_timeout", frame_timeout),
            ("write_timeout", write_timeout),
            ("ssl_handshake_timeout", ssl_handshake_timeout),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        self.new_handler = handler_factory(handler, batch)
        super().__init__(bound)
        self.kind = f"{self.backend}{' TLS' if ssl_context is not None else ''} server"
        self.protocol = protocol
        self.ssl_context = ssl_context if ssl_context is None else tolerate_bare_eof(ssl_context)
        self.starttls_context = (
            starttls_context if starttls_context is None else tolerate_bare_eof(starttls_context)
        )
        self.max_connections = max_connections
        self.overflow = overflow
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.write_timeout = write_timeout
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.high_water = high_water
        self.low_water = high_water // 2
        self._open: dict[int, Connection[Any]] = {}
        self._accepting = False
        self._draining = False
        self._resume_at: Optional[float] = None
        self._reserve: Optional[int] = None  # see shed_pending
        self._short_of_descriptors = False  # logged once per burst of failed accepts
        self._full_log = FullLog()
        self.budget = make_budget(memory_budget, self.address)
        self._next_review: Optional[float] = None  # while connections are held

    @property
    def connections(self) -> List[Connection[Any]]:
        with self._lock:
            return list(self._open.values())

    @property
    def memory(self) -> int:
        """Bytes all connections hold (input buffered, replies unsent), as
        last recorded by the memory budget; without one, counted now."""
        if self.budget is not None:
            return self.budget.total
        return sum(conn.memory for conn in self.connections)

    @property
    def memory_budget(self) -> Optional[int]:
        """The ceiling on ``memory`` (None: no server-wide ceiling)."""
        return None if self.budget is None else self.budget.limit

    @property
    def handshake_timeout(self) -> Optional[float]:
        """What bounds a TLS handshake: see handshake_limit."""
        return handshake_limit(self.ssl_handshake_timeout, self.frame_timeout, self.idle_timeout)

    # -- accepting: both backends watch the listener with a selector ----------

    def _listen(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._bound.sock.setblocking(False)
        selector.register(self._waker, selectors.EVENT_READ, None)
        self._refresh_accepting()

    def _refresh_accepting(self) -> None:
        """Watch the listener unless stopping, paused, or full (overflow="wait":
        then new clients wait in the listen backlog)."""
        if self._resume_at is not None and time.monotonic() >= self._resume_at:
            self._resume_at = None
        want = (
            not self._draining
            and self._resume_at is None
            and (self.overflow != "wait" or len(self._open) < self.max_connections)
        )
        if want != self._accepting:
            if want:
                self._selector.register(self._bound.sock, selectors.EVENT_READ, self)
            else:
                self._selector.unregister(self._bound.sock)
            self._accepting = want

    def _accept(self) -> None:
        listener = self._bound.sock
        for _ in range(ACCEPT_BATCH):
            full = len(self._open) >= self.max_connections
            if full and self.overflow == "wait":
                break
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in FD_EXHAUSTED:
                    continue  # e.g. ECONNABORTED: that client is gone already
                if not self._short_of_descriptors:
                    self._short_of_descriptors = True
                    logger.warning(
                        "%s: cannot accept (%s); turning new clients away until it can",
                        self.address,
                        exc,
                    )
                if exc.errno in DESCRIPTORS_EXHAUSTED and self._reserve is not None:
                    self._reserve, shed = shed_pending(listener, self._reserve)
                    if shed:
                        self.count("rejected")
                        continue
                # The listener stays readable, so watching it now would spin.
                self.count("accept_pauses")
                self._resume_at = time.monotonic() + ACCEPT_PAUSE
                break
            self._short_of_descriptors = False
            if full:
                self._full_log.full(
                    self.address,
                    self.max_connections,
                    self.overflow,
                    Address.from_sockaddr(peer) if peer else None,
                )
                if not (self.overflow == "close_idle" and self._make_room()):
                    sock.close()  # the client reads the end of the stream at once
                    self.count("rejected")
                    continue
            else:
                self._full_log.below()
            self._open_connection(sock, peer)
        self._refresh_accepting()

    def _make_room(self) -> bool:
        """Close the longest-idle connection (overflow="close_idle"), counted
        in ``evicted``: whether there was one (none is idle while every
        connection is inside a frame, a handshake, or has replies unsent)."""
        raise NotImplementedError

    def _stop_accepting(self) -> None:
        self._draining = True
        self._refresh_accepting()
        self._bound.close()

    def _open_connection(self, sock: socket.socket, peer: Any) -> None:
        raise NotImplementedError

    def _wrap_tls(self, sock: socket.socket) -> ssl.SSLSocket:
        """``sock`` wrapped for a server-side handshake, still to be done."""
        assert self.ssl_context is not None
        return wrap_accepted(self.ssl_context, sock)

    def _check_starttls(self, conn: Connection[Any], decoder: Any) -> None:
        """A handler asked for STARTTLS on ``conn``: raise StartTLSRefused if
        it cannot be had, StartTLSError if bytes came in the clear after the
        request (see tls.check_starttls_input)."""
        if self.starttls_context is None:
            raise StartTLSRefused(
                "the handler asked for STARTTLS; the server has no starttls_context"
            )
        if isinstance(conn.sock, ssl.SSLSocket):
            raise StartTLSRefused("the handler asked for STARTTLS on a connection already TLS")
        unhandled, conn._unhandled = conn._unhandled, []
        check_starttls_input(decoder, unhandled)

    def _wrap_starttls(self, conn: Connection[Any]) -> ssl.SSLSocket:
        """``conn``'s socket wrapped for its STARTTLS handshake, still to be
        done; the connection is handshaking from now on."""
        assert self.starttls_context is not None
        sock = wrap_accepted(self.starttls_context, conn.sock)
        conn.tls_requested = False
        conn.tls_upgrading = True
        conn.sock = sock
        return sock

    def _lost_before_setup(self, peer: Any, exc: BaseException) -> None:
        """Count a connection that failed before it could be served (reset in
        the backlog, say) as accepted and ended, as every other one is."""
        with self._lock:
            self.stats["accepted"] += 1
            count_ending(self.stats, exc)
        logger.info(
            "%s: connection from %s lost before it was set up: %s",
            self.address,
            Address.from_sockaddr(peer) if peer else "a peer",
            str(exc),  # text, not the exception: see log_ending
        )

    def _claim(self) -> None:
        super()._claim()
        # Here, in the caller's thread, not in the serving one: start()
        # returns with every descriptor the server keeps already open.
        self._reserve = open_reserve()

    def _close_resources(self) -> None:
        super()._close_resources()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _pause_timeout(self) -> Optional[float]:
        """Seconds until accepting resumes after running out of descriptors."""
        if self._resume_at is None:
            return None
        return max(0.0, self._resume_at - time.monotonic())

    # -- connection bookkeeping ---------------------------------------------------

    def _add(self, conn: Connection[Any]) -> None:
        with self._lock:
            self._open[id(conn)] = conn
            self.stats["accepted"] += 1
        logger.info("%s: connection from %s", self.address, conn.label)

    def _start_handler(self, conn: Connection[Any]) -> None:
        handler = conn.handler = self.new_handler()
        call_handler(handler.connection_made, conn)

    def _ended(self, conn: Connection[Any], exc: Optional[BaseException]) -> None:
        """Log why a connection ended, count it, tell its handler, forget it."""
        conn.state = CLOSED
        with self._lock:
            self._open.pop(id(conn), None)
            self._resume_at = None  # a descriptor is free again
            count_ending(self.stats, exc)
        budget = self.budget
        if budget is not None:
            with budget.lock:
                budget.forget(conn)
        label = conn.label
        log_ending(
            self.address,
            label,
            exc,
            stopping=self.stopping,
            handshaking=conn.handler is None or conn.tls_upgrading,
        )
        if conn.handler is not None:
            try:
                conn.handler.connection_lost(exc)
            except Exception:
                logger.exception("%s: connection_lost of %s failed", self.address, label)
