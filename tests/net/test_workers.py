"""serve(..., workers=N): several processes on one address, supervised."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any, Iterator, List, Set

import pytest

import framecodec
from framecodec import ConnectionClosed, IncompleteFrameError
from framecodec.net.addresses import REUSE_PORT_OPTION
from framecodec.net.server import workers

from ..net_support import TIMEOUT, unix_path, wait_until

pytestmark = [
    pytest.mark.usefixtures("no_leaks", "no_children"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork"),
]


def children_of(pid: int) -> Set[int]:
    """The processes whose parent is ``pid`` (zombies included)."""
    found: Set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.update(int(child) for child in listing.read().split())
        except FileNotFoundError:
            pass
    return found


# Finding a process's children takes Linux's /proc; where it is missing the
# tests that need it are skipped (the others run).
HAS_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
needs_proc = pytest.mark.skipif(not HAS_PROC_CHILDREN, reason="needs /proc/PID/task/*/children")


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def no_children() -> Iterator[None]:
    """Fails a test that leaves a child process behind (and kills it)."""
    before = children_of(os.getpid())
    yield
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = children_of(os.getpid()) - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"child processes left behind: {sorted(left)}"


def pid_handler(frame: bytes) -> bytes:
    if frame == b"crash":
        os._exit(3)
    return str(os.getpid()).encode()


def request(address: Any, payload: bytes = b"pid", **options: Any) -> bytes:
    with framecodec.connect(address, timeout=TIMEOUT, **options) as client:
        return client.request(payload)  # type: ignore[no-any-return]


def pids_serving(pool: Any, connections: int = 64) -> Set[int]:
    """The pids behind ``connections`` connections open at once."""
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(framecodec.connect(pool.address, timeout=TIMEOUT))
            for _ in range(connections)
        ]
        for client in clients:
            client.send(b"pid")
        return {int(client.recv()) for client in clients}


# -- serving ------------------------------------------------------------------------


@pytest.mark.skipif(REUSE_PORT_OPTION is None, reason="no balancing SO_REUSEPORT here")
def test_workers_share_a_port_through_so_reuseport(backend: str) -> None:
    with framecodec.serve("127.0.0.1:0", pid_handler, backend=backend, workers=2).start() as pool:
        assert isinstance(pool, framecodec.Server)
        assert pool.reuse_port
        assert pool.address.port > 0
        assert len(pool.pids) == 2 and os.getpid() not in pool.pids
        assert pids_serving(pool) == set(pool.pids)  # the kernel spreads connections


@pytest.mark.parametrize("where", ["unix", "tcp-inherited"])
def test_workers_share_an_inherited_socket(where: str, tmp_path: Any, monkeypatch: Any) -> None:
    """The fallback: one listening socket, inherited by every worker."""
    monkeypatch.setattr(workers, "USE_REUSE_PORT", False)
    marker = tmp_path / "busy"

    def hold_or_pid(frame: bytes) -> bytes:
        if frame == b"hold":
            marker.touch()
            time.sleep(0.5)  # this worker cannot accept meanwhile
        return str(os.getpid()).encode()

    address = "unix:" + unix_path() if where == "unix" else "127.0.0.1:0"
    with framecodec.serve(address, hold_or_pid, workers=2).start() as pool:
        assert not pool.reuse_port
        with framecodec.connect(pool.address, timeout=TIMEOUT) as busy:
            busy.send(b"hold")
            wait_until(marker.exists, message="a worker to take the request")
            other = int(request(pool.address))  # only the idle worker can take it
            assert {int(busy.recv()), other} == set(pool.pids)
    if where == "unix":
        assert not os.path.exists(pool.address.path)  # the parent removed its file


def test_workers_serve_tls_and_messages(pki: Any) -> None:
    context = framecodec.server_context(pki.cert, pki.key)
    with framecodec.serve(
        "127.0.0.1:0", lambda m: m, workers=2, protocol="messages", ssl_context=context
    ).start() as pool:
        client_context = framecodec.client_context(pki.ca)
        with framecodec.connect(
            pool.address, protocol="messages", ssl_context=client_context, timeout=TIMEOUT
        ) as client:
            assert client.request({"a": 1}).value == {"a": 1}


def starttls_echo(frame: bytes) -> Any:
    if frame == b"STARTTLS":
        return framecodec.StartTLS(b"go ahead")
    return frame.upper()


def test_workers_upgrade_with_starttls(pki: Any) -> None:
    context = framecodec.server_context(pki.cert, pki.key)
    with framecodec.serve(
        "127.0.0.1:0", starttls_echo, workers=2, starttls_context=context
    ).start() as pool:
        for _ in range(4):  # connections land on either worker
            with framecodec.connect(pool.address, timeout=TIMEOUT) as client:
                assert client.request(b"STARTTLS") == b"go ahead"
                client.start_tls(framecodec.client_context(pki.ca), server_hostname="localhost")
                assert client.request(b"secret") == b"SECRET"


# -- supervision ---------------------------------------------------------------------


def test_crashed_worker_is_restarted(caplog: Any) -> None:
    with framecodec.serve("127.0.0.1:0", pid_handler, workers=2).start() as pool:
        before = set(pool.pids)
        crashed_errors = (ConnectionClosed, ConnectionResetError, IncompleteFrameError)
        with framecodec.connect(pool.address, timeout=TIMEOUT) as c, pytest.raises(crashed_errors):
            c.request(b"crash")
        wait_until(
            lambda: pool.stats["restarts"] == 1 and len(pool.pids) == 2,
            message="the crashed worker to be replaced",
        )
        after = set(pool.pids)
        (crashed,) = before - after
        assert not running(crashed)
        assert len(after - before) == 1
        assert pids_serving(pool) == after  # the replacement serves too
    assert "exited with code 3" in caplog.text


def test_worker_killed_from_outside_is_restarted() -> None:
    with framecodec.serve("127.0.0.1:0", pid_handler, workers=2).start() as pool:
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        # Connections that reach the dead worker's socket wait for its
        # replacement: none is refused or reset.
        assert len(pids_serving(pool, 32)) >= 1
        wait_until(
            lambda: len(pool.pids) == 2 and victim not in pool.pids,
            message="the killed worker to be replaced",
        )
        assert pool.stats["worker_exits"] == 1
        assert int(request(pool.address)) in pool.pids


def test_shutdown_stops_every_worker_and_drains(tmp_path: Any) -> None:
    marker = tmp_path / "busy"

    def slow(frame: bytes) -> bytes:
        marker.touch()
        time.sleep(0.3)
        return frame.upper()

    pool = framecodec.serve("127.0.0.1:0", slow, workers=2).start()
    pids = pool.pids
    assert len(pids) == 2 and all(running(pid) for pid in pids)
    with framecodec.connect(pool.address, timeout=TIMEOUT) as client:
        client.send(b"in flight")
        wait_until(marker.exists, message="the request to reach a worker")
        pool.shutdown(timeout=5)
        assert client.recv() == b"IN FLIGHT"  # drained before its worker stopped
    assert pool.pids == []
    assert not any(running(pid) for pid in pids)
    with pytest.raises(ConnectionRefusedError):
        request(pool.address)


def test_shutdown_kills_workers_that_do_not_drain(tmp_path: Any) -> None:
    marker = tmp_path / "busy"

    def stuck(frame: bytes) -> bytes:
        marker.touch()
        time.sleep(60)
        return frame

    pool = framecodec.serve("127.0.0.1:0", stuck, workers=2, backend="threads").start()
    pids = pool.pids
    with framecodec.connect(pool.address, timeout=TIMEOUT) as client:
        client.send(b"never answered")
        wait_until(marker.exists, message="the request to reach a worker")
        started = time.monotonic()
        pool.shutdown(timeout=0.2)
        assert time.monotonic() - started < 4
    assert not any(running(pid) for pid in pids)


def test_invalid_settings_fail_in_the_parent() -> None:
    with pytest.raises(TypeError, match="handler"):
        framecodec.serve("127.0.0.1:0", b"not callable", workers=2)
    with pytest.raises(ValueError, match="workers"):
        framecodec.serve("127.0.0.1:0", pid_handler, workers=0)
    with pytest.raises(ValueError, match="overflow"):
        framecodec.serve("127.0.0.1:0", pid_handler, workers=2, overflow="explode")


def test_workers_that_cannot_start_make_start_fail() -> None:
    class Broken(framecodec.Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("cannot serve here")

    pool = framecodec.serve("127.0.0.1:0", pid_handler, workers=2)
    pool.server_class = Broken  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="failed to start"):
        pool.start()
    assert pool.pids == []


# -- signals, in a process of its own ----------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import framecodec

    def pid(frame):
        return str(os.getpid()).encode()

    pool = framecodec.serve("127.0.0.1:0", pid, workers=2)
    print(pool.address, flush=True)
    pool.serve_forever()
    print("stopped", flush=True)
    """
)


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def first_line(proc: subprocess.Popen) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        assert selector.select(TIMEOUT), "the process printed nothing"
    return proc.stdout.readline().strip()  # type: ignore[union-attr]


