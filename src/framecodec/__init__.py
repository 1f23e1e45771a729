"""framecodec: fast, sans-IO message framing for stream sockets.

The codec core (FrameDecoder, FrameEncoder, MessageDecoder, pack_uint,
unpack_uint) is a Cython extension when built, else its pure-Python twin;
``IMPLEMENTATION`` says which ("cython" or "python").  Set
FRAMECODEC_PURE_PYTHON=1 before import to force the twin.
"""

from typing import TYPE_CHECKING

from ._impl import select as _select
from ._version import __version__
from .errors import FrameTooLargeError, IncompleteFrameError, MalformedHeaderError, ProtocolError
from .formats import PRESETS, FrameFormat
from .messages import Message, MessageEncoder

_core = _select()

IMPLEMENTATION: str = "cython" if _core.COMPILED else "python"

if TYPE_CHECKING:  # both cores share the types in _codec.pyi
    from ._codec import FrameDecoder, FrameEncoder, MessageDecoder, pack_uint, unpack_uint
else:
    FrameDecoder = _core.FrameDecoder
    FrameEncoder = _core.FrameEncoder
    MessageDecoder = _core.MessageDecoder
    pack_uint = _core.pack_uint
    unpack_uint = _core.unpack_uint

__all__ = [
    "IMPLEMENTATION",
    "PRESETS",
    "FrameDecoder",
    "FrameEncoder",
    "FrameFormat",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "MalformedHeaderError",
    "Message",
    "MessageDecoder",
    "MessageEncoder",
    "ProtocolError",
    "__version__",
    "pack_uint",
    "unpack_uint",
]

# Network layer: sockets around the codec (see addresses, client, server, ...).
from .addresses import Address, parse_address  # noqa: E402
from .client import BufferTooSmallError, Client, connect  # noqa: E402
from .datagram import DatagramClient, DatagramServer, serve_datagrams  # noqa: E402
from .multiclient import ClientConnection, MultiClient  # noqa: E402
from .server import Connection, ConnectionHandler, Server, serve  # noqa: E402
from .tls import client_context, server_context  # noqa: E402
from .transport import ConnectionClosed  # noqa: E402

__all__ += [
    "Address",
    "BufferTooSmallError",
    "Client",
    "ClientConnection",
    "Connection",
    "ConnectionClosed",
    "ConnectionHandler",
    "DatagramClient",
    "DatagramServer",
    "MultiClient",
    "Server",
    "client_context",
    "connect",
    "parse_address",
    "serve",
    "serve_datagrams",
    "server_context",
]
