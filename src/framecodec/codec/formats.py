"""Frame formats: the options that describe a length-prefixed wire format.

A frame on the wire is ``length_offset`` leading bytes (a type or flag byte,
say), then a ``width``-byte unsigned length field, then the body.  The body is
``field + length_adjustment`` bytes long, so a field that counts itself uses
``length_adjustment=-width``, and one that leaves out header fields after it
(HTTP/2's type, flags and stream id) a positive adjustment.  These are the
knobs of Netty's LengthFieldBasedFrameDecoder, which frames most binary
protocols met in practice.

Two sizes name the parts of a frame (FrameFormat's properties):

- ``header_size``: the bytes up to the end of the length field
  (``length_offset + width``: Netty's lengthFieldEndOffset);
- ``payload_offset``, *the whole header*: ``header_size`` plus, when
  ``length_adjustment`` is positive, the bytes it adds (header fields that
  the length does not count).  What follows is the *payload*: for
  HTTP/2, MySQL, PostgreSQL and gRPC exactly what the protocol calls the
  payload and limits.

The decoder delivers each frame minus its first ``strip`` bytes: by default
``header_size`` (the bytes after the length field); anything from 0 to
``payload_offset``.  A frame is never shorter than ``payload_offset`` (a
length that would make it so is malformed), so a frame is never shorter than
``strip``.  Two limits, both checked as soon as a header is complete, and
neither depending on how the bytes were cut: ``max_frame_size`` counts the
payload, ``max_frame_length`` (off by default) the whole frame, header
included, as Netty's maxFrameLength does.  ``on_oversized`` says what a
frame over a limit does: "fail" (the decoder fails for good), "discard"
(dropped, counted) or "raise" (FrameTooLargeError for that frame, which is
dropped as it arrives; the decoder goes on with the next frames).

``checksum="crc32c"`` follows each frame with 4 more bytes: the CRC32C
(Castagnoli) of the whole frame before them, header included, in network
byte order.  The length field is unchanged (it never counts the checksum),
and so are the limits; the decoder delivers frames without the checksum
and meets a mismatch as ``on_oversized`` says (ChecksumError instead of
FrameTooLargeError).  See docs/checksums.md.

This module is shared, unchanged, by the compiled core and its pure-Python
twin, so both validate options the same way and accept the same presets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Tuple, Union

__all__ = [
    "CHECKSUMS",
    "CHECKSUM_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "OVERSIZED_POLICIES",
    "PRESETS",
    "PRESET_CEILING",
    "FrameFormat",
    "resolve_format",
]

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
# The most any preset accepts by default in one frame, whatever its protocol
# allows: a protocol preset's limit is its protocol's legal maximum up to
# this (PostgreSQL's 1 GiB message limit reaches it).  A peer must send the
# bytes to make a decoder hold them (see DEFAULT_PREALLOC_LIMIT).
PRESET_CEILING = 1 << 30
OVERSIZED_POLICIES = ("fail", "discard", "raise")
# The checksums a frame can carry after its body, and the bytes each takes.
CHECKSUMS = ("crc32c",)
CHECKSUM_SIZE = 4
# Up-front reservation for a frame whose header promises many bytes: beyond
# this the storage grows only as payload actually arrives, so a peer that
# announces 16 MiB and sends nothing costs this much, not 16 MiB.
DEFAULT_PREALLOC_LIMIT = 256 * 1024
# Room get_buffer() offers for a read when no frame is being received in place.
DEFAULT_READ_SIZE = 64 * 1024

# These bounds keep every length computation of the compiled core inside a
# signed 64-bit integer and a Py_ssize_t: a length field is checked against
# RAW_LENGTH_LIMIT before the adjustment is added, so nothing can wrap.
MAX_ADJUSTMENT = 1 << 32
MAX_FRAME_SIZE_LIMIT = min(1 << 60, sys.maxsize // 4)
RAW_LENGTH_LIMIT = 1 << 61


def _check_choice(name: str, value: object, choices: Tuple[object, ...]) -> None:
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")


@dataclass(frozen=True)
class FrameFormat:
    """A validated frame format plus the decoder's limits."""

    width: int = 4
    byteorder: str = "big"
    length_offset: int = 0
    length_adjustment: int = 0
    strip: Optional[int] = None  # None: header_size, the bytes through the length field
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE  # the payload (after payload_offset)
    discard_oversized: bool = False  # the same as on_oversized="discard"
    prealloc_limit: int = DEFAULT_PREALLOC_LIMIT
    read_size: int = DEFAULT_READ_SIZE
    # multiprocessing.connection: a 4-byte field of 0xFFFFFFFF (-1 as a
    # signed int) is followed by an 8-byte length, for frames of 2 GiB and more.
    large_length_escape: bool = False
    # The whole frame, header included (Netty's maxFrameLength); None: no such limit.
    max_frame_length: Optional[int] = None
    on_oversized: str = "fail"
    # "crc32c": each frame is followed by the CRC32C of its bytes (4 bytes,
    # big-endian); None: no checksum.
    checksum: Optional[str] = None

    def __post_init__(self) -> None:
        _check_choice("width", self.width, (1, 2, 3, 4, 8))
        _check_choice("byteorder", self.byteorder, ("big", "little"))
        _check_int("length_offset", self.length_offset, 0, 1 << 16)
        _check_int("length_adjustment", self.length_adjustment, -MAX_ADJUSTMENT, MAX_ADJUSTMENT)
        if self.strip is not None:
            _check_int("strip", self.strip, 0, self.payload_offset)
        _check_int("max_frame_size", self.max_frame_size, 0, MAX_FRAME_SIZE_LIMIT)
        if self.max_frame_length is not None:
            _check_int("max_frame_length", self.max_frame_length, 0, MAX_FRAME_SIZE_LIMIT)
        _check_int("prealloc_limit", self.prealloc_limit, 1, MAX_FRAME_SIZE_LIMIT)
        _check_int("read_size", self.read_size, 1, 1 << 30)
        if not isinstance(self.discard_oversized, bool):
            raise TypeError("discard_oversized must be a bool")
        _check_choice("on_oversized", self.on_oversized, OVERSIZED_POLICIES)
        # discard_oversized=True is the older spelling of on_oversized="discard":
        # keep the two fields saying the same thing.
        if self.discard_oversized and self.on_oversized == "fail":
            object.__setattr__(self, "on_oversized", "discard")
        elif self.discard_oversized and self.on_oversized != "discard":
            raise ValueError(
                f"discard_oversized=True contradicts on_oversized={self.on_oversized!r}"
            )
        object.__setattr__(self, "discard_oversized", self.on_oversized == "discard")
        if not isinstance(self.large_length_escape, bool):
            raise TypeError("large_length_escape must be a bool")
        if self.large_length_escape and (
            self.width != 4 or self.byteorder != "big" or self.length_adjustment != 0
        ):
            raise ValueError(
                "large_length_escape needs width=4, byteorder='big' and length_adjustment=0"
            )
        if self.checksum is not None:
            _check_choice("checksum", self.checksum, CHECKSUMS)
            if self.large_length_escape:
                # The escape exists to speak to multiprocessing.connection,
                # whose peers read no checksum: the two never meet on one wire.
                raise ValueError(
                    "checksum cannot be combined with large_length_escape: the escape is "
                    "multiprocessing.connection's framing, whose peers send no checksum"
                )

    @property
    def header_size(self) -> int:
        """Bytes up to the end of the length field (before any escape)."""
        return self.length_offset + self.width

    @property
    def payload_offset(self) -> int:
        """The whole header: bytes before the payload that max_frame_size counts
        (header_size plus a positive length_adjustment; before any escape)."""
        return self.header_size + max(0, self.length_adjustment)

    @property
    def trailer_size(self) -> int:
        """Bytes after each frame's body: the checksum's 4, or 0 without one."""
        return CHECKSUM_SIZE if self.checksum is not None else 0

    def replace(self, **options: Any) -> FrameFormat:
        # One of the two spellings of the policy replaces the other.
        if "on_oversized" in options and "discard_oversized" not in options:
            options["discard_oversized"] = False
        elif "discard_oversized" in options and "on_oversized" not in options:
            if options["discard_oversized"] is True:
                options["on_oversized"] = "discard"
            elif self.on_oversized == "discard":
                options["on_oversized"] = "fail"
        return replace(self, **options)


