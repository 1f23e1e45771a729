"""The lifecycle every server shares, stream or datagram.

``serve_forever()`` runs the loop in the caller's thread, ``start()`` in a
background thread; ``shutdown(timeout)``, from any thread, asks the loop to
stop and waits until it has closed everything.  The loop sleeps in select()
and a Waker interrupts it, so nothing polls.
"""

from __future__ import annotations

import collections
import enum
import logging
import socket
import threading
import time
from typing import Any, Optional, TypeVar

from .addresses import Address, BoundSocket

ServiceT = TypeVar("ServiceT", bound="Service")  # start() and with give the Server back

__all__ = ["Service", "Waker"]

logger = logging.getLogger("framecodec.server")


class Lifecycle(enum.Enum):
    """A service runs once: NEW, then RUNNING, then STOPPED (or NEW -> STOPPED
    when shut down before it ran)."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


# How long shutdown() waits, beyond its timeout, for the loop to finish closing.
SHUTDOWN_GRACE = 5.0


class Waker:
    """Wakes a thread blocked in select() from another thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        try:
            self._writer.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class Service:
    """Base of the servers: a bound socket, a loop, and a way to stop it.

    Subclasses implement ``_serve()``, which returns once ``stopping`` is set
    and their connections are drained (by ``stop_deadline`` at the latest).
    """

    kind = "server"

    def __init__(self, bound: BoundSocket) -> None:
        self._bound = bound
        self._waker = Waker()
        self._lock = threading.Lock()
        self._state = Lifecycle.NEW
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._inside = threading.local()  # .yes in the threads that run the service
        self.stop_deadline: Optional[float] = None
        self.stats: collections.Counter[str] = collections.Counter()

    @property
    def address(self) -> Address:
        """The address actually bound (the real port when 0 was asked for)."""
        return self._bound.address

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown() is called from another one
        (or from a handler)."""
        self._claim()
        self._run()

    def start(self: ServiceT) -> ServiceT:
        """Serve in a background thread; returns self, e.g. ``with serve(...).start() as s:``."""
        self._claim()
        self._thread = threading.Thread(
            target=self._run, name=f"framecodec {self.kind} {self.address}", daemon=True
        )
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, give in-flight work up to ``timeout`` seconds to
        finish, then close everything.  Idempotent; callable from any thread,
        including a handler (then it returns at once and the loop stops after
        the handler returns)."""
        with self._lock:
            if self._state is Lifecycle.NEW:
                self._state = Lifecycle.STOPPED
                self._close_resources()
                self._done.set()
                return
            if self.stop_deadline is None:
                self.stop_deadline = time.monotonic() + max(0.0, timeout)
        self._waker.wake()
        if getattr(self._inside, "yes", False):
            return  # called by a handler: waiting here would wait for ourselves
        if not self._done.wait(max(0.0, timeout) + SHUTDOWN_GRACE):
            logger.error("%s %s did not stop in time", self.kind, self.address)
        if self._thread is not None:
            self._thread.join(SHUTDOWN_GRACE)

    def close(self) -> None:
        """Stop at once: shutdown(timeout=0)."""
        self.shutdown(0)

    def __enter__(self: ServiceT) -> ServiceT:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def _claim(self) -> None:
        with self._lock:
            if self._state is not Lifecycle.NEW:
                raise RuntimeError(f"{self.kind} is already {self._state.value}")
            self._state = Lifecycle.RUNNING

    def _run(self) -> None:
        self._inside.yes = True
        try:
            self._serve()
        finally:
            self._inside.yes = False
            with self._lock:
                self._state = Lifecycle.STOPPED
            self._close_resources()
            self._done.set()

    def _close_resources(self) -> None:
        self._bound.close()
        self._waker.close()

    def _serve(self) -> None:
        raise NotImplementedError
