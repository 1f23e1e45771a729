"""The threads backend's pool of worker threads (net/server/pool.py): as many
threads as tasks run at once, whatever the timing; idle ones end; none keeps
the interpreter alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import Callable, List

import pytest

import framecodec
from framecodec.net.server.pool import WorkerThreads

pytestmark = pytest.mark.usefixtures("no_leaks")


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_tasks_that_follow_one_another_share_one_thread() -> None:
    pool = WorkerThreads("test")
    try:
        for _ in range(200):
            done = threading.Event()
            pool.submit(done.set)
            assert done.wait(5.0)
            assert wait_until(lambda: pool.idle == 1)
        assert pool.threads == 1
    finally:
        pool.shutdown()
    assert pool.threads == 0


def test_tasks_submitted_as_others_finish_start_no_thread_a_waiting_one_could_run() -> None:
    """Two submitters, each waiting for its task to end before the next:
    two tasks run at once at most, plus two threads finishing.  (The
    stdlib's ThreadPoolExecutor on 3.12.1 loses count of its idle threads
    in just this pattern: it had started hundreds.)"""
    pool = WorkerThreads("test")
    errors: List[BaseException] = []

    def submitter() -> None:
        try:
            for _ in range(2000):
                done = threading.Event()
                pool.submit(done.set)
                assert done.wait(5.0)
        except BaseException as exc:  # seen by the test's thread
            errors.append(exc)

    submitters = [threading.Thread(target=submitter) for _ in range(2)]
    try:
        for t in submitters:
            t.start()
        for t in submitters:
            t.join(60.0)
        assert not errors
        assert pool.threads <= 4
        assert wait_until(lambda: pool.idle == pool.threads)
    finally:
        pool.shutdown()


def test_tasks_that_run_at_once_get_a_thread_each() -> None:
    pool = WorkerThreads("test")
    release = threading.Event()
    started = threading.Semaphore(0)

    def task() -> None:
        started.release()
        release.wait(10.0)

    try:
        for _ in range(5):
            pool.submit(task)
        for _ in range(5):
            assert started.acquire(timeout=5.0)
        assert pool.threads == 5 and pool.idle == 0
    finally:
        release.set()
        pool.shutdown()
    assert pool.threads == 0


def test_an_idle_thread_ends_after_idle_exit() -> None:
    pool = WorkerThreads("test", idle_exit=0.05)
    try:
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5.0)
        assert wait_until(lambda: pool.threads == 0)
        assert pool.idle == 0
        again = threading.Event()
        pool.submit(again.set)  # a new thread for the next task
        assert again.wait(5.0)
    finally:
        pool.shutdown()


def test_a_task_that_raises_ends_its_thread_and_no_other() -> None:
    pool = WorkerThreads("test")
    seen: List[type] = []

    def fail() -> None:
        raise ZeroDivisionError

    hook = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_type)
    try:
        pool.submit(fail)
        assert wait_until(lambda: pool.threads == 0)
        assert seen == [ZeroDivisionError]
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5.0)
        assert wait_until(lambda: pool.idle == 1)
    finally:
        threading.excepthook = hook
        pool.shutdown()


def test_no_task_after_shutdown() -> None:
    pool = WorkerThreads("test")
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)


def test_a_program_that_ends_without_shutting_its_threads_server_down_exits() -> None:
    """With ThreadPoolExecutor's threads, joined at exit, this hung for as
    long as the connection stayed open."""
    program = textwrap.dedent(
        """
        import framecodec
        server = framecodec.serve(("127.0.0.1", 0), lambda f: f, backend="threads").start()
        client = framecodec.connect(("127.0.0.1", server.address.port), timeout=10)
        assert client.request(b"ping") == b"ping"
        print("done", flush=True)
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
    )
    assert (finished.returncode, finished.stdout) == (0, "done\n"), finished.stderr


def test_a_threads_server_reuses_the_thread_of_a_closed_connection() -> None:
    with framecodec.serve(("127.0.0.1", 0), lambda f: f, backend="threads").start() as server:
        for n in range(50):
            with framecodec.connect(("127.0.0.1", server.address.port), timeout=10) as c:
                assert c.request(b"%d" % n) == b"%d" % n
            assert wait_until(lambda: not server.connections and server._pool.idle >= 1)
        assert server._pool.threads == 1