PRESETS: Mapping[str, FrameFormat] = {
    # Twisted's Int32StringReceiver, Netty's LengthFieldPrepender(4), and the
    # default of FrameEncoder/FrameDecoder.
    "uint32": FrameFormat(),
    "uint16": FrameFormat(width=2),
    "uint64": FrameFormat(width=8),
    # multiprocessing.connection.Connection.send_bytes / recv_bytes.
    "multiprocessing": FrameFormat(large_length_escape=True),
    # gRPC over HTTP/2 message framing: 1-byte compressed flag + 4-byte length.
    # The flag matters to the reader, so frames are delivered whole.  The
    # field allows 4 GiB - 1: the ceiling applies.
    "grpc": FrameFormat(length_offset=1, strip=0, max_frame_size=PRESET_CEILING),
    # PostgreSQL's message shape: 1-byte type + 4-byte length that counts
    # itself.  Delivered whole: frame[0:1] is the type, frame[5:] the body.
    # PostgreSQL refuses messages of 1 GiB or more (MaxAllocSize).
    "postgres": FrameFormat(
        length_offset=1, length_adjustment=-4, strip=0, max_frame_size=PRESET_CEILING
    ),
    # An HTTP/2 frame (RFC 9113 4.1): 3-byte length of the payload, then type,
    # flags and stream id, 9 header bytes in all.  Delivered whole: frame[3]
    # is the type, frame[4] the flags, frame[5:9] the stream id, frame[9:]
    # the payload.  The limit is the largest SETTINGS_MAX_FRAME_SIZE, 2^24 - 1
    # (a peer that did not raise it sends at most 16 KiB).
    "http2": FrameFormat(width=3, length_adjustment=6, strip=0, max_frame_size=(1 << 24) - 1),
    # A MySQL client/server packet: 3-byte little-endian payload length, then
    # a sequence id; 4 header bytes.  Delivered whole: frame[3] is the sequence
    # id, frame[4:] the payload (a payload of 2^24 - 1 bytes continues in the
    # next packet, which the reader joins).
    "mysql": FrameFormat(
        width=3, byteorder="little", length_adjustment=1, strip=0, max_frame_size=(1 << 24) - 1
    ),
}


def resolve_format(fmt: Union[str, FrameFormat, None] = None, **options: Any) -> FrameFormat:
    """The FrameFormat for a preset name (or FrameFormat) plus keyword options."""
    if fmt is None:
        base = FrameFormat()
    elif isinstance(fmt, FrameFormat):
        base = fmt
    elif isinstance(fmt, str):
        try:
            base = PRESETS[fmt]
        except KeyError:
            raise ValueError(
                f"unknown frame format {fmt!r}; presets: {', '.join(sorted(PRESETS))}"
            ) from None
    else:
        raise TypeError(f"format must be a preset name or a FrameFormat, not {type(fmt).__name__}")
    unknown = set(options) - set(FrameFormat.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown frame format option(s): {', '.join(sorted(unknown))}")
    return base.replace(**options) if options else base