def workers_of(proc: subprocess.Popen, count: int = 2) -> List[int]:
    wait_until(
        lambda: len([p for p in children_of(proc.pid) if running(p)]) == count,
        message=f"{count} workers",
    )
    return sorted(children_of(proc.pid))


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_forever_forwards_signals_to_workers(signum: int) -> None:
    with process("-c", SCRIPT) as proc:
        address = first_line(proc)
        pids = workers_of(proc)
        assert int(request(address)) in pids
        proc.send_signal(signum)
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()  # type: ignore[union-attr]
        assert proc.stdout.read().strip() == "stopped"  # type: ignore[union-attr]
        assert not any(running(pid) for pid in pids)


@needs_proc
def test_workers_stop_when_the_parent_dies() -> None:
    with process("-c", SCRIPT) as proc:
        first_line(proc)
        pids = workers_of(proc)
        proc.kill()
        proc.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(running(pid) for pid in pids), "orphaned workers kept running"


@needs_proc
def test_command_line_workers() -> None:
    path = f"/tmp/fc-{uuid.uuid4().hex[:12]}.sock"
    with process("-m", "framecodec", "serve", "unix:" + path, "--workers", "2", "--quiet") as proc:
        line = first_line(proc)
        assert line == f"serving frames on unix:{path} (selector backend, 2 workers)"
        pids = workers_of(proc)
        assert request("unix:" + path, b"echo me") == b"echo me"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()  # type: ignore[union-attr]
        assert not any(running(pid) for pid in pids)
        assert not os.path.exists(path)


def test_command_line_rejects_bad_worker_counts() -> None:
    with process("-m", "framecodec", "serve", "127.0.0.1:0", "--workers", "0") as proc:
        assert proc.wait(TIMEOUT) == 1
        assert "workers must be at least 1" in proc.stderr.read()  # type: ignore[union-attr]


def test_reuse_port_is_tcp_only() -> None:
    with pytest.raises(ValueError, match="reuse_port"):
        framecodec.net.addresses.bind_socket("unix:" + unix_path(), reuse_port=True)
    if framecodec.net.addresses.REUSE_PORT_OPTION is not None:
        first = framecodec.net.addresses.bind_socket("127.0.0.1:0", reuse_port=True)
        try:
            second = framecodec.net.addresses.bind_socket(first.address, backlog=8, reuse_port=True)
            second.close()
            with pytest.raises(OSError), socket.socket() as plain:
                plain.bind(first.address.sockaddr)  # without the option: refused
        finally:
            first.close()
