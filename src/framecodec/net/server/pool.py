"""The threads backend's worker threads: a free thread always takes the next
connection, an idle one ends after a while, and none keeps the process alive.

concurrent.futures.ThreadPoolExecutor did this job before, and failed it in
two ways that matter to a connection-per-thread server:

- Since CPython 3.12 (gh-102024) its count of idle threads loses one each
  time a thread that has just finished takes a task another, idle, thread
  was counted for; the lost threads wait forever while new ones start.
  Under connect/request/close cycles from two clients, 3.12.1 started a
  thread for one connection in six: 543 threads (about 3.3 MiB of RSS per
  1,000 connections) after 3,000 of them, with two open at most.
- Its threads are joined at interpreter exit, so a program that ended
  without shutting its server down hung for as long as a connection stayed
  open.  These are daemon threads, as is the server thread ``start()`` makes.

Here the count of idle threads changes only under one lock, where tasks are
queued and taken, so a task is queued only for a thread that is waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Deque, Optional, Set

from ..service import SHUTDOWN_GRACE

__all__ = ["IDLE_EXIT", "WorkerThreads"]

# How long an idle thread waits for a connection before it ends: long
# enough that steady traffic does not pay for starting threads, short
# enough that a burst's threads (their stacks, their malloc arenas) do not
# stay for good.
IDLE_EXIT = 60.0

Task = Callable[[], None]


class WorkerThreads:
    """Run each submitted task in a thread of its own, reusing idle threads."""

    def __init__(self, name: str, idle_exit: float = IDLE_EXIT) -> None:
        self.name = name
        self.idle_exit = idle_exit
        self._lock = threading.Lock()
        self._task_queued = threading.Condition(self._lock)
        self._tasks: Deque[Task] = deque()
        # Threads waiting for a task that no queued task is promised to:
        # the waiting threads less the queued tasks.
        self._idle = 0
        self._threads: Set[threading.Thread] = set()
        self._started = 0  # for the threads' names
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads exist, busy or idle."""
        with self._lock:
            return len(self._threads)

    @property
    def idle(self) -> int:
        """How many threads wait for a task (less the tasks queued for them)."""
        with self._lock:
            return self._idle

    def submit(self, task: Task) -> None:
        """Run ``task`` in an idle thread, or in a new one if none is idle."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: the worker threads are shut down")
            if self._idle:
                self._idle -= 1
                self._tasks.append(task)
                self._task_queued.notify()
                return
            self._started += 1
            thread = threading.Thread(
                target=self._run, args=(task,), name=f"{self.name} {self._started}", daemon=True
            )
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:  # e.g. "can't start new thread": the caller sees it
            with self._lock:
                self._threads.discard(thread)
            raise

    def shutdown(self, wait: bool = True) -> None:
        """Take no more tasks; idle threads end now, busy ones after their
        task.  ``wait``: join them (SHUTDOWN_GRACE each at most)."""
        with self._lock:
            self._closed = True
            self._task_queued.notify_all()
            threads = list(self._threads)
        if wait:
            me = threading.current_thread()
            for thread in threads:
                if thread is not me:
                    thread.join(SHUTDOWN_GRACE)

    def _run(self, task: Optional[Task]) -> None:
        try:
            while task is not None:
                task()
                task = None  # what the task held goes before the wait
                task = self._next()
        finally:
            if task is not None:  # the task raised: this thread ends with it
                with self._lock:
                    self._threads.discard(threading.current_thread())

    def _next(self) -> Optional[Task]:
        """The next task for this thread, or None when it is to end."""
        with self._lock:
            self._idle += 1
            give_up = time.monotonic() + self.idle_exit
            while not self._tasks:
                left = give_up - time.monotonic()
                if self._closed or left <= 0:
                    # No task is promised to this thread: the queue is empty.
                    self._idle -= 1
                    self._threads.discard(threading.current_thread())
                    return None
                self._task_queued.wait(left)
            return self._tasks.popleft()
