"""framecodec.anyio's client side: connect() opens a FramedStream."""

from __future__ import annotations

import ssl
from typing import Any, Literal, Optional, Union, overload

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ..codec.formats import FrameFormat
from ..codec.messages import Message
from ..net.addresses import AddressLike, parse_address
from ..net.protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol, with_read_size
from ..net.tls import handshake_failed
from .stream import FramedStream, check_timeouts
from .streams import connect_tcp, connect_unix

__all__ = ["connect", "open_byte_stream"]


async def open_byte_stream(
    address: AddressLike,
    *,
    ssl_context: Optional[ssl.SSLContext] = None,
    server_hostname: Optional[str] = None,
    timeout: Optional[float] = None,
) -> anyio.abc.ByteStream:
    """The anyio byte stream connect() frames: TCP or Unix by the address
    syntax, with TLS when ``ssl_context`` is given.  Its socket is read only
    when asked, on either backend (on asyncio, TCP without a transport: see
    streams.py), so a FramedStream over it may read straight from the socket."""
    target = parse_address(address)
    try:
        with anyio.fail_after(timeout):
            stream: anyio.abc.ByteStream
            if target.is_unix:
                stream = await connect_unix(target.sockaddr)
            else:
                host, port = target.sockaddr[:2]
                stream = await connect_tcp(host, port)
            if ssl_context is not None:
                hostname = server_hostname if server_hostname is not None else target.host
                try:
                    # Not standard_compatible: a peer's bare close is the end
                    # of the stream (the framing still catches a cut inside a
                    # frame), as for every other framecodec TLS endpoint.
                    stream = await TLSStream.wrap(
                        stream,
                        hostname=hostname,
                        ssl_context=ssl_context,
                        standard_compatible=False,
                    )
                except BaseException as exc:
                    await anyio.aclose_forcefully(stream)
                    cause = _handshake_cause(exc)
                    if cause is None:
                        raise
                    raise handshake_failed(target, cause) from cause
    except TimeoutError:
        raise TimeoutError(f"connecting to {target} timed out after {timeout} s") from None
    except anyio.BrokenResourceError as exc:
        # A failed handshake: the ssl.SSLError itself, as the other layers raise.
        if isinstance(exc.__cause__, OSError):
            raise exc.__cause__ from None
        raise
    return stream


def _handshake_cause(exc: BaseException) -> Optional[OSError]:
    """The ssl or socket error behind a failed TLSStream.wrap() (anyio wraps
    it in BrokenResourceError; a close during the handshake is EndOfStream
    or BrokenResourceError alone); None for a timeout or a cancellation."""
    if isinstance(exc, anyio.BrokenResourceError) and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    if isinstance(exc, (anyio.EndOfStream, anyio.BrokenResourceError)):
        return ConnectionResetError("the connection ended during the TLS handshake")
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return exc
    return None


# The options and what receive() returns follow the protocol, as for
# framecodec.connect (a protocol object takes no options beside it).
@overload
async def connect(
    address: AddressLike,
    *,
    protocol: Union[Literal["frames"], FrameProtocol] = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    timeout: Optional[float] = ...,
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
) -> FramedStream[bytes]: ...


@overload
async def connect(
    address: AddressLike,
    *,
    protocol: Union[Literal["messages"], MessageProtocol],
    ssl_context: Optional[ssl.SSLContext] = ...,
    server_hostname: Optional[str] = ...,
    timeout: Optional[float] = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    format: None = ...,
    max_header_size: int = ...,
    max_content_size: int = ...,
    read_size: int = ...,
    prealloc_limit: int = ...,
    on_oversized: Literal["fail", "discard", "raise"] = ...,
) -> FramedStream[Message]: ...


async def connect(
    address: AddressLike,
    *,
    protocol: Union[str, Protocol] = "frames",
    ssl_context: Optional[ssl.SSLContext] = None,
    server_hostname: Optional[str] = None,
    timeout: Optional[float] = None,
    format: Union[str, FrameFormat, None] = None,
    idle_timeout: Optional[float] = None,
    frame_timeout: Optional[float] = None,
    **options: Any,
) -> FramedStream[Any]:
    """Connect to ``address`` and return a FramedStream.

    ``protocol``, ``format`` and the options are those of framecodec.connect
    (``idle_timeout`` and ``frame_timeout``: see FramedStream); with ``ssl_context``
    the stream is TLS, checked against ``server_hostname`` (default: the
    address's host; give it for Unix sockets).  ``timeout`` bounds
    connecting and the TLS handshake (TimeoutError).
    """
    # The options are checked before connecting: a typo costs no connection.
    proto = make_protocol(protocol, format, **with_read_size(protocol, options))
    check_timeouts(idle_timeout, frame_timeout)
    stream = await open_byte_stream(
        address, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout
    )
    return FramedStream(
        stream, protocol=proto, idle_timeout=idle_timeout, frame_timeout=frame_timeout
    )
