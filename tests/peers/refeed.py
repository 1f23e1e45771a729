"""Re-feeding a captured stream: the same frames whatever the cuts."""

from __future__ import annotations

import random
from typing import Callable, List

# Byte-by-byte feeding costs a call per byte: done on streams up to this size
# (and on the first BYTEWISE_LIMIT bytes' worth of whole frames of longer ones).
BYTEWISE_LIMIT = 256 * 1024


def random_cuts(data: bytes, rng: random.Random, largest: int = 70_000) -> List[bytes]:
    cuts, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 2, 3, 5, 9, rng.randint(1, 300), rng.randint(1, largest)))
        cuts.append(data[pos : pos + n])
        pos += n
    return cuts


def by_feed(decoder, chunks) -> list:  # type: ignore[no-untyped-def]
    frames: list = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    decoder.eof()
    return frames


def by_buffer(decoder, data: bytes, rng: random.Random) -> list:  # type: ignore[no-untyped-def]
    """Through get_buffer()/buffer_updated(), each read a random part of the room offered."""
    frames: list = []
    pos = 0
    while pos < len(data):
        view = decoder.get_buffer(rng.choice((1, 7, 4096, 65536, -1)))
        n = min(
            len(view), len(data) - pos, rng.choice((1, 3, len(view), rng.randint(1, len(view))))
        )
        view[:n] = data[pos : pos + n]
        pos += n
        frames += decoder.buffer_updated(n)
    decoder.eof()
    return frames


def check_refeed(
    make: Callable[[], object], data: bytes, expected: list, seed: int, overhead: int = 0
) -> dict:
    """Feed ``data`` to fresh decoders from ``make`` in random cuts, byte by
    byte (up to BYTEWISE_LIMIT) and through get_buffer(); each must deliver
    ``expected``.  ``overhead``: the bytes of each frame on the wire that the
    decoder does not deliver (its header, when stripped).  Returns what was
    checked, for the report."""
    rng = random.Random(seed)
    checked = {"bytes": len(data), "frames": len(expected)}
    for round_ in range(3):
        assert by_feed(make(), random_cuts(data, rng)) == expected, f"random cuts, round {round_}"
        assert by_buffer(make(), data, rng) == expected, f"get_buffer, round {round_}"
    if len(data) <= BYTEWISE_LIMIT:
        head, frames = data, expected
    else:  # whole frames up to the limit
        size, count = 0, 0
        for frame in expected:
            if size + len(frame) + overhead > BYTEWISE_LIMIT:
                break
            size += len(frame) + overhead
            count += 1
        head, frames = data[:size], expected[:count]
    assert by_feed(make(), [head[i : i + 1] for i in range(len(head))]) == frames, "byte by byte"
    checked["bytewise"] = len(head)
    return checked
