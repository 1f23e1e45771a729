"""start_server() as type checkers see it: overloaded by protocol like
framecodec.serve, each overload with its protocol's options and handler
types.  At run time the name is server.start_server itself, untouched; the
overloads live here because server.py is at the size limit of a module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .server import start_server as _start_server

__all__ = ["start_server"]

if TYPE_CHECKING:
    import socket
    import ssl
    from typing import Any, Awaitable, Callable, Literal, Optional, Union, overload

    from ..codec.formats import FrameFormat
    from ..codec.messages import Message
    from ..net.addresses import AddressLike
    from ..net.protocols import FrameProtocol, MessageProtocol
    from ..net.server.handlers import FrameReply, MessageReply
    from ..net.types import AsyncBatchHandler, AsyncFrameHandler, ItemT, ReplyT
    from .connection import Connection
    from .server import Server

    # A plain or coroutine function of a frame, of a batch (batch=True), or
    # of the Connection (per_connection=True).
    Handler = Union[
        AsyncFrameHandler[ItemT, ReplyT],
        AsyncBatchHandler[ItemT, ReplyT],
        Callable[[Connection[ItemT]], Awaitable[object]],
    ]

    @overload
    async def start_server(
        address: Union[AddressLike, socket.socket],
        handler: Handler[bytes, FrameReply],
        *,
        protocol: Union[Literal["frames"], FrameProtocol] = ...,
        batch: bool = ...,
        per_connection: bool = ...,
        ssl_context: Optional[ssl.SSLContext] = ...,
        ssl_handshake_timeout: Optional[float] = ...,
        starttls_context: Optional[ssl.SSLContext] = ...,
        high_water: int = ...,
        shutdown_timeout: float = ...,
        write_timeout: Optional[float] = ...,
        frame_timeout: Optional[float] = ...,
        idle_timeout: Optional[float] = ...,
        max_connections: Optional[int] = ...,
        overflow: str = ...,
        memory_budget: Optional[int] = ...,
        backlog: int = ...,
        reuse_address: bool = ...,
        reuse_port: bool = ...,
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
    ) -> Server: ...

    @overload
    async def start_server(
        address: Union[AddressLike, socket.socket],
        handler: Handler[Message, MessageReply],
        *,
        protocol: Union[Literal["messages"], MessageProtocol],
        batch: bool = ...,
        per_connection: bool = ...,
        ssl_context: Optional[ssl.SSLContext] = ...,
        ssl_handshake_timeout: Optional[float] = ...,
        starttls_context: Optional[ssl.SSLContext] = ...,
        high_water: int = ...,
        shutdown_timeout: float = ...,
        write_timeout: Optional[float] = ...,
        frame_timeout: Optional[float] = ...,
        idle_timeout: Optional[float] = ...,
        max_connections: Optional[int] = ...,
        overflow: str = ...,
        memory_budget: Optional[int] = ...,
        backlog: int = ...,
        reuse_address: bool = ...,
        reuse_port: bool = ...,
        format: None = ...,
        max_header_size: int = ...,
        max_content_size: int = ...,
        read_size: int = ...,
        prealloc_limit: int = ...,
        on_oversized: Literal["fail", "discard", "raise"] = ...,
    ) -> Server: ...

    async def start_server(
        address: Union[AddressLike, socket.socket], handler: Handler[Any, Any], **settings: Any
    ) -> Server:
        return await _start_server(address, handler, **settings)

else:
    start_server = _start_server
