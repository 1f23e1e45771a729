"""Several server processes on one address: ``serve(..., workers=N)``.

One Python process serves from one core; N workers serve from N.  Every
connection is independent, so they need share nothing but the port:

- Where the kernel balances a shared port (SO_REUSEPORT on Linux,
  SO_REUSEPORT_LB on FreeBSD) and the address is TCP, each worker accepts
  from a listening socket of its own, all bound to the port, and the kernel
  spreads new connections over them.  The parent opens those sockets
  (resolving port 0 once) and keeps them, each worker inheriting its own:
  serve() returns with the port accepting connections, as a single server
  does, and a connection queued for a worker that dies waits for its
  replacement instead of being reset.
- Elsewhere, and for Unix sockets, the parent listens on one socket and
  the forked workers inherit it and all accept from it.

Workers are forked, so the handler, protocol and TLS context need not be
picklable; platforms without fork (Windows) cannot have workers.  The
object serve() returns is the parent, a Server whose loop supervises:
start() returns once every worker listens; a worker that exits while the
pool runs is logged and replaced (after a growing pause while replacements
keep dying young); shutdown(timeout) passes the timeout on to every worker,
which drains as a single server does, then kills what is left.
serve_forever() in the main thread turns SIGTERM and SIGINT into that
shutdown.  Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole
process group; the parent decides), drain on their own SIGTERM, and also
stop if the parent dies: they watch a pipe only it holds open.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Set, Type

from ..addresses import REUSE_PORT_OPTION, AddressLike, BoundSocket, bind_socket, parse_address
from ..service import SHUTDOWN_GRACE, logger
from .base import Connection, Server

__all__ = ["USE_REUSE_PORT", "WorkerPool"]

# False makes workers share the parent's listening socket even where the
# kernel could balance a shared port (the fallback, for tests and for
# comparison).
USE_REUSE_PORT = True
# A worker that dies younger than this is restarted after a pause that
# doubles each time, from RESTART_PAUSE up to RESTART_PAUSE_MAX.
YOUNG = 1.0
RESTART_PAUSE = 0.1
RESTART_PAUSE_MAX = 5.0
# How long start() waits for the first workers to listen.
START_TIMEOUT = 30.0


class _Inherited(BoundSocket):
    """The parent's listening socket as a worker holds it: closing it never
    removes the Unix socket file, which the parent owns."""

    def close(self) -> None:
        self.sock.close()


class _Worker:
    """One worker slot: its current process and the pipes to it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Optional[Any] = None  # multiprocessing's fork Process
        self.control = -1  # write end: the drain timeout, then EOF
        self.ready = -1  # read end: one byte once the worker listens
        self.started = 0.0
        self.listening = False
        self.pause = 0.0  # before the next restart, while restarts die young
        self.restart_at: Optional[float] = None


