"""framecodec.anyio's FramedStream: frames over any anyio byte stream.

Receiving is a pull: a receive() that finds no frame waiting reads once
from the stream (on a plain socket with recv_into into the decoder's
buffer, see sockio.py; otherwise through feed()), and the
frames that read completed go to the receivers in line, the rest wait in
order.  Nothing reads ahead of the receivers, so the bytes held are bounded
by one read (``read_size``) plus the decoder's own limits; a peer that
sends faster than we take frames meets TCP's flow control.

One task reads at a time; the others wait for that read to end, then look
at their place again.  Each receiver holds a _Claim, in the order receive()
and request() were called (a request takes its place as its bytes leave),
so a cancelled receive() puts its frame back first in line and a cancelled
request() drops its reply when it comes: nothing shifts the later replies.
"""

from __future__ import annotations

import collections
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Deque,
    Generic,
    Iterable,
    List,
    Literal,
    Optional,
    TypeVar,
    Union,
    overload,
)

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from ..errors import ConnectionClosed, IncompleteFrameError, ProtocolError
from ..net.addresses import Address
from ..net.protocols import (
    ASYNC_READ_SIZE,
    FrameProtocol,
    MessageProtocol,
    Protocol,
    make_protocol,
    with_read_size,
)
from .sockio import INFINITY, SendBroken, SocketIO, socket_io
from .streams import network_error, raw_socket_of

if TYPE_CHECKING:
    from ..net.types import FrameData, MessageContent
    from .budgeted import BudgetedConnection

__all__ = ["READ_SIZE", "FramedStream", "check_timeouts"]

ItemT = TypeVar("ItemT")

# Bytes asked for per read unless read_size says otherwise (framecodec.aio's
# default too).
READ_SIZE = ASYNC_READ_SIZE


