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
