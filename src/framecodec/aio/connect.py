"""framecodec.aio's client side: open_connection() opens a Connection."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Callable, Literal, Optional, Union, overload

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from ..net.addresses import Address, AddressLike, parse_address
from ..net.backoff import Backoff
from ..net.protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol, with_read_size
from ..net.server.endings import DEFAULT_HIGH_WATER
from ..net.tls import handshake_failed
from .connection import Connection
from .reconnecting import AioReconnectHook, Opener, ReconnectingConnection

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
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[AioReconnectHook] = ...,
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
    reconnect: Optional[Backoff] = ...,
    on_reconnect: Optional[AioReconnectHook] = ...,
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
    reconnect: Optional[Backoff] = None,
    on_reconnect: Optional[AioReconnectHook] = None,
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

    ``reconnect=Backoff(...)`` makes a connection that reconnects (same
    address, TLS and options) on the call after the one that found it
    lost, as framecodec.connect's does (see aio/reconnecting.py);
    ``on_reconnect(connection, Reconnected)``, a plain function or a
    coroutine function (awaited), is called on each new connection before
    any other call uses it (a login or STARTTLS exchange goes there).  This
    first connection is not retried: its failure raises here.
    """
    if reconnect is not None and not isinstance(reconnect, Backoff):
        raise TypeError(f"reconnect must be a Backoff, not {type(reconnect).__name__}")
    if on_reconnect is not None and reconnect is None:
        raise ValueError("on_reconnect needs reconnect=Backoff(...)")
    proto = make_protocol(protocol, format, **with_read_size(protocol, options))
    target = parse_address(address)
    hostname = server_hostname if server_hostname is not None else target.host
    open_once = _connect_steps(target, ssl_context, hostname)
    factory: Callable[[], Connection[Any]]
    if reconnect is None:
        factory = lambda: Connection(proto, high_water=high_water, address=target)  # noqa: E731
    else:
        policy = reconnect

        def factory() -> Connection[Any]:
            return ReconnectingConnection(
                proto, high_water=high_water, address=target, policy=policy,
                opener=open_once, timeout=timeout, on_reconnect=on_reconnect,
            )  # fmt: skip

    return await open_once(factory, timeout)


def _connect_steps(
    target: Address, ssl_context: Optional[ssl.SSLContext], hostname: Optional[str]
) -> Opener:
    """open_connection's steps (connect, the TLS handshake) as one call a
    reconnecting connection makes again: the factory's protocol gets the
    transport, within ``timeout`` seconds (None: no limit)."""
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        tls = {"ssl": ssl_context, "server_hostname": hostname}

    async def connect(factory: Callable[[], Connection[Any]]) -> Connection[Any]:
        loop = asyncio.get_running_loop()
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

    async def open_once(
        factory: Callable[[], Connection[Any]], timeout: Optional[float]
    ) -> Connection[Any]:
        try:
            if timeout is None:
                return await connect(factory)
            return await asyncio.wait_for(connect(factory), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"connecting to {target} timed out after {timeout} s") from None
        except OSError as exc:
            if ssl_context is not None and _in_handshake(exc, target.is_unix):
                raise handshake_failed(target, exc) from exc
            raise

    return open_once


def _in_handshake(exc: OSError, unix: bool) -> bool:
    """Whether ``exc``, from connecting with TLS, came from the handshake:
    ssl's errors, and the peer closing or resetting (which a TCP connect
    reports as refused instead); for Unix sockets everything after
    sock_connect is."""
    return unix or isinstance(
        exc, (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
    )