def check_timeouts(idle_timeout: Optional[float], frame_timeout: Optional[float]) -> None:
    for name, value in (("idle_timeout", idle_timeout), ("frame_timeout", frame_timeout)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive or None")


def _read_size(protocol: Protocol) -> int:
    format = getattr(protocol, "format", None)
    if isinstance(format, FrameFormat):
        return format.read_size
    size = getattr(protocol, "_options", {}).get("read_size", READ_SIZE)
    return int(size)


class _Claim:
    """One receiver's place in line: filled with a frame (a list with
    ``batch``), or with the error that ended the stream."""

    __slots__ = ("abandoned", "batch", "done", "error", "frame", "request")

    def __init__(self, request: bool = False, batch: bool = False) -> None:
        self.request = request  # a request's reply: dropped if abandoned
        self.batch = batch  # takes every frame of the read that fills it
        self.abandoned = False  # its request was cancelled: the reply is dropped
        self.done = False
        self.frame: Any = None
        self.error: Optional[BaseException] = None


class FramedStream(Generic[ItemT]):
    """Frames (bytes) or Messages over an anyio byte stream.

    ``await send(item)``, ``await send_many(items)``, ``await receive()``,
    ``await request(item)`` (send, then the reply: the next frame in
    receiving order), ``async for frame in stream``, ``await aclose()``;
    also an async context manager.  ``protocol``, ``format`` and the
    options (max_frame_size, max_header_size, read_size, ...) are those of
    framecodec.connect.

    receive() returns frames in order; once they are all taken it raises
    ConnectionClosed at a clean end of stream, or the error that ended it
    (IncompleteFrameError if the peer vanished inside a frame, another
    ProtocolError, an OSError, TimeoutError after ``idle_timeout`` seconds
    without a frame beginning or ``frame_timeout`` seconds inside one).

    A send returns once the stream took the bytes: it waits while the peer
    does not read.  A send cancelled after part of a frame may have left
    ends sending (ConnectionClosed), since the peer could never find the
    next frame; receiving goes on.
    """

    @overload
    def __init__(
        self: FramedStream[bytes],
        stream: anyio.abc.AnyByteStream,
        *,
        protocol: Union[Literal["frames"], FrameProtocol] = ...,
        idle_timeout: Optional[float] = ...,
        frame_timeout: Optional[float] = ...,
        format: Union[str, FrameFormat, None] = ...,
        width: int = ...,
        byteorder: str = ...,
        length_offset: int = ...,
        length_adjustment: int = ...,
        strip: Optional[int] = ...,
        max_frame_size: int = ...,
        discard_oversized: bool = ...,
        prealloc_limit: int = ...,
        read_size: int = ...,
        large_length_escape: bool = ...,
        max_frame_length: Optional[int] = ...,
        on_oversized: Literal["fail", "discard", "raise"] = ...,
        checksum: Optional[Literal["crc32c"]] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: FramedStream[Message],
        stream: anyio.abc.AnyByteStream,
        *,
        protocol: Union[Literal["messages"], MessageProtocol],
        idle_timeout: Optional[float] = ...,
        frame_timeout: Optional[float] = ...,
        format: None = ...,
        max_header_size: int = ...,
        max_content_size: int = ...,
        read_size: int = ...,
        prealloc_limit: int = ...,
        on_oversized: Literal["fail", "discard", "raise"] = ...,
    ) -> None: ...

    def __init__(
        self,
        stream: anyio.abc.AnyByteStream,
        *,
        protocol: Union[str, Protocol] = "frames",
        format: Union[str, FrameFormat, None] = None,
        idle_timeout: Optional[float] = None,
        frame_timeout: Optional[float] = None,
        **options: Any,
    ) -> None:
        check_timeouts(idle_timeout, frame_timeout)
        self.protocol: Protocol = make_protocol(
            protocol, format, **with_read_size(protocol, options)
        )
        self.stream = stream
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._decoder = self.protocol.new_decoder()
        self._read_size = _read_size(self.protocol)
        # A plain socket nothing else reads or writes (streams.raw_socket_of):
        # received into and sent from directly (sockio.py); None: through the stream.
        sock = raw_socket_of(stream)
        self._io: Optional[SocketIO] = socket_io(stream, sock) if sock is not None else None
        self._checkpoint_if_cancelled = (
            self._io.checkpoint_if_cancelled
            if self._io is not None
            else anyio.lowlevel.checkpoint_if_cancelled
        )
        self._frames: Deque[Any] = collections.deque()  # received, nobody's yet
        self._claims: Deque[_Claim] = collections.deque()  # receivers waiting, in order
        self._reading = False
        # Set as the current read ends; made by the first receiver that waits for it.
        self._read_done: Optional[anyio.Event] = None
        self._read_scope: Optional[anyio.CancelScope] = None
        self._frame_began: Optional[float] = None  # when the frame in progress began
        self._error: Optional[BaseException] = None  # raised once _frames is empty
        self._input_shut = False  # shut_input() was called: stop reading
        # Whether shut_input() may end a read under way (a server's streams):
        # through a stream, a cancel scope around each read, worth a loop pass
        # on trio, so a client's reads have one only for its timeouts; on a
        # socket, sockio ends the wait itself.
        self._interruptible = False
        self._sending = False  # a send is under way: the others wait for it
        self._send_free: Optional[anyio.Event] = None  # set as it ends, if any waits
        self._send_error: Optional[BaseException] = None
        self._closed = False
        self._budget: Optional[BudgetedConnection] = None  # a server's memory budget

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.protocol.name} {self.peer} {state}>"

    # -- properties -------------------------------------------------------------------

    @property
    def peer(self) -> Optional[Address]:
        """The peer's address, when the stream has one (a socket, or TLS on one)."""
        remote = self.stream.extra(SocketAttribute.remote_address, None)
        return Address.from_sockaddr(remote) if remote else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame has arrived and waits for the rest."""
        return bool(self._decoder.mid_frame)

    @property
    def receives_into_buffer(self) -> bool:
        """Whether reads land in the decoder's buffer (get_buffer), not feed()'s."""
        return self._io is not None

    # -- sending ----------------------------------------------------------------------

    # What may be sent follows the protocol (the options: see Client.send).
    @overload
    async def send(self: FramedStream[bytes], item: FrameData, **options: Any) -> None: ...
    @overload
    async def send(self: FramedStream[Message], item: MessageContent, **options: Any) -> None: ...
    async def send(self, item: Any, **options: Any) -> None:
        """Send one frame (or message: content or Message, with content_type=...)."""
        buffers = self.protocol.encode(item, **options)
        await self._acquire_send()
        try:
            await self._send_bytes(buffers)
        finally:
            self._release_send()

    @overload
    async def send_many(self: FramedStream[bytes], items: Iterable[FrameData]) -> None: ...
    @overload
    async def send_many(self: FramedStream[Message], items: Iterable[MessageContent]) -> None: ...
    async def send_many(self, items: Iterable[Any]) -> None:
        """Send several frames with one write."""
        buffers = self.protocol.encode_many(items)
        await self._acquire_send()
        try:
            await self._send_bytes(buffers)
        finally:
            self._release_send()

    @overload
    async def request(self: FramedStream[bytes], item: FrameData, **options: Any) -> bytes: ...
    @overload
    async def request(
        self: FramedStream[Message], item: MessageContent, **options: Any
    ) -> Message: ...
    async def request(self, item: Any, **options: Any) -> Any:
        """Send ``item`` and return the reply: the next frame in receiving order."""
        buffers = self.protocol.encode(item, **options)
        claim = _Claim(request=True)
        await self._acquire_send()
        try:
            self._enlist(claim)  # our place in line, taken as our bytes leave
            await self._send_bytes(buffers)
        except BaseException:
            if not claim.done:
                if self._send_error is None:  # nothing left: no reply will come
                    self._withdraw(claim)
                else:
                    claim.abandoned = True
            raise
        finally:
            self._release_send()
        return await self._wait(claim)

    async def send_eof(self) -> None:
        """End our direction of the stream (TCP and Unix sockets; not TLS):
        the peer sees a clean end while its replies can still come back."""
        if not isinstance(self.stream, anyio.abc.ByteStream):
            raise TypeError(f"{type(self.stream).__name__} cannot half-close")
        await self._acquire_send()
        try:
            self._check_sending()
            await self.stream.send_eof()
        finally:
            self._release_send()

    async def _acquire_send(self) -> None:
        """One send at a time, so that frames never interleave: a flag and
        an event, cheaper than a lock on the uncontended path."""
        while self._sending:
            if self._send_free is None:
                self._send_free = anyio.Event()
            await self._send_free.wait()
        self._sending = True

    def _release_send(self) -> None:
        self._sending = False
        free, self._send_free = self._send_free, None
        if free is not None:
            free.set()

    def _check_sending(self) -> None:
        if self._send_error is not None:
            raise ConnectionClosed(f"the stream cannot send: {self._send_error}")
        if self._closed:
            raise ConnectionClosed("the stream is closed")

    async def _send_bytes(self, buffers: List[Any], begun: bool = False) -> None:
        """Send one item's buffers (the send lock held; ``begun``: part of
        the first left already).  A failure after the first byte may have
        left sets _send_error: sending is over."""
        self._check_sending()
        if self._budget is not None:
            self._budget.send_begins(buffers)  # ends in the finally below
        try:
            if self._io is not None:
                await self._io.send(buffers, begun)
            else:
                data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
                await anyio.lowlevel.checkpoint_if_cancelled()  # before anything leaves
                try:
                    await self.stream.send(data)
                except BaseException as exc:
                    # anyio's streams do not say how much went out.
                    raise SendBroken() from exc
        except SendBroken as broken:
            cause = broken.__cause__ or broken
            self._send_error = cause
            if self._closed or isinstance(cause, anyio.ClosedResourceError):
                raise ConnectionClosed("the stream is closed") from None
            if isinstance(cause, anyio.BrokenResourceError):
                raise network_error(cause) from None
            raise cause from None
        except Exception:
            if self._closed:  # aclose() woke the wait (each backend has its own error)
                raise ConnectionClosed("the stream is closed") from None
            raise
        finally:
            if self._budget is not None:
                self._budget.send_ends()

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> ItemT:
        """The next frame (a Message for protocol="messages")."""
        if self._frames:  # then no receiver is waiting: take it
            await self._checkpoint_if_cancelled()
            return self._frames.popleft()  # type: ignore[no-any-return]
        claim = _Claim()
        self._enlist(claim)
        return await self._wait(claim)  # type: ignore[no-any-return]

    async def receive_batch(self) -> List[ItemT]:
        """Every frame waiting, or those of the next read that completes one."""
        if self._frames:
            await self._checkpoint_if_cancelled()
            frames = list(self._frames)
            self._frames.clear()
            return frames
        claim = _Claim(batch=True)
        self._enlist(claim)
        return await self._wait(claim)  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[ItemT]:
        return self

    async def __anext__(self) -> ItemT:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def _enlist(self, claim: _Claim) -> None:
        """Put ``claim`` in line, or fill it at once from what waits."""
        if self._frames:
            if claim.batch:
                claim.frame = list(self._frames)
                self._frames.clear()
            else:
                claim.frame = self._frames.popleft()
            claim.done = True
        elif self._error is not None:
            claim.error = self._error
            claim.done = True
        else:
            self._claims.append(claim)

    def _withdraw(self, claim: _Claim) -> None:
        try:
            self._claims.remove(claim)
        except ValueError:
            pass

    async def _wait(self, claim: _Claim) -> Any:
        try:
            if claim.done:
                await self._checkpoint_if_cancelled()
            while not claim.done:
                if self._reading:
                    if self._read_done is None:
                        self._read_done = anyio.Event()
                    await self._read_done.wait()
                else:
                    await self._read()
        except BaseException:
            if not claim.done:
                if claim.request:
                    claim.abandoned = True  # its reply is dropped when it comes
                else:
                    self._withdraw(claim)
            elif claim.error is None and not claim.request:
                # The frame came as we were cancelled: it stays first in line.
                self._give_back(claim.frame if claim.batch else [claim.frame])
            raise
        if claim.error is not None:
            raise claim.error
        return claim.frame

    def _give_back(self, frames: List[Any]) -> None:
        if self._claims:
            self._deliver(frames)
        else:
            self._frames.extendleft(reversed(frames))

    def _deliver(self, frames: List[Any]) -> None:
        """Hand frames to the receivers in line, in order; queue the rest."""
        claims = self._claims
        index = 0
        count = len(frames)
        while claims and index < count:
            claim = claims.popleft()
            if claim.abandoned:
                index += 1  # the reply of a cancelled request: dropped
                continue
            if claim.batch:
                claim.frame = frames[index:] if index else frames
                index = count
            else:
                claim.frame = frames[index]
                index += 1
            claim.done = True
        if index < count:
            self._frames.extend(frames[index:] if index else frames)

    def _fail(self, exc: BaseException) -> None:
        """The stream's input is over: receivers get ``exc`` once frames run out."""
        if self._error is not None:
            return
        self._error = exc
        claims = self._claims
        while claims:
            claim = claims.popleft()
            claim.error = exc
            claim.done = True

    def shut_input(self, exc: BaseException) -> None:
        """Stop receiving: a read in progress ends, and receivers get ``exc``
        once the frames already received are taken (a server closing)."""
        self._input_shut = True
        self._fail(exc)
        if self._read_scope is not None:
            self._read_scope.cancel()
        if self._io is not None:
            self._io.interrupt()

    # -- one read ------------------------------------------------------------------

    def _deadline(self) -> float:
        if self._frame_began is not None and self.frame_timeout is not None:
            return self._frame_began + self.frame_timeout
        if self._frame_began is None and self.idle_timeout is not None:
            return self._now() + self.idle_timeout
        return INFINITY

    def _now(self) -> float:
        return self._io.current_time() if self._io is not None else anyio.current_time()

    async def _read(self) -> None:
        """Read once and deliver what it completed, or end the input."""
        self._reading = True
        try:
            budget = self._budget
            if budget is not None and budget.held and not await budget.wait_turn():
                return  # held by the memory budget until its input ended
            if self._io is not None:
                # sockio ends the wait at the deadline or at shut_input(): None.
                read = await self._io.receive_into(
                    self._decoder, self._deadline(), self._interruptible
                )
                if read is None:
                    if not self._input_shut:
                        self._fail(self._timed_out())
                    return
                frames = read
            elif self._interruptible or self.idle_timeout or self.frame_timeout:
                with anyio.CancelScope(deadline=self._deadline()) as scope:
                    self._read_scope = scope
                    frames = await self._read_chunk()
                if scope.cancelled_caught:
                    if not self._input_shut:
                        self._fail(self._timed_out())
                    return
            else:
                frames = await self._read_chunk()
        except anyio.EndOfStream:
            self._end_of_stream(None)
            return
        except anyio.ClosedResourceError:
            self._fail(ConnectionClosed("the stream was closed here"))
            return
        except (anyio.BrokenResourceError, OSError) as exc:
            self._end_of_stream(network_error(exc))
            return
        except ProtocolError as exc:
            if exc.frames:
                self._deliver(exc.frames)
            self._fail(exc)
            return
        except Exception:
            if not self._closed:
                raise
            # aclose() woke the wait (notify_closing): its error, whichever the
            # backend's, says only that; receivers have ConnectionClosed already.
            self._fail(ConnectionClosed("the stream was closed here"))
            return
        finally:
            self._read_scope = None
            self._reading = False
            done, self._read_done = self._read_done, None
            if done is not None:
                done.set()
        if self._decoder.mid_frame:
            if frames or self._frame_began is None:
                self._frame_began = self._now()
        else:
            self._frame_began = None
        if frames:
            self._deliver(frames)

    async def _read_chunk(self) -> List[Any]:
        frames: List[Any] = self._decoder.feed(await self._receive_chunk())
        return frames

    async def _receive_chunk(self) -> bytes:
        stream = self.stream
        if isinstance(stream, anyio.abc.ByteStream):
            return await stream.receive(self._read_size)
        return await stream.receive()  # an object stream of bytes: its own chunks

    def _timed_out(self) -> TimeoutError:
        if self._frame_began is not None:
            return TimeoutError(f"a frame took longer than frame_timeout ({self.frame_timeout} s)")
        return TimeoutError(f"no frame began within idle_timeout ({self.idle_timeout} s)")

    def _end_of_stream(self, exc: Optional[BaseException]) -> None:
        """The peer finished (``exc`` None) or the stream broke."""
        error: BaseException
        try:
            self._decoder.eof()
        except IncompleteFrameError as incomplete:
            if exc is not None:
                incomplete.__cause__ = exc
            error = incomplete
        else:
            error = exc if exc is not None else ConnectionClosed("the peer closed the connection")
        self._fail(error)

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the stream; frames already received stay readable."""
        if self._closed:
            return
        self._closed = True
        self.shut_input(ConnectionClosed("the stream was closed here"))
        if self._io is not None:
            # Wake whoever waits on the socket itself, not through the stream.
            self._io.notify_closing()
        await self.stream.aclose()

    async def __aenter__(self) -> FramedStream[ItemT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
