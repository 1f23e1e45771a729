"""The plan and the measuring: repetitions, calibration, medians, ratios.

Within a size, every repetition runs each contender once, back to back, so
that whatever else the machine is doing weighs on all of them alike; each
ratio is the median over repetitions of the ratio measured within one
repetition, which cancels most of that load.  Figures are medians too.

Throughput runs are sized by calibration: each contender's stream lasts
about ``run_seconds``, whatever its speed, so the slow ones do not eat the
budget and the fast ones are not over before they are measured.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .base import HEADER, Contender, Endpoint, TlsFiles
from .workers import Worker, WorkerError

MIB = 1024 * 1024
SIZES = [16, 256, 4096, 64 * 1024, MIB]
QUICK_SIZES = [16, 4096, MIB]
LATENCY_SIZES = [64, 4096]
SECTIONS = ("throughput", "latency", "concurrency", "memory")
# Contenders measured over Unix sockets in quick mode (all of them otherwise).
QUICK_UNIX = ("raw", "naive", "framecodec", "selector")
# The rows the one-CPU latency measures.
PINNED = ("raw", "framecodec", "selector", "threads")
# Where the scheduler puts a ping-pong pair decides its round trip: on one CPU
# a wake-up is a context switch; across two it is an inter-processor
# interrupt to an idle CPU, several times slower.  Left free, the pair lands
# one way or the other by chance, differently for each contender, so ratios
# taken there compare placements, not code.  Hence two pinned placements:
# both on one CPU, and server and client on two different ones.
CALIBRATION_BYTES = 256 * 1024
MAX_STREAM_BYTES = 8 * 1024 * MIB


@dataclass
class Plan:
    sizes: List[int]
    transports: List[str]
    reps: int
    run_seconds: float  # each throughput run lasts about this long
    rounds: int  # round trips per latency repetition
    warmup_rounds: int
    latency_budget: float  # a latency repetition stops after this many seconds
    clients: int
    load_seconds: float
    load_warmup: float
    memory_frames: List[int]  # stream lengths of the 1 MiB RSS measurement
    sections: Tuple[str, ...] = SECTIONS
    quick: bool = False
    step_timeout: float = 60.0  # bound on any one step of a worker
    unix_contenders: Optional[Tuple[str, ...]] = None  # only these over Unix sockets (None: all)
    latency_sizes: List[int] = field(default_factory=lambda: list(LATENCY_SIZES))


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(
            sizes=list(QUICK_SIZES),
            transports=["tcp", "unix"],
            reps=5,
            run_seconds=0.06,
            rounds=300,
            warmup_rounds=30,
            latency_budget=0.3,
            clients=64,
            load_seconds=0.2,
            load_warmup=0.05,
            memory_frames=[64],
            quick=True,
            unix_contenders=QUICK_UNIX,
        )
    return Plan(
        sizes=list(SIZES),
        transports=["tcp", "unix"],
        reps=5,
        run_seconds=0.25,
        rounds=2000,
        warmup_rounds=200,
        latency_budget=2.0,
        clients=64,
        load_seconds=1.0,
        load_warmup=0.2,
        memory_frames=[32, 256],
    )


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def spread(values: Sequence[float]) -> Optional[float]:
    """How far a figure's repetitions disagree: their interquartile range
    over their median (None with fewer than three)."""
    if len(values) < 3:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    middle = median(values)
    return (q3 - q1) / middle if middle else None


def paired_ratio(mine: Sequence[float], reference: Sequence[float]) -> Optional[float]:
    """The median of the ratios of figures measured in the same repetition."""
    pairs = [a / b for a, b in zip(mine, reference) if b]
    return median(pairs) if pairs and len(mine) == len(reference) else None


class Lab:
    """The worker processes and the measurements made with them.

    Contenders marked ``pure`` get a pair of workers of their own, started
    with FRAMECODEC_PURE_PYTHON=1.  A failed step kills its pair (a new one
    starts at the next step), so one broken contender cannot wedge the rest.
    """

    def __init__(self, plan: Plan, tls: Optional[TlsFiles]) -> None:
        self.plan = plan
        self.tls = tls
        self._pairs: Dict[bool, Tuple[Worker, Worker]] = {}
        self.implementations: Dict[str, str] = {}

    def endpoint(self, contender: Contender, transport: str) -> Endpoint:
        return Endpoint(transport, self.tls if contender.tls else None)

    def pair(self, pure: bool) -> Tuple[Worker, Worker]:
        if pure not in self._pairs:
            tag = "pure " if pure else ""
            receiver = Worker(f"{tag}receiving", pure)
            sender = Worker(f"{tag}sending", pure)
            self._pairs[pure] = (receiver, sender)
            info = receiver.call("info", self.plan.step_timeout)
            self.implementations["pure" if pure else "main"] = info["implementation"]
        return self._pairs[pure]

    def reset(self, pure: bool) -> None:
        for worker in self._pairs.pop(pure, ()):
            worker.kill()
            worker.close()

    def close(self) -> None:
        for pure in list(self._pairs):
            for worker in self._pairs.pop(pure):
                worker.close()

    def _guarded(self, pure: bool, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except BaseException:
            self.reset(pure)
            raise

    # -- one measurement each ---------------------------------------------------------

    def stream(
        self,
        contender: Contender,
        transport: str,
        size: int,
        count: int,
        receiver: Optional[Worker] = None,
    ) -> Dict[str, Any]:
        """One one-way stream of ``count`` frames; its seconds and the receiver's memory."""
        rx, tx = self.pair(contender.pure)
        rx = receiver or rx
        timeout = self.plan.step_timeout
        endpoint = self.endpoint(contender, transport)

        def step() -> Dict[str, Any]:
            address = rx.call(
                "open_receiver", timeout, key=contender.key, endpoint=endpoint, size=size
            )
            rx.submit("receive", count=count)
            start = tx.call(
                "send",
                timeout,
                key=contender.key,
                endpoint=endpoint,
                address=address,
                size=size,
                count=count,
            )
            result: Dict[str, Any] = rx.result(timeout)
            if result["frames"] != count:
                raise WorkerError(f"{count} frames sent but {result['frames']} received")
            result["seconds"] = result["end"] - start
            if result["seconds"] <= 0:
                raise WorkerError("the stream took no time: the clocks disagree")
            return result

        return self._guarded(contender.pure, step)  # type: ignore[no-any-return]

    def calibrate(self, contender: Contender, transport: str, size: int) -> int:
        """A frame count that makes one stream last about run_seconds.  The
        runs made to find it are the contender's warm-up."""
        target = self.plan.run_seconds
        most = max(2, MAX_STREAM_BYTES // (size + HEADER.size))
        count = max(2, min(most, CALIBRATION_BYTES // (size + HEADER.size)))
        seconds = self.stream(contender, transport, size, count)["seconds"]
        for _ in range(6):
            if seconds >= target / 3 or count >= most:
                break
            count = min(most, count * max(2, min(16, int(target / 3 / seconds) + 1)))
            seconds = self.stream(contender, transport, size, count)["seconds"]
        return max(2, min(most, int(count * target / seconds)))

    def latency(
        self, contender: Contender, size: int, cpus: Optional[Tuple[int, int]] = None
    ) -> List[float]:
        """Round-trip times (seconds) of one client against the contender's
        echo server; ``cpus`` pins the server and the client to these CPUs."""
        plan = self.plan
        samples: List[float] = self._against_echo(
            contender,
            1,
            "latency",
            cpus,
            size=size,
            rounds=plan.rounds,
            warmup=plan.warmup_rounds,
            budget=plan.latency_budget,
        )
        return samples

    def load(self, contender: Contender, size: int) -> float:
        """Requests per second that ``clients`` closed-loop clients get served."""
        plan = self.plan
        completed = self._against_echo(
            contender,
            plan.clients,
            "load",
            None,
            size=size,
            clients=plan.clients,
            duration=plan.load_seconds,
            warmup=plan.load_warmup,
        )
        return float(completed) / plan.load_seconds

    def _against_echo(
        self,
        contender: Contender,
        connections: int,
        op: str,
        cpus: Optional[Tuple[int, int]],
        **arguments: Any,
    ) -> Any:
        """Serve ``connections`` with the contender's echo server while the
        asking worker runs ``op`` against it; with ``cpus``, the server runs
        on the first and the asking worker on the second."""
        rx, tx = self.pair(contender.pure)
        timeout = self.plan.step_timeout
        endpoint = self.endpoint(contender, "tcp")

        def step() -> Any:
            if cpus is not None:
                rx.call("pin", timeout, cpus=[cpus[0]])
                tx.call("pin", timeout, cpus=[cpus[1]])
            try:
                address = rx.call("open_echo", timeout, key=contender.key, endpoint=endpoint)
                rx.call("start_echo", timeout, clients=connections)
                result = tx.call(
                    op, timeout, key=contender.key, endpoint=endpoint, address=address, **arguments
                )
                rx.call("stop_echo", timeout, timeout=timeout / 2)
            finally:
                if cpus is not None:
                    rx.call("pin", timeout, cpus=None)
                    tx.call("pin", timeout, cpus=None)
            return result

        return self._guarded(contender.pure, step)


# -- the sections -----------------------------------------------------------------------

Progress = Callable[[str], None]


def _rows_with_ratios(rows: List[Dict[str, Any]], key: str) -> List[Dict[str, Any]]:
    """Add vs_naive and vs_raw to rows of one group (one size, one transport)."""
    by_contender = {row["contender"]: row for row in rows}
    for row in rows:
        for reference in ("naive", "raw"):
            other = by_contender.get(reference)
            ratio = None
            if other is not None and not row["error"] and not other["error"]:
                ratio = paired_ratio(row[key], other[key])
            row[f"vs_{reference}"] = ratio
    return rows


def _throughput_group(plan: Plan, contenders: List[Contender], transport: str) -> List[Contender]:
    return [
        c
        for c in contenders
        if c.receiver is not None
        and transport in c.transports
        and (transport == "tcp" or plan.unix_contenders is None or c.key in plan.unix_contenders)
    ]


def _latency_runs(
    plan: Plan, contenders: List[Contender]
) -> List[Tuple[int, Optional[Tuple[int, int]], List[Contender]]]:
    """(size, CPUs or None, contenders) of each latency table."""
    group = [c for c in contenders if c.echo_server is not None and c.echo_client is not None]
    runs: List[Tuple[int, Optional[Tuple[int, int]], List[Contender]]] = [
        (size, None, group) for size in plan.latency_sizes
    ]
    available = _pinnable_cpus()
    if len(available) >= 2:
        runs.append((64, (available[-2], available[-1]), group))
    if available:
        runs.append((64, (available[-1], available[-1]), [c for c in group if c.key in PINNED]))
    return runs


def _concurrency_group(contenders: List[Contender]) -> List[Contender]:
    return [c for c in contenders if c.echo_server is not None and c.many_clients]


def count_steps(plan: Plan, contenders: List[Contender]) -> int:
    """The progress steps a run of ``plan`` takes (fewer if a contender fails)."""
    steps = 0
    for section in plan.sections:
        if section == "throughput":
            for transport in plan.transports:
                group = _throughput_group(plan, contenders, transport)
                steps += len(group) * len(plan.sizes) * (1 + plan.reps)
        elif section == "latency":
            steps += sum(
                len(members) * plan.reps for _, _, members in _latency_runs(plan, contenders)
            )
        elif section == "concurrency":
            steps += len(_concurrency_group(contenders)) * plan.reps
        elif section == "memory":
            receivers = [c for c in contenders if c.receiver is not None]
            steps += len(receivers) * len(plan.memory_frames)
    return steps


def measure_throughput(
    lab: Lab, contenders: List[Contender], progress: Progress, rows: List[Dict[str, Any]]
) -> None:
    plan = lab.plan
    for transport in plan.transports:
        group = _throughput_group(plan, contenders, transport)
        for size in plan.sizes:
            counts: Dict[str, int] = {}
            errors: Dict[str, str] = {}
            rates: Dict[str, List[float]] = {c.key: [] for c in group}
            for contender in group:
                progress(f"throughput {transport} {_size(size)}: calibrating {contender.label}")
                try:
                    counts[contender.key] = lab.calibrate(contender, transport, size)
                except WorkerError as exc:
                    errors[contender.key] = str(exc)
            for rep in range(plan.reps):
                for contender in group:
                    if contender.key in errors:
                        continue
                    progress(
                        f"throughput {transport} {_size(size)}: {contender.label} "
                        f"({rep + 1}/{plan.reps})"
                    )
                    count = counts[contender.key]
                    try:
                        seconds = lab.stream(contender, transport, size, count)["seconds"]
                    except WorkerError as exc:
                        errors[contender.key] = str(exc)
                        continue
                    rates[contender.key].append(count / seconds)
            group_rows = []
            for contender in group:
                frames_per_s = median(rates[contender.key]) if rates[contender.key] else None
                group_rows.append(
                    {
                        "transport": transport,
                        "size": size,
                        "contender": contender.key,
                        "label": contender.label,
                        "frames": counts.get(contender.key),
                        "samples": rates[contender.key],
                        "spread": spread(rates[contender.key]),
                        "frames_per_s": frames_per_s,
                        "mb_per_s": frames_per_s * size / 1e6 if frames_per_s else None,
                        "error": errors.get(contender.key),
                    }
                )
            rows += _rows_with_ratios(group_rows, "samples")


def measure_latency(
    lab: Lab, contenders: List[Contender], progress: Progress, rows: List[Dict[str, Any]]
) -> None:
    plan = lab.plan
    for size, cpus, members in _latency_runs(plan, contenders):
        p50: Dict[str, List[float]] = {c.key: [] for c in members}
        p99: Dict[str, List[float]] = {c.key: [] for c in members}
        errors: Dict[str, str] = {}
        where = placement_label(cpus)
        for rep in range(plan.reps):
            for contender in members:
                if contender.key in errors:
                    continue
                progress(
                    f"latency {_size(size)} {where}: {contender.label} ({rep + 1}/{plan.reps})"
                )
                try:
                    samples = lab.latency(contender, size, cpus)
                except WorkerError as exc:
                    errors[contender.key] = str(exc)
                    continue
                p50[contender.key].append(percentile(samples, 0.50))
                p99[contender.key].append(percentile(samples, 0.99))
        group_rows = [
            {
                "size": size,
                "cpus": list(cpus) if cpus is not None else None,
                "contender": c.key,
                "label": c.echo_label or c.label,
                "p50_us": median(p50[c.key]) * 1e6 if p50[c.key] else None,
                "p99_us": median(p99[c.key]) * 1e6 if p99[c.key] else None,
                "samples": p50[c.key],
                "spread": spread(p50[c.key]),
                "p99_samples": p99[c.key],
                "error": errors.get(c.key),
            }
            for c in members
        ]
        rows += _rows_with_ratios(group_rows, "samples")


def measure_concurrency(
    lab: Lab, contenders: List[Contender], progress: Progress, rows: List[Dict[str, Any]]
) -> None:
    plan = lab.plan
    group = _concurrency_group(contenders)
    rates: Dict[str, List[float]] = {c.key: [] for c in group}
    errors: Dict[str, str] = {}
    for rep in range(plan.reps):
        for contender in group:
            if contender.key in errors:
                continue
            progress(f"{plan.clients} clients: {contender.label} ({rep + 1}/{plan.reps})")
            try:
                rates[contender.key].append(lab.load(contender, 64))
            except WorkerError as exc:
                errors[contender.key] = str(exc)
    group_rows = [
        {
            "clients": plan.clients,
            "size": 64,
            "contender": c.key,
            "label": c.echo_label or c.label,
            "requests_per_s": median(rates[c.key]) if rates[c.key] else None,
            "samples": rates[c.key],
            "spread": spread(rates[c.key]),
            "error": errors.get(c.key),
        }
        for c in group
    ]
    rows += _rows_with_ratios(group_rows, "samples")


def measure_memory(
    lab: Lab, contenders: List[Contender], progress: Progress, rows: List[Dict[str, Any]]
) -> None:
    """Peak RSS of a fresh receiving process over a stream of 1 MiB frames,
    beyond what it held once ready to receive (the interpreter's baseline)."""
    plan = lab.plan
    size = MIB
    for contender in contenders:
        if contender.receiver is None:
            continue
        for frames in plan.memory_frames:
            progress(f"memory, {frames} x 1 MiB: {contender.label}")
            row: Dict[str, Any] = {
                "contender": contender.key,
                "label": contender.label,
                "size": size,
                "frames": frames,
                "error": None,
            }
            fresh = Worker("fresh receiving", contender.pure)
            try:
                result = lab.stream(contender, "tcp", size, frames, receiver=fresh)
                if result["rss_open"] is None or result["rss_peak"] is None:
                    row["error"] = "this system does not report peak memory"
                else:
                    row["baseline_mib"] = result["rss_open"] / MIB
                    row["peak_mib"] = result["rss_peak"] / MIB
                    row["excess_frames"] = (result["rss_peak"] - result["rss_open"]) / size
            except WorkerError as exc:
                row["error"] = str(exc)
            finally:
                fresh.close()
            rows.append(row)


def _pinnable_cpus() -> List[int]:
    """The CPUs this process may run on, where the system allows pinning."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def placement_label(cpus: Optional[Sequence[int]]) -> str:
    """Where a latency run placed its server and client, in words."""
    if cpus is None:
        return "placed by the scheduler"
    server, client = cpus
    if server == client:
        return f"both pinned to CPU {server}"
    return f"server on CPU {server}, client on CPU {client}"


def _size(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"


def run(
    plan: Plan,
    contenders: List[Contender],
    tls: Optional[TlsFiles],
    progress: Progress = lambda text: None,
) -> Dict[str, Any]:
    """Every section of the plan; the results as the JSON document holds them.

    Rows are kept as each group of them is complete, so Ctrl-C ends the run
    with what was measured so far (``results["interrupted"]`` is then True).
    """
    lab = Lab(plan, tls)
    started = time.monotonic()
    results: Dict[str, Any] = {"section_seconds": {}, "interrupted": False}
    measures = {
        "throughput": measure_throughput,
        "latency": measure_latency,
        "concurrency": measure_concurrency,
        "memory": measure_memory,
    }
    try:
        for section in plan.sections:
            begun = time.monotonic()
            results[section] = []
            measures[section](lab, contenders, progress, results[section])
            results["section_seconds"][section] = time.monotonic() - begun
    except KeyboardInterrupt:
        results["interrupted"] = True
    finally:
        lab.close()
    results["seconds"] = time.monotonic() - started
    results["implementations"] = lab.implementations
    return results
