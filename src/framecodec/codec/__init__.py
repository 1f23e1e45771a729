"""The sans-IO codec core: bytes in, frames out; it never touches a socket.

_codec.py is the core, compiled by Cython into the extension of the same
name and also run as it stands as the pure-Python twin; _impl chooses
between them.  formats holds the frame formats and presets, messages the
JSON-header protocol's plain-Python parts.  Nothing here imports socket,
selectors, ssl or asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._impl import select as _select
from .formats import PRESETS, FrameFormat
from .messages import Message, MessageEncoder

_core = _select()

IMPLEMENTATION: str = "cython" if _core.COMPILED else "python"

if TYPE_CHECKING:  # both cores share the types in _codec.pyi
    from ._codec import (
        FrameDecoder,
        FrameEncoder,
        MessageDecoder,
        crc32c,
        pack_uint,
        unpack_uint,
    )
else:
    FrameDecoder = _core.FrameDecoder
    FrameEncoder = _core.FrameEncoder
    MessageDecoder = _core.MessageDecoder
    crc32c = _core.crc32c
    pack_uint = _core.pack_uint
    unpack_uint = _core.unpack_uint


def get_include() -> str:
    """The directory to put on a Cython consumer's C include path: it holds
    the header that the C API's declarations (capi.pxd) include."""
    import os

    return os.path.dirname(os.path.abspath(__file__))


__all__ = [
    "IMPLEMENTATION",
    "PRESETS",
    "FrameDecoder",
    "FrameEncoder",
    "FrameFormat",
    "Message",
    "MessageDecoder",
    "MessageEncoder",
    "crc32c",
    "pack_uint",
    "unpack_uint",
]
