"""Connect, one request and reply, close: many times over, against each server
backend running alone in a process of its own, watching that process's
resident memory and open file descriptors for growth.

    python scripts/leak_cycles.py                          # 200,000 plain cycles per backend
    python scripts/leak_cycles.py --tls --tls-cycles 20000 # and TLS runs of 20,000
    python scripts/leak_cycles.py --backends selector,aio --cycles 50000 --json out.json

Backends: selector and threads (framecodec.serve), aio
(framecodec.aio.start_server), anyio (framecodec.anyio.serve on asyncio)
and anyio-trio (on trio; not in the default list).  TLS needs trustme (the
test extra).  The server echoes each frame behind a prefix; every reply is
checked.  The clients are blocking framecodec.connect() calls from
--clients threads of this process.

The run is cut into rounds (--samples, 50: every 2%).  After each round the
clients are idle, the server has closed every connection and collected its
garbage (gc.collect(): what it frees later anyway), and its VmRSS
(/proc/PID/status) and its open descriptors (/proc/PID/fd) are sampled.
The first --warmup (10%) of the cycles is left out of the slopes, which
are least squares over the samples, per 1,000 cycles.

Verdict per run: every reply verified, no client error, no server error
(every connection ended clean: ``closed`` == ``clean_closes`` == cycles),
the descriptor slope exactly 0 and the last count that of before the first
cycle, and the RSS slope under --rss-limit bytes per 1,000 cycles (8192:
8 bytes a connection, half the smallest Python object (16 bytes, and 32 or
more for anything a connection holds), so that one object leaked per
connection fails, while the allocator's creep measured on TLS runs, up to
4 KiB per 1,000 cycles and levelling off, passes).  The slope of Python's
allocated blocks (sys.getallocatedblocks, CPython) is reported beside it:
a leaked object shows there as 1,000 per 1,000 cycles, whatever the
allocator does with pages.  The exit status is 1 if any verdict fails.
Every loop is bounded in count and by --time-limit.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import pathlib
import platform
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import framecodec

BACKENDS = ("selector", "threads", "aio", "anyio", "anyio-trio")
DEFAULT_BACKENDS = ("selector", "threads", "aio", "anyio")
PREFIX = b"ok:"
SCRIPT = pathlib.Path(__file__).resolve()
SERVER_ERRORS = ("handler_errors", "protocol_errors", "tls_failures", "timeouts", "network_errors")


def reply_to(frame: bytes) -> bytes:
    return PREFIX + frame


# -- the server, in a child process of its own ---------------------------------------------


def tls_paths(directory: str) -> Tuple[str, str, str]:
    """(cert, key, ca) in ``directory``, as write_tls_files() leaves them."""
    return (f"{directory}/cert.pem", f"{directory}/key.pem", f"{directory}/ca.pem")


def write_tls_files(directory: str) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tls_paths(directory)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    ca.cert_pem.write_to_path(ca_path)


class BlockingHost:
    """framecodec.serve() with backend "selector" or "threads", in its thread."""

    def __init__(self, backend: str, context: Any) -> None:
        self.server = framecodec.serve(
            ("127.0.0.1", 0), reply_to, backend=backend, ssl_context=context
        ).start()
        self.port = self.server.address.port

    def snapshot(self) -> Dict[str, Any]:
        # Read at a quiet moment (no client running): nothing else writes them.
        return {"open": len(self.server.connections), "stats": dict(self.server.stats)}

    def stop(self) -> None:
        self.server.shutdown(timeout=10.0)


class AioHost:
    """framecodec.aio.start_server() on an asyncio loop in a thread of its own."""

    def __init__(self, backend: str, context: Any) -> None:
        import asyncio

        import framecodec.aio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aio-loop")
        self.thread.start()
        start = framecodec.aio.start_server(("127.0.0.1", 0), reply_to, ssl_context=context)
        self.server = self._call(start)
        self.port = self.server.address.port

    def _call(self, coroutine: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30.0)

    def snapshot(self) -> Dict[str, Any]:
        async def read() -> Dict[str, Any]:
            return {"open": len(self.server.connections), "stats": dict(self.server.stats)}

        return self._call(read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30.0)
        self.loop.close()


class AnyioHost:
    """framecodec.anyio.serve() in an anyio blocking portal (asyncio or trio)."""

    def __init__(self, backend: str, context: Any) -> None:
        from anyio.from_thread import start_blocking_portal

        import framecodec.anyio

        loop = "trio" if backend == "anyio-trio" else "asyncio"
        self.portal_context = start_blocking_portal(loop)
        self.portal = self.portal_context.__enter__()
        serve = functools.partial(framecodec.anyio.serve, ssl_context=context)
        self.done, self.server = self.portal.start_task(serve, ("127.0.0.1", 0), reply_to)
        self.port = self.server.address.port

    def snapshot(self) -> Dict[str, Any]:
        def read() -> Dict[str, Any]:
            return {"open": len(self.server.connections), "stats": dict(self.server.stats)}

        return self.portal.call(read)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.portal.call(self.server.close)
        self.done.result(30.0)
        self.portal_context.__exit__(None, None, None)


HOSTS: Dict[str, Callable[[str, Any], Any]] = {
    "selector": BlockingHost,
    "threads": BlockingHost,
    "aio": AioHost,
    "anyio": AnyioHost,
    "anyio-trio": AnyioHost,
}


def serve_child(backend: str, tls_dir: Optional[str], time_limit: float) -> None:
    """The child's side: serve, answer 'sample' and 'stop' lines on stdin
    with one JSON line each on stdout.  Ends at 'stop', at the end of stdin
    (the parent is gone) or after ``time_limit`` seconds, whichever first."""
    context = None
    if tls_dir is not None:
        cert, key, _ = tls_paths(tls_dir)
        context = framecodec.server_context(cert, key)
    # The watchdog: a parent that hangs without closing our stdin.
    watchdog = threading.Timer(time_limit, os._exit, (3,))
    watchdog.daemon = True
    watchdog.start()
    try:
        host = HOSTS[backend](backend, context)
    except BaseException:
        traceback.print_exc()
        os._exit(2)  # a portal's or loop's thread would keep the process alive

    def answer(message: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    answer({"port": host.port, "pid": os.getpid()})
    for line in sys.stdin:  # one line per sample: bounded by the parent's rounds
        if line.strip() != "sample":
            break
        gc.collect()
        report = host.snapshot()
        # Python's allocated memory blocks (CPython only): a leaked object
        # shows here whatever the allocator does with the pages beneath.
        report["blocks"] = sys.getallocatedblocks() if hasattr(sys, "getallocatedblocks") else None
        if context is not None:
            report["tls_sessions"] = context.session_stats()["number"]
        answer(report)
    host.stop()


class ServerProcess:
    """The parent's handle on a serve_child() process."""

    def __init__(self, backend: str, tls_dir: Optional[str], time_limit: float) -> None:
        command = [sys.executable, str(SCRIPT), "--serve-child", backend]
        command += ["--time-limit", str(time_limit)]
        if tls_dir is not None:
            command += ["--tls-dir", tls_dir]
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        ready = self._read()
        self.port, self.pid = ready["port"], ready["pid"]

    def _read(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        # One line per request, so nothing waits in the pipe's reader buffer.
        if not select.select([self.process.stdout], [], [], 60.0)[0]:
            raise RuntimeError(f"the server process did not answer: {self.stderr_tail()}")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server process ended: {self.stderr_tail()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def sample(self) -> Dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("sample\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(30.0)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10.0)
            self.stderr.close()

    def stderr_tail(self, size: int = 2000) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-size:]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Threads for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw."""

    cycles: int = 0
    verified: int = 0
    errors: Dict[str, int] = field(default_factory=dict)
    first_errors: List[str] = field(default_factory=list)

    def failed(self, exc: BaseException, lock: threading.Lock) -> None:
        with lock:
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{name}: {exc}")


def client_cycles(
    port: int, count: int, context: Any, deadline: float, tally: Tally, lock: threading.Lock
) -> None:
    """``count`` cycles (fewer past ``deadline`` or after 100 errors)."""
    done = verified = 0
    for n in range(count):
        if time.monotonic() > deadline or sum(tally.errors.values()) >= 100:
            break
        payload = b"%d:%d" % (threading.get_ident(), n)
        done += 1
        try:
            with framecodec.connect(("127.0.0.1", port), timeout=10.0, ssl_context=context) as c:
                reply = c.request(payload)
        except Exception as exc:
            tally.failed(exc, lock)
            continue
        if reply == reply_to(payload):
            verified += 1
        else:
            tally.failed(ValueError(f"reply {reply[:40]!r} to {payload!r}"), lock)
    with lock:
        tally.cycles += done
        tally.verified += verified


def run_round(
    port: int, count: int, clients: int, context: Any, deadline: float, tally: Tally
) -> None:
    lock = threading.Lock()
    shares = [count // clients + (i < count % clients) for i in range(clients)]
    threads = [
        threading.Thread(target=client_cycles, args=(port, s, context, deadline, tally, lock))
        for s in shares
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # bounded: each client's connect and reads time out after 10 s


# -- one run -------------------------------------------------------------------------------


@dataclass
class Sample:
    cycles: int
    rss: int
    fds: int
    threads: int
    open: int
    blocks: Optional[int] = None
    tls_sessions: Optional[int] = None


@dataclass
class Result:
    backend: str
    tls: bool
    requested: int
    cycles: int = 0
    verified: int = 0
    seconds: float = 0.0
    client_errors: Dict[str, int] = field(default_factory=dict)
    first_errors: List[str] = field(default_factory=list)
    initial: Optional[Sample] = None
    samples: List[Sample] = field(default_factory=list)
    warmup_cycles: int = 0
    stats: Dict[str, int] = field(default_factory=dict)
    rss_slope: float = 0.0  # bytes per 1,000 cycles after the warm-up
    fd_slope: float = 0.0
    blocks_slope: Optional[float] = None  # allocated blocks per 1,000 cycles (CPython)
    failures: List[str] = field(default_factory=list)
    server_stderr: str = ""

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def slope_per_1000(points: Sequence[Tuple[int, int]]) -> float:
    """Least-squares slope of (cycles, value), per 1,000 cycles."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return 1000.0 * sxy / sxx if sxx else 0.0


def quiet_sample(server: ServerProcess, cycles: int, fds_before: Optional[int]) -> Sample:
    """A sample once the server has closed every connection, and its
    descriptor count is back to ``fds_before`` (waited for 5 s at most:
    a descriptor still open then is one too many)."""
    give_up = time.monotonic() + 5.0
    while True:
        report = server.sample()
        fds = open_fds(server.pid)
        settled = report["open"] == 0 and (fds_before is None or fds <= fds_before)
        if settled or time.monotonic() > give_up:
            break
        time.sleep(0.02)
    return Sample(
        cycles,
        rss_bytes(server.pid),
        fds,
        threads_of(server.pid),
        report["open"],
        report.get("blocks"),
        report.get("tls_sessions"),
    )


def measure(
    backend: str,
    *,
    tls_dir: Optional[str],
    cycles: int,
    clients: int = 2,
    samples: int = 50,
    warmup: float = 0.1,
    deadline: float,
    rss_limit: float = 8192.0,
) -> Result:
    """Run ``cycles`` cycles against a fresh ``backend`` server; the Result
    carries the figures and the verdict (``failures``, empty when it passed)."""
    result = Result(backend, tls_dir is not None, cycles)
    context = None
    if tls_dir is not None:
        context = framecodec.client_context(cafile=tls_paths(tls_dir)[2])
    left = max(deadline - time.monotonic(), 1.0)
    server = ServerProcess(backend, tls_dir, time_limit=left + 60.0)
    stats: Dict[str, Any] = {}
    try:
        result.initial = quiet_sample(server, 0, None)
        tally = Tally()
        rounds = max(1, min(samples, cycles))
        result.warmup_cycles = int(cycles * warmup)
        for r in range(rounds):
            target = cycles * (r + 1) // rounds
            if time.monotonic() > deadline or tally.errors:
                break
            started = time.perf_counter()
            run_round(server.port, target - tally.cycles, clients, context, deadline, tally)
            result.seconds += time.perf_counter() - started
            result.samples.append(quiet_sample(server, tally.cycles, result.initial.fds))
        stats = server.sample()["stats"]
    finally:
        result.server_stderr = server.stderr_tail()
        server.stop()
    result.cycles, result.verified = tally.cycles, tally.verified
    result.client_errors, result.first_errors = tally.errors, tally.first_errors
    result.stats = {k: int(v) for k, v in sorted(stats.items())}
    judge(result, rss_limit)
    return result


def judge(result: Result, rss_limit: float) -> None:
    after = [s for s in result.samples if s.cycles >= result.warmup_cycles]
    result.rss_slope = slope_per_1000([(s.cycles, s.rss) for s in after])
    result.fd_slope = slope_per_1000([(s.cycles, s.fds) for s in after])
    if after and all(s.blocks is not None for s in after):
        result.blocks_slope = slope_per_1000([(s.cycles, s.blocks or 0) for s in after])
    fail = result.failures
    if result.cycles < result.requested:
        fail.append(f"cut short: {result.cycles} of {result.requested} cycles")
    if result.verified != result.cycles:
        fail.append(f"{result.cycles - result.verified} replies not verified")
    if result.client_errors:
        fail.append(f"client errors {result.client_errors}: {result.first_errors}")
    stats = result.stats
    if stats.get("closed") != result.cycles or stats.get("clean_closes") != result.cycles:
        fail.append(f"server closed {stats.get('closed')}, cleanly {stats.get('clean_closes')}")
    errors = {k: stats[k] for k in SERVER_ERRORS if stats.get(k)}
    if errors:
        fail.append(f"server errors {errors}")
    if result.fd_slope != 0.0:
        fail.append(f"fd slope {result.fd_slope:+.3f} per 1,000 cycles")
    assert result.initial is not None
    if result.samples and result.samples[-1].fds != result.initial.fds:
        fail.append(f"fds {result.initial.fds} before, {result.samples[-1].fds} after")
    if result.rss_slope >= rss_limit:
        fail.append(f"RSS slope {result.rss_slope:.0f} B per 1,000 cycles >= {rss_limit:.0f}")


# -- the report ----------------------------------------------------------------------------

HEADER = (
    "| backend | TLS | cycles | cycles/s | RSS start | RSS end | RSS slope | fds start/end "
    "| fd slope | blocks slope | threads start/end | closed | errors | verdict |"
)


def table_row(r: Result) -> str:
    assert r.initial is not None
    first = next((s for s in r.samples if s.cycles >= r.warmup_cycles), r.initial)
    last = r.samples[-1] if r.samples else r.initial
    errors = sum(r.stats.get(k, 0) for k in SERVER_ERRORS) + sum(r.client_errors.values())
    cells = [
        r.backend,
        "yes" if r.tls else "no",
        f"{r.cycles:,}",
        f"{r.rate:,.0f}",
        f"{first.rss / 2**20:.1f} MiB",
        f"{last.rss / 2**20:.1f} MiB",
        f"{r.rss_slope:+.0f} B/1k",
        f"{r.initial.fds}/{last.fds}",
        f"{r.fd_slope:+.2f}",
        "-" if r.blocks_slope is None else f"{r.blocks_slope:+.1f}",
        f"{first.threads}/{last.threads}",
        f"{r.stats.get('closed', 0):,}",
        str(errors),
        "pass" if not r.failures else "FAIL",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200_000, help="plain cycles per backend")
    parser.add_argument("--tls", action="store_true", help="TLS runs too")
    parser.add_argument("--tls-only", action="store_true", help="TLS runs only")
    parser.add_argument("--tls-cycles", type=int, default=20_000, help="TLS cycles per backend")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated, of {', '.join(BACKENDS)}")  # fmt: skip
    parser.add_argument("--clients", type=int, default=2, help="client threads (2)")
    parser.add_argument("--samples", type=int, default=50, help="samples per run (50)")
    parser.add_argument("--warmup", type=float, default=0.1, help="share left out (0.1)")
    parser.add_argument("--rss-limit", type=float, default=8192.0,
                        help="largest RSS slope passed, bytes per 1,000 cycles (8192)")  # fmt: skip
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="seconds for the whole script (3600)")  # fmt: skip
    parser.add_argument("--json", help="write every figure and sample there")
    parser.add_argument("--serve-child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_child:
        serve_child(args.serve_child, args.tls_dir, args.time_limit)
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    deadline = time.monotonic() + args.time_limit
    plan = [(b, False, args.cycles) for b in backends if not args.tls_only]
    if args.tls or args.tls_only:
        plan += [(b, True, args.tls_cycles) for b in backends]
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"framecodec {framecodec.__version__} ({framecodec.IMPLEMENTATION} core), "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {args.clients} client threads",
        flush=True,
    )
    print(HEADER + "\n|" + "---|" * HEADER.count(" | ") + "---|", flush=True)
    results: List[Result] = []
    with tempfile.TemporaryDirectory() as directory:
        if any(tls for _, tls, _ in plan):
            write_tls_files(directory)
        for backend, tls, count in plan:
            result = measure(
                backend,
                tls_dir=directory if tls else None,
                cycles=count,
                clients=args.clients,
                samples=args.samples,
                warmup=args.warmup,
                deadline=deadline,
                rss_limit=args.rss_limit,
            )
            results.append(result)
            print(table_row(result), flush=True)
    for r in results:
        for failure in r.failures:
            print(f"{r.backend}{' TLS' if r.tls else ''}: {failure}", file=sys.stderr)
    if args.json:
        rows = [dict(asdict(r), rate=r.rate) for r in results]
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
