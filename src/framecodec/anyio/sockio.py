"""Frames straight on a socket, FramedStream's hot path: recv_into the
decoder's buffer and sock.send, trying the socket first and waiting only
when it is not ready, with the cheapest wait each backend offers.

Profiles of the 64 B round trip and of one-way streams showed where the
time went: per wait, anyio's wait_readable on asyncio registers the socket
with the loop and unregisters it (two epoll_ctl calls, a closure, its own
bookkeeping); per read of a server's connection, a cancel scope (so that a
shutdown can end it), worth a loop pass on trio; after every small send and
every read that did not wait, a shielded yield, another loop pass.  So:

- on asyncio (AsyncioSocketIO, for the sockets of our own SocketStream,
  whose close unregisters them), the socket stays registered with the loop
  between waits, and a wait is a future that its callback resolves; the
  registration goes at the first event nobody waits for (level-triggered:
  once) or at close.  A shutdown or a deadline resolves the future too, so
  a read needs no cancel scope;
- on trio (TrioSocketIO), trio.lowlevel's own calls, without anyio's
  indirection, and a trio cancel scope only around a wait that has a
  deadline, or that may be interrupted on a stream where notify_closing
  cannot do it (interrupt_by_closing: a server's task that alone reads
  and sends);
- elsewhere (SocketIO), anyio's calls;
- everywhere, a send of one bytes buffer (a request, a reply) is handed to
  sock.send as it is: the views a vectored send keeps, made, cast and
  released, were a fifth of a small reply's Python calls;
- everywhere, an operation that did not wait yields only once every
  YIELD_EVERY of them (a wait is a yield already): one busy connection
  still cannot starve the other tasks, and a request or a reply no longer
  pays a loop pass.

Cancellation is unchanged: each operation is a cancellation point before it
touches the socket; a receive can only be cancelled before its recv_into or
while it waits (the bytes stay in the kernel, or are the decoder's); a send
cancelled after part of it left shuts the socket's sending side and raises
SendBroken.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable, List, Optional, Tuple

import anyio
import anyio.lowlevel

from ..net.lowwater import low_water

__all__ = [
    "INFINITY",
    "YIELD_EVERY",
    "AsyncioSocketIO",
    "SendBroken",
    "SocketIO",
    "TrioSocketIO",
    "send_ready",
    "socket_io",
]

# Socket operations in a row that did not wait, after which one yields.
YIELD_EVERY = 16

INFINITY = float("inf")


class SendBroken(Exception):
    """Raised by a send once a frame may have left in part (its cause chained)."""


class SocketIO:
    """Receiving into a decoder and sending on one socket, with anyio's
    waits: the path of any backend without one of its own below."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._unyielded = 0  # operations since the last wait or yield
        self._wait_first = False  # the last read waited and took all: the next waits first
        self._interrupted = False  # interrupt() was called: reads wait no more
        self._wait_scope: Optional[Any] = None  # the cancel scope of a read's wait
        # SO_RCVLOWAT set from the decoder: a large frame wakes a read once
        # (net/lowwater.py); None on Unix sockets.
        self.low_water = low_water(sock)

    # -- what each backend provides ----------------------------------------------

    async def checkpoint_if_cancelled(self) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()

    async def _yield(self) -> None:
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def current_time(self) -> float:
        return anyio.current_time()

    async def _wait_readable(self, deadline: float, interruptible: bool) -> bool:
        """Wait until the socket may be read: True; False if interrupt() was
        called or ``deadline`` passed first."""
        if self._interrupted:
            return False
        if deadline == INFINITY and not interruptible:
            await anyio.wait_readable(self.sock)
            return True
        with anyio.CancelScope(deadline=deadline) as scope:
            self._wait_scope = scope
            try:
                await anyio.wait_readable(self.sock)
            finally:
                self._wait_scope = None
        return not scope.cancelled_caught

    async def _wait_writable(self) -> None:
        await anyio.wait_writable(self.sock)

    def interrupt(self) -> None:
        """End a read's wait, now or when it begins (the input is shut)."""
        self._interrupted = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def notify_closing(self) -> None:
        """Wake whoever waits on the socket: it is about to close."""
        if self.sock.fileno() >= 0:
            anyio.notify_closing(self.sock)

    # -- the operations -------------------------------------------------------------

    async def _yield_in_turn(self) -> None:
        """Called after each operation that did not wait: every YIELD_EVERY-th
        yields (shielded: the operation is done, its bytes taken or given)."""
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await self._yield()

    async def receive_into(
        self, decoder: Any, deadline: float = INFINITY, interruptible: bool = False
    ) -> Optional[List[Any]]:
        """One recv_into the decoder's buffer (get_buffer, buffer_updated):
        the frames it completed; None if the wait for bytes was interrupted
        or ``deadline`` (current_time()'s clock) passed.  EndOfStream at the
        peer's end.  The decoder sizes the room by its last reads, up to its
        read_size (asking for read_size each time reserves that much per
        read: 15 us a read of 64 B frames, against 3).  A cancellation can
        only come before the recv_into or during the wait: the bytes stay in
        the kernel, or are the decoder's."""
        await self.checkpoint_if_cancelled()
        if deadline != INFINITY and deadline <= self.current_time():
            return None
        sock = self.sock
        # When the last read had to wait and took all there was (one request
        # at a time, say), the next most likely must wait too: wait first,
        # sparing a recv_into that fails.  Not after a read that filled its
        # room (the end of a large frame: the next header is there already),
        # where a wait would cost a loop pass.
        waited = self._wait_first
        if waited and not await self._wait_readable(deadline, interruptible):
            return None
        while True:
            view = decoder.get_buffer(-1)
            try:
                nbytes = sock.recv_into(view)
            except BlockingIOError:
                view.release()  # the decoder's buffer may move while we wait
                if not await self._wait_readable(deadline, interruptible):
                    return None
                waited = True
                continue
            room = view.nbytes
            view.release()
            if nbytes == 0:
                raise anyio.EndOfStream
            try:
                frames: List[Any] = decoder.buffer_updated(nbytes)
            finally:
                if self.low_water is not None:  # even when it raised: the frame moved on
                    self.low_water.follow(decoder)
            self._wait_first = waited and nbytes < room
            if waited:
                self._unyielded = 0
            else:
                await self._yield_in_turn()
            return frames

    async def send(self, buffers: List[Any], begun: bool = False) -> None:
        """Send ``buffers`` (one item's, or a batch's) in order: send() first,
        or sendmsg() for several (no joined copy: 140 us a 1 MiB frame), and
        wait for room only when the socket has none (the peer's
        backpressure).  Cancelled or failed after part of it left, the
        socket's sending side is shut, so that the peer sees the frame cut
        (IncompleteFrameError) instead of waiting for its end, and
        SendBroken is raised: nothing may be sent after half a frame.
        ``begun``: the first buffer's frame began to leave already (the
        rest of a reply answering.py could not send at once)."""
        sock = self.sock
        if len(buffers) == 1 and type(buffers[0]) is bytes and not begun:
            # One small frame (a request, a reply): the socket most often
            # takes it whole, sparing the views' bookkeeping below.
            await self.checkpoint_if_cancelled()
            data = buffers[0]
            try:
                nbytes = sock.send(data)
            except BlockingIOError:
                nbytes = 0
            if nbytes == len(data):
                await self._yield_in_turn()
                return
            if nbytes:  # the rest as any begun send
                buffers = [data[nbytes:]]
                begun = True
        made = [memoryview(buffer) for buffer in buffers]
        views = [view if view.itemsize == 1 else view.cast("B") for view in made if view.nbytes]
        made.extend(views)  # casts are views of their own, released too
        sent = 1 if begun else 0
        waited = False
        try:
            await self.checkpoint_if_cancelled()
            while views:
                try:
                    if len(views) == 1 or _IOV_MAX == 1:
                        nbytes = sock.send(views[0])
                    else:
                        nbytes = sock.sendmsg(views[:_IOV_MAX])
                except BlockingIOError:
                    await self._wait_writable()
                    waited = True
                    continue
                sent += nbytes
                views = _after(views, nbytes, made)
        except BaseException as exc:
            if sent:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # gone already: the peer sees the cut either way
                raise SendBroken() from exc
            raise
        finally:
            for view in made:
                view.release()
        if waited:
            self._unyielded = 0
        else:
            await self._yield_in_turn()


