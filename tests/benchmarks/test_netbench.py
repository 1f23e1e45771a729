"""The socket benchmark's machinery (framecodec.benchmarks) on tiny streams.

What is checked is that every contender moves and counts frames correctly,
that a wrong count is caught rather than reported as a rate, and that a run
produces the documented JSON structure.  No speed is asserted: these
machines are shared and noisy; the benchmark prints ratios instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import threading
from typing import Any, Dict, List, Optional, Tuple

import pytest

from framecodec.benchmarks import cli, loadgen, report
from framecodec.benchmarks.base import Contender, Endpoint, TlsFiles, payload_of
from framecodec.benchmarks.contenders import BY_KEY, CONTENDERS
from framecodec.benchmarks.runner import Plan, make_plan, paired_ratio, percentile
from framecodec.benchmarks.workers import Worker, WorkerError

from ..net_fixtures import require_trustme
from ..net_support import TIMEOUT

# The pure-Python contender runs the selector contender's code, in processes
# started with FRAMECODEC_PURE_PYTHON=1: in-process it would repeat "selector".
IN_PROCESS = [c for c in CONTENDERS if not c.pure]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Optional[TlsFiles]:
    """The TLS rows' certificates; None where trustme cannot be installed
    (PyPy: the TLS rows are then skipped, saying why, in endpoint_for)."""
    if require_trustme_or_none() is None:
        return None
    files, reason = cli.make_tls_files(str(tmp_path_factory.mktemp("tls")))
    assert files is not None, reason
    return files


def require_trustme_or_none() -> Any:
    try:
        return require_trustme()
    except pytest.skip.Exception:
        return None


def endpoint_for(
    contender: Contender, tls_files: Optional[TlsFiles], transport: str = "tcp"
) -> Endpoint:
    if contender.tls and tls_files is None:
        require_trustme()  # skips, saying why
    return Endpoint(transport, tls_files if contender.tls else None)


def needs(contender: Contender) -> None:
    reason = contender.available()
    if reason is not None:
        pytest.skip(reason)  # pyzmq is an optional extra: its rows are absent without it


def stream(
    contender: Contender, endpoint: Endpoint, size: int, sent: int, expected: int
) -> Tuple[int, float]:
    """``sent`` frames through the contender, its receiver expecting
    ``expected``; the receiver runs in a thread."""
    assert contender.receiver is not None and contender.sender is not None
    receiver = contender.receiver(endpoint, size)
    outcome: Dict[str, Any] = {}

    def receive() -> None:
        try:
            outcome["result"] = receiver.receive(expected)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    sender = contender.sender(endpoint, receiver.address, payload_of(size))
    try:
        sender.send(sent)
    finally:
        sender.close()
    thread.join(TIMEOUT)
    receiver.close()
    assert not thread.is_alive(), "the receiver did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("size", [16, 1000, 70_000])
@pytest.mark.parametrize("contender", IN_PROCESS, ids=lambda c: c.key)
def test_every_frame_is_counted(
    contender: Contender, size: int, tls_files: Optional[TlsFiles]
) -> None:
    needs(contender)
    # Several batches and a remainder for the batching senders; a few large frames.
    count = 5000 if size == 16 else 7
    frames, end = stream(contender, endpoint_for(contender, tls_files), size, count, count)
    assert frames == count
    assert end > 0


@pytest.mark.parametrize("contender", ["raw", "naive", "framecodec", "selector", "mp", "asyncio"])
def test_unix_sockets(contender: str, tls_files: Optional[TlsFiles]) -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("this system has no Unix sockets")
    chosen = BY_KEY[contender]
    assert stream(chosen, endpoint_for(chosen, tls_files, "unix"), 100, 50, 50)[0] == 50


@pytest.mark.parametrize("sent", [9, 11])
@pytest.mark.parametrize("contender", IN_PROCESS, ids=lambda c: c.key)
def test_a_wrong_count_is_an_error_not_a_rate(
    contender: Contender, sent: int, tls_files: Optional[TlsFiles]
) -> None:
    needs(contender)
    if contender.key == "zmq":
        pytest.skip("zmq messages have no end of stream; the runner's time bound catches it")
    # Each alternative reports a short stream its own way, always an EOFError.
    error = EOFError if sent < 10 else ValueError
    with pytest.raises(error):
        stream(contender, endpoint_for(contender, tls_files), 100, sent, 10)


@pytest.mark.parametrize("size", [64, 5000])
@pytest.mark.parametrize(
    "contender",
    [c for c in IN_PROCESS if c.echo_server is not None],
    ids=lambda c: c.key,
)
def test_echo_round_trips(contender: Contender, size: int, tls_files: Optional[TlsFiles]) -> None:
    needs(contender)
    assert contender.echo_server is not None and contender.echo_client is not None
    endpoint = endpoint_for(contender, tls_files)
    server = contender.echo_server(endpoint)
    server.start(1)
    client = contender.echo_client(endpoint, server.address, payload_of(size))
    try:
        samples = client.latencies(rounds=20, warmup=3, budget=TIMEOUT)
    finally:
        client.close()
    server.stop(TIMEOUT)
    assert len(samples) == 20
    assert all(sample > 0 for sample in samples)


@pytest.mark.parametrize(
    "contender",
    [c for c in IN_PROCESS if c.echo_server is not None and c.many_clients],
    ids=lambda c: c.key,
)
def test_many_clients(contender: Contender, tls_files: Optional[TlsFiles]) -> None:
    needs(contender)
    assert contender.echo_server is not None
    endpoint = endpoint_for(contender, tls_files)
    server = contender.echo_server(endpoint)
    server.start(4)
    payload = payload_of(64)
    if contender.loadgen == "zmq":
        completed = loadgen.drive_zmq(server.address, payload, 4, 0.05, 0.01)
    else:
        completed = loadgen.drive_frames(endpoint, server.address, payload, 4, 0.05, 0.01)
    server.stop(TIMEOUT)
    assert completed > 0


def test_statistics() -> None:
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 0.5) == 3.0
    assert percentile([float(i) for i in range(100)], 0.99) == 99.0
    # Ratios pair repetitions: a load that slows both sides alike cancels out.
    assert paired_ratio([10.0, 20.0, 40.0], [5.0, 10.0, 20.0]) == 2.0
    assert paired_ratio([1.0, 2.0], [1.0]) is None  # a failed repetition: no ratio


def test_a_worker_checks_the_count() -> None:
    """Through real worker processes, as the runner drives them."""
    receiving, sending = Worker("test receiving"), Worker("test sending")
    try:
        endpoint = Endpoint("tcp")
        for sent, error in ((4, "ended after 4 of 5"), (6, "went on")):
            address = receiving.call(
                "open_receiver", TIMEOUT, key="framecodec", endpoint=endpoint, size=32
            )
            receiving.submit("receive", count=5)
            sending.call(
                "send",
                TIMEOUT,
                key="framecodec",
                endpoint=endpoint,
                address=address,
                size=32,
                count=sent,
            )
            with pytest.raises(WorkerError, match=error):
                receiving.result(TIMEOUT)
    finally:
        receiving.close()
        sending.close()


def tiny_plan() -> Plan:
    plan = make_plan(quick=True)
    plan.sizes = [16, 2000]
    plan.transports = ["tcp"]
    plan.reps = 2
    plan.run_seconds = 0.002
    plan.rounds = 10
    plan.warmup_rounds = 2
    plan.latency_sizes = [64]
    plan.clients = 4
    plan.load_seconds = 0.03
    plan.load_warmup = 0.01
    plan.memory_frames = [2]
    plan.step_timeout = TIMEOUT
    return plan


def _placement(cpus: Any) -> str:
    if cpus is None:
        return "free"
    return "one CPU" if len(set(cpus)) == 1 else "two CPUs"


def test_a_run_produces_the_json_structure(tmp_path: Any) -> None:
    contenders = [BY_KEY[key] for key in ("raw", "naive", "selector")]
    results = cli.run_and_report(tiny_plan(), contenders, {"pyzmq": "left out"}, None)
    text = results.pop("report")
    path = tmp_path / "bench.json"
    report.write_json(results, str(path))
    loaded = json.loads(path.read_text())

    assert set(loaded) >= {"meta", "throughput", "latency", "concurrency", "memory", "targets"}
    assert loaded["meta"]["absent"] == {"pyzmq": "left out"}
    assert loaded["meta"]["implementations"]["main"] in ("cython", "python")
    throughput: List[Dict[str, Any]] = loaded["throughput"]
    assert {(row["size"], row["contender"]) for row in throughput} == {
        (size, key) for size in (16, 2000) for key in ("raw", "naive", "selector")
    }
    for row in throughput:
        assert row["error"] is None, row
        assert len(row["samples"]) == 2
        assert row["frames_per_s"] > 0 and row["mb_per_s"] > 0
        assert row["vs_naive"] > 0 and row["vs_raw"] > 0
        if row["contender"] == "raw":
            assert row["vs_raw"] == 1.0
    placements = {(row["contender"], _placement(row["cpus"])) for row in loaded["latency"]}
    expected = {(key, "free") for key in ("raw", "naive", "selector")}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    if cpus >= 2:
        expected |= {(key, "two CPUs") for key in ("raw", "naive", "selector")}
    if cpus >= 1:
        expected |= {("raw", "one CPU"), ("selector", "one CPU")}
    assert placements == expected
    assert all(row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"] for row in loaded["latency"])
    assert {row["contender"] for row in loaded["concurrency"]} == {"raw", "naive", "selector"}
    assert all(row["requests_per_s"] > 0 for row in loaded["concurrency"])
    memory = {row["contender"]: row for row in loaded["memory"]}
    assert set(memory) == {"raw", "naive", "selector"}
    assert all(row["error"] is None or "peak memory" in row["error"] for row in memory.values())
    statuses = {target["status"] for target in loaded["targets"]}
    assert statuses <= {"met", "partly met", "MISSED", "not measured"}
    assert any(t["target"].startswith("16 B frames: at least 20x") for t in loaded["targets"])
    for label in ("raw sockets, no framing", "naive loop", "framecodec selector server"):
        assert label in text
    assert "Not measured: pyzmq: left out" in text
    if importlib.util.find_spec("matplotlib") is not None:  # the optional 'bench' extra
        png = tmp_path / "bench.png"
        report.plot(results, str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _latency_row(contender: str, cpus: Any, p50s: List[float]) -> Dict[str, Any]:
    return {
        "size": 64,
        "cpus": cpus,
        "contender": contender,
        "label": contender,
        "error": None,
        "samples": p50s,
        "p50_us": p50s[0] * 1e6,
        "p99_us": p50s[0] * 2e6,
        "vs_raw": None,
        "vs_naive": None,
    }


def test_latency_targets_are_judged_on_pinned_placements_not_the_free_one() -> None:
    # Left free, raw landed on one CPU (fast) and framecodec across two (slow):
    # a ratio of placements.  The targets must come from the pinned runs.
    rows = [
        _latency_row("raw", None, [15e-6, 15e-6]),
        _latency_row("framecodec", None, [45e-6, 45e-6]),
        _latency_row("mp", None, [20e-6, 20e-6]),
        _latency_row("raw", [0, 1], [60e-6, 62e-6]),
        _latency_row("framecodec", [0, 1], [63e-6, 64e-6]),
        _latency_row("mp", [0, 1], [70e-6, 70e-6]),
        _latency_row("raw", [1, 1], [15e-6, 15e-6]),
        _latency_row("framecodec", [1, 1], [20e-6, 20e-6]),
    ]
    targets = {t["target"]: t for t in report.evaluate_targets({"latency": rows})}
    two_cpus = "64 B round trip, server and client on two CPUs: p50 "
    apart = targets[two_cpus + "within 1.3x of raw sockets"]
    assert apart["status"] == "met"
    assert apart["values"]["framecodec"] == pytest.approx(63 / 60 / 2 + 64 / 62 / 2)
    versus_mp = targets[two_cpus + "lower than multiprocessing.connection (ratio < 1)"]
    assert versus_mp["status"] == "met"
    one_cpu = targets["64 B round trip pinned to one CPU: p50 within 1.15x of raw sockets"]
    assert one_cpu["status"] == "MISSED"
    assert one_cpu["values"]["framecodec"] == pytest.approx(20 / 15)
    text = "\n".join(report.latency_tables(rows))
    assert "placed by the scheduler" in text
    assert "server on CPU 0, client on CPU 1" in text
    assert "both pinned to CPU 1" in text
