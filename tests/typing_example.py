"""A typed use of the public API: ``mypy --strict`` checks it (see pyproject.toml),
and test_typing_example.py runs it, so the stubs and the code agree."""

from __future__ import annotations

from typing import List

import framecodec
from framecodec import FrameDecoder, FrameEncoder, Message, MessageDecoder, MessageEncoder


def round_trip(payloads: List[bytes]) -> List[bytes]:
    encoder = FrameEncoder("uint16", max_frame_size=1000)
    decoder = FrameDecoder("uint16", max_frame_size=1000)
    wire: bytes = encoder.encode_many(payloads)
    frames: List[bytes] = []
    view: memoryview = decoder.get_buffer(len(wire))
    view[: len(wire)] = wire
    frames += decoder.buffer_updated(len(wire))
    decoder.eof()
    return frames


def messages(values: List[object]) -> List[object]:
    encoder = MessageEncoder()
    decoder = MessageDecoder(max_content_size=1 << 20)
    received: List[Message] = decoder.feed(b"".join(encoder.encode(v) for v in values))
    return [message.value for message in received]


def header_of(length: int) -> int:
    packed: bytes = framecodec.pack_uint(length, 4)
    return framecodec.unpack_uint(packed, 4)


def implementation() -> str:
    return framecodec.IMPLEMENTATION
