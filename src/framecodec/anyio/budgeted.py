"""The memory budget of a framecodec.anyio server: net/server/budget.py's
MemoryBudget, its rules unchanged, on anyio's tasks (as aio/admission.py
puts it on asyncio's callbacks).  A module of its own so that server.py
and stream.py stay within the layout's 600 lines; clients have none of it.

- accounting: a connection's decoder is wrapped (BudgetedDecoder), so
  every read, whichever path makes it (sockio's recv_into, answering.py's
  callback, receive() and feed() on TLS and other streams), records what
  the connection holds after it; a send records the reply it holds as it
  begins and as it ends;
- read_limit: the decoder's view is cut to the read limit, and that
  limit is its size hint; a receive() takes read_size as before, but near
  the budget its bytes go in as recv_into reads would, a limit at a time
  (a large frame's storage then reserves what came, not prealloc_limit);
- held: the reading task waits before its next read (wait_turn, in
  FramedStream._read), REVIEW_EVERY at a time, until the review lets it
  go, its input is shut or its frame's deadline passes; answering.py's
  callback hands over to the task when its connection is held;
- the review: a task of the server's connection task group, every
  REVIEW_EVERY while any connection is held; a connection closed over the
  budget has its task's cancel scope cancelled, OverMemoryBudget its ending.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, List, Optional, Set

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ..errors import OverMemoryBudget, ProtocolError
from ..net.server.budget import REVIEW_EVERY, MemoryBudget, kernel_input, kernel_output
from ..net.transport import HINTED_READ

if TYPE_CHECKING:
    from .server import Server
    from .stream import FramedStream

__all__ = ["BudgetedConnection", "BudgetedDecoder", "BudgetedServer"]


class BudgetedDecoder:
    """A connection's decoder as its FramedStream sees it under a memory
    budget: reads cut near the budget, and accounted after."""

    __slots__ = ("_budget", "_clock", "_conn", "_open", "decoder")

    def __init__(self, decoder: Any, conn: BudgetedConnection, clock: Any) -> None:
        self.decoder = decoder
        self._conn = conn
        # Bound once: each read of the 64 B round trip pays for these.
        self._budget: MemoryBudget = conn.server.budget  # type: ignore[assignment]
        self._open = conn.server._open
        self._clock = clock

    @property
    def mid_frame(self) -> bool:
        return bool(self.decoder.mid_frame)

    @property
    def reserved(self) -> int:
        return int(self.decoder.reserved)

    @property
    def needed(self) -> int:
        return int(self.decoder.needed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)  # the rest, rarely called (eof, buffered)

    def _limit(self) -> int:
        """What one read may take (MemoryBudget.read_limit): far from the near
        mark, the room under it (a share is one read at most), found at once."""
        budget = self._budget
        room = budget.near - budget.total
        return room if room > HINTED_READ else self._conn.read_limit()

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        limit = self._limit()
        # A small limit is the decoder's hint too (see net/transport.receive_at_most).
        view: memoryview = self.decoder.get_buffer(limit if limit <= HINTED_READ else sizehint)
        if view.nbytes > limit:
            whole, view = view, view[:limit]
            whole.release()  # the cut alone exports the decoder's buffer (PyPy: at once)
        return view

    def buffer_updated(self, nbytes: int) -> List[Any]:
        try:
            frames: List[Any] = self.decoder.buffer_updated(nbytes)
        finally:
            self._account()
        return frames

    def _account(self) -> None:
        conn = self._conn
        memory = self.decoder.reserved + conn.sending
        self._budget.account(conn, memory, self._clock(), len(self._open))

    def feed(self, data: Any) -> List[Any]:
        if self._limit() > HINTED_READ:  # far from the budget: as it comes
            try:
                frames: List[Any] = self.decoder.feed(data)
            finally:
                self._account()
            return frames
        # Near it, what a receive() took goes in as recv_into reads would
        # (read_limit at a time, the limit the decoder's hint), one copy all the same.
        frames = []
        with memoryview(data) as whole, whole.cast("B") as rest:
            offset = 0
            while offset < rest.nbytes:
                with self.get_buffer() as view:
                    nbytes = min(view.nbytes, rest.nbytes - offset)
                    view[:nbytes] = rest[offset : offset + nbytes]
                offset += nbytes
                try:
                    frames.extend(self.buffer_updated(nbytes))
                except ProtocolError as exc:
                    exc.frames[:0] = frames  # those of the earlier pieces first
                    raise
        return frames


class BudgetedConnection:
    """What the memory budget adds to an anyio server's connection: the
    attributes MemoryBudget reads (accounted, held_since, memory, unsent,
    pending_input), and the hold, the wake-up and the close."""

    server: Server
    raw: anyio.abc.ByteStream
    framed: Optional[FramedStream[Any]]
    accounted = 0  # bytes last recorded (net/server/budget.py)
    held_since: Optional[float] = None  # since when reading is held; None while it reads
    sending = 0  # bytes of the send under way: a reply held until it leaves
    over_budget: Optional[OverMemoryBudget] = None  # why the review closed it
    _scope: Optional[anyio.CancelScope] = None  # its task's, for that close
    _wake: Optional[anyio.Event] = None  # set to end a held read's wait

    @property
    def held(self) -> bool:
        return self.held_since is not None

    @property
    def memory(self) -> int:
        """Bytes this connection holds: input in its decoder (with the room a
        large frame reserved), the reply being sent."""
        framed = self.framed
        return self.sending + (0 if framed is None else int(framed._decoder.reserved))

    @property
    def unsent(self) -> int:
        """Bytes of replies its peer has not taken (here, in the kernel's send queue)."""
        return self.sending + kernel_output(self._fileno())

    @property
    def pending_input(self) -> int:
        """Bytes its peer sent that the kernel holds, unread."""
        return kernel_input(self._fileno())

    def _fileno(self) -> int:
        sock = self.raw.extra(SocketAttribute.raw_socket, None)
        return -1 if sock is None else int(sock.fileno())

    # -- the server's side -------------------------------------------------------

    def budgeted_scope(self) -> anyio.CancelScope:
        """The cancel scope the connection's conversation runs in."""
        self._scope = anyio.CancelScope()
        return self._scope

    def attach_budget(self, framed: FramedStream[Any]) -> None:
        """Put ``framed`` under the server's budget, if it has one."""
        if self.server.budget is not None:
            clock = framed._io.current_time if framed._io is not None else anyio.current_time
            framed._decoder = BudgetedDecoder(framed._decoder, self, clock)
            framed._budget = self

    def detach_budget(self) -> None:
        """The connection ended: what it held is free, and its stream (a
        per-connection handler may keep it) goes on without the budget."""
        budget = self.server.budget
        framed = self.framed
        if budget is None or framed is None or framed._budget is not self:
            return
        budget.forget(self)
        framed._budget = None
        framed._decoder = framed._decoder.decoder
        self.wake()

    def close_over_budget(self, why: OverMemoryBudget) -> None:
        self.over_budget = why
        if self._scope is not None:
            self._scope.cancel()
        self.wake()

    # -- the stream's side ---------------------------------------------------------

    def read_limit(self) -> int:
        budget = self.server.budget
        assert budget is not None
        return budget.read_limit(self, len(self.server._open))

    def account(self) -> None:
        """Record what the connection holds; the budget may hold it."""
        budget = self.server.budget
        framed = self.framed
        if budget is not None and framed is not None:
            budget.account(self, self.memory, framed._now(), len(self.server._open))

    def send_begins(self, buffers: List[Any]) -> None:
        self.sending = sum(b.nbytes if isinstance(b, memoryview) else len(b) for b in buffers)
        self.account()
        if self.held_since is not None:
            self.server.review_soon()  # its peer may take no replies

    def send_ends(self) -> None:
        self.sending = 0
        self.account()

    def wake(self) -> None:
        wake = self._wake
        if wake is not None:
            wake.set()

    async def wait_turn(self) -> bool:
        """Before a read of a held connection: wait until the review lets it
        go (REVIEW_EVERY at a time: a shutdown is seen within that).  False
        if the read must not be made: its input is shut, or its frame's
        deadline passed (the stream failed with its timeout)."""
        framed = self.framed
        assert framed is not None
        while self.held_since is not None and not framed._input_shut:
            self.server.review_soon()
            now = framed._now()
            deadline = framed._deadline()
            if deadline <= now:
                framed._fail(framed._timed_out())
                return False
            wake = self._wake = anyio.Event()
            with anyio.move_on_after(min(REVIEW_EVERY, deadline - now)):
                await wake.wait()
            self._wake = None
        return not framed._input_shut


class BudgetedServer:
    """What the memory budget adds to an anyio Server: its ``budget``, the
    review, and the figures (``memory``, ``memory_budget``) of aio's."""

    budget: Optional[MemoryBudget]
    _open: Set[Any]
    _tasks: Optional[anyio.abc.TaskGroup] = None  # the connections' task group, while serving
    _reviewing = False
    stats: collections.Counter[str]

    @property
    def memory(self) -> int:
        """Bytes all connections hold, as the memory budget last counted;
        without a budget, now."""
        if self.budget is not None:
            return self.budget.total
        return sum(conn.memory for conn in self._open)

    @property
    def memory_budget(self) -> Optional[int]:
        """The ceiling on ``memory`` (None: no server-wide ceiling)."""
        return None if self.budget is None else self.budget.limit

    def review_soon(self) -> None:
        """Start the review, if connections are held and none runs (from a
        task: answering.py's callback hands a held connection over first)."""
        budget = self.budget
        if self._reviewing or self._tasks is None or budget is None or not budget.held:
            return
        self._reviewing = True
        self._tasks.start_soon(self._review_budget)

    async def _review_budget(self) -> None:
        """Held connections read again, or are closed (see budget.py)."""
        budget = self.budget
        assert budget is not None
        try:
            while budget.held:
                await anyio.sleep(REVIEW_EVERY)
                released, closing = budget.review(list(self._open), anyio.current_time())
                for conn, why in closing:
                    self.stats["over_budget"] += 1
                    conn.close_over_budget(why)
                for conn in released:
                    conn.wake()
        finally:
            self._reviewing = False