def send_ready(sock: socket.socket, buffers: List[Any]) -> Tuple[int, List[bytes]]:
    """Send what the socket takes now, without waiting: the bytes sent, and
    copies of what is left (empty: all left).  An error once part of it
    left shuts the sending side, as send() does, and raises SendBroken."""
    if len(buffers) == 1 and type(buffers[0]) is bytes:
        data = buffers[0]  # one reply, the usual case: no views needed
        try:
            nbytes = sock.send(data)
        except BlockingIOError:
            return 0, [data]
        return nbytes, ([data[nbytes:]] if nbytes < len(data) else [])
    made = [memoryview(buffer) for buffer in buffers]
    views = [view if view.itemsize == 1 else view.cast("B") for view in made if view.nbytes]
    made.extend(views)
    sent = 0
    try:
        while views:
            if len(views) == 1 or _IOV_MAX == 1:
                nbytes = sock.send(views[0])
            else:
                nbytes = sock.sendmsg(views[:_IOV_MAX])
            sent += nbytes
            views = _after(views, nbytes, made)
    except BlockingIOError:
        pass
    except OSError as exc:
        if not sent:
            raise
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raise SendBroken() from exc
    try:
        return sent, [bytes(view) for view in views]
    finally:
        for view in made:
            view.release()


def _iov_max() -> int:
    """Buffers per sendmsg(): POSIX guarantees 16, Linux and the BSDs take 1024."""
    if not hasattr(socket.socket, "sendmsg"):  # Windows: one buffer per send()
        return 1
    try:
        return max(16, os.sysconf("SC_IOV_MAX"))
    except (AttributeError, ValueError, OSError):
        return 16


