"""The "selector" backend: one thread, non-blocking sockets, many connections.

Each connection is a transport.Stream: reads go straight into its decoder,
replies wait in its output queue, flushed with vectored sendmsg when the
socket is writable.  TLS handshakes are stepped without blocking, so a slow
or failing one never stalls the others.  Timers (idle timeout, frame
deadline, write stall) are checked by a sweep a few times per timeout
period.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any, List, Optional, cast

from ...errors import PeerStalled
from ..addresses import tune
from ..transport import ConnectionClosed, Stream
from .base import CLOSED, OPEN, Connection, Server, call_handler, idlest
from .budget import REVIEW_EVERY, kernel_output

__all__ = ["SelectorServer"]

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class SelectorConnection(Connection[Any]):
    def __init__(self, server: SelectorServer, sock: socket.socket, peer: Any, now: float) -> None:
        super().__init__(server, sock, peer)
        self.stream = Stream(sock, server.protocol.new_decoder())
        self.paused = False  # over the high-water mark: not reading
        self.last_activity = now
        # Since when unsent replies wait with none of their bytes taken: None
        # while all is sent (see write_timeout).
        self.stalled_since: Optional[float] = None
        # When the frame now arriving (or the TLS handshake) began.
        self.frame_started: Optional[float] = now if self.stream.handshaking else None

    @property
    def memory(self) -> int:
        buffered: int = self.stream.decoder.reserved
        return buffered + self.stream.output.held

    @property
    def unsent(self) -> int:
        held: int = self.stream.output.held
        return held + kernel_output(self.sock.fileno())

    def _queue(self, buffers: List[Any]) -> None:
        if self.state is CLOSED:
            raise ConnectionClosed(f"connection from {self.label} is closed")
        self.stream.output.push(buffers)


class SelectorServer(Server):
    backend = "selector"
    default_max_connections = 1024

    def _serve(self) -> None:
        timeouts = [
            t
            for t in (
                self.idle_timeout,
                self.frame_timeout,
                self.write_timeout,
                self.ssl_handshake_timeout,
            )
            if t is not None
        ]
        self._sweep_every = min(1.0, max(0.01, min(timeouts) / 4)) if timeouts else None
        self._next_sweep = time.monotonic() + (self._sweep_every or 0)
        self._listen(selectors.DefaultSelector())
        try:
            self._loop()
        finally:
            for conn in self._connections():
                self._close(conn, ConnectionAbortedError("server stopped"))
            self._selector.close()

    def _loop(self) -> None:
        select = self._selector.select
        monotonic = time.monotonic
        now = monotonic()
        while True:
            if self.stop_deadline is not None:
                if not self._draining:
                    self._begin_drain()
                if not self._open:
                    return
                if now >= self.stop_deadline:
                    for conn in self._connections():
                        self._close(
                            conn, TimeoutError("shutdown timeout reached with replies unsent")
                        )
                    return
            ready = select(self._select_timeout(now))
            now = monotonic()  # one reading per wake-up serves all that it does
            for key, mask in ready:
                data = key.data
                if data is None:
                    self._waker.drain()
                elif data is self:
                    self._accept()
                else:
                    self._service(data, mask, now)
            if self._sweep_every is not None and now >= self._next_sweep:
                self._sweep(now)
            if self._next_review is not None and now >= self._next_review:
                self._review(now)
            if not self._accepting and not self._draining:
                # Full or paused: a closed connection or the pause's end may
                # let accepting resume.  (While accepting, only _accept() can
                # fill the server, and it refreshes this itself.)
                self._refresh_accepting()

    def _connections(self) -> List[SelectorConnection]:
        return cast(List[SelectorConnection], list(self._open.values()))

    def _open_connection(self, sock: socket.socket, peer: Any) -> None:
        try:
            sock.setblocking(False)
            tune(sock)
            if self.ssl_context is not None:
                sock = self._wrap_tls(sock)
        except OSError as exc:
            sock.close()
            self._lost_before_setup(peer, exc)
            return
        conn = SelectorConnection(self, sock, peer, time.monotonic())
        self._add(conn)
        try:
            if not conn.stream.handshaking:
                self._start_handler(conn)
            self._after_io(conn, time.monotonic())
        except Exception as exc:
            self._close(conn, exc)

    def _make_room(self) -> bool:
        conn = idlest(
            [
                (conn.last_activity, conn)
                for conn in self._connections()
                if conn.frame_started is None
                and conn.state is OPEN
                and conn.handler is not None
                and not (conn.stream.output.size or conn.stream.handshaking or conn.tls_requested)
            ],
            time.monotonic(),
        )
        if conn is None:
            return False
        self.count("evicted")
        self._close(conn, None)  # nothing in hand: a clean end
        return True

    # -- connection events --------------------------------------------------------

    def _service(self, conn: SelectorConnection, mask: int, now: float) -> None:
        stream = conn.stream
        try:
            if stream.handshaking:
                if not stream.handshake():
                    stream.watch(self._selector, True, conn)
                    return
                conn.frame_started = None
                if conn.handler is None:
                    self._start_handler(conn)
                conn.tls_upgrading = False  # a STARTTLS handshake, if it was one
                mask |= EVENT_READ  # the first frames may already sit inside OpenSSL
            readable = mask & EVENT_READ or (mask & EVENT_WRITE and stream.read_wants_write)
            if readable and not (
                stream.at_eof
                or conn.paused
                or conn.state is not OPEN
                or conn.tls_requested
                or conn.held_since is not None
            ):
                self._read(conn, now)
            self._after_io(conn, now)
        except Exception as exc:
            self._close(conn, exc)

    def _read(self, conn: SelectorConnection, now: float) -> None:
        stream = conn.stream
        budget = self.budget
        frames = stream.read(budget.read_limit(conn, len(self._open)) if budget else 0)
        conn.last_activity = now
        handler = conn.handler
        if frames:
            call_handler(handler.frames_received, frames)  # type: ignore[union-attr]
            if conn.tls_requested:
                self._check_starttls(conn, stream.decoder)
        if stream.at_eof and stream.error is None:
            call_handler(handler.eof_received)  # type: ignore[union-attr]
        if stream.decoder.mid_frame:
            if conn.frame_started is None or frames:
                # A read that completed frames began the one now arriving: a
                # steady stream never ends a read between frames, and must not
                # be taken for one endless frame.
                conn.frame_started = now
        else:
            conn.frame_started = None

    def _after_io(self, conn: SelectorConnection, now: float) -> None:
        """Send what is queued, apply the memory budgets, close or re-arm."""
        stream = conn.stream
        output = stream.output
        if output.size:
            before = output.size
            stream.flush()
            if output.size != before:
                conn.last_activity = now
                conn.stalled_since = now if output.size else None
            elif conn.stalled_since is None:
                conn.stalled_since = now
        budget = self.budget
        if (
            budget is not None
            and budget.account(conn, output.held + stream.decoder.reserved, now, len(self._open))
            and self._next_review is None
        ):
            self._next_review = now + REVIEW_EVERY
        if conn.tls_requested and not output.size and conn.state is OPEN:
            # STARTTLS: the replies went out in the clear; handshake now.
            stream.start_tls(self._selector, lambda: self._wrap_starttls(conn))
            conn.frame_started = now  # the handshake's deadline, as the first one's
        if stream.watched == EVENT_READ and not (
            output.size
            or conn.paused
            or conn.state is not OPEN
            or stream.at_eof
            or stream.tls
            or conn.held_since is not None
        ):
            return  # all sent and reading on, as registered: the usual end of a request
        # Only unsent output pauses reading: input alone never does, or a
        # frame larger than the budget could never complete (max_frame_size
        # bounds that instead).
        memory = output.size + stream.decoder.buffered
        if conn.paused:
            conn.paused = output.size > 0 and memory > self.low_water
        elif output.size and memory > self.high_water:
            conn.paused = True
        if (stream.at_eof or conn.state is not OPEN) and not output:
            self._close(conn, stream.error)
        else:
            reading = not (
                conn.paused
                or conn.state is not OPEN
                or conn.tls_requested
                or conn.held_since is not None
            )
            stream.watch(self._selector, reading, conn)

    def _close(self, conn: SelectorConnection, exc: Optional[BaseException]) -> None:
        if conn.state is not CLOSED:
            conn.stream.close(self._selector)
            self._ended(conn, exc)

    # -- timers and shutdown ------------------------------------------------------

    def _select_timeout(self, now: float) -> Optional[float]:
        # Runs once per wake-up: plain comparisons, no lists.
        deadline = self._next_sweep if self._sweep_every is not None else None
        for other in (self._resume_at, self.stop_deadline, self._next_review):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        if deadline is None:
            return None
        return max(0.0, deadline - now)

    def _sweep(self, now: float) -> None:
        """Close the connections past their frame deadline, idle timeout or
        write timeout."""
        assert self._sweep_every is not None
        self._next_sweep = now + self._sweep_every
        for conn in self._connections():
            if conn.frame_started is not None:
                limit = self.handshake_timeout if conn.stream.handshaking else self.frame_timeout
                if limit is not None and now - conn.frame_started > limit:
                    what = "TLS handshake" if conn.stream.handshaking else "frame"
                    self._close(conn, TimeoutError(f"{what} not complete within {limit} s"))
                    continue
            limit = self.write_timeout
            stalled = conn.stalled_since
            if stalled is not None and limit is not None and now - stalled > limit:
                self._close(conn, PeerStalled(f"took none of its replies for {limit} s"))
                continue
            if self.idle_timeout is not None and now - conn.last_activity > self.idle_timeout:
                self._close(conn, TimeoutError(f"idle for {self.idle_timeout} s"))

    def _review(self, now: float) -> None:
        """The memory budget's review: held connections read again or are
        closed (see budget.py)."""
        budget = self.budget
        assert budget is not None
        released, closing = budget.review(self._connections(), now)
        for conn, why in closing:
            self.count("over_budget")
            self._close(conn, why)
        for conn in released:
            if conn.state is not CLOSED:
                try:
                    self._after_io(conn, now)  # re-armed for reading
                except Exception as exc:
                    self._close(conn, exc)
        self._next_review = now + REVIEW_EVERY if budget.held else None

    def _begin_drain(self) -> None:
        """Stop accepting; answer the requests already received, then close
        idle connections now, the others once their replies are sent."""
        self._stop_accepting()
        now = time.monotonic()
        for conn in self._connections():
            try:
                if conn.state is OPEN and not (
                    conn.stream.handshaking or conn.stream.at_eof or conn.paused
                ):
                    self._read(conn, now)  # what the kernel holds for it
                conn.close()
                self._after_io(conn, now)
            except Exception as exc:
                self._close(conn, exc)
