"""Reconnecting with capped exponential backoff: the policy and one round.

``Backoff`` says how long to wait before each attempt: ``initial`` times
``multiplier`` to the power of the attempts before it, never more than
``maximum``, less a random part (``jitter``) so that the clients of a
failed server do not all come back at the same instant.  A round of
attempts ends at the first connection, or after ``attempts`` attempts, or
once ``total`` seconds have gone by, whichever comes first.

``Round`` plans one round without doing any I/O (the waits, each attempt's
timeout, when to give up); ``reconnect()`` runs one with a blocking wait,
the clock and the random numbers passed in, so that tests can drive it
without waiting.  The blocking Client (client.py) uses reconnect(), and
framecodec.aio's reconnecting connection (aio/reconnecting.py) runs Round
with asyncio.sleep; nothing here touches a frame.
"""

from __future__ import annotations

import logging
import math
import random as _random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Tuple, TypeVar

from ..errors import ConnectionClosed, IncompleteFrameError
from .addresses import Address
from .transport import OutputQueue, close_socket

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Backoff", "Reconnected", "Round", "reconnect", "resume"]

# What opens a new socket for a reconnecting client: connect()'s own steps
# (resolve, connect, TLS handshake) with a timeout.
Opener = Callable[[Optional[float]], socket.socket]
ReconnectHook = Callable[["Client[Any]", "Reconnected"], None]
NOT_RETRIED = "what was in flight is not sent again; the next call reconnects"

logger = logging.getLogger("framecodec.client")

T = TypeVar("T")
_SHARED = _random.Random()  # the jitter's, unless a test passes its own


@dataclass(frozen=True)
class Backoff:
    """How a client reconnects: ``connect(address, reconnect=Backoff(...))``.

    The wait before attempt n (1, 2, ...) is ``min(maximum, initial *
    multiplier ** (n - 1))``, less up to ``jitter`` of it at random
    (``jitter=0``: exactly that; ``jitter=1``: anywhere from 0 to it), so
    it never exceeds ``maximum``.  A round gives up after ``attempts``
    attempts or ``total`` seconds (None: no such bound; both None: it never
    gives up).  The defaults wait about 0.1, 0.2, 0.4 ... 5 s, ten times.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5
    attempts: Optional[int] = 10
    total: Optional[float] = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0):
            raise ValueError("initial must be a finite number of seconds, 0 or more")
        if not (math.isfinite(self.maximum) and self.maximum >= self.initial):
            raise ValueError("maximum must be finite and at least initial")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError("multiplier must be 1 or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be 1 or more, or None")
        if self.total is not None and not self.total > 0:
            raise ValueError("total must be positive, or None")

    def delay(self, attempt: int, rng: Optional[_random.Random] = None) -> float:
        """The wait before attempt ``attempt`` (1 for the first), in seconds,
        its jitter drawn from ``rng`` (default: one random.Random shared by all)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        if self.multiplier == 1 or self.initial == 0:
            base = self.initial
        else:
            # Past the cap the power only grows: stop computing it there
            # (a float power of a long-running round would overflow).
            cap_at = math.log(self.maximum / self.initial, self.multiplier) + 1
            base = (
                self.maximum
                if attempt >= cap_at
                else min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
            )
        draw = (rng if rng is not None else _SHARED).random() if self.jitter else 0.0
        return base * (1.0 - self.jitter * draw)

    def delays(self, rng: Optional[_random.Random] = None) -> Iterator[float]:
        """The waits of a round, in order (endless when ``attempts`` is None)."""
        attempt = 1
        while self.attempts is None or attempt <= self.attempts:
            yield self.delay(attempt, rng)
            attempt += 1


@dataclass(frozen=True)
class Reconnected:
    """What a client's ``on_reconnect`` hook is told: the address it is
    connected to again, the attempts the round took (1 when the first
    succeeded), the seconds from the start of the round to the new
    connection, and the error that ended the previous connection."""

    address: Address
    attempts: int
    elapsed: float
    cause: BaseException


