"""Stream servers: ``serve(address, handler, ...)``.

handlers.py tells the handler shapes apart and endings.py counts and logs
how connections end (both shared with framecodec.aio); base.py holds what
the backends share; the backends are selector.py (one thread for all
connections) and threads.py (a thread per connection, from pool.py);
workers.py runs several server processes on one address.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Any, Dict, Literal, Optional, Type, Union, overload

from ...codec.formats import FrameFormat
from ...errors import HandlerError
from ..addresses import AddressLike, bind_socket
from ..protocols import FrameProtocol, MessageProtocol, Protocol, make_protocol
from .base import DEFAULT_OVERFLOW, Connection, Server
from .budget import DEFAULT_MEMORY_BUDGET, check_memory_budget
from .endings import DEFAULT_HIGH_WATER
from .handlers import ConnectionHandler, StartTLS
from .selector import SelectorServer
from .threads import ThreadingServer
from .workers import WorkerPool

if TYPE_CHECKING:
    from ...codec.messages import Message
    from .handlers import FrameReply, Handler, MessageReply

__all__ = [
    "BACKENDS",
    "Connection",
    "ConnectionHandler",
    "HandlerError",
    "Server",
    "StartTLS",
    "serve",
]

BACKENDS: Dict[str, Type[Server]] = {"selector": SelectorServer, "threads": ThreadingServer}


# The handler's frames, and the options, follow the protocol: see connect().
@overload
def serve(
    address: AddressLike,
    handler: Handler[bytes, FrameReply],
    *,
    protocol: Literal["frames"] = ...,
    backend: str = ...,
    batch: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    starttls_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    write_timeout: Optional[float] = ...,
    ssl_handshake_timeout: Optional[float] = ...,
    high_water: int = ...,
    memory_budget: Optional[int] = ...,
    backlog: int = ...,
    reuse_address: bool = ...,
    workers: int = ...,
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
def serve(
    address: AddressLike,
    handler: Handler[Message, MessageReply],
    *,
    protocol: Literal["messages"],
    backend: str = ...,
    batch: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    starttls_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    write_timeout: Optional[float] = ...,
    ssl_handshake_timeout: Optional[float] = ...,
    high_water: int = ...,
    memory_budget: Optional[int] = ...,
    backlog: int = ...,
    reuse_address: bool = ...,
    workers: int = ...,
    format: None = ...,
    max_header_size: int = ...,
    max_content_size: int = ...,
    read_size: int = ...,
    prealloc_limit: int = ...,
    on_oversized: Literal["fail", "discard", "raise"] = ...,
) -> Server: ...


@overload
def serve(
    address: AddressLike,
    handler: Handler[bytes, FrameReply],
    *,
    protocol: FrameProtocol,
    backend: str = ...,
    batch: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    starttls_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    write_timeout: Optional[float] = ...,
    ssl_handshake_timeout: Optional[float] = ...,
    high_water: int = ...,
    memory_budget: Optional[int] = ...,
    backlog: int = ...,
    reuse_address: bool = ...,
    workers: int = ...,
) -> Server: ...


@overload
def serve(
    address: AddressLike,
    handler: Handler[Message, MessageReply],
    *,
    protocol: MessageProtocol,
    backend: str = ...,
    batch: bool = ...,
    ssl_context: Optional[ssl.SSLContext] = ...,
    starttls_context: Optional[ssl.SSLContext] = ...,
    max_connections: Optional[int] = ...,
    overflow: str = ...,
    idle_timeout: Optional[float] = ...,
    frame_timeout: Optional[float] = ...,
    write_timeout: Optional[float] = ...,
    ssl_handshake_timeout: Optional[float] = ...,
    high_water: int = ...,
    memory_budget: Optional[int] = ...,
    backlog: int = ...,
    reuse_address: bool = ...,
    workers: int = ...,
) -> Server: ...


def serve(
    address: AddressLike,
    handler: Handler[Any, Any],
    *,
    backend: str = "selector",
    protocol: Union[str, Protocol] = "frames",
    batch: bool = False,
    ssl_context: Optional[ssl.SSLContext] = None,
    starttls_context: Optional[ssl.SSLContext] = None,
    max_connections: Optional[int] = None,
    overflow: str = DEFAULT_OVERFLOW,
    idle_timeout: Optional[float] = None,
    frame_timeout: Optional[float] = 60.0,
    write_timeout: Optional[float] = 60.0,
    ssl_handshake_timeout: Optional[float] = 60.0,
    high_water: int = DEFAULT_HIGH_WATER,
    memory_budget: Optional[int] = DEFAULT_MEMORY_BUDGET,
    backlog: int = 512,
    reuse_address: bool = True,
    format: Union[str, FrameFormat, None] = None,
    workers: int = 1,
    **options: Any,
) -> Server:
    """Bind ``address`` and return a Server ready to run (serve_forever or start).

    ``handler``: see the module docstring.  ``protocol``: "frames" (with a
    ``format`` preset and frame options such as max_frame_size) or
    "messages" (options max_header_size, max_content_size, ...).

    ``max_connections`` (default 1024 on both backends; for "threads" the
    size of its pool): when reached, ``overflow="close_idle"`` (the default)
    closes the longest-idle connection (silent for base.IDLE_AGE, 1 s, at
    least, nothing in hand) to make room, counted in ``evicted``, and
    refuses the new client when none is idle; ``overflow="reject"`` accepts
    and closes new clients at once (``rejected``); ``overflow="wait"`` stops
    accepting, so they wait in the listen backlog until a connection ends.
    Reaching the limit is logged once per burst.  Running out of
    file descriptors turns new clients away (a spare descriptor accepts and
    resets each at once), logged once per burst, never crashing or spinning.

    ``idle_timeout`` closes a connection without traffic for that long;
    ``frame_timeout`` closes one whose frame has begun to arrive but is not
    complete that long after (a slow-loris peer); ``ssl_handshake_timeout``
    one whose TLS handshake is not done that long after it began (the
    smaller of it and frame_timeout applies: a handshake is a first frame);
    ``write_timeout`` closes one whose replies wait that long with none of
    their bytes taken by the peer (a peer that stopped reading), counted in
    ``network_errors`` and logged as stalled (PeerStalled).  None disables each.

    ``high_water`` is each connection's memory budget in bytes (input
    buffered plus replies unsent): above it, with replies waiting, the
    selector backend stops reading from the connection until the peer has
    taken them down to half; the threads backend never reads while replies
    wait, and writes a handler's replies out as soon as they exceed it.  So
    a peer that never reads holds at most high_water plus the replies to one
    read (``read_size`` bytes of requests) plus one partial frame
    (``max_frame_size``).

    ``memory_budget`` (16 MiB; None: none) bounds what all connections
    hold together, the bytes ``high_water`` counts: from half of it on, the
    connections holding more than their share stop reading (the ones
    holding little, a steady client between requests, are still served),
    and those held a second while the server is still near it are closed,
    held longest first, counted in ``over_budget`` (and ``network_errors``)
    and logged as closed over the memory budget (OverMemoryBudget).  It
    bounds how large a frame the server takes while others are busy: keep
    it above a few times ``max_frame_size`` for large frames from several
    clients at once (a connection alone is never held).  See
    framecodec.net.server.budget.

    ``starttls_context`` (framecodec.server_context) lets handlers upgrade
    a plain connection to TLS after a reply (StartTLS, or
    ``connection.start_tls()``; see docs/starttls.md); without it such a
    request closes that connection (StartTLSRefused, in ``tls_failures``).

    ``workers`` above 1 runs that many server processes on the address, one
    per core, each with all the settings above; the Server returned is
    their supervisor (see framecodec.net.server.workers).
    """
    proto = make_protocol(protocol, format, **options)
    check_memory_budget(memory_budget)  # before anything is opened
    cls = BACKENDS.get(backend)
    if cls is None:
        raise ValueError(f"backend must be 'selector' or 'threads', not {backend!r}")
    if max_connections is None:
        max_connections = cls.default_max_connections
    settings: dict[str, Any] = dict(
        protocol=proto,
        batch=batch,
        ssl_context=ssl_context,
        starttls_context=starttls_context,
        max_connections=max_connections,
        overflow=overflow,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        write_timeout=write_timeout,
        ssl_handshake_timeout=ssl_handshake_timeout,
        high_water=high_water,
        memory_budget=memory_budget,
    )
    if workers != 1:
        return WorkerPool(
            address, handler, cls, workers, backlog=backlog, reuse_address=reuse_address, **settings
        )
    bound = bind_socket(address, socket.SOCK_STREAM, backlog=backlog, reuse_address=reuse_address)
    try:
        return cls(bound, handler, **settings)
    except BaseException:
        bound.close()
        raise
