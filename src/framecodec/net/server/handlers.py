"""The handler shapes every server accepts, told apart in one place.

- FRAME: a function of one frame (or Message) returning the reply, or None;
- BATCH (``batch=True``): a function of the list of frames one read
  completed, returning a list of replies (or None);
- ASYNC_FRAME, ASYNC_BATCH: the same as coroutine functions (framecodec.aio);
- PER_CONNECTION (``per_connection=True``): a coroutine function given each
  connection, for conversations of any shape (framecodec.aio);
- CLASS: a ConnectionHandler subclass, one instance per connection (the
  blocking servers).

A reply wrapped in StartTLS (``return StartTLS(b"go ahead")``) is sent,
then the connection is upgraded to TLS with the server's
``starttls_context``; ConnectionHandler code calls
``self.connection.start_tls()`` after sending it instead.

Each server says which shapes it runs; a handler of another shape is a
TypeError that names the server that does run it.
"""

from __future__ import annotations

import enum
import inspect
from typing import TYPE_CHECKING, Any, Callable, Collection, Generic, List, Optional

from ..types import ItemT

if TYPE_CHECKING:
    from typing import Type, Union

    from ..types import BatchHandler as BatchFunction
    from ..types import FrameData, FrameHandler, MessageContent, ReplyT
    from .base import Connection

__all__ = [
    "ConnectionHandler",
    "HandlerShape",
    "StartTLS",
    "handler_factory",
    "handler_shape",
    "split_at_starttls",
]


class StartTLS:
    """A handler's reply after which the server upgrades the connection to
    TLS (its ``starttls_context``): ``return StartTLS(b"go ahead")``.

    ``reply`` (None: no reply) is sent in the clear, then the server waits
    for the client's handshake.  Frames of the same read after the one
    answered so, or bytes already buffered, came in the clear before the
    handshake: a protocol error (StartTLSError) that closes the connection.
    """

    __slots__ = ("reply",)

    def __init__(self, reply: Any = None) -> None:
        self.reply = reply

    def __repr__(self) -> str:
        return f"StartTLS({self.reply!r})"


def split_at_starttls(replies: List[Any]) -> Optional[int]:
    """The index of the first StartTLS in ``replies``, if any."""
    for index, reply in enumerate(replies):
        if type(reply) is StartTLS:
            return index
    return None


class HandlerShape(enum.IntEnum):
    FRAME = 0
    BATCH = 1
    ASYNC_FRAME = 2
    ASYNC_BATCH = 3
    PER_CONNECTION = 4
    CLASS = 5


BLOCKING_SHAPES = (HandlerShape.FRAME, HandlerShape.BATCH, HandlerShape.CLASS)
ASYNC_SHAPES = (
    HandlerShape.FRAME,
    HandlerShape.BATCH,
    HandlerShape.ASYNC_FRAME,
    HandlerShape.ASYNC_BATCH,
    HandlerShape.PER_CONNECTION,
)


def _is_coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    )


def handler_shape(
    handler: Any,
    *,
    batch: bool,
    per_connection: bool,
    accepted: Collection[HandlerShape],
    server: str,
) -> HandlerShape:
    """The shape of ``handler`` with these options, if ``server`` runs it."""
    if isinstance(handler, type) and issubclass(handler, ConnectionHandler):
        if batch or per_connection:
            raise ValueError(
                "batch=True and per_connection=True are for function handlers; "
                "a ConnectionHandler overrides frames_received instead"
            )
        shape = HandlerShape.CLASS
    elif not callable(handler) or isinstance(handler, type):
        raise TypeError(
            f"handler must be a function, a coroutine function or a ConnectionHandler "
            f"subclass, not {handler!r}"
        )
    elif per_connection:
        if batch:
            raise ValueError("batch=True and per_connection=True do not combine")
        if not _is_coroutine_function(handler):
            raise TypeError("per_connection=True needs a coroutine function (async def)")
        shape = HandlerShape.PER_CONNECTION
    elif _is_coroutine_function(handler):
        shape = HandlerShape.ASYNC_BATCH if batch else HandlerShape.ASYNC_FRAME
    else:
        shape = HandlerShape.BATCH if batch else HandlerShape.FRAME
    if shape not in accepted:
        runs_it = (
            "framecodec.serve" if shape is HandlerShape.CLASS else "framecodec.aio.start_server"
        )
        kind = shape.name.lower().replace("_", " ")
        raise TypeError(f"{server} does not run {kind} handlers; {runs_it} does")
    return shape


