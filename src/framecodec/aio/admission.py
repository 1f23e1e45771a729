"""Who an aio server lets in, and for how long: running out of descriptors
(accept failures logged once per burst, waiting clients reset by a spare
descriptor), ``max_connections`` with its ``overflow`` policy, the
frame, idle and write deadlines swept a few times per period, and the
memory budget of all connections (net/server/budget.py): the same limits,
names and defaults as the blocking servers (net/server/base.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, cast

from ..net.server.base import (
    DESCRIPTORS_EXHAUSTED,
    FD_EXHAUSTED,
    FullLog,
    check_overflow,
    idlest,
    open_reserve,
    shed_pending,
)
from ..net.server.budget import (
    DEFAULT_MEMORY_BUDGET,
    NEAR_READ_SIZE,
    REVIEW_EVERY,
    kernel_input,
    kernel_output,
    make_budget,
)
from ..net.service import logger
from ..net.transport import HINTED_READ

if TYPE_CHECKING:
    from .server import Server, _ServerConnection

__all__ = ["Admission", "BudgetedConnection", "MemoryFigures", "connection_memory", "hold_reading"]


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (AttributeError, OSError, ValueError):
        return -1


def connection_memory(conn: _ServerConnection) -> int:
    """What the memory budget counts of an aio server's connection: input
    buffered (decoder, frames waiting for the handler, what asyncio's TLS
    layer decrypted ahead), replies unsent."""
    transport = conn._transport
    held: int = conn._decoder.reserved + conn._queued + conn._backlog_extra + conn._out_size
    if transport is not None:
        held += transport.get_write_buffer_size()
        if conn._tls and hasattr(transport, "get_read_buffer_size"):
            held += transport.get_read_buffer_size()
    return held


class BudgetedConnection:
    """What the memory budget adds to an aio server's connection."""

    server: Server
    _get_buffer: Callable[[int], memoryview]
    accounted = 0  # bytes last recorded (net/server/budget.py)
    held_since: Optional[float] = None  # since when reading is held; None while it reads

    @property
    def memory(self) -> int:
        """Bytes this connection holds: input buffered (in the decoder, in
        frames waiting for the handler, in the TLS layer), replies unsent."""
        return connection_memory(cast("_ServerConnection", self))

    @property
    def pending_input(self) -> int:
        """Bytes its peer sent that the kernel holds, unread."""
        transport = cast("_ServerConnection", self)._transport
        sock = None if transport is None else transport.get_extra_info("socket")
        return 0 if sock is None else kernel_input(sock.fileno())

    @property
    def unsent(self) -> int:
        """Bytes of replies its peer has not taken (here, in the transport, in
        the kernel's send queue)."""
        conn = cast("_ServerConnection", self)
        transport = conn._transport
        pending: int = conn._out_size
        if transport is not None:
            pending += transport.get_write_buffer_size()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                pending += kernel_output(sock.fileno())
        return pending

    _cut: Optional[memoryview] = None  # a view cut from the decoder's to the read limit

    def get_buffer(self, sizehint: int) -> memoryview:
        conn = cast("_ServerConnection", self)
        self._release_cut()  # a failed read's
        limit = self.server.admission.read_limit(conn)
        # A small limit is the decoder's hint too (see net/transport.receive_at_most).
        view = self._get_buffer(limit if 0 < limit <= HINTED_READ else -1)
        if limit and len(view) > limit:
            view = self._cut = view[:limit]
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self._release_cut()
        super().buffer_updated(nbytes)  # type: ignore[misc]

    def _release_cut(self) -> None:
        # Released at once: PyPy would keep the slice exporting the
        # decoder's buffer until its garbage collector runs, and the
        # decoder could not resize the buffer meanwhile.
        cut, self._cut = self._cut, None
        if cut is not None:
            cut.release()


class MemoryFigures:
    """What the memory budget adds to an aio Server."""

    admission: Admission

    @property
    def memory(self) -> int:
        """Bytes all connections hold, as the memory budget last counted."""
        return self.admission.memory()

    @property
    def memory_budget(self) -> Optional[int]:
        """The ceiling on ``memory`` (None: no server-wide ceiling)."""
        budget = self.admission.budget
        return None if budget is None else budget.limit


