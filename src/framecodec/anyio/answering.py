"""A server's plain handler answered inside the loop's read callback, on
asyncio: read until the socket is empty, hand the complete frames to the
handler, send its replies, and go on waiting, all in the callback that
said the socket is readable.  On trio, which has no such callback, the
same reading and answering in a tight loop of the task (one wait a
request, none of the receive line's machinery between).

Through the connection's task, each request costs two loop passes: the
callback resolves the task's future, and the task runs in the next pass.
framecodec.aio's protocols answer in the callback itself: one pass, half
the 64 B round trip's wake-ups.  Here the task waits on one future for
as long as the callback can answer alone, and takes over (answering()
returns) for anything else, in the state the ordinary path expects:

- the peer's end, a network error, a protocol error: recorded on the
  stream as its own read would have (_end_of_stream, _fail), the frames
  before a protocol error queued first;
- the handler's error: raised by answering(), the handler called once;
- a reply the socket did not take at once (the peer's backpressure): its
  rest sent by the task, which waits for room, cancellable as any send
  after part of a frame left (the sending side is shut, SendBroken);
- the idle or frame timeout: a timer moved at each read (no new scope);
- shut_input() (a graceful shutdown) and close(): they resolve the future.

The handler runs in the callback, outside any task, as framecodec.aio's
do: anyio.current_time(), a task group's start_soon() work there, but not
what needs the current task (anyio.get_current_task(), a cancel scope).
A cancellation of the task (a shutdown's drain period over) ends the
wait; the callback answers only while the task waits, so no frame is
taken that nobody answers.  Fair to the other connections: each callback
reads at most YIELD_EVERY times (the socket, level-triggered, is reported
again in the next pass).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import anyio

from ..errors import ConnectionClosed, ProtocolError
from .sockio import (
    INFINITY,
    YIELD_EVERY,
    AsyncioSocketIO,
    SendBroken,
    SocketIO,
    TrioSocketIO,
    send_ready,
)
from .streams import network_error

if TYPE_CHECKING:
    from .stream import FramedStream

__all__ = ["answering", "can_answer_in_callback"]


def can_answer_in_callback(framed: FramedStream[Any]) -> bool:
    """Whether framed's socket is one answering() serves: asyncio's in the
    read callback, trio's in a tight loop of the task's own."""
    return isinstance(framed._io, (AsyncioSocketIO, TrioSocketIO))


class _Answerer:
    def __init__(
        self, framed: FramedStream[Any], io: SocketIO, answer: Callable[[List[Any]], Any]
    ) -> None:
        self.framed = framed
        self.io = io
        self.answer = answer
        self.failure: Optional[BaseException] = None  # for the task to raise
        self.rest: Optional[List[bytes]] = None  # a reply's bytes the socket did not take
        self.rest_begun = False  # part of that reply left already
        self.timed_out = False
        self.timer: Optional[asyncio.TimerHandle] = None
        self.loop = io._loop if isinstance(io, AsyncioSocketIO) else None  # timers: asyncio's

    def arm(self) -> None:
        """(Re)start the timer of the idle or frame timeout, if any (on
        asyncio; on trio, each wait has its deadline)."""
        if self.loop is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = self.framed._deadline()
        if deadline != INFINITY:
            self.timer = self.loop.call_at(deadline, self.expire)

    def expire(self) -> None:
        self.timer = None
        assert isinstance(self.io, AsyncioSocketIO)
        waiter = self.io._read_waiter
        if waiter is not None and not waiter.done():
            self.timed_out = True
            waiter.set_result(False)

    def on_readable(self) -> bool:
        """The socket is readable: answer what came; False when the task
        must take over (its future then resolved by the caller)."""
        framed = self.framed
        decoder = framed._decoder
        budget = framed._budget
        sock = self.io.sock
        low_water = self.io.low_water
        for _ in range(YIELD_EVERY):
            view = decoder.get_buffer(-1)
            try:
                nbytes = sock.recv_into(view)
            except BlockingIOError:
                view.release()
                break
            except OSError as exc:
                view.release()
                framed._end_of_stream(network_error(exc))
                return False
            room = view.nbytes
            view.release()
            if nbytes == 0:
                framed._end_of_stream(None)
                return False
            try:
                frames = decoder.buffer_updated(nbytes)
            except ProtocolError as exc:
                if exc.frames:
                    framed._deliver(exc.frames)
                framed._fail(exc)
                return False
            finally:
                if low_water is not None:
                    low_water.follow(decoder)
            if decoder.mid_frame:
                if frames or framed._frame_began is None:
                    framed._frame_began = framed._now()
            else:
                framed._frame_began = None
            if frames and not self.reply(frames, sock):
                return False
            if budget is not None and budget.held_since is not None:
                return False  # held by the memory budget: its task waits its turn
            if nbytes < room:
                break  # the socket is empty
        self.arm()
        return True

    def reply(self, frames: List[Any], sock: socket.socket) -> bool:
        """Answer ``frames``; False when the task must take over."""
        framed = self.framed
        try:
            replies = self.answer(frames)
            if not replies:
                return True
            framed._check_sending()
            buffers = framed.protocol.encode_many(replies)
        except Exception as exc:
            self.failure = exc
            return False
        try:
            sent, rest = send_ready(sock, buffers)
        except SendBroken as broken:  # part of a reply left: sending is over
            framed._send_error = self.failure = broken.__cause__ or broken
            return False
        except OSError as exc:  # nothing left: raised as a send raises it
            self.failure = exc
            return False
        if rest:
            self.rest, self.rest_begun = rest, sent > 0
            return False
        return True


async def answering(framed: FramedStream[Any], answer: Callable[[List[Any]], Any]) -> None:
    """Answer ``framed``'s frames with ``answer`` (frames -> replies, or
    None) in the read callback until the task is needed; then return, or
    raise what ``answer`` raised, with the stream as its own read and send
    would have left it.  The caller goes on with its ordinary loop."""
    io = framed._io
    if framed._frames or framed._error is not None or framed._reading or framed._sending:
        return  # what waits goes the ordinary way
    if framed._budget is not None and framed._budget.held:
        return  # so does a read held by the memory budget
    if isinstance(io, TrioSocketIO):
        await _answering_in_task(framed, io, answer)
        return
    assert isinstance(io, AsyncioSocketIO)
    if io._interrupted or io._closed:
        return
    await framed._checkpoint_if_cancelled()
    loop = io._loop
    answerer = _Answerer(framed, io, answer)
    waiter: asyncio.Future[bool] = loop.create_future()
    io._read_waiter = waiter  # interrupt(), close() and the timer resolve it
    io._ready = answerer.on_readable
    framed._reading = True
    if not io._reader_added:
        loop.add_reader(io._fd, io._on_readable)
        io._reader_added = True
    answerer.arm()
    try:
        await waiter
    except anyio.ClosedResourceError:
        framed._fail(ConnectionClosed("the stream was closed here"))
        return
    finally:
        io._ready = None
        io._read_waiter = None
        framed._reading = False
        done, framed._read_done = framed._read_done, None
        if done is not None:  # a receiver waited for this "read" to end
            done.set()
        if answerer.timer is not None:
            answerer.timer.cancel()
    io._wait_first = False  # data may be there already: try it first
    if answerer.timed_out and not framed._input_shut:
        framed._fail(framed._timed_out())
    await _hand_over(framed, answerer)


async def _answering_in_task(
    framed: FramedStream[Any], io: TrioSocketIO, answer: Callable[[List[Any]], Any]
) -> None:
    """trio has no read callback: the task waits and answers in a loop of
    its own, without the receive line's machinery (claims, the send lock,
    a checkpoint per operation: the wait is one)."""
    answerer = _Answerer(framed, io, answer)
    framed._reading = True
    try:
        while True:
            if not await io._wait_readable(framed._deadline(), True):
                if not framed._input_shut:
                    framed._fail(framed._timed_out())
                return
            if not answerer.on_readable():
                break
    except anyio.ClosedResourceError:
        framed._fail(ConnectionClosed("the stream was closed here"))
        return
    finally:
        framed._reading = False
        done, framed._read_done = framed._read_done, None
        if done is not None:
            done.set()
    io._wait_first = False
    await _hand_over(framed, answerer)


async def _hand_over(framed: FramedStream[Any], answerer: _Answerer) -> None:
    """What the callback left to the task: an error to raise, a reply's rest."""
    if answerer.failure is not None:
        raise answerer.failure
    if answerer.rest is not None:
        await framed._acquire_send()
        try:
            await framed._send_bytes(list(answerer.rest), begun=answerer.rest_begun)
        finally:
            framed._release_send()
