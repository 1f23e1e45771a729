"""A server's memory budget: one ceiling on the bytes all its connections
hold (input buffered in decoders, replies queued but unsent), beside each
connection's own ``high_water``.  Every backend (selector, threads,
framecodec.aio) keeps one, with the same rules, words and stats key:

- each connection's holding is recorded after each read (``account``);
  the backend's review recounts them all exactly every REVIEW_EVERY
  seconds while any connection is held;
- from three eighths of the budget on ("near" it), a connection holding
  more than its share stops reading: it is *held*.  Its share is one read
  (NEAR_READ_SIZE), or the near mark over the open connections when that
  is less; a connection alone is never held (high_water and
  max_frame_size bound it).  A held connection takes no more input, so what the server
  holds stops growing, while the connections holding little (a steady
  client between requests, whose replies went out; a fresh one) are
  still read and answered;
- near the budget a read takes no more than what is left of the
  connection's share (MIN_READ at least: ``read_limit``), where a
  decoder's view may span the rest of a large frame, and it passes that
  limit to the decoder as its size hint, so that a large frame's storage
  reserves only what is read (one read ahead: the view it is read into).
  So the total stays under three times the near mark (reads, and the room
  held connections keep for their next one) plus what the frames begun
  before the near mark reserved (prealloc_limit each, at most): within
  the budget give or take a few of those (replies larger than their
  requests add to that: one read's worth);
- a connection held for HOLD_GRACE while the server still holds a quarter
  of its budget or more, and whose peer is not taking its replies (it has
  some unsent), is closed, held longest first, until the total is back
  under that: counted in ``over_budget`` (and, as its ending, in
  ``network_errors``), logged as closed over the memory budget
  (errors.OverMemoryBudget);
- a connection held with input only (a frame coming in, nothing unsent)
  is never closed for the budget: near it, reads are capped at the
  connection's share, so such connections together stay within the
  budget, and closing them would cut off clients that merely upload large
  frames at once (frame_timeout bounds a peer that stalls inside a frame).
  So that uploads complete, one at a time, the one held longest whose
  peer has sent more (the kernel holds input for it: ``pending_input``)
  is *favoured*: it reads on, never held, until what it holds is back
  within its share (its frame is in and handled); favoured HOLD_GRACE with
  no input pending, it is held again and the next one has its turn; with
  replies unsent (its peer takes none), it is closed as above.  One held
  TURN_PATIENCE without its turn is closed as above all the same (200
  peers flooding the server would otherwise wait their turns for minutes);
- a connection's hold times run from when it was first held since it last
  held no more than its share (its frame in): let go under a quarter and
  held again, without a frame completed, its clocks do not start over
  (peers whose end of stream waits behind their unread input, or that
  send a little each time they are let go, would otherwise be held and
  let go for ever);
- what a decoder holds counts the storage a large frame has reserved
  ahead of its bytes (``reserved``), since that is memory taken: a peer
  that begins large frames and stalls costs what was reserved for them;
- under a quarter, or once a held connection holds no more than its share
  (its peer took its replies), it reads again.
"""

from __future__ import annotations

import fcntl
import struct
import sys
import termios
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ...errors import OverMemoryBudget
from ..service import logger

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "HOLD_GRACE",
    "MIN_READ",
    "NEAR_READ_SIZE",
    "REVIEW_EVERY",
    "TURN_PATIENCE",
    "MemoryBudget",
    "check_memory_budget",
    "make_budget",
]

# What all connections of a server may hold, by default: with 200 peers that
# send 1 MiB requests and never read the replies, the server's RSS grows by
# some 15-65 MiB (docs/reliability.md), more under TLS.
DEFAULT_MEMORY_BUDGET = 16 * 1024 * 1024
# A connection's share near the budget, at most: one read of the decoders'
# default read_size.
NEAR_READ_SIZE = 64 * 1024
# What one read may take near the budget, at least.
MIN_READ = 4096
# A connection held this long while the server is near its budget is closed.
HOLD_GRACE = 1.0
# How long a connection held with input only may wait for its turn (see
# above) before it is closed all the same: uploads that take turns finish
# in far less on a working network; peers that flood the server do not.
TURN_PATIENCE = 5.0
# How often a server with held connections recounts them and closes the overdue.
REVIEW_EVERY = 0.1


