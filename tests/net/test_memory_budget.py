"""The server-wide memory budget (framecodec.net.server.budget), on every
backend: what the server holds stays under it while bad peers pile up
input or replies, good clients are served meanwhile, and the bad peers
are cut off, counted in ``over_budget`` and logged in one vocabulary.

Small figures keep it cheap: a budget of a few hundred KiB, tens of peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
from types import SimpleNamespace
from typing import Any, Iterator, List

import pytest

import framecodec
from framecodec import FrameEncoder, aio
from framecodec.errors import OverMemoryBudget
from framecodec.net.server.budget import (
    DEFAULT_MEMORY_BUDGET,
    HOLD_GRACE,
    MIN_READ,
    TURN_PATIENCE,
    MemoryBudget,
)

from ..net_support import TIMEOUT, wait_until
from .test_shedding import ALL_BACKENDS, raw, serving

pytestmark = pytest.mark.usefixtures("no_leaks")

encoder = FrameEncoder()
BUDGET = 512 * 1024
PEERS = 24


@pytest.fixture(params=ALL_BACKENDS)
def any_backend(request: Any) -> str:
    return request.param  # type: ignore[no-any-return]


def server_of(served: Any) -> Any:
    """The Server itself (the aio one sits inside the test's thread wrapper)."""
    return getattr(served, "server", served)


class MemoryWatch:
    """Samples a server's ``memory`` in a thread of its own (bounded in
    count and time): the largest the budget recorded."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(int(TIMEOUT * 1000)):
            if self._stop.wait(0.001):
                return
            self.peak = max(self.peak, self.server.memory)

    def close(self) -> int:
        self._stop.set()
        self._thread.join(TIMEOUT)
        return self.peak


@contextlib.contextmanager
def watched(server: Any) -> Iterator[MemoryWatch]:
    watch = MemoryWatch(server)
    try:
        yield watch
    finally:
        watch.close()


def is_cut_off(sock: socket.socket) -> bool:
    """Whether the server ended the connection (end of stream or a reset)."""
    sock.settimeout(TIMEOUT)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionError, OSError):
        return True


def serve_good_clients(server: Any, rounds: int) -> int:
    """A steady client and a fresh client per round, each answered."""
    answered = 0
    with framecodec.connect(server.address, timeout=TIMEOUT) as steady:
        for i in range(rounds):
            assert steady.request(b"steady %d" % i) == b"steady %d" % i
            with framecodec.connect(server.address, timeout=TIMEOUT) as fresh:
                assert fresh.request(b"fresh %d" % i) == b"fresh %d" % i
            answered += 2
    return answered


def test_half_frames_stay_under_the_budget_and_good_clients_are_served(any_backend, caplog):
    """24 peers each send 96 KiB of a 1 MiB frame and stall: 2.3 MiB the
    server would hold, 6 MiB with the storage their frames would reserve.
    What it holds, storage reserved included, stays within 3/2 of its 2 MiB
    budget (budget.py: the frames begun before it is near reserve up to
    prealloc_limit, 256 KiB, and a held connection's storage has room for
    one more read), a steady and fresh clients are answered throughout; the
    peers are held, not closed (input only: see budget.py; frame_timeout
    ends them)."""
    caplog.set_level(logging.INFO, logger="framecodec.server")
    part = encoder.encode(b"h" * (1 << 20))[: 96 * 1024]
    budget = 2 << 20
    with serving(any_backend, memory_budget=budget) as served:
        server = server_of(served)
        bad: List[socket.socket] = []
        try:
            with watched(server) as watch:
                bad = [raw(served) for _ in range(PEERS)]
                # All in before any sends: a threads worker sizes its read as
                # it begins to wait, by the connections open then.
                wait_until(lambda: len(server.connections) == PEERS)
                for sock in bad:
                    sock.sendall(part)
                answered = serve_good_clients(served, 10)
                wait_until(lambda: server.memory_budget and server.memory >= budget * 3 // 8)
                answered += serve_good_clients(served, 5)
            assert watch.peak <= budget * 3 // 2, f"held {watch.peak} bytes, budget {budget}"
            assert watch.peak > 0
            assert answered == 30
            assert server.stats["over_budget"] == 0
            assert server.stats["handler_errors"] == 0
        finally:
            for sock in bad:
                sock.close()
        assert any("held of a memory budget of 2048 KiB" in r.message for r in caplog.records)


def test_unread_replies_stay_under_the_budget(any_backend):
    """16 peers with tiny receive windows send 32 KiB requests (echoed) as
    fast as the server takes them and never read the replies: what the
    server holds stays under its budget, and fresh clients are answered
    meanwhile.  (Those whose replies back up are closed, and those with
    input only take turns: the rules' tests below.)"""
    request = memoryview(encoder.encode(b"r" * (32 * 1024)))
    with serving(any_backend, memory_budget=BUDGET) as served:
        server = server_of(served)
        bad: List[socket.socket] = []
        try:
            with watched(server) as watch:
                for _ in range(16):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    sock.settimeout(TIMEOUT)
                    sock.connect(served.address.sockaddr)
                    sock.setblocking(False)
                    bad.append(sock)
                wait_until(lambda: len(server.connections) == len(bad))  # see above
                pending = [request] * len(bad)
                for _ in range(400):
                    for i, sock in enumerate(bad):
                        with contextlib.suppress(BlockingIOError, ConnectionError):
                            for _ in range(8):
                                pending[i] = pending[i][sock.send(pending[i]) :] or request
                    with framecodec.connect(served.address, timeout=TIMEOUT) as fresh:
                        assert fresh.request(b"x") == b"x"
                wait_until(lambda: server.memory >= BUDGET // 4, message="the budget engaged")
                with framecodec.connect(served.address, timeout=TIMEOUT) as fresh:
                    assert fresh.request(b"y") == b"y"
            assert watch.peak <= BUDGET, f"held {watch.peak} bytes, budget {BUDGET}"
        finally:
            for sock in bad:
                sock.close()


def test_concurrent_large_uploads_are_all_served(any_backend):
    """8 clients upload 256 KiB frames at once, together far past a 512 KiB
    budget: none is closed (input only: they take turns), every reply
    comes, and the server stays within its budget plus one frame."""
    payload = b"u" * (256 * 1024)
    errors: List[BaseException] = []
    answered = [0]

    with serving(any_backend, lambda frame: frame[:8], memory_budget=BUDGET) as served:
        server = server_of(served)

        def upload() -> None:
            try:
                with framecodec.connect(served.address, timeout=TIMEOUT) as client:
                    for _ in range(3):
                        assert client.request(payload) == payload[:8]
                        answered[0] += 1
            except BaseException as exc:  # reported below
                errors.append(exc)

        with watched(server) as watch:
            threads = [threading.Thread(target=upload) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT * 3)
        assert not errors, errors
        assert answered[0] == 24
        assert server.stats["over_budget"] == 0
        assert watch.peak <= BUDGET + 2 * len(payload)


def test_one_large_frame_alone_is_not_held(any_backend):
    """Alone, a connection is never held: a frame larger than the budget
    goes through (its own limits, max_frame_size, bound it)."""
    payload = b"L" * (BUDGET * 3 // 2)
    with serving(any_backend, memory_budget=BUDGET) as served:
        with framecodec.connect(served.address, timeout=TIMEOUT) as client:
            assert client.request(payload) == payload
        assert server_of(served).stats["over_budget"] == 0


def test_every_backend_has_the_same_default_budget(any_backend):
    with serving(any_backend) as served:
        assert server_of(served).memory_budget == DEFAULT_MEMORY_BUDGET == 16 * 1024 * 1024
    with serving(any_backend, memory_budget=None) as served:
        server = server_of(served)
        assert server.memory_budget is None
        with framecodec.connect(served.address, timeout=TIMEOUT) as client:
            assert client.request(b"ok") == b"ok"
        wait_until(lambda: server.memory == 0)  # counted now: the client is gone


def test_serve_and_start_server_share_the_option():
    blocking = inspect.signature(framecodec.serve).parameters["memory_budget"]
    asynchronous = inspect.signature(aio.server.start_server).parameters["memory_budget"]
    assert blocking.default == asynchronous.default == DEFAULT_MEMORY_BUDGET
    assert blocking.kind == asynchronous.kind == inspect.Parameter.KEYWORD_ONLY


def test_a_budget_too_small_is_refused():
    with pytest.raises(ValueError, match="memory_budget must be at least 1024 bytes"):
        framecodec.serve("127.0.0.1:0", lambda frame: frame, memory_budget=10)

    async def start() -> None:
        await aio.start_server("127.0.0.1:0", lambda frame: frame, memory_budget=0)

    with pytest.raises(ValueError, match="memory_budget must be at least 1024 bytes"):
        asyncio.run(start())


# -- the rules, without sockets ----------------------------------------------------------


def connection(memory: int = 0, unsent: int = 0, pending_input: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        accounted=0, held_since=None, memory=memory, unsent=unsent, pending_input=pending_input
    )


def test_rules_hold_the_connections_holding_the_most_and_close_the_oldest():
    budget = MemoryBudget(1 << 20, "test")
    # Their peers do not take their replies: unsent bytes.
    light, heavy, heavier = connection(0), connection(200_000, 1), connection(300_000, 1)
    assert not budget.account(light, 0, 0.0, 3)
    assert not budget.account(heavy, 200_000, 0.0, 3)  # under the near mark
    assert budget.account(heavier, 300_000, 0.5, 3)  # past it, and over its share
    assert budget.total == 500_000 and heavier.held_since == 0.5
    assert budget.account(heavy, 200_000, 0.6, 3)  # over its share too, now
    assert not budget.account(light, 1000, 0.6, 3)  # a steady client reads on
    assert budget.read_limit(light, 3) >= MIN_READ
    # Before HOLD_GRACE nothing is closed; after it, the one held longest
    # first, until the total is under a quarter of the budget.
    released, closing = budget.review([light, heavy, heavier], 1.0)
    assert (released, closing) == ([], [])
    now = 0.5 + HOLD_GRACE
    released, closing = budget.review([light, heavy, heavier], now)
    assert [conn for conn, _ in closing] == [heavier]
    assert isinstance(closing[0][1], OverMemoryBudget)
    assert released == [heavy]  # under a quarter of the budget once heavier goes
    budget.forget(heavier)
    assert budget.total == 200_000 and not budget.held


def test_rules_let_uploads_complete_one_at_a_time_instead_of_closing_them():
    """Connections held with input only (large frames arriving, nothing
    unsent) are not closed: the one held longest reads on until its frame
    is in, then the next."""
    budget = MemoryBudget(1 << 19, "test")
    # Their peers are sending: the kernel holds bytes for both.
    first, second = connection(300_000, pending_input=4096), connection(300_000, pending_input=4096)
    assert budget.account(first, 300_000, 0.0, 2)
    assert budget.account(second, 300_000, 0.1, 2)
    released, closing = budget.review([first, second], 0.2 + HOLD_GRACE)
    assert closing == [] and released == [first] and budget.favoured is first
    assert not budget.account(first, 500_000, 1.3, 2)  # favoured: it reads on
    assert second.held_since is not None  # the other waits its turn
    released, closing = budget.review([first, second], 1.4 + HOLD_GRACE)
    assert (released, closing) == ([], [])  # one at a time
    first.memory = 0
    assert not budget.account(first, 0, 2.5, 2)  # its frame went to the handler
    assert budget.favoured is None
    released, closing = budget.review([first, second], 2.6)
    assert released == [second] and closing == []  # its turn


def test_rules_keep_the_hold_clock_of_a_connection_let_go_and_held_again():
    """Let go when the total fell under a quarter, then held again with no
    frame completed: its wait is counted from when it was first held, so a
    peer whose end of stream waits behind its own unread input is closed
    after TURN_PATIENCE, not held and let go for ever."""
    budget = MemoryBudget(1 << 20, "test")
    other, stuck = connection(400_000, unsent=1), connection(200_000)
    assert budget.account(other, 400_000, 0.0, 2)
    assert budget.account(stuck, 200_000, 0.0, 2)
    # other's peer takes no replies: closed; the total is under a quarter.
    released, closing = budget.review([other, stuck], HOLD_GRACE)
    assert [conn for conn, _ in closing] == [other] and released == [stuck]
    budget.forget(other)
    assert stuck.held_since is None
    newcomer = connection(200_000)
    assert budget.account(newcomer, 200_000, HOLD_GRACE + 0.1, 2)
    stuck.memory = 310_000
    assert budget.account(stuck, 310_000, HOLD_GRACE + 0.2, 2)  # read a little; held again
    assert stuck.held_since == 0.0  # the first hold's clock
    released, closing = budget.review([stuck, newcomer], TURN_PATIENCE)
    assert [conn for conn, _ in closing] == [stuck]
    assert isinstance(closing[0][1], OverMemoryBudget)


def test_rules_start_the_hold_clock_again_once_a_frame_is_in():
    budget = MemoryBudget(1 << 20, "test")
    upload, other = connection(400_000), connection(400_000)
    assert budget.account(upload, 400_000, 0.0, 2)
    assert budget.account(other, 400_000, 0.0, 2)
    upload.memory = 0
    released, _ = budget.review([upload, other], 1.0)
    assert released == [upload]  # its frame is in: within its share
    assert budget.account(upload, 400_000, 3.0, 2)  # the next frame
    assert upload.held_since == 3.0


def test_rules_let_a_connection_alone_take_the_budget():
    budget = MemoryBudget(1 << 20, "test")
    alone = connection()
    assert not budget.account(alone, 900_000, 0.0, 1)
    assert budget.read_limit(alone, 1) >= (1 << 20) - 900_000
