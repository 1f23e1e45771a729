"""decoder.needed: what the frame in progress still lacks, never more.

The network layers ask the kernel (SO_RCVLOWAT) not to wake them before
that many bytes are in, so a figure one byte too high would make a reader
wait for bytes the peer never sends: every test here checks, at every cut
of the wire, that ``needed`` is exactly the distance to the end of the
frame being received once its header is in, and 0 inside a header.
"""

from __future__ import annotations

import random
import struct
from typing import Any, Callable, List, Tuple

import pytest

from framecodec import MessageEncoder

# (wire, [(start, header_end, end)] of each frame on it)
Layout = Tuple[bytes, List[Tuple[int, int, int]]]


def expected_needed(layout: Layout, given: int) -> int:
    """What needed must say once ``given`` bytes of the wire were given."""
    for start, header_end, end in layout[1]:
        if start < given < end:
            return end - given if given >= header_end else 0
    return 0


def check_every_cut(
    make_decoder: Callable[[], Any], layout: Layout, step: Callable[[int], int]
) -> None:
    wire = layout[0]
    for through_buffer in (False, True):
        decoder = make_decoder()
        given = 0
        while given < len(wire):
            n = min(step(given), len(wire) - given)
            if through_buffer:
                view = decoder.get_buffer()
                n = min(n, len(view))
                view[:n] = wire[given : given + n]
                decoder.buffer_updated(n)
            else:
                decoder.feed(wire[given : given + n])
            given += n
            assert decoder.needed == expected_needed(layout, given), (through_buffer, given)
        assert decoder.needed == 0


def frames_layout(sizes: List[int], header: int = 4, trailer: int = 0) -> Layout:
    wire = bytearray()
    spans = []
    for size in sizes:
        start = len(wire)
        wire += struct.pack(">I", size) + bytes(size) + bytes(trailer)
        spans.append((start, start + header, len(wire)))
    return bytes(wire), spans


SIZES = [0, 3, 70_000, 10, 300_000, 1, 65_536, 5000]


@pytest.mark.parametrize("cut", ["bytes", "random", "large"])
def test_needed_is_the_rest_of_each_frame(codec, cut):
    rng = random.Random(7)
    steps = {
        "bytes": lambda given: 1 if given < 200 else 997,
        "random": lambda given: rng.randint(1, 9000),
        "large": lambda given: 64 * 1024,
    }
    layout = frames_layout(SIZES)
    check_every_cut(lambda: codec.FrameDecoder(max_frame_size=1 << 20), layout, steps[cut])


def test_needed_counts_the_checksum(codec):
    encoder = codec.FrameEncoder(checksum="crc32c")
    wire = b""
    spans = []
    for size in SIZES:
        frame = encoder.encode(bytes(size))
        spans.append((len(wire), len(wire) + 4, len(wire) + len(frame)))
        wire += frame
    rng = random.Random(3)
    check_every_cut(
        lambda: codec.FrameDecoder(max_frame_size=1 << 20, checksum="crc32c"),
        (wire, spans),
        lambda given: rng.randint(1, 20_000),
    )


@pytest.mark.parametrize("policy", ["discard", "raise"])
def test_needed_counts_what_an_oversized_frame_has_left_to_drop(codec, policy):
    layout = frames_layout([10, 200_000, 10, 2000, 7])
    rng = random.Random(5)

    def make() -> Any:
        return codec.FrameDecoder(max_frame_size=1000, on_oversized=policy)

    wire = layout[0]
    decoder = make()
    given = 0
    while given < len(wire):
        n = min(rng.randint(1, 30_000), len(wire) - given)
        try:
            decoder.feed(wire[given : given + n])
        except codec.FrameTooLargeError:
            pass
        given += n
        assert decoder.needed == expected_needed(layout, given), given


def test_needed_for_messages_is_the_rest_of_the_content(codec):
    encoder = MessageEncoder()
    wire = b""
    spans = []
    for size in (0, 5, 100_000, 12, 70_000):
        message = encoder.encode(bytes(size))
        header_end = len(wire) + len(message) - size
        spans.append((len(wire), header_end, len(wire) + len(message)))
        wire += message
    rng = random.Random(11)
    check_every_cut(codec.MessageDecoder, (wire, spans), lambda given: rng.randint(1, 9000))


def test_needed_is_zero_once_stopped_failed_or_detached(codec):
    decoder = codec.FrameDecoder()
    decoder.stop_after(1)
    decoder.feed(struct.pack(">I", 3) + b"ab")
    assert decoder.needed == 1
    decoder.feed(b"c" + struct.pack(">I", 100) + b"x")
    assert decoder.stopped and decoder.needed == 0
    decoder.detach()
    assert decoder.needed == 0
    failed = codec.FrameDecoder(max_frame_size=10)
    with pytest.raises(codec.FrameTooLargeError):
        failed.feed(struct.pack(">I", 100) + b"x")
    assert failed.needed == 0
