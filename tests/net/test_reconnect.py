"""The blocking client's opt-in reconnect (framecodec.net.backoff, client.py).

The delays and the rounds are driven with a fake clock, sleep and random
numbers (no waiting); the client itself against framecodec servers that are
stopped and started again on the same address, on every family, plain and
TLS: a request in flight when the connection is lost raises
ConnectionClosed and is never sent again, and the next call reconnects.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import ssl
import threading
from typing import Any, Iterator, List

import pytest

import framecodec
from framecodec import Backoff, ConnectionClosed, Reconnected
from framecodec.net.addresses import parse_address
from framecodec.net.backoff import Round, reconnect

from ..net_support import TIMEOUT, bind_address

pytestmark = pytest.mark.usefixtures("no_leaks")

WHERE = parse_address("127.0.0.1:9")
FAST = Backoff(initial=0.001, maximum=0.01, attempts=50)


# -- the delays ------------------------------------------------------------------


def test_the_delays_double_up_to_the_cap():
    policy = Backoff(initial=0.1, maximum=5.0, jitter=0)
    assert list(policy.delays()) == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]
    )  # the defaults: ten attempts


class Fixed(random.Random):
    """A random source that always draws ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_jitter_takes_off_at_most_its_share_and_never_adds():
    policy = Backoff(initial=1.0, maximum=8.0, jitter=0.25, attempts=6)
    assert list(policy.delays(Fixed(0.0))) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert list(policy.delays(Fixed(0.999999))) == pytest.approx(
        [0.75, 1.5, 3.0, 6.0, 6.0, 6.0], rel=1e-5
    )
    full = Backoff(initial=1.0, maximum=8.0, jitter=1.0, attempts=4)
    assert list(full.delays(Fixed(0.5))) == [0.5, 1.0, 2.0, 4.0]
    rng = random.Random(13)
    for attempt in range(1, 200):
        delay = policy.delay(attempt, rng)
        base = min(8.0, 2.0 ** (attempt - 1))
        assert 0.75 * base <= delay <= base


def test_a_long_round_stays_at_the_cap():
    policy = Backoff(initial=0.5, maximum=30.0, attempts=None, jitter=0)
    assert policy.delay(10_000) == 30.0  # no float overflow far past the cap
    endless = list(itertools.islice(policy.delays(), 2000))
    assert len(endless) == 2000 and endless[-1] == 30.0
    assert Backoff(initial=0.2, maximum=0.2, jitter=0).delay(50) == 0.2
    assert Backoff(initial=0.0, maximum=1.0, jitter=0).delay(5) == 0.0
    assert Backoff(initial=0.3, maximum=9.0, multiplier=1, jitter=0).delay(7) == 0.3


