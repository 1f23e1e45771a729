"""The "threads" backend: a thread per connection, reusing idle threads.

An acceptor thread hands each connection to a thread of its own, an idle
one when there is one (pool.py), for up to ``max_connections`` connections
(1024 by default: an idle connection's thread costs about 23 KiB of RSS);
while all are busy it ends the input of the longest-idle connection to make
room (``overflow="close_idle"``), turns new clients away
(``overflow="reject"``, or "close_idle" with none idle), or stops accepting
(``overflow="wait"``: clients wait in the listen backlog).  A worker reads with blocking calls
whose timeout is the idle timeout between frames and what is left of the
frame deadline inside one; its replies are written before it reads again,
so a peer that never reads blocks its own worker, not the server's memory,
and for ``write_timeout`` at most (the sends' socket timeout): then it is
closed as stalled.

Blocking handlers are fine here: each has its own thread.  Shutdown ends the
input of every connection (the read side alone): each worker answers the
requests already received, sends the replies, then closes.  Only after the
shutdown timeout are both directions cut.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any, List, Optional, cast

from ...errors import PeerStalled, ProtocolError
from ..addresses import tune
from ..service import SHUTDOWN_GRACE, logger
from ..transport import (
    HINTED_READ,
    ConnectionClosed,
    OutputQueue,
    close_socket,
    receive,
    receive_at_most,
    receive_first,
)
from .base import CLOSED, OPEN, Connection, Server, call_handler, handler_failed, idlest
from .budget import REVIEW_EVERY, kernel_output
from .pool import WorkerThreads

__all__ = ["ThreadingServer"]


class ThreadConnection(Connection[Any]):
    def __init__(self, server: ThreadingServer, sock: socket.socket, peer: Any) -> None:
        super().__init__(server, sock, peer)
        self.decoder = server.protocol.new_decoder()
        self.output = OutputQueue()
        self.waiting = False  # blocked (or about to block) on input
        self.last_activity = time.monotonic()  # when a read last returned
        self.evicted = False  # its input ended to make room (overflow="close_idle")
        # Why a send failed, when it did inside a handler's send(): the
        # connection's ending, not the handler's failure.
        self.send_error: Optional[BaseException] = None
        # The memory budget's: set when a review lets it read again, or
        # closes it (over_budget: why).
        self.released = threading.Event()
        self.over_budget: Optional[BaseException] = None

    @property
    def memory(self) -> int:
        buffered: int = self.decoder.reserved
        return buffered + self.output.held

    @property
    def unsent(self) -> int:
        held: int = self.output.held
        return held + kernel_output(self.sock.fileno())

    def _queue(self, buffers: List[Any]) -> None:
        if self.state is CLOSED:
            raise ConnectionClosed(f"connection from {self.label} is closed")
        self.output.push(buffers)
        if self.output.size > self.server.high_water:
            self.flush()  # a streaming handler blocks here, bounded

    def flush(self) -> None:
        """Send the output; a peer that takes none of it for write_timeout
        raises PeerStalled."""
        sock = self.sock
        limit = self.server.write_timeout
        if sock.gettimeout() != limit:
            sock.settimeout(limit)
        try:
            self.output.flush(sock)
        except TimeoutError:
            self.send_error = PeerStalled(f"took none of its replies for {limit} s")
            raise self.send_error from None
        except OSError as exc:
            self.send_error = exc
            raise

    def interrupt(self, force: bool = False) -> None:
        """End the connection's input, from any thread: a blocked read returns
        what had arrived, then the end of the stream, while replies still go
        out.  ``force`` cuts both directions, for a worker stuck in a send.

        socket.socket's shutdown, not SSLSocket's, which would detach OpenSSL
        under the worker's feet.  A TLS connection's input alone is ended:
        its read sees the end of the stream (the server's context ignores an
        unexpected one, so OpenSSL answers it with no alert) and the worker
        closes with close_notify, which a peer on OpenSSL 3.6 needs to see a
        clean end (see transport.close_socket).
        """
        how = socket.SHUT_RDWR if force else socket.SHUT_RD
        try:
            socket.socket.shutdown(self.sock, how)
        except OSError:
            pass


class ThreadingServer(Server):
    backend = "threads"
    default_max_connections = 1024  # as "selector": ~23 KiB of RSS per idle connection thread

    def _serve(self) -> None:
        self._pool = WorkerThreads(f"framecodec {self.address}")
        selector = selectors.DefaultSelector()
        self._listen(selector)
        try:
            while not self.stopping:
                for key, _ in selector.select(self._wait_timeout()):
                    if key.data is None:
                        self._waker.drain()  # a worker ended, or shutdown() was called
                    else:
                        self._accept()
                self._refresh_accepting()
                self._review_budget()
            self._drain(selector)
        finally:
            selector.close()
            stuck = len(self._open)
            if stuck:
                logger.error("%s: %d handler(s) still running after shutdown", self.address, stuck)
            self._pool.shutdown(wait=not stuck)

    def _wait_timeout(self) -> Optional[float]:
        pause = self._pause_timeout()
        if self._next_review is None:
            return pause
        review = max(0.0, self._next_review - time.monotonic())
        return review if pause is None else min(pause, review)

    def _review_budget(self) -> None:
        """The memory budget's review, in the acceptor thread: held workers
        read again, or their connections are cut (see budget.py)."""
        budget = self.budget
        if budget is None:
            return
        now = time.monotonic()
        with budget.lock:
            if not budget.held:
                self._next_review = None
                return
            if self._next_review is not None and now < self._next_review:
                return
            released, closing = budget.review(self._workers(), now)
            self._next_review = now + REVIEW_EVERY if budget.held else None
        for conn, why in closing:
            self.count("over_budget")
            conn.over_budget = why
            conn.interrupt(force=True)  # a worker stuck in a send fails at once
            conn.released.set()
        for conn in released:
            conn.released.set()

    def _account(self, conn: ThreadConnection) -> bool:
        """Record what ``conn`` holds; whether it is held (must not read)."""
        budget = self.budget
        if budget is None:
            return False
        with budget.lock:
            was_held = conn.held_since is not None
            held = budget.account(conn, conn.memory, time.monotonic(), len(self._open))
            if held and not was_held:
                conn.released.clear()
                if self._next_review is None:
                    self._next_review = time.monotonic() + REVIEW_EVERY
                    self._waker.wake()  # the acceptor thread reviews
        return held

    def _wait_while_held(self, conn: ThreadConnection) -> None:
        """Block the worker while the memory budget holds its connection."""
        while self._account(conn) and not self.stopping:
            conn.released.wait(REVIEW_EVERY * 5)  # bounded: the review sets it
            if conn.over_budget is not None:
                raise conn.over_budget

    def _open_connection(self, sock: socket.socket, peer: Any) -> None:
        conn = ThreadConnection(self, sock, peer)
        self._add(conn)
        self._pool.submit(lambda: self._worker(conn))

    def _make_room(self) -> bool:
        """End the input of the longest-idle connection: its worker, blocked
        between frames, sees the end of the stream and closes; the new
        connection's task waits in the pool the moment that takes."""
        with self._lock:
            conns = cast(List[ThreadConnection], list(self._open.values()))
        conn = idlest(
            [
                (conn.last_activity, conn)
                for conn in conns
                if conn.waiting
                and not conn.evicted
                and conn.handler is not None
                and conn.state is OPEN
                and not (conn.output.size or conn.decoder.mid_frame or conn.tls_requested)
            ],
            time.monotonic(),
        )
        if conn is None:
            return False
        conn.evicted = True
        conn.interrupt()
        self.count("evicted")
        return True

    def _drain(self, selector: selectors.BaseSelector) -> None:
        """Stop accepting, let workers finish their requests, then force them.

        ``stopping`` is set before this runs, and a worker sets ``waiting``
        before it checks ``stopping`` and blocks: so each worker either sees
        ``stopping`` or is seen waiting here and interrupted.
        """
        self._stop_accepting()
        for conn in self._workers():
            if conn.waiting:
                conn.interrupt()
        if not self._wait_for_workers(selector, self.stop_deadline or 0.0):
            for conn in self._workers():
                conn.interrupt(force=True)
            self._wait_for_workers(selector, time.monotonic() + SHUTDOWN_GRACE)

    def _workers(self) -> List[ThreadConnection]:
        return cast(List[ThreadConnection], self.connections)

    def _wait_for_workers(self, selector: selectors.BaseSelector, deadline: float) -> bool:
        while self._open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            selector.select(remaining)
            self._waker.drain()
        return True

    # -- one connection, in its worker thread -------------------------------------

    def _worker(self, conn: ThreadConnection) -> None:
        self._inside.yes = True  # pool threads only ever run our workers
        exc: Optional[BaseException] = None
        try:
            self._converse(conn)
        except Exception as error:
            # A send that failed under a handler's send() ends the connection
            # as the network error it is, whatever the handler made of it.
            exc = conn.over_budget or conn.send_error or error
        finally:
            if exc is None:
                exc = conn.over_budget  # cut while reading: seen as an end of stream
            close_socket(conn.sock)
            self._ended(conn, exc)
            # The exception's traceback holds this frame, which holds it:
            # break the cycle so that what the traceback keeps (sockets
            # included) goes now, not at the next garbage collection.
            exc = None
            self._waker.wake()  # a slot is free; a shutdown may be waiting

    def _converse(self, conn: ThreadConnection) -> None:
        sock = conn.sock
        sock.setblocking(True)
        tune(sock)
        if self.ssl_context is not None:
            sock = conn.sock = self._wrap_tls(sock)
            conn.output = OutputQueue(tls=True)
            sock.settimeout(self.handshake_timeout)
            conn.waiting = True
            if self.stopping:
                return
            sock.do_handshake()
            conn.waiting = False
        self._start_handler(conn)
        handler = conn.handler
        assert handler is not None
        frames_received = handler.frames_received
        budget = self.budget
        decoder = conn.decoder
        output = conn.output
        # Between frames with no idle timeout, reads wait in steps of the
        # write timeout: then replies and reads share one socket timeout,
        # and the socket is not re-armed twice per request.
        between_frames = self.idle_timeout if self.idle_timeout is not None else self.write_timeout
        frame_started: Optional[float] = None
        # Until the first read has returned, reads are receive_first()'s: that
        # one keeps the stream's first bytes on a protocol error (endings.peer_hint).
        first_read = True
        completed = False  # whether the last read completed frames
        frames: Optional[List[Any]]
        # How far past a frame deadline a read may wait: re-arming the socket
        # on every read of a stream would cost a system call each.
        slack = min(1.0, self.frame_timeout / 4) if self.frame_timeout is not None else 0.0
        while conn.state is OPEN:
            if output.size:
                if budget is not None:
                    self._account(conn)  # a peer that never reads holds it here
                conn.flush()
            if budget is not None:
                self._wait_while_held(conn)
            timeout = sock.gettimeout()
            wanted = between_frames
            if decoder.mid_frame:
                if frame_started is None or completed:
                    # A read that completed frames began the one now arriving:
                    # a steady stream is not one endless frame.
                    frame_started = time.monotonic()
                if self.frame_timeout is not None:
                    wanted = frame_started + self.frame_timeout - time.monotonic()
                    if wanted <= 0:
                        raise TimeoutError(f"frame not complete within {self.frame_timeout} s")
                    if type(timeout) is float and wanted - slack <= timeout <= wanted + slack:
                        wanted = timeout  # close enough to the deadline: keep it armed
            else:
                frame_started = None
            if wanted != timeout:
                sock.settimeout(wanted)
            conn.waiting = True
            if self.stop_deadline is not None:
                # Shutdown: read what has arrived, answer it, then stop at
                # the end of the input (our own doing).
                conn.interrupt()
            try:
                limit = 0
                if budget is not None:  # one read takes what is left of its share
                    # Sized as the wait begins, while others read: one default read at most.
                    limit = min(budget.read_limit(conn, len(self._open), True), HINTED_READ)
                if first_read:
                    frames = receive_first(sock, decoder, limit)
                elif budget is not None:
                    frames = receive_at_most(sock, decoder, limit)
                else:
                    frames = receive(sock, decoder)
            except TimeoutError:
                if frame_started is not None and self.frame_timeout is not None:
                    if time.monotonic() < frame_started + self.frame_timeout:
                        completed = False
                        continue  # armed a little short of the deadline: wait on
                    raise TimeoutError(
                        f"frame not complete within {self.frame_timeout} s"
                    ) from None
                if self.idle_timeout is None:
                    continue  # a step of between_frames: wait on
                raise TimeoutError(f"idle for {self.idle_timeout} s") from None
            except ProtocolError as error:
                if error.frames:  # answer what came before the bad bytes
                    call_handler(handler.frames_received, error.frames)
                    conn.flush()
                raise
            conn.waiting = False
            first_read = False
            conn.last_activity = time.monotonic()
            if conn.evicted:
                # Closed to make room: a request that raced the eviction
                # (its read woke after the bytes came) is not run, so a
                # retry on a new connection cannot run it twice.
                break
            if frames is None:
                if not self.stopping:  # else the end is our own doing
                    call_handler(handler.eof_received)
                break
            completed = bool(frames)
            if completed:
                try:
                    frames_received(frames)
                except Exception as exc:  # call_handler(), inline: this is the hot path
                    raise handler_failed(frames_received) from exc
                # Not kept while the replies are sent: a peer that takes
                # none would pin its requests too, unseen by the budget.
                frames = None
                if conn.tls_requested:
                    sock = self._start_tls(conn)
                    output = conn.output
        conn.flush()

    def _start_tls(self, conn: ThreadConnection) -> socket.socket:
        """STARTTLS asked for by the handler: send its replies in the clear,
        then do the handshake here, bounded like the first one."""
        self._check_starttls(conn, conn.decoder)
        conn.flush()
        sock = self._wrap_starttls(conn)
        conn.output = OutputQueue(tls=True)
        sock.settimeout(self.handshake_timeout)
        conn.waiting = True
        if self.stopping:
            raise ConnectionAbortedError("the server is stopping")
        sock.do_handshake()
        conn.waiting = False
        conn.tls_upgrading = False
        return sock
