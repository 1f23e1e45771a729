"""A short run of scripts/leak_cycles.py (docs/reliability.md, "Leak cycles",
has the long one): each backend's server in a process of its own, a few
thousand connect/request/close cycles, and what must hold however short
the run: every reply right, every connection closed cleanly and counted,
and the server's descriptors back to their count before the first cycle.
RSS is only held to a generous bound here: its slope needs the long run."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import tempfile
import time
from typing import Any, Optional

import pytest

from ..net_fixtures import require_trustme

pytestmark = pytest.mark.usefixtures("no_leaks")

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "leak_cycles.py"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("leak_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


leak_cycles = _load_script()

# A gross bound only (the script's slopes are the measure): PyPy's JIT and
# garbage collector grow a threads server by over 100 MiB while warming up.
RSS_GROWTH_BOUND = (50 if sys.implementation.name == "cpython" else 400) * 2**20


def run(backend: str, cycles: int, tls_dir: Optional[str] = None) -> Any:
    result = leak_cycles.measure(
        backend,
        tls_dir=tls_dir,
        cycles=cycles,
        samples=10,
        deadline=time.monotonic() + 60.0,
    )
    assert result.cycles == cycles, result.failures
    assert result.verified == cycles
    assert result.client_errors == {}, result.first_errors
    # Each sample waits (5 s at most) for the server to close every connection.
    assert [s.open for s in result.samples] == [0] * len(result.samples)
    # No descriptor per connection: the count stays flat.  (On Debian sid's
    # 3.14 the first TLS handshake leaves the server one more, once.)
    fds = [s.fds for s in result.samples]
    assert fds == [fds[0]] * len(fds)
    assert fds[0] <= result.initial.fds + (1 if tls_dir else 0)
    # A thread per connection open at once, not per connection served (on
    # 3.12.1 ThreadPoolExecutor had started 543 for 3,000 cycles).
    assert result.samples[-1].threads <= result.initial.threads + 16
    stats = result.stats
    assert stats["accepted"] == stats["closed"] == stats["clean_closes"] == cycles, stats
    assert not {k: stats[k] for k in leak_cycles.SERVER_ERRORS if stats.get(k)}
    assert result.samples[-1].rss - result.initial.rss < RSS_GROWTH_BOUND
    return result


@pytest.mark.parametrize("backend", leak_cycles.BACKENDS)
def test_plain_cycles_leave_the_server_as_it_was(backend: str) -> None:
    run(backend, 3000)


@pytest.mark.parametrize("backend", ["selector", "aio"])
def test_tls_cycles_leave_the_server_as_it_was(backend: str) -> None:
    require_trustme()  # skips on PyPy, saying why
    with tempfile.TemporaryDirectory() as directory:
        leak_cycles.write_tls_files(directory)
        run(backend, 500, directory)


def test_the_verdict_fails_on_a_descriptor_left_open() -> None:
    result = leak_cycles.Result("selector", False, 2)
    sample = leak_cycles.Sample
    result.initial = sample(0, 10 * 2**20, 8, 3, 0)
    result.samples = [sample(1, 10 * 2**20, 8, 3, 0), sample(2, 10 * 2**20, 9, 3, 0)]
    result.cycles = result.verified = 2
    result.stats = {"accepted": 2, "closed": 2, "clean_closes": 2}
    leak_cycles.judge(result, rss_limit=8192.0)
    assert result.fd_slope == 1000.0
    assert any(f.startswith("fd slope") for f in result.failures)
    assert any(f.startswith("fds 8 before, 9 after") for f in result.failures)
    assert not any("RSS" in f for f in result.failures)


def test_the_slope_is_least_squares_per_1000_cycles() -> None:
    assert leak_cycles.slope_per_1000([(0, 0), (1000, 512), (2000, 1024)]) == 512.0
    assert leak_cycles.slope_per_1000([(0, 7), (5000, 7)]) == 0.0
    assert leak_cycles.slope_per_1000([(0, 7)]) == 0.0
