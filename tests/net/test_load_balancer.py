"""A real load balancer in front: HAProxy (``mode tcp``) over three
framecodec servers, each in a network namespace of its own
(tests/net/haproxy_support.py), and one of them SIGKILLed while clients
make requests through HAProxy.

Each backend answers a frame with its name and the frame, so every reply
says who answered and whether it is the reply to that request.  The test
checks that every reply that arrived is the right one, that the clients
of the killed backend saw ConnectionClosed (and nothing else), that the
other clients saw no error at all, and that after reconnecting the
clients of the killed backend were served by the surviving ones.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import pytest

import framecodec
from framecodec import Backoff, ConnectionClosed, Reconnected

from . import haproxy_support

pytestmark = pytest.mark.usefixtures("no_leaks")

NAMES = ["b0", "b1", "b2"]
CLIENTS = 6  # two per backend under roundrobin
BEFORE = 50  # replies each client has before the kill
AFTER = 200  # requests each client makes once the kill is done
RUN_TIMEOUT = 60.0  # seconds for the whole run, whatever happens
POLICY = Backoff(initial=0.02, maximum=0.5, attempts=20)


@pytest.fixture
def balancer(tmp_path: Any) -> Any:
    """(HAProxy's address, backends); skipped only without HAProxy (or
    without root for the namespaces), and failing instead when CI is set."""
    reason = haproxy_support.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with haproxy_support.balanced_backends(tmp_path, NAMES) as running:
        yield running


@dataclass
class Run:
    """What one client did: every reply (request number, backend, right or
    not, when), every error (request number, when, the exception)."""

    index: int
    made: int = 0
    replies: List[Tuple[int, str, bool, float]] = field(default_factory=list)
    errors: List[Tuple[int, float, BaseException]] = field(default_factory=list)
    reconnects: List[Reconnected] = field(default_factory=list)
    failure: Optional[BaseException] = None
    ready: threading.Event = field(default_factory=threading.Event)

    def backend_before(self, when: float) -> Optional[str]:
        before = [name for _, name, _, at in self.replies if at < when]
        return before[-1] if before else None


def client_loop(address: str, run: Run, killed: threading.Event, deadline: float) -> None:
    try:
        with framecodec.connect(
            address,
            timeout=10,
            reconnect=POLICY,
            on_reconnect=lambda client, event: run.reconnects.append(event),
        ) as client:
            after = 0
            while time.monotonic() < deadline and after < AFTER:
                payload = f"client {run.index} request {run.made}".encode()
                number = run.made
                run.made += 1
                after += killed.is_set()
                try:
                    reply = client.request(payload)
                except ConnectionClosed as exc:
                    run.errors.append((number, time.monotonic(), exc))
                    continue
                name, _, echoed = reply.partition(b" ")
                right = echoed == payload and name.decode() in NAMES
                run.replies.append((number, name.decode(), right, time.monotonic()))
                if len(run.replies) >= BEFORE:
                    run.ready.set()
    except BaseException as exc:  # anything but ConnectionClosed fails the test
        run.failure = exc
    finally:
        run.ready.set()


def test_a_backend_killed_mid_run(balancer: Any) -> None:
    address, backends = balancer
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT
    killed = threading.Event()
    runs = [Run(i) for i in range(CLIENTS)]
    threads = [
        threading.Thread(target=client_loop, args=(address, run, killed, deadline), daemon=True)
        for run in runs
    ]
    for worker in threads:
        worker.start()
    try:
        for run in runs:
            assert run.ready.wait(RUN_TIMEOUT), f"client {run.index} made no progress"
        assert all(run.failure is None for run in runs), [r.failure for r in runs]
        # Kill the backend serving client 0, while every client is busy.
        kill_time = time.monotonic()
        victim_name = runs[0].backend_before(kill_time)
        victim = next(b for b in backends if b.name == victim_name)
        killed.set()
        victim.kill()
        killed_at = time.monotonic()
    finally:
        for worker in threads:
            worker.join(RUN_TIMEOUT + 10)
    assert not any(worker.is_alive() for worker in threads)
    duration = time.monotonic() - started

    for run in runs:
        assert run.failure is None, (run.index, repr(run.failure))
    # Every reply that arrived is the one to its request, from a backend.
    replies = [reply for run in runs for reply in run.replies]
    assert all(right for _, _, right, _ in replies), [r for r in replies if not r[2]]
    # Before the kill the clients were spread over all the backends.
    assert {run.backend_before(kill_time) for run in runs} == set(NAMES)

    victims = [run for run in runs if run.backend_before(kill_time) == victim_name]
    others = [run for run in runs if run not in victims]
    assert victims and others
    for run in victims:
        assert run.errors, f"client {run.index} of the killed backend saw no error"
        assert all(isinstance(exc, ConnectionClosed) for _, _, exc in run.errors)
        assert len(run.reconnects) >= 1
        first_error = run.errors[0][1]
        assert first_error >= kill_time
        served_after = [name for _, name, _, at in run.replies if at > run.errors[-1][1]]
        assert served_after, f"client {run.index} was not served after reconnecting"
        assert victim_name not in served_after
        assert set(served_after) <= set(NAMES) - {victim_name}
    for run in others:
        assert not run.errors and not run.reconnects, (run.index, run.errors)
        assert {name for _, name, _, at in run.replies if at > killed_at} <= set(NAMES) - {
            victim_name
        }
    # Each failed request was reported once and never answered later.
    for run in runs:
        answered = {number for number, _, _, _ in run.replies}
        failed = {number for number, _, _ in run.errors}
        assert not answered & failed
        assert len(answered) + len(failed) == run.made

    # The figures, for the report (pytest -s shows them).
    recovery = []
    for run in victims:
        error_at = run.errors[0][1]
        recovery.append(min(at for _, _, _, at in run.replies if at > error_at) - error_at)
    print(
        f"\nload balancer: {CLIENTS} clients over {len(NAMES)} backends, {victim_name} killed; "
        f"requests {sum(r.made for r in runs)}, replies checked {len(replies)}, "
        f"errors {sum(len(r.errors) for r in runs)} (all ConnectionClosed, "
        f"{len(victims)} clients of {victim_name}), "
        f"reconnects {[round(e.elapsed * 1000, 1) for r in runs for e in r.reconnects]} ms "
        f"(attempts {[e.attempts for r in runs for e in r.reconnects]}), "
        f"error to next reply {[round(t * 1000, 1) for t in recovery]} ms, "
        f"duration {duration:.2f} s"
    )