class WorkerPool(Server):
    """The parent of ``workers`` server processes (from serve(..., workers=N)).

    A Server in every way that involves no connection: ``address``,
    ``serve_forever()``, ``start()``, ``shutdown(timeout)``, ``close()``,
    the context manager.  ``pids`` are the live workers' process ids;
    ``stats`` counts worker events (started, exits, restarts).  The
    connections live in the workers, so ``connections`` is empty here.
    """

    def __init__(
        self,
        address: AddressLike,
        handler: Any,
        server_class: Type[Server],
        workers: int,
        *,
        backlog: int,
        reuse_address: bool,
        **settings: Any,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        try:
            self._context = multiprocessing.get_context("fork")
        except ValueError:
            raise ValueError("workers need os.fork, which this platform lacks") from None
        address = parse_address(address)
        self.reuse_port = USE_REUSE_PORT and REUSE_PORT_OPTION is not None and not address.is_unix
        self.backend = server_class.backend
        self.server_class = server_class
        self.workers = workers
        self.shutdown_timeout = 5.0  # of a shutdown that a signal asks for
        self._handler = handler
        self._settings = settings
        # One listening socket per worker with SO_REUSEPORT, else one for all.
        self._listeners: List[BoundSocket] = []
        try:
            for _ in range(workers if self.reuse_port else 1):
                where = self._listeners[0].address if self._listeners else address
                self._listeners.append(
                    bind_socket(
                        where,
                        backlog=backlog,
                        reuse_address=reuse_address,
                        reuse_port=self.reuse_port,
                    )
                )
            # Validates the handler and settings here, not in N workers.
            super().__init__(self._listeners[0], handler, **settings)
        except BaseException:
            for listener in self._listeners:
                listener.close()
            raise
        self.kind = f"{self.kind} ({workers} workers)"
        self._slots = [_Worker(index) for index in range(workers)]
        self._parent_fds: Set[int] = set()  # pipe ends a worker must not keep
        self._all_ready = threading.Event()
        self._start_error: Optional[str] = None

    def __repr__(self) -> str:
        return f"<WorkerPool {self.kind} {self.address} pids={self.pids}>"

    @property
    def pids(self) -> List[int]:
        return [
            slot.process.pid
            for slot in self._slots
            if slot.process is not None and slot.process.is_alive()
        ]

    @property
    def connections(self) -> List[Connection[Any]]:
        return []

    # -- running ------------------------------------------------------------------

    def start(self) -> WorkerPool:
        """Start the workers; return once they all listen."""
        super().start()
        if not self._all_ready.wait(START_TIMEOUT) or self._start_error is not None:
            error = self._start_error or f"workers did not start within {START_TIMEOUT} s"
            self.shutdown(0)
            raise RuntimeError(error)
        return self

    def serve_forever(self) -> None:
        """Run the workers until shutdown(); in the main thread, SIGTERM and
        SIGINT shut down too (waiting ``shutdown_timeout`` for the workers)."""
        if threading.current_thread() is not threading.main_thread():
            super().serve_forever()
            return

        def stop(signum: int, frame: Any) -> None:
            logger.info("%s: signal %d, shutting down", self.address, signum)
            self.shutdown(self.shutdown_timeout)  # returns at once: we are the loop

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            super().serve_forever()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _serve(self) -> None:
        # Workers are not daemonic (their handlers may start processes of
        # their own), so multiprocessing would wait for them at exit: stop
        # them first if the program ends without shutdown().
        atexit.register(self.shutdown, 0)
        try:
            for slot in self._slots:
                self._spawn(slot)
            self._supervise()
        finally:
            self._stop_workers()
            self._all_ready.set()  # a start() still waiting sees _start_error or stopping
            atexit.unregister(self.shutdown)

    def _supervise(self) -> None:
        wait = multiprocessing.connection.wait
        while not self.stopping:
            watched: Dict[int, _Worker] = {}
            for slot in self._slots:
                if slot.process is not None:
                    watched[slot.process.sentinel] = slot
                    if slot.ready >= 0:
                        watched[slot.ready] = slot
            for item in wait([self._waker.fileno(), *watched], self._next_restart_in()):
                owner = watched.get(item) if isinstance(item, int) else None
                if owner is None:
                    self._waker.drain()
                elif item == owner.ready:
                    self._mark_ready(owner)
                elif owner.process is not None and item == owner.process.sentinel:
                    self._exited(owner)
                    if self._start_error is not None:
                        return
            if not self._all_ready.is_set() and all(s.listening for s in self._slots):
                self._all_ready.set()
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at and not self.stopping:
                    slot.restart_at = None
                    self.count("restarts")
                    self._spawn(slot)

    def _next_restart_in(self) -> Optional[float]:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _mark_ready(self, slot: _Worker) -> None:
        try:
            slot.listening = os.read(slot.ready, 1) == b"\1"  # EOF if it died first
        finally:
            self._close_fd(slot.ready)
            slot.ready = -1

    def _exited(self, slot: _Worker) -> None:
        process = slot.process
        assert process is not None
        process.join()
        slot.process = None
        self._close_fd(slot.control)
        self._close_fd(slot.ready)
        slot.control = slot.ready = -1
        listening, slot.listening = slot.listening, False
        self.count("worker_exits")
        if not self._all_ready.is_set() and not listening:
            self._start_error = (
                f"worker {slot.index} (pid {process.pid}) failed to start: "
                f"exit code {process.exitcode}; its error is logged above"
            )
            logger.error("%s: %s", self.address, self._start_error)
            return
        lived = time.monotonic() - slot.started
        slot.pause = (
            0.0 if lived >= YOUNG else min(RESTART_PAUSE_MAX, max(RESTART_PAUSE, 2 * slot.pause))
        )
        logger.error(
            "%s: worker %d (pid %d) exited with code %s after %.1f s; restarting it%s",
            self.address,
            slot.index,
            process.pid,
            process.exitcode,
            lived,
            f" in {slot.pause} s" if slot.pause else "",
        )
        slot.restart_at = time.monotonic() + slot.pause

    # -- worker processes -------------------------------------------------------------

    def _spawn(self, slot: _Worker) -> None:
        control_read, slot.control = os.pipe()
        slot.ready, ready_write = os.pipe()
        self._parent_fds.update((slot.control, slot.ready))
        process = self._context.Process(
            target=self._worker_main,
            args=(slot.index, control_read, ready_write),
            name=f"framecodec worker {slot.index}",
        )
        try:
            process.start()
        finally:
            os.close(control_read)
            os.close(ready_write)
        slot.process = process
        slot.started = time.monotonic()
        self.count("workers_started")
        logger.info("%s: worker %d started (pid %d)", self.address, slot.index, process.pid)

    def _close_fd(self, fd: int) -> None:
        if fd >= 0:
            self._parent_fds.discard(fd)
            os.close(fd)

    def _stop_workers(self) -> None:
        """Ask every worker to drain within the shutdown timeout; kill the
        ones still running a second after it."""
        deadline = self.stop_deadline if self.stop_deadline is not None else time.monotonic()
        timeout = max(0.0, deadline - time.monotonic())
        for slot in self._slots:
            if slot.control >= 0:
                try:
                    os.write(slot.control, f"{timeout}\n".encode())
                except OSError:
                    pass  # the worker is gone already
                self._close_fd(slot.control)
                slot.control = -1
            slot.restart_at = None
        processes = [slot.process for slot in self._slots if slot.process is not None]
        kill_at = deadline + min(1.0, SHUTDOWN_GRACE / 2)
        for process in processes:
            process.join(max(0.0, kill_at - time.monotonic()))
        for process in processes:
            if process.is_alive():
                logger.warning(
                    "%s: worker pid %d did not stop; killing it", self.address, process.pid
                )
                process.kill()
                process.join(SHUTDOWN_GRACE / 2)
        for slot in self._slots:
            slot.process = None
            self._close_fd(slot.ready)
            slot.ready = -1

    def _close_resources(self) -> None:
        super()._close_resources()
        for listener in self._listeners[1:]:
            listener.close()

    def _worker_main(self, index: int, control: int, ready: int) -> None:
        """The body of a worker process (after fork: everything is a copy)."""
        for fd in self._parent_fds:  # the other workers' pipes and our write end
            try:
                os.close(fd)
            except OSError:
                pass
        self._waker.close()
        # Not the parent's handlers (copied by fork): until ours is set, a
        # SIGTERM simply ends this worker.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_asked = threading.Event()
        ours = index if self.reuse_port else 0
        for number, listener in enumerate(self._listeners):
            if number != ours:
                listener.sock.close()  # our copy only: the parent keeps serving it
        bound = _Inherited(self._listeners[ours].sock)
        server = self.server_class(bound, self._handler, **self._settings)

        def stop(timeout: float) -> None:
            stop_asked.set()
            server.shutdown(timeout)

        signal.signal(signal.SIGTERM, lambda signum, frame: stop(self.shutdown_timeout))
        threading.Thread(
            target=_watch_parent, args=(control, stop), name="framecodec parent watch", daemon=True
        ).start()
        os.write(ready, b"\1")
        os.close(ready)
        try:
            server.serve_forever()
        except RuntimeError:
            if not stop_asked.is_set():  # else: stopped before it started
                raise


def _watch_parent(control: int, stop: Any) -> None:
    """In a worker: read the drain timeout the parent sends at shutdown; EOF
    without one means the parent died, so drain as a signal would."""
    data = b""
    try:
        while True:
            chunk = os.read(control, 64)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    try:
        timeout = float(data.decode() or 5.0)
    except ValueError:
        timeout = 5.0
    stop(timeout)