_IOV_MAX = _iov_max()


def _after(views: List[memoryview], nbytes: int, made: List[memoryview]) -> List[memoryview]:
    """What is left of ``views`` (none empty) once ``nbytes`` of them left."""
    index = 0
    while index < len(views) and nbytes >= views[index].nbytes:
        nbytes -= views[index].nbytes
        index += 1
    rest = views[index:]
    if nbytes:
        rest[0] = rest[0][nbytes:]
        made.append(rest[0])
    return rest


class TrioSocketIO(SocketIO):
    """trio.lowlevel's calls, without anyio's indirection (a few microseconds
    each), and a native cancel scope only around a wait that needs one."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        import trio

        self._trio = trio
        lowlevel = trio.lowlevel
        # Bound once: these are what every operation calls.
        self.checkpoint_if_cancelled = lowlevel.checkpoint_if_cancelled  # type: ignore[method-assign]
        self._yield = lowlevel.cancel_shielded_checkpoint  # type: ignore[method-assign]
        self.current_time = trio.current_time  # type: ignore[method-assign]
        self._trio_wait_readable = lowlevel.wait_readable
        self._trio_wait_writable = lowlevel.wait_writable

    # Set by a server whose connection's task alone reads and sends, one
    # after the other (a handler given frames): interrupt() may then wake
    # its read with trio.lowlevel.notify_closing (no send can be waiting;
    # the server closes the socket next), sparing that read a cancel scope.
    interrupt_by_closing = False

    async def _wait_readable(self, deadline: float, interruptible: bool) -> bool:
        if self._interrupted:
            return False
        try:
            if deadline == INFINITY and (not interruptible or self.interrupt_by_closing):
                self._reading_unscoped = True
                try:
                    await self._trio_wait_readable(self.sock)
                except self._trio.ClosedResourceError:
                    if self._interrupted:
                        return False
                    raise
                finally:
                    self._reading_unscoped = False
                return True
            with self._trio.CancelScope(deadline=deadline) as scope:
                self._wait_scope = scope
                try:
                    await self._trio_wait_readable(self.sock)
                finally:
                    self._wait_scope = None
            return not scope.cancelled_caught
        except self._trio.ClosedResourceError:
            raise anyio.ClosedResourceError from None

    async def _wait_writable(self) -> None:
        try:
            await self._trio_wait_writable(self.sock)
        except self._trio.ClosedResourceError:
            raise anyio.ClosedResourceError from None

    _reading_unscoped = False  # a read waits with no scope of its own

    def interrupt(self) -> None:
        super().interrupt()
        if self._reading_unscoped and self.sock.fileno() >= 0:
            self._trio.lowlevel.notify_closing(self.sock)

    def notify_closing(self) -> None:
        if self.sock.fileno() >= 0:
            self._trio.lowlevel.notify_closing(self.sock)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class AsyncioSocketIO(SocketIO):
    """The socket stays registered with the loop between waits; a wait is a
    future its callback resolves (a deadline and interrupt() resolve it to
    False).  Only for a socket whose every close goes through close() here,
    which unregisters it: a closed descriptor left registered would make
    the loop fail on the next socket given its number."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(sock)
        self._loop = loop
        self._fd = sock.fileno()
        self._read_waiter: Optional[asyncio.Future[bool]] = None
        self._write_waiter: Optional[asyncio.Future[bool]] = None
        self._reader_added = False
        self._writer_added = False
        self._closed = False
        # answering.py's callback while it serves the socket: True, it
        # answered what came; False, the task takes over (the waiter set).
        self._ready: Optional[Callable[[], bool]] = None
        self.current_time = loop.time  # type: ignore[method-assign]  # anyio's clock on asyncio
        # anyio's own checkpoint for asyncio, bound once: anyio.lowlevel's
        # looks the backend up at each call (sniffio, asyncio.current_task,
        # a weak dictionary: a tenth of a client's calls per request).
        checkpoint = _asyncio_checkpoint_if_cancelled()
        if checkpoint is not None:
            self.checkpoint_if_cancelled = checkpoint  # type: ignore[method-assign]

    def _on_readable(self) -> None:
        waiter = self._read_waiter
        if waiter is None:  # nobody reads now: stop watching until someone does
            self._loop.remove_reader(self._fd)
            self._reader_added = False
        elif not waiter.done():
            ready = self._ready
            try:
                if ready is not None and ready():
                    return
            except Exception as exc:  # the task raises it
                waiter.set_exception(exc)
                return
            waiter.set_result(True)

    def _on_writable(self) -> None:
        waiter = self._write_waiter
        if waiter is None:
            self._loop.remove_writer(self._fd)
            self._writer_added = False
        elif not waiter.done():
            waiter.set_result(True)

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    async def _wait_readable(self, deadline: float, interruptible: bool) -> bool:
        if self._interrupted:
            return False
        self._check_open()
        loop = self._loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._read_waiter = waiter
        if not self._reader_added:
            loop.add_reader(self._fd, self._on_readable)
            self._reader_added = True
        timer = loop.call_at(deadline, _expire, waiter) if deadline != INFINITY else None
        try:
            return await waiter
        finally:
            self._read_waiter = None
            if timer is not None:
                timer.cancel()

    async def _wait_writable(self) -> None:
        self._check_open()
        loop = self._loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._write_waiter = waiter
        if not self._writer_added:
            loop.add_writer(self._fd, self._on_writable)
            self._writer_added = True
        try:
            await waiter
        finally:
            self._write_waiter = None

    def interrupt(self) -> None:
        self._interrupted = True
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def notify_closing(self) -> None:
        self.close()

    def close(self) -> None:
        """Unregister the socket and wake its waiters (ClosedResourceError);
        before the socket closes."""
        if self._closed:
            return
        self._closed = True
        if self._reader_added:
            self._loop.remove_reader(self._fd)
            self._reader_added = False
        if self._writer_added:
            self._loop.remove_writer(self._fd)
            self._writer_added = False
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(anyio.ClosedResourceError())


def _asyncio_checkpoint_if_cancelled() -> Optional[Callable[[], Any]]:
    """anyio's checkpoint_if_cancelled on asyncio without its per-call
    backend look-up; None if this anyio is not laid out as expected (the
    public call is then used)."""
    try:
        from anyio._backends._asyncio import AsyncIOBackend
    except ImportError:
        return None
    checkpoint = getattr(AsyncIOBackend, "checkpoint_if_cancelled", None)
    return checkpoint if callable(checkpoint) else None


def _on_trio() -> bool:
    import sys

    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def socket_io(stream: Any, sock: socket.socket) -> SocketIO:
    """The I/O for ``sock``, the socket of ``stream``: the stream's own when
    it has one (streams.SocketStream), trio's on trio, anyio's otherwise."""
    own = getattr(stream, "socket_io", None)
    if isinstance(own, SocketIO):
        return own
    if _on_trio():
        return TrioSocketIO(sock)
    return SocketIO(sock)
