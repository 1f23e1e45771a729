"""The exceptions every codec raises, shared by the compiled core and its twin.

Both implementations import this module, so an ``except FrameTooLargeError``
catches the same class whichever one is loaded.
"""

from __future__ import annotations

from typing import Any, Sequence


class ProtocolError(ValueError):
    """The byte stream breaks the wire format.

    ``frames`` holds the frames (or messages) that the failing call completed
    before it met the bad bytes: they are never lost to the exception.  A
    decoder that raised stays broken; every later call raises again (with an
    empty ``frames``), instead of parsing garbage.
    """

    def __init__(self, message: str, frames: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.frames: list[Any] = list(frames)


class FrameTooLargeError(ProtocolError):
    """A header announced more bytes than the configured limit allows."""


class MalformedHeaderError(ProtocolError):
    """A header cannot be interpreted: negative length, bad JSON, missing key..."""


class IncompleteFrameError(ProtocolError):
    """The stream ended part-way through a frame.

    ``missing`` is how many more bytes the frame needed (a lower bound while
    its header was still incomplete), ``buffered`` how many had arrived.
    """

    def __init__(
        self, message: str, frames: Sequence[Any] = (), missing: int = 0, buffered: int = 0
    ) -> None:
        super().__init__(message, frames)
        self.missing = missing
        self.buffered = buffered