def hold_reading(conn: _ServerConnection) -> None:
    """Pause reading of ``conn``, held by the memory budget."""
    transport = conn._transport
    if conn._reading_paused or transport is None or conn._input_over or transport.is_closing():
        return
    conn._reading_paused = True
    transport.pause_reading()


def cancel_accept_retries(loop: asyncio.AbstractEventLoop, listener: Any) -> None:
    """Cancel the accept retry asyncio's selector loop arms when an accept
    fails for want of descriptors (ACCEPT_RETRY_DELAY, 1 s later): once the
    listener is closed, that retry fails with "ValueError: Invalid file
    descriptor: -1", a traceback on the loop's exception handler.  Private
    attributes, looked up with care: a loop without them (uvloop) arms no
    such timer, or cancels its own."""
    start_serving = getattr(loop, "_start_serving", None)
    if start_serving is None:
        return
    # Pending in _scheduled, or due and moved to _ready in this iteration.
    pending = [*getattr(loop, "_scheduled", ()), *getattr(loop, "_ready", ())]
    for handle in pending:
        callback = getattr(handle, "_callback", None)
        if callback == start_serving and listener in getattr(handle, "_args", ()):
            handle.cancel()


class Admission:
    """The limits of one aio Server (its ``admission``)."""

    def __init__(
        self,
        server: Server,
        *,
        max_connections: Optional[int],
        overflow: str,
        idle_timeout: Optional[float],
        frame_timeout: Optional[float],
        memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        check_overflow(overflow, max_connections)
        if overflow == "wait":
            raise ValueError(
                "overflow='wait' is for the blocking servers (asyncio cannot pause"
                " accepting): use 'close_idle' or 'reject'"
            )
        for name, value in (("idle_timeout", idle_timeout), ("frame_timeout", frame_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        self.server = server
        self.max_connections = max_connections
        self.overflow = overflow
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._full_log = FullLog()
        self._reserve: Optional[int] = None  # a spare descriptor: see accept_failed
        self._short_of_descriptors = False  # logged once per burst of failed accepts
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_handler: Any = None  # the loop's exception handler before ours
        self._sweep: Optional[asyncio.TimerHandle] = None
        timeouts = [t for t in (idle_timeout, frame_timeout) if t is not None]
        self._sweep_every = min(1.0, max(0.01, min(timeouts) / 4)) if timeouts else None
        self.budget = make_budget(memory_budget, server.address)
        self._review: Optional[asyncio.TimerHandle] = None  # while connections are held

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reserve = open_reserve()
        self._loop = loop
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        if self._sweep_every is not None:
            self._sweep = loop.call_later(self._sweep_every, self._check_deadlines)

    def stop(self) -> None:
        """Stop sweeping, give the loop its exception handler back."""
        loop = self._loop
        if loop is not None and loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._loop_handler)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._review is not None:
            self._review.cancel()
            self._review = None
        if loop is not None:
            cancel_accept_retries(loop, self.server._bound.sock)

    # -- max_connections ------------------------------------------------------------

    def admit(self, conn: _ServerConnection) -> bool:
        """Whether ``conn``, just connected, may stay: at max_connections,
        "close_idle" closes the longest-idle connection to make room (counted
        in ``evicted``); without one, or under "reject", ``conn`` is reset
        (counted in ``rejected``)."""
        self._short_of_descriptors = False
        if conn._tls and self.budget is not None:
            # asyncio's TLS layer reads ahead of a paused protocol, 256 KiB by
            # default: a connection held by the memory budget keeps less.
            with contextlib.suppress(AttributeError, NotImplementedError):
                conn._transport.set_read_buffer_limits(high=NEAR_READ_SIZE)  # type: ignore[union-attr]
        open_now = self.server._open
        if self.max_connections is None or len(open_now) < self.max_connections:
            self._full_log.below()
            return True
        self._full_log.full(self.server.address, self.max_connections, self.overflow, conn.peer)
        if self.overflow == "close_idle":
            now = self._loop.time() if self._loop is not None else 0.0
            victim = idlest(((c.last_activity, c) for c in open_now if c.idle), now)
            if victim is not None:
                self.server.count("evicted")
                victim._evict()
                return True
        self.server.count("rejected")
        return False

    # -- the memory budget ---------------------------------------------------------

    def account(self, conn: _ServerConnection) -> None:
        """Record what ``conn`` holds after a read; hold it (stop reading)
        when the budget says so."""
        budget = self.budget
        if budget is None or self._loop is None:
            return
        now = self._loop.time()
        if budget.account(conn, conn.memory, now, len(self.server._open)):
            conn._update_reading()
            if self._review is None:
                self._review = self._loop.call_later(REVIEW_EVERY, self._review_budget)

    def read_limit(self, conn: _ServerConnection) -> int:
        """What one read of ``conn`` may take (budget.py); 0: no limit."""
        budget = self.budget
        return 0 if budget is None else budget.read_limit(conn, len(self.server._open))

    def memory(self) -> int:
        """What all connections hold, as last counted; without a budget, now."""
        if self.budget is not None:
            return self.budget.total
        return sum(conn.memory for conn in self.server._open)

    def forget(self, conn: _ServerConnection) -> None:
        if self.budget is not None:
            self.budget.forget(conn)

    def _review_budget(self) -> None:
        """Held connections read again, or are closed (see budget.py)."""
        self._review = None
        budget = self.budget
        assert budget is not None and self._loop is not None
        released, closing = budget.review(list(self.server._open), self._loop.time())
        for conn, why in closing:
            self.server.count("over_budget")
            conn._ending = why
            conn._cancel()
        for conn in released:
            conn._update_reading()  # resumes unless flow control keeps it paused
        if budget.held:
            self._review = self._loop.call_later(REVIEW_EVERY, self._review_budget)

    # -- deadlines ------------------------------------------------------------------

    def _check_deadlines(self) -> None:
        """Close the connections past their frame deadline or idle timeout
        (write_timeout has a timer of its own, armed only while writing is
        paused: see _ServerConnection.pause_writing)."""
        assert self._loop is not None and self._sweep_every is not None
        now = self._loop.time()
        frame_limit, idle_limit = self.frame_timeout, self.idle_timeout
        for conn in list(self.server._open):
            started = conn.frame_started
            if frame_limit is not None and started is not None and now - started > frame_limit:
                conn._time_out(f"frame not complete within {frame_limit} s")
            elif idle_limit is not None and conn.idle and now - conn.last_activity > idle_limit:
                conn._time_out(f"idle for {idle_limit} s")
        self._sweep = self._loop.call_later(self._sweep_every, self._check_deadlines)

    # -- running out of descriptors ---------------------------------------------------

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
        """The loop's exception handler while serving: our listener's failed
        accepts are ours to report (once per burst, not once per attempt);
        everything else goes to the handler there was before."""
        exc = context.get("exception")
        listener = context.get("socket")
        server = self.server
        if (
            isinstance(exc, OSError)
            and exc.errno in FD_EXHAUSTED
            and (listener is None or _fileno(listener) == _fileno(server._bound.sock))
            and not server._closing
        ):
            self.accept_failed(exc)
        elif self._loop_handler is not None:
            self._loop_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def accept_failed(self, exc: OSError) -> None:
        server = self.server
        if not self._short_of_descriptors:
            self._short_of_descriptors = True
            logger.warning(
                "%s: cannot accept (%s); turning new clients away until it can",
                server.address,
                exc,
            )
        server.count("accept_pauses")
        if exc.errno not in DESCRIPTORS_EXHAUSTED:
            return
        # The loop retries later; meanwhile the clients waiting are reset.
        shed = True
        while shed and self._reserve is not None:
            self._reserve, shed = shed_pending(server._bound.sock, self._reserve)
            if shed:
                server.count("rejected")