def kernel_input(fd: int) -> int:
    """Bytes the kernel has received for socket ``fd`` and nobody read yet
    (0 when it cannot tell: a closed descriptor)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


def kernel_output(fd: int) -> int:
    """Bytes written to socket ``fd`` that its peer has not taken yet (the
    kernel's send queue; 0 when it cannot tell)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


def check_memory_budget(memory_budget: Optional[int]) -> None:
    if memory_budget is not None and memory_budget < 1024:
        raise ValueError("memory_budget must be at least 1024 bytes, or None")


def make_budget(memory_budget: Optional[int], address: Any) -> Optional[MemoryBudget]:
    check_memory_budget(memory_budget)
    return None if memory_budget is None else MemoryBudget(memory_budget, address)


class MemoryBudget:
    """The accounting and the rules above, for one server (sans I/O: the
    backend pauses, resumes and closes).  Connections carry two attributes
    of its own: ``accounted`` (bytes last recorded) and ``held_since``
    (None while reading).  Single-threaded backends call it directly; the
    threads backend holds ``lock`` around each call."""

    def __init__(self, limit: int, address: Any) -> None:
        self.limit = limit
        self.near = limit * 3 // 8
        self.low = limit // 4
        self.address = address
        self.total = 0  # bytes held, as last recorded
        self.held: Dict[int, Any] = {}  # id -> connection, held longest first
        self.lock = threading.Lock()
        self.favoured: Any = None  # the input-only connection let read (see above)
        self._first_held: Dict[int, float] = {}  # id -> held first, since its frame was in
        self._favoured_at = 0.0
        self._warned = False  # logged once per burst of holding

    def account(self, conn: Any, memory: int, now: float, connections: int) -> bool:
        """Record that ``conn`` holds ``memory`` bytes: whether it is held
        (must not read)."""
        self.total += memory - conn.accounted
        conn.accounted = memory
        if conn.held_since is not None:
            return True  # until a review lets it go
        if self.total < self.near and not self._first_held and conn is not self.favoured:
            return False  # far from the budget: the usual case, decided at once
        if memory <= self._share(connections):
            self._first_held.pop(id(conn), None)  # its frame is in
            if conn is self.favoured:
                self.favoured = None  # the next one's turn
            return False
        if conn is not self.favoured and self.total >= self.near:
            conn.held_since = self._first_held.setdefault(id(conn), now)
            self.held[id(conn)] = conn
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s: %d KiB held of a memory budget of %d KiB: the connections holding"
                    " the most stop reading, those held longest are closed",
                    self.address,
                    self.total >> 10,
                    self.limit >> 10,
                )
            return True
        return False

    def read_limit(self, conn: Any, connections: int, concurrent: bool = False) -> int:
        """How many bytes one read of ``conn`` may take: what is left of its
        share or of the room under the near mark, MIN_READ at least.  Reads
        ``concurrent`` with each other (the threads backend's) split the
        room between the open connections."""
        share = self._share(connections) - int(conn.accounted)
        room = self.near - self.total
        if concurrent and connections > 1:
            room //= connections
        return max(MIN_READ, share, room)

    def _share(self, connections: int) -> int:
        if connections <= 1:
            return sys.maxsize  # alone: bounded by its own limits (high_water, max_frame_size)
        return min(NEAR_READ_SIZE, self.near // connections)

    def forget(self, conn: Any) -> None:
        """``conn`` ended: what it held is free."""
        self.total -= conn.accounted
        conn.accounted = 0
        self._first_held.pop(id(conn), None)
        if conn is self.favoured:
            self.favoured = None
        if conn.held_since is not None:
            conn.held_since = None
            self.held.pop(id(conn), None)

    def review(
        self, conns: Iterable[Any], now: float
    ) -> Tuple[List[Any], List[Tuple[Any, OverMemoryBudget]]]:
        """Recount every connection (its ``memory``; ``unsent``, its replies
        not yet taken by its peer, here or in the kernel's send queue;
        ``pending_input``, input its peer sent that the kernel
        holds): (those that may read again, those to close with the
        exception to end them with)."""
        conns = list(conns)
        sizes: Dict[int, int] = {}
        total = 0
        for conn in conns:
            size = sizes[id(conn)] = conn.memory
            conn.accounted = size
            total += size
        self.total = total
        if self.favoured is not None and id(self.favoured) not in sizes:
            self.favoured = None  # ended meanwhile
        share = self._share(len(conns))
        released: List[Any] = []
        closing: List[Tuple[Any, OverMemoryBudget]] = []
        uploading: List[Any] = []  # held with input only, past their grace
        for key, conn in list(self.held.items()):
            if key not in sizes:  # ended meanwhile, not yet forgotten
                continue
            size = sizes[key]
            since = conn.held_since
            if total < self.low or size <= share:
                if size <= share:
                    self._first_held.pop(key, None)  # its frame is in
                released.append(conn)
            elif since is not None and now - since >= HOLD_GRACE:  # total >= low here
                if not conn.unsent and now - since < TURN_PATIENCE:
                    uploading.append(conn)  # not its peer's fault: see above
                    continue
                total -= size
                closing.append((conn, self._why(size, now - since)))
            else:
                continue
            conn.held_since = None
            del self.held[key]
        favoured = self.favoured
        if (
            favoured is not None
            and favoured.unsent
            and now - self._favoured_at >= HOLD_GRACE
            and total >= self.low
        ):
            # Favoured, it read on, and its peer takes no replies: stalled.
            self.favoured = None
            size = sizes.get(id(favoured), 0)
            total -= size
            closing.append((favoured, self._why(size, now - self._favoured_at)))
        turn = self._take_turns(uploading, now)
        if turn is not None:
            released.append(turn)
        if total < self.low:
            self._warned = False
        return released, closing

    def _take_turns(self, uploading: List[Any], now: float) -> Any:
        """Favour the next upload (see above), if none is, or if the one
        favoured has had nothing more from its peer for HOLD_GRACE."""
        favoured = self.favoured
        if favoured is not None:
            if favoured.pending_input or now - self._favoured_at < HOLD_GRACE:
                return None
            self._favoured_at = now  # its peer stalled: held again, behind the others
            favoured.held_since = self._first_held.get(id(favoured), now)
            self.held[id(favoured)] = favoured
            self.favoured = None
        for conn in uploading:  # held longest first
            if conn.pending_input:
                conn.held_since = None
                del self.held[id(conn)]
                self.favoured = conn
                self._favoured_at = now
                return conn
        return None

    def _why(self, size: int, held: float) -> OverMemoryBudget:
        return OverMemoryBudget(
            f"held {size >> 10} KiB, unread for {held:.1f} s, while the server was near its"
            f" memory budget ({self.limit >> 10} KiB)"
        )
