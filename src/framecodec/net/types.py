"""The types user code meets in the network layers, shared by net, aio and anyio.

``ItemT`` is what a connection receives: bytes for protocol="frames" (the
default), Message for protocol="messages"; the clients, connections and
handler classes are generic in it (``Client[bytes]``).  The aliases below
exist for type checkers only (under TYPE_CHECKING, so they cost nothing at
run time; import them under TYPE_CHECKING too):

- FrameData: what may be sent as a frame, any bytes-like object;
- MessageContent: what may be sent as a message: a Message (sent with its
  content type, encoding and extra header keys), a dict or list (JSON), a
  str (text) or a bytes-like object (binary);
- FrameHandler[ItemT, ReplyT]: a function of one frame returning the reply
  or None; BatchHandler: with ``batch=True``, a function of the list of
  frames one read completed returning the replies (any iterable) or None;
- AsyncFrameHandler, AsyncBatchHandler: the same, plain or coroutine
  functions (framecodec.aio and framecodec.anyio run both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

__all__ = ["ItemT"]

ItemT = TypeVar("ItemT")

if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Union

    from _typeshed import ReadableBuffer

    from ..codec.messages import Message

    ReplyT = TypeVar("ReplyT")
    FrameData = ReadableBuffer
    MessageContent = Union[Message, Dict[str, Any], List[Any], str, ReadableBuffer]
    FrameHandler = Callable[[ItemT], Optional[ReplyT]]
    BatchHandler = Callable[[List[ItemT]], Optional[Iterable[ReplyT]]]
    AsyncFrameHandler = Callable[[ItemT], Union[ReplyT, Awaitable[Optional[ReplyT]], None]]
    AsyncBatchHandler = Callable[
        [List[ItemT]], Union[Iterable[ReplyT], Awaitable[Optional[Iterable[ReplyT]]], None]
    ]
