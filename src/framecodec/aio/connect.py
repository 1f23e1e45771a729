"""framecodec.aio's client side: open_connection() opens a Connection."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Literal, Optional, Union, overload

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from ..net.addresses import AddressLike, parse_address
from ..net.protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol
from ..net.server.endings import DEFAULT_HIGH_WATER
from ..net.tls import handshake_failed
from .connection import Connection, _with_read_size

__all__ = ["open_connection"]


# The options and what recv() returns follow the protocol, as for
# framecodec.connect (a protocol object takes no options beside it).
@overload
async def open_connection(
    address: AddressLike,
    *,
    protocol: Union[Literal["frames"], FrameProtocol] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    timeout: Optional[float] = ...,
    high_water: int = ...,
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
) -> Connection[bytes]: ...


@overload
async def open_connection(
    address: AddressLike,
    *,
    protocol: Union[Literal["messages"], MessageProtocol],
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    timeout: Optional[float] = ...,
    high_water: int = ...,
    format: None = ...,
    max_header_size: int = ...,
    max_content_size: int = ...,
    read_size: int = ...,
    prealloc_limit: int = ...,
    on_oversized: Literal["fail", "discard", "raise"] = ...,
) -> Connection[Message]: ...


async def open_connection(
    address: AddressLike,
    *,
    protocol: Union[str, Protocol] = "frames",
    ssl_context: Optional[ssl.SSLContext] = None,
    server_hostname: Optional[str] = None,
    timeout: Optional[float] = None,
    high_water: int = DEFAULT_HIGH_WATER,
    format: Union[str, FrameFormat, None] = None,
    **options: Any,
) -> Connection[Any]:
    """Connect to ``address`` and return a Connection (Connection[bytes] for
    frames, Connection[Message] for messages).

    ``protocol``, ``format`` and the options are those of framecodec.connect;
    with ``ssl_context`` the connection is TLS, checked against
    ``server_hostname`` (default: the address's host; give it for Unix
    sockets).  ``timeout`` bounds connecting and the TLS handshake
    (TimeoutError).
    """
    proto = make_protocol(protocol, format, **_with_read_size(protocol, options))
    target = parse_address(address)
    loop = asyncio.get_running_loop()
    hostname = server_hostname if server_hostname is not None else target.host
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        tls = {"ssl": ssl_context, "server_hostname": hostname}

    def factory() -> Connection[Any]:
        return Connection(proto, high_water=high_water, address=target)

    async def connect() -> Connection[Any]:
        conn: Connection[Any]
        if target.is_unix:
            # Connected here, not by the loop, so that abstract names
            # (unix:@name) work on every loop.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, target.sockaddr)
                _, conn = await loop.create_unix_connection(factory, sock=sock, **tls)
            except BaseException:
                sock.close()
                raise
        else:
            host, port = target.sockaddr
            _, conn = await loop.create_connection(factory, host, port, **tls)
        return conn

    try:
        if timeout is None:
            return await connect()
        return await asyncio.wait_for(connect(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"connecting to {target} timed out after {timeout} s") from None
    except OSError as exc:
        if ssl_context is not None and _in_handshake(exc, target.is_unix):
            raise handshake_failed(target, exc) from exc
        raise


def _in_handshake(exc: OSError, unix: bool) -> bool:
    """Whether ``exc``, from connecting with TLS, came from the handshake:
    ssl's errors, and the peer closing or resetting (which a TCP connect
    reports as refused instead); for Unix sockets everything after
    sock_connect is."""
    return unix or isinstance(
        exc, (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
    )