class Round:
    """One round of attempts, sans I/O: how long to wait before each
    attempt, each attempt's timeout, whether an error is worth another, and
    the error when the round gives up.  Its users do the waiting and the
    connecting: reconnect() below with a blocking wait, framecodec.aio's
    reconnecting connection with asyncio.sleep.

    Each step that finds the round over (``attempts`` made, or ``total``
    seconds leaving no time) raises ConnectionClosed, the last error as its
    cause.
    """

    def __init__(
        self,
        policy: Backoff,
        *,
        where: Address,
        timeout: Optional[float],
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[_random.Random] = None,
    ) -> None:
        self.where = where
        self._timeout = timeout
        self._clock = clock
        self._started = clock()
        self._deadline = None if policy.total is None else self._started + policy.total
        self._delays = policy.delays(rng)
        self.attempts = 0
        self._last: Optional[BaseException] = None

    def next_wait(self) -> float:
        """The seconds to wait before the next attempt."""
        delay = next(self._delays, None)
        if delay is None:
            raise self._given_up()
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            raise self._given_up()  # the wait alone would use up what is left
        return delay

    def attempt_timeout(self) -> Optional[float]:
        """Count the attempt about to be made (after its wait) and return
        its timeout: the client's, cut to what ``total`` leaves."""
        self.attempts += 1
        if self._deadline is None:
            return self._timeout
        left = self._deadline - self._clock()
        if left <= 0:
            raise self._given_up()
        return left if self._timeout is None else min(self._timeout, left)

    def worth_retrying(self, exc: BaseException) -> bool:
        """Whether the attempt's error ``exc`` is worth another attempt: an
        OSError is, except a certificate that fails verification (no passing
        fault); anything else is a bug to raise as it is."""
        if isinstance(exc, ssl.SSLCertVerificationError) or not isinstance(exc, OSError):
            return False
        self._last = exc
        logger.info("%s: reconnect attempt %d failed: %s", self.where, self.attempts, exc)
        return True

    def connected(self, cause: Optional[BaseException]) -> Tuple[int, float]:
        """The attempts made and the seconds taken, once one connected."""
        elapsed = self._clock() - self._started
        logger.info(
            "%s: reconnected on attempt %d after %.3f s (the connection had ended: %s)",
            self.where, self.attempts, elapsed, cause,
        )  # fmt: skip
        return self.attempts, elapsed

    def _given_up(self) -> ConnectionClosed:
        elapsed = self._clock() - self._started
        last = self._last
        reason = f": {last}" if last is not None else " (no time left for an attempt)"
        logger.warning(
            "%s: gave up reconnecting after %d attempts in %.3f s%s",
            self.where, self.attempts, elapsed, reason,
        )  # fmt: skip
        error = ConnectionClosed(
            f"gave up reconnecting to {self.where} after {self.attempts} attempts"
            f" in {elapsed:.3f} s{reason}"
        )
        error.__cause__ = last
        return error


def reconnect(
    policy: Backoff,
    attempt: Callable[[Optional[float]], T],
    *,
    where: Address,
    timeout: Optional[float],
    wait: Callable[[float], bool],
    cause: Optional[BaseException] = None,
    clock: Callable[[], float] = time.monotonic,
    rng: Optional[_random.Random] = None,
) -> Tuple[T, int, float]:
    """One blocking round: wait, ``attempt(timeout)``, until one returns;
    return (its result, the attempts made, the seconds taken).

    ``wait(seconds)`` sleeps and returns False, or True if the client was
    closed meanwhile (the round stops: ConnectionClosed).  What is retried,
    the timeouts and giving up are Round's.
    """
    plan = Round(policy, where=where, timeout=timeout, clock=clock, rng=rng)
    while True:
        delay = plan.next_wait()
        if delay > 0 and wait(delay):
            raise ConnectionClosed(f"the client was closed while reconnecting to {where}")
        limit = plan.attempt_timeout()
        try:
            result = attempt(limit)
        except BaseException as exc:
            if plan.worth_retrying(exc):
                continue
            raise
        return (result, *plan.connected(cause))


def as_lost(exc: BaseException, address: Optional[Address]) -> BaseException:
    """What a reconnecting client raises for ``exc``: an ending of the
    connection (a reset, a stream cut inside a frame) is ConnectionClosed,
    its cause the original; timeouts and bytes that break the format are
    raised as they are."""
    if isinstance(exc, TimeoutError):
        return exc
    if isinstance(exc, ConnectionClosed):
        what = str(exc)
    elif isinstance(exc, (OSError, IncompleteFrameError)):
        what = f"the connection to {address} was lost ({type(exc).__name__}: {exc})"
    else:
        return exc
    lost = ConnectionClosed(f"{what}; {NOT_RETRIED}")
    lost.__cause__ = exc
    return lost


# -- a Client whose connection was lost ----------------------------------------


def resume(client: Client[Any], *, sending: bool) -> None:
    """A call on a closed client: raise why, or reconnect.  Frames that came
    before the loss are read first: a reply on a new connection could pass
    for theirs, so a send meanwhile is refused."""
    if client._policy is None or client._closed_by_user:
        if client._error is not None and not sending:
            raise client._error
        client._check_open()
        return
    if client._error is not None and not client._reported:
        if sending:
            client._reported = True
            raise ConnectionClosed(f"the connection was lost: {client._error}") from client._error
        client._raise_error()
    if client._frames:
        raise ConnectionClosed(
            f"{len(client._frames)} frames of the lost connection are still to be received"
        )
    _reconnect(client)


def _reconnect(client: Client[Any]) -> None:
    assert client._policy is not None and client._opener is not None
    cause = client._error if client._error is not None else ConnectionClosed("closed")
    address = client.address if client.address is not None else Address()
    try:
        sock, attempts, elapsed = reconnect(
            client._policy, client._opener, where=address, timeout=client._timeout,
            wait=client._woken.wait, cause=cause,
        )  # fmt: skip
    except BaseException as exc:
        # Given up (or a certificate refused): closed for good.
        client._policy = None
        client._error = exc
        client._reported = True
        raise
    if client._closed_by_user:  # close() came while connecting
        close_socket(sock)
        client._check_open()
    client._sock = sock
    sock.settimeout(client._timeout)
    client._decoder = client.protocol.new_decoder()
    client._tls = client._verdict_pending = isinstance(sock, ssl.SSLSocket)
    client._output = OutputQueue(tls=client._tls)
    client._error = None
    client._closed = False
    client.reconnects += 1
    if client._on_reconnect is not None:
        try:
            client._on_reconnect(client, Reconnected(address, attempts, elapsed, cause))
        except BaseException as exc:
            # Its exchange (a login...) failed: the next call reconnects.
            if client._error is None:
                client._fail(exc)
            client._reported = True
            raise
