"""Worker processes: one runs the receiving or serving side, another the
sending or asking side, so the GIL of one never throttles the other.

Workers are started with the "spawn" method (a fresh interpreter: the same
on every platform, and the only way FRAMECODEC_PURE_PYTHON=1 can take
effect, since it is read at import).  A worker obeys requests ``(op,
arguments)`` over a pipe and answers ``("ok", result)`` or ``("error",
text)``; the parent waits for each answer with a deadline and kills the
worker when it passes, so no loop of the benchmark can run unbounded.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, Iterator, List, Optional

PURE_ENV = "FRAMECODEC_PURE_PYTHON"


class WorkerError(RuntimeError):
    """An operation failed inside a worker, or the worker died or overran."""


def peak_rss() -> Optional[int]:
    """The most memory this process has held (bytes), where the system says.

    Linux's VmHWM counts this program only; ru_maxrss, elsewhere, may also
    count the parent a spawned process was forked from before its exec.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


# -- inside a worker --------------------------------------------------------------------


class _State:
    """What a worker keeps between requests: the receiver or server it opened."""

    def __init__(self) -> None:
        self.receiver: Any = None
        self.server: Any = None
        self.rss_open: Optional[int] = None
        self.affinity: Optional[List[int]] = None


def _contender(key: str) -> Any:
    from .contenders import BY_KEY

    return BY_KEY[key]


def _info(state: _State) -> Dict[str, Any]:
    import framecodec

    return {"implementation": framecodec.IMPLEMENTATION, "pid": os.getpid()}


def _open_receiver(state: _State, key: str, endpoint: Any, size: int) -> str:
    state.receiver = _contender(key).receiver(endpoint, size)
    state.rss_open = peak_rss()
    return str(state.receiver.address)


def _receive(state: _State, count: int) -> Dict[str, Any]:
    receiver, state.receiver = state.receiver, None
    try:
        frames, end = receiver.receive(count)
    finally:
        receiver.close()
    return {"frames": frames, "end": end, "rss_open": state.rss_open, "rss_peak": peak_rss()}


def _send(state: _State, key: str, endpoint: Any, address: str, size: int, count: int) -> float:
    from .base import payload_of, perf_counter

    sender = _contender(key).sender(endpoint, address, payload_of(size))
    try:
        start = perf_counter()
        began = sender.send(count)
    finally:
        sender.close()
    return start if began is None else float(began)


def _open_echo(state: _State, key: str, endpoint: Any) -> str:
    state.server = _contender(key).echo_server(endpoint)
    return str(state.server.address)


def _start_echo(state: _State, clients: int) -> None:
    state.server.start(clients)


def _stop_echo(state: _State, timeout: float) -> None:
    server, state.server = state.server, None
    server.stop(timeout)


def _latency(
    state: _State,
    key: str,
    endpoint: Any,
    address: str,
    size: int,
    rounds: int,
    warmup: int,
    budget: float,
) -> List[float]:
    from .base import payload_of

    client = _contender(key).echo_client(endpoint, address, payload_of(size))
    try:
        samples: List[float] = client.latencies(rounds, warmup, budget)
    finally:
        client.close()
    return samples


def _load(
    state: _State,
    key: str,
    endpoint: Any,
    address: str,
    size: int,
    clients: int,
    duration: float,
    warmup: float,
) -> int:
    from . import loadgen
    from .base import payload_of

    payload = payload_of(size)
    if _contender(key).loadgen == "zmq":
        return loadgen.drive_zmq(address, payload, clients, duration, warmup)
    return loadgen.drive_frames(endpoint, address, payload, clients, duration, warmup)


def _pin(state: _State, cpus: Optional[List[int]]) -> None:
    """Run on ``cpus`` only; None restores the CPUs the worker started with."""
    if state.affinity is None:
        state.affinity = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus if cpus is not None else state.affinity)


OPERATIONS: Dict[str, Callable[..., Any]] = {
    "info": _info,
    "open_receiver": _open_receiver,
    "receive": _receive,
    "send": _send,
    "open_echo": _open_echo,
    "start_echo": _start_echo,
    "stop_echo": _stop_echo,
    "latency": _latency,
    "load": _load,
    "pin": _pin,
}


def serve_requests(conn: Connection) -> None:
    """A worker's life: obey requests until the pipe closes or None arrives."""
    state = _State()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        op, arguments = request
        try:
            reply = ("ok", OPERATIONS[op](state, **arguments))
        except BaseException as exc:  # reported to the parent, which decides
            reply = ("error", f"{op}: {type(exc).__name__}: {exc}")
        conn.send(reply)


# -- in the parent ----------------------------------------------------------------------


@contextlib.contextmanager
def _environment(pure: bool) -> Iterator[None]:
    """FRAMECODEC_PURE_PYTHON as the worker about to start must see it."""
    saved = os.environ.get(PURE_ENV)
    if pure:
        os.environ[PURE_ENV] = "1"
    else:
        os.environ.pop(PURE_ENV, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PURE_ENV, None)
        else:
            os.environ[PURE_ENV] = saved


class Worker:
    """A worker process as the parent sees it."""

    def __init__(self, name: str, pure: bool = False) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        with _environment(pure):
            self.process = context.Process(
                target=serve_requests, args=(child,), name=name, daemon=True
            )
            self.process.start()
        child.close()

    def submit(self, op: str, **arguments: Any) -> None:
        self._conn.send((op, arguments))

    def result(self, bound: float) -> Any:
        """The answer to the last request, waiting at most ``bound`` seconds."""
        try:
            ready = self._conn.poll(bound)
            if ready:
                status, value = self._conn.recv()
        except (EOFError, OSError):
            raise WorkerError(f"the {self.name} worker died") from None
        if not ready:
            raise WorkerError(f"the {self.name} worker overran its {bound:.0f} s bound")
        if status != "ok":
            raise WorkerError(value)
        return value

    def call(self, op: str, bound: float, **arguments: Any) -> Any:
        self.submit(op, **arguments)
        return self.result(bound)

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not at once."""
        try:
            self._conn.send(None)
        except OSError:
            pass
        self.process.join(1.0)
        if self.process.is_alive():
            self.kill()
        self._conn.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5.0)
