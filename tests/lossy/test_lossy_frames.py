"""Frames over a lossy, slow link (20+-5 ms each way, 2 % loss, 5 %
reordering, 1 % duplicates, 0.1 % corruption TCP's checksum catches,
10 Mbit/s): thousands of frames of random sizes (0 to 256 KiB) each way,
each carrying a sha256 of its body, plain and TLS, on every backend (the
selector and threads servers with framecodec.connect clients, framecodec.aio
server and client), the server in one namespace and the client in the
other.  Every frame must arrive intact and in order, at the server and back
at the client; the throughput of each run is shown in the terminal summary.

The full runs take about 10 s each (the link's loss holds TCP to about
1.5 Mbit/s); FRAMECODEC_LOSSY=smoke keeps only a short run per backend
(.ci/run's interpreter matrix: the full ones run once, with the wheel)."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import pytest

from . import link as lossy
from .relay import Impairments
from .scenarios import TLSFiles, frames

pytestmark = pytest.mark.skipif(lossy.skip_reason() is not None, reason=lossy.skip_reason() or "")
heavy = pytest.mark.skipif(
    lossy.heavy_skip_reason() is not None, reason=lossy.heavy_skip_reason() or ""
)

BACKENDS = ("selector", "threads", "aio")
MAX_SIZE = 256 * 1024
FULL = {"count": 2000, "budget": 1_500_000}  # ~1.5 MB of bodies each way, ~10 s a run
SMOKE = {"count": 150, "budget": 300_000}
SMOKE_CASES = [("selector", False), ("threads", True), ("aio", True)]


@pytest.fixture(scope="module")
def link() -> Iterator[lossy.LossyLink]:
    """One link for the module (each run has its own server and client)."""
    reason = lossy.unavailable()
    if reason is not None:  # skip_reason() let the module run, so it must
        pytest.fail(f"{reason}; FRAMECODEC_LOSSY={lossy.MODE!r} (or CI) says it must run")
    with lossy.LossyLink(Impairments(), rate="10mbit") as made:
        yield made


def tls_files(request: Any, tls: bool) -> Optional[TLSFiles]:
    return request.getfixturevalue("lossy_tls") if tls else None


def check(result: Dict[str, Any], what: str, report: list) -> None:
    relay = result.get("relay", {})
    report.append(
        f"{what}: {result.get('received')}/{result.get('frames')} frames, "
        f"{result.get('body_bytes', 0) / 1e6:.2f} MB each way in {result.get('seconds')} s, "
        f"{result.get('bytes_per_second', 0) * 8 / 1e6:.2f} Mbit/s; relay: "
        f"{relay.get('received', 0)} packets, {relay.get('dropped', 0)} dropped, "
        f"{relay.get('reordered', 0)} reordered, {relay.get('duplicated', 0)} duplicated, "
        f"{relay.get('corrupted', 0)} corrupted; error: {result.get('error')}"
    )
    assert result["ok"], result
    assert result["errors"] == [], result
    assert result["received"] == result["frames"]
    server = result["server"]
    assert server["errors"] == [] and server["checked"] == result["frames"], server
    # Nothing went wrong on the server's side either: one connection, ended cleanly.
    assert server["stats"].get("accepted") == 1, server
    assert not {"protocol_errors", "handler_errors", "network_errors", "timeouts"} & set(
        key for key, value in server["stats"].items() if value
    ), server
    # The link really was lossy meanwhile.
    assert relay.get("dropped", 0) > 0 and relay.get("reordered", 0) > 0, relay


def run_id(case: Any) -> str:
    return f"{case[0]}-{'tls' if case[1] else 'plain'}"


@pytest.mark.parametrize("backend,tls", SMOKE_CASES, ids=map(run_id, SMOKE_CASES))
def test_frames_cross_a_lossy_link_intact_and_in_order_smoke(
    no_leaks, link, request, lossy_report, backend, tls
):
    result = frames(link, backend, tls_files(request, tls), max_size=MAX_SIZE, **SMOKE)
    check(result, f"smoke {run_id((backend, tls))}", lossy_report)


FULL_CASES = [(backend, tls) for backend in BACKENDS for tls in (False, True)]


@heavy
@pytest.mark.parametrize("backend,tls", FULL_CASES, ids=map(run_id, FULL_CASES))
def test_thousands_of_frames_cross_a_lossy_link_intact_and_in_order(
    no_leaks, link, request, lossy_report, backend, tls
):
    result = frames(link, backend, tls_files(request, tls), max_size=MAX_SIZE, **FULL)
    check(result, f"full {run_id((backend, tls))}", lossy_report)
