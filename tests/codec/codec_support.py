"""Helpers shared by the codec tests."""

from __future__ import annotations

from typing import Any, List


def read_like_a_socket(decoder: Any, wire: bytes, sizes: List[int]) -> List[Any]:
    """Fill each view get_buffer() offers as far as ``wire`` goes, as recv_into
    does when the bytes are all there; note each view's size in ``sizes``."""
    frames: List[Any] = []
    pos = 0
    while pos < len(wire):
        view = decoder.get_buffer()
        n = min(len(view), len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        sizes.append(len(view))
        pos += n
        frames += decoder.buffer_updated(n)
    return frames


def bodies_for(preset: str, payloads: List[bytes]) -> List[bytes]:
    """What FrameEncoder(preset).encode() takes for each payload: the body
    after the length field, which for a preset with header fields behind
    the length (http2's type, flags and stream id; mysql's sequence id)
    begins with them."""
    from framecodec import PRESETS

    fields = max(0, PRESETS[preset].length_adjustment)
    return [bytes(range(1, fields + 1)) + payload for payload in payloads]