class ConnectionHandler(Generic[ItemT]):
    """A handler with a life per connection: subclass it, pass the class.

    The server makes one instance per connection and calls, in order,
    connection_made, then frames_received for each read that completed
    frames, then eof_received if the peer half-closed, and always
    connection_lost (``exc`` None after a clean end).  Subclass
    ``ConnectionHandler[bytes]`` for frames, ``ConnectionHandler[Message]``
    for messages.
    """

    connection: Connection[ItemT]

    def connection_made(self, connection: Connection[ItemT]) -> None:
        self.connection = connection

    # The reply's type follows the protocol (a bytes-like object for frames,
    # message content for messages), which one type parameter cannot say.
    def frame_received(self, frame: ItemT) -> Any:
        """One frame (a Message for protocol="messages"); return a reply or None."""
        return None

    def frames_received(self, frames: List[ItemT]) -> None:
        """All the frames one read completed; override to handle a batch at once.

        A reply wrapped in StartTLS ends the batch: the frames after it came
        in the clear before the handshake (see StartTLS)."""
        connection: Connection[Any] = self.connection  # replies of either protocol
        replies = []
        for index, frame in enumerate(frames):
            reply = self.frame_received(frame)
            if reply is None:
                continue
            if type(reply) is StartTLS:
                if reply.reply is not None:
                    replies.append(reply.reply)
                if replies:
                    connection.send_many(replies)
                connection.start_tls(frames[index + 1 :])
                return
            replies.append(reply)
        if replies:
            connection.send_many(replies)

    def eof_received(self) -> None:
        """The peer sent its last frame; replies sent now are still delivered."""

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """The connection is closed; ``exc`` says why, None after a clean end."""


class BatchHandler(ConnectionHandler[Any]):
    """A batch function as a ConnectionHandler."""

    def __init__(self, function: Callable[[List[Any]], Optional[List[Any]]]) -> None:
        self._function = function

    def frames_received(self, frames: List[Any]) -> None:
        replies = self._function(frames)
        if replies:
            if not isinstance(replies, list):
                replies = list(replies)  # a generator, say: looked at twice
            index = split_at_starttls(replies)
            if index is None:
                self.connection.send_many(replies)
                return
            if index != len(replies) - 1:
                raise ValueError("StartTLS must be the last reply of a batch")
            sent = [reply for reply in replies[:index] if reply is not None]
            if replies[index].reply is not None:
                sent.append(replies[index].reply)
            if sent:
                self.connection.send_many(sent)
            self.connection.start_tls()


def handler_factory(handler: Any, batch: bool) -> Callable[[], ConnectionHandler[Any]]:
    """What a blocking server calls for each connection's ConnectionHandler."""
    shape = handler_shape(
        handler,
        batch=batch,
        per_connection=False,
        accepted=BLOCKING_SHAPES,
        server="framecodec.serve",
    )
    if shape is HandlerShape.CLASS:
        return handler  # type: ignore[no-any-return]
    if shape is HandlerShape.BATCH:
        return lambda: BatchHandler(handler)

    def per_frame() -> ConnectionHandler[Any]:
        instance: ConnectionHandler[Any] = ConnectionHandler()
        instance.frame_received = handler  # type: ignore[method-assign]
        return instance

    return per_frame


if TYPE_CHECKING:
    # What serve() runs: a frame function, a batch function (batch=True) or a
    # ConnectionHandler subclass, receiving ItemT and replying ReplyT.
    Handler = Union[
        FrameHandler[ItemT, ReplyT],
        BatchFunction[ItemT, ReplyT],
        Type[ConnectionHandler[ItemT]],
    ]
    # A handler's reply: what its protocol sends, or that wrapped in StartTLS.
    FrameReply = Union[FrameData, StartTLS]
    MessageReply = Union[MessageContent, StartTLS]