@pytest.mark.parametrize(
    "options",
    [
        {"initial": -1},
        {"initial": float("inf"), "maximum": float("inf")},
        {"initial": 2, "maximum": 1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"attempts": 0},
        {"total": 0},
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(options):
    with pytest.raises(ValueError):
        Backoff(**options)


def test_attempts_count_from_one():
    with pytest.raises(ValueError):
        Backoff().delay(0)


# -- one round, on a fake clock ---------------------------------------------------------


class FakeTime:
    """A clock that moves only when waited on (or by ``cost`` per attempt)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: List[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def failing(times: int, error: OSError, fake: FakeTime, cost: float = 0.0) -> Any:
    timeouts: List[Any] = []

    def attempt(timeout: Any) -> str:
        timeouts.append(timeout)
        fake.now += cost
        if len(timeouts) <= times:
            raise error
        return "connected"

    attempt.timeouts = timeouts  # type: ignore[attr-defined]
    return attempt


def test_a_round_waits_as_the_policy_says_then_connects():
    fake = FakeTime()
    policy = Backoff(initial=0.1, maximum=1.0, jitter=0.5, attempts=10)
    attempt = failing(4, ConnectionRefusedError("refused"), fake)
    result, count, elapsed = reconnect(
        policy, attempt, where=WHERE, timeout=3.0, wait=fake.wait, clock=fake.clock,
        rng=Fixed(0.5),
    )  # fmt: skip
    assert (result, count) == ("connected", 5)
    assert fake.waits == pytest.approx([0.075, 0.15, 0.3, 0.6, 0.75])
    assert elapsed == pytest.approx(sum(fake.waits))
    assert attempt.timeouts == [3.0] * 5


def test_a_round_gives_up_after_its_attempts_with_the_last_error_as_cause():
    fake = FakeTime()
    refused = ConnectionRefusedError("refused")
    with pytest.raises(ConnectionClosed, match="after 3 attempts") as caught:
        reconnect(
            Backoff(initial=1, maximum=1, attempts=3), failing(99, refused, fake),
            where=WHERE, timeout=None, wait=fake.wait, clock=fake.clock,
        )  # fmt: skip
    assert caught.value.__cause__ is refused
    assert len(fake.waits) == 3


def test_a_round_gives_up_when_its_total_time_is_spent():
    fake = FakeTime()
    policy = Backoff(initial=1.0, maximum=4.0, jitter=0, attempts=None, total=10.0)
    attempt = failing(99, TimeoutError("slow"), fake, cost=0.5)
    with pytest.raises(ConnectionClosed, match="gave up"):
        reconnect(policy, attempt, where=WHERE, timeout=5.0, wait=fake.wait, clock=fake.clock)
    # 1 + 0.5, 2 + 0.5, 4 + 0.5 = 8.5 s spent (the third attempt's timeout
    # cut to the 2 s left); the next wait (4 s) would end past 10 s.
    assert fake.waits == [1.0, 2.0, 4.0]
    assert attempt.timeouts == [5.0, 5.0, 2.0]
    assert fake.now - 100.0 < 10.0


def test_an_attempts_timeout_is_cut_to_what_total_leaves():
    fake = FakeTime()
    policy = Backoff(initial=1.0, maximum=1.0, jitter=0, attempts=None, total=2.5)
    attempt = failing(99, TimeoutError("slow"), fake, cost=0.0)
    with pytest.raises(ConnectionClosed):
        reconnect(policy, attempt, where=WHERE, timeout=30.0, wait=fake.wait, clock=fake.clock)
    assert attempt.timeouts == pytest.approx([1.5, 0.5])


def test_closing_the_client_stops_the_round():
    with pytest.raises(ConnectionClosed, match="closed while reconnecting"):
        reconnect(FAST, failing(99, OSError("down"), FakeTime()), where=WHERE,
                  timeout=None, wait=lambda seconds: True)  # fmt: skip


def test_a_refused_certificate_is_not_retried():
    fake = FakeTime()
    refused = ssl.SSLCertVerificationError("certificate verify failed")
    attempt = failing(99, refused, fake)
    with pytest.raises(ssl.SSLCertVerificationError):
        reconnect(FAST, attempt, where=WHERE, timeout=None, wait=fake.wait, clock=fake.clock)
    assert len(attempt.timeouts) == 1


def test_an_error_that_is_no_network_fault_is_not_retried():
    fake = FakeTime()

    def attempt(timeout: Any) -> None:
        raise ValueError("a bug, not the network")

    with pytest.raises(ValueError):
        reconnect(FAST, attempt, where=WHERE, timeout=None, wait=fake.wait, clock=fake.clock)


def test_a_round_is_planned_without_io():
    # What aio's reconnect drives with asyncio.sleep: the same plan, by hand.
    fake = FakeTime()
    policy = Backoff(initial=1.0, maximum=2.0, jitter=0, attempts=3, total=60.0)
    plan = Round(policy, where=WHERE, timeout=5.0, clock=fake.clock)
    waits = []
    for _ in range(3):
        waits.append(plan.next_wait())
        fake.now += waits[-1]
        assert plan.attempt_timeout() == 5.0
        assert plan.worth_retrying(ConnectionRefusedError("refused"))
    assert waits == [1.0, 2.0, 2.0] and plan.attempts == 3
    with pytest.raises(ConnectionClosed, match="after 3 attempts") as gave:
        plan.next_wait()
    assert isinstance(gave.value.__cause__, ConnectionRefusedError)
    assert not plan.worth_retrying(ValueError("a bug"))
    assert not plan.worth_retrying(ssl.SSLCertVerificationError("refused"))
    fake.now += 1.0
    assert plan.connected(None) == (3, 6.0)


# -- the client, against a server stopped and started again ----------------------------------


class Recorder(framecodec.ConnectionHandler):
    """Answers b"echo ..." with its payload; on b"drop ..." closes the
    connection without an answer.  Every frame received is recorded."""

    received: List[bytes]

    def frame_received(self, frame: bytes) -> None:
        self.received.append(frame)
        if frame.startswith(b"drop"):
            self.connection.close()
        else:
            self.connection.send(frame)


def recorder(received: List[bytes]) -> Any:
    return type("BoundRecorder", (Recorder,), {"received": received})


@contextlib.contextmanager
def serving(net: Any, address: Any, received: List[bytes]) -> Iterator[Any]:
    server = framecodec.serve(address, recorder(received), ssl_context=net.server_context())
    with server.start():
        yield server


def test_a_request_in_flight_is_never_sent_again(net):
    received: List[bytes] = []
    events: List[Reconnected] = []
    server = net.serve(recorder(received))
    client = net.connect(
        server, reconnect=FAST, on_reconnect=lambda client, event: events.append(event)
    )
    assert client.request(b"echo 1") == b"echo 1"
    with pytest.raises(ConnectionClosed) as caught:
        client.request(b"drop 2")  # the server got it, and closed without answering
    assert "the peer closed the connection; what was in flight is not sent again" in str(
        caught.value
    )
    assert client.closed and client.reconnects == 0
    assert client.request(b"echo 3") == b"echo 3"  # reconnects first
    assert received == [b"echo 1", b"drop 2", b"echo 3"]  # "drop 2" once, only once
    assert client.reconnects == 1 and len(events) == 1
    assert events[0].attempts >= 1 and events[0].address == client.address
    assert isinstance(events[0].cause, ConnectionClosed)


def test_a_server_stopped_and_started_again(net):
    before: List[bytes] = []
    after: List[bytes] = []
    server = framecodec.serve(
        bind_address(net.family), recorder(before), ssl_context=net.server_context()
    )
    address = server.address
    with server.start():
        client = net.connect(server, reconnect=FAST)
        assert client.request(b"echo before") == b"echo before"
    # The server is gone: the next request cannot be answered, and is not retried.
    with pytest.raises(ConnectionClosed):
        client.request(b"echo lost")
    with serving(net, address, after):
        assert client.request(b"echo after") == b"echo after"
        assert client.request(b"echo again") == b"echo again"
    assert before == [b"echo before"] or before == [b"echo before", b"echo lost"]
    assert after == [b"echo after", b"echo again"]  # "echo lost" never came back
    assert client.reconnects == 1


def test_giving_up_closes_the_client_for_good(tcp, caplog):
    caplog.set_level(logging.INFO, logger="framecodec.client")
    received: List[bytes] = []
    server = framecodec.serve("127.0.0.1:0", recorder(received))
    address = server.address
    with server.start():
        client = tcp.connect(server, reconnect=Backoff(initial=0.001, maximum=0.002, attempts=3))
        assert client.request(b"echo 1") == b"echo 1"
    with pytest.raises(ConnectionClosed):
        client.request(b"echo 2")
    with pytest.raises(ConnectionClosed, match=r"gave up reconnecting .* after 3 attempts") as gave:
        client.request(b"echo 3")
    assert isinstance(gave.value.__cause__, ConnectionRefusedError)
    with serving(tcp, address, received), pytest.raises(ConnectionClosed, match="gave up"):
        client.request(b"echo 4")  # closed for good: no new round
    assert received == [b"echo 1"]
    messages = [record.getMessage() for record in caplog.records]
    assert any("connection lost" in m for m in messages)
    assert sum("reconnect attempt" in m for m in messages) == 3
    assert any("gave up reconnecting after 3 attempts" in m for m in messages)


def test_close_from_another_thread_ends_a_reconnects_wait(tcp):
    server = framecodec.serve("127.0.0.1:0", recorder([]))
    with server.start():
        client = tcp.connect(server, reconnect=Backoff(initial=60, maximum=60, attempts=1))
        assert client.request(b"echo 1") == b"echo 1"
    with pytest.raises(ConnectionClosed):
        client.request(b"echo 2")
    outcome: List[BaseException] = []

    def call() -> None:
        try:
            client.request(b"echo 3")  # waits 30 to 60 s before its attempt
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    try:
        client.close()
    finally:
        worker.join(TIMEOUT)
    assert not worker.is_alive()  # the wait ended well before its 30 s
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed)


def test_the_hook_sees_every_reconnect_and_a_failing_hook_fails_the_call(tcp, caplog):
    caplog.set_level(logging.INFO, logger="framecodec.client")
    received: List[bytes] = []
    calls: List[Reconnected] = []

    def hook(client: Any, event: Reconnected) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("the login after reconnecting failed")
        assert client.request(b"echo login") == b"echo login"  # the hook may talk

    server = tcp.serve(recorder(received))
    client = tcp.connect(server, reconnect=FAST, on_reconnect=hook)
    with pytest.raises(ConnectionClosed):
        client.request(b"drop 1")
    with pytest.raises(RuntimeError, match="login"):
        client.request(b"echo 2")  # reconnected, then the hook failed: not sent
    assert client.request(b"echo 3") == b"echo 3"
    assert received == [b"drop 1", b"echo login", b"echo 3"]
    assert len(calls) == 2 and client.reconnects == 2
    messages = [record.getMessage() for record in caplog.records]
    assert sum("reconnected on attempt" in m for m in messages) == 2


def test_without_reconnect_a_lost_connection_stays_lost(tcp):
    received: List[bytes] = []
    server = tcp.serve(recorder(received))
    client = tcp.connect(server)
    with pytest.raises(ConnectionClosed):
        client.request(b"drop 1")
    for _ in range(2):
        with pytest.raises(ConnectionClosed):
            client.request(b"echo 2")
    assert received == [b"drop 1"] and client.reconnects == 0


def test_reconnect_options_are_checked(tcp):
    server = tcp.serve(recorder([]))
    with pytest.raises(ValueError, match="on_reconnect needs reconnect"):
        framecodec.connect(server.address, on_reconnect=lambda client, event: None)
    with pytest.raises(TypeError, match="must be a Backoff"):
        framecodec.connect(server.address, reconnect=3)  # type: ignore[call-overload]


def test_close_stops_reconnecting(tcp):
    received: List[bytes] = []
    server = tcp.serve(recorder(received))
    client = tcp.connect(server, reconnect=FAST)
    with pytest.raises(ConnectionClosed):
        client.request(b"drop 1")
    client.close()
    with pytest.raises(ConnectionClosed, match="closed"):
        client.request(b"echo 2")
    assert received == [b"drop 1"] and client.reconnects == 0


class Burst(framecodec.ConnectionHandler):
    """On b"burst": two small frames, then one too large for the client."""

    received: List[bytes]

    def frame_received(self, frame: bytes) -> None:
        self.received.append(frame)
        if frame == b"burst":
            self.connection.send_many([b"a", b"b", b"x" * 100])
        else:
            self.connection.send(frame)


def test_frames_of_the_lost_connection_come_first_and_sends_wait_for_them(tcp):
    received: List[bytes] = []
    server = tcp.serve(type("BoundBurst", (Burst,), {"received": received}))
    client = tcp.connect(server, reconnect=FAST, max_frame_size=16)
    client.send(b"burst")
    assert client.recv() == b"a"  # b"b" is queued; the too large frame ended the connection
    with pytest.raises(ConnectionClosed, match="was lost") as lost:
        client.send(b"echo 1")  # the error, reported once: not sent
    assert isinstance(lost.value.__cause__, framecodec.FrameTooLargeError)
    with pytest.raises(ConnectionClosed, match="1 frames of the lost connection"):
        client.send(b"echo 2")  # a reply on a new connection could pass for b"b"
    assert client.recv() == b"b"
    assert client.request(b"echo 3") == b"echo 3"  # now it reconnects
    assert received == [b"burst", b"echo 3"] and client.reconnects == 1
