"""framecodec: fast, sans-IO message framing for stream sockets.

The codec core (FrameDecoder, FrameEncoder, MessageDecoder, pack_uint,
unpack_uint) is a Cython extension when built, else its pure-Python twin;
``IMPLEMENTATION`` says which ("cython" or "python").  Set
FRAMECODEC_PURE_PYTHON=1 before import to force the twin.

The layers, each importing only the ones below it: ``codec`` (sans-IO),
``net`` (blocking sockets: connect, serve, ...), ``aio`` (asyncio) and
``anyio`` (asyncio or trio through anyio, an optional extra), then
``cli`` and ``benchmarks``.  ``from framecodec import FrameDecoder`` loads
the codec alone: the network names here load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .codec import (
    IMPLEMENTATION,
    PRESETS,
    FrameDecoder,
    FrameEncoder,
    FrameFormat,
    Message,
    MessageDecoder,
    MessageEncoder,
    crc32c,
    pack_uint,
    unpack_uint,
)
from .errors import (
    BufferTooSmallError,
    ChecksumError,
    ConnectionClosed,
    DecoderDetachedError,
    FrameTooLargeError,
    HandlerError,
    IncompleteFrameError,
    MalformedHeaderError,
    ProtocolError,
    TLSHandshakeError,
)

if TYPE_CHECKING:  # what __getattr__ loads, for type checkers and IDEs
    from . import aio, anyio, benchmarks, cli, net  # noqa: F401 - loaded by __getattr__
    from .net.addresses import Address, parse_address
    from .net.backoff import Backoff, Reconnected
    from .net.client import Client, connect
    from .net.datagram import DatagramClient, DatagramServer, serve_datagrams
    from .net.multiclient import ClientConnection, MultiClient
    from .net.server import Connection, ConnectionHandler, Server, StartTLS, serve
    from .net.tls import client_context, server_context

# The network layer's names, and the module each loads from on first use.
_LAZY = {
    "Address": "net.addresses",
    "parse_address": "net.addresses",
    "Backoff": "net.backoff",
    "Reconnected": "net.backoff",
    "Client": "net.client",
    "connect": "net.client",
    "DatagramClient": "net.datagram",
    "DatagramServer": "net.datagram",
    "serve_datagrams": "net.datagram",
    "ClientConnection": "net.multiclient",
    "MultiClient": "net.multiclient",
    "Connection": "net.server",
    "ConnectionHandler": "net.server",
    "Server": "net.server",
    "serve": "net.server",
    "StartTLS": "net.server",
    "client_context": "net.tls",
    "server_context": "net.tls",
}
_SUBPACKAGES = ("aio", "anyio", "benchmarks", "cli", "codec", "net")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


__all__ = [
    "IMPLEMENTATION",
    "PRESETS",
    "Address",
    "Backoff",
    "BufferTooSmallError",
    "ChecksumError",
    "Client",
    "ClientConnection",
    "Connection",
    "ConnectionClosed",
    "ConnectionHandler",
    "DatagramClient",
    "DatagramServer",
    "DecoderDetachedError",
    "FrameDecoder",
    "FrameEncoder",
    "FrameFormat",
    "FrameTooLargeError",
    "HandlerError",
    "IncompleteFrameError",
    "MalformedHeaderError",
    "Message",
    "MessageDecoder",
    "MessageEncoder",
    "MultiClient",
    "ProtocolError",
    "Reconnected",
    "Server",
    "StartTLS",
    "TLSHandshakeError",
    "__version__",
    "client_context",
    "connect",
    "crc32c",
    "pack_uint",
    "parse_address",
    "serve",
    "serve_datagrams",
    "server_context",
    "unpack_uint",
]
