"""Whole frames round-trip: what a strip=0 decoder delivers, encode_frame()
puts back on the wire byte for byte."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import PRESETS
from framecodec.errors import FrameTooLargeError, MalformedHeaderError

WHOLE = sorted(name for name, fmt in PRESETS.items() if fmt.strip == 0)


def test_the_presets_that_deliver_whole_frames():
    assert {"grpc", "postgres", "http2", "mysql"} <= set(WHOLE)


def test_encode_frame_gives_back_the_frame(codec):
    frame = codec.FrameEncoder("postgres").encode(b"SELECT 1\x00", prefix=b"Q")
    assert codec.FrameEncoder("postgres").encode_frame(frame) is frame  # no copy of bytes
    assert codec.FrameEncoder("postgres").encode_frame(bytearray(frame)) == frame
    assert codec.FrameEncoder("postgres").encode_frame(memoryview(frame)) == frame


def test_a_length_field_that_disagrees_is_refused(codec):
    encoder = codec.FrameEncoder("grpc")
    frame = encoder.encode(b"abc", prefix=b"\x01")
    with pytest.raises(MalformedHeaderError, match="length field must match its size"):
        encoder.encode_frame(frame + b"x")
    with pytest.raises(MalformedHeaderError, match="length field must match its size"):
        encoder.encode_frame(frame[:-1])
    with pytest.raises(MalformedHeaderError, match="at least its 5-byte header"):
        encoder.encode_frame(b"\x00\x00")
    with pytest.raises(FrameTooLargeError):
        codec.FrameEncoder("grpc", max_frame_size=2).encode_frame(frame)
    with pytest.raises(TypeError):
        encoder.encode_frame("text")


def test_escaped_lengths_are_read_too(codec):
    encoder = codec.FrameEncoder("multiprocessing")
    frame = b"\xff\xff\xff\xff" + (3).to_bytes(8, "big") + b"abc"
    assert encoder.encode_frame(frame) == frame
    with pytest.raises(MalformedHeaderError, match="negative frame length"):
        encoder.encode_frame(b"\xff\xff\xff\xfe")
    with pytest.raises(MalformedHeaderError, match="escaped length"):
        encoder.encode_frame(b"\xff\xff\xff\xff\x00")


def test_encode_frames_joins_small_and_keeps_large(codec):
    encoder = codec.FrameEncoder("grpc")
    small = [encoder.encode(b"a", prefix=b"\x00"), encoder.encode(b"bc", prefix=b"\x01")]
    big = encoder.encode(bytes(70_000), prefix=b"\x00")
    buffers = encoder.encode_frames([*small, big, small[0]])
    assert buffers == [small[0] + small[1], big, small[0]]
    assert buffers[1] is big
    assert encoder.encode_frames([]) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    preset=st.sampled_from(WHOLE),
    frames=st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=1),
            st.one_of(st.binary(max_size=300), st.integers(65_000, 70_000).map(bytes)),
        ),
        max_size=12,
    ),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([3, 64, 5000, 200_000]),
    through_get_buffer=st.booleans(),
)
def test_decode_then_encode_frame_is_the_same_stream(
    codec_both, preset, frames, seed, max_piece, through_get_buffer
):
    for codec in codec_both:
        encoder = codec.FrameEncoder(preset)
        offset = encoder.format.length_offset
        # http2's type, flags and stream id, mysql's sequence id: the body's start.
        fields = bytes(range(1, 1 + max(0, encoder.format.length_adjustment)))
        wire = b"".join(
            encoder.encode(fields + body, prefix=prefix * offset) for prefix, body in frames
        )
        rng = random.Random(seed)
        decoder = codec.FrameDecoder(preset)
        delivered = []
        pos = 0
        while pos < len(wire):
            piece = wire[pos : pos + rng.randint(1, max_piece)]
            pos += len(piece)
            if not through_get_buffer:
                delivered += decoder.feed(piece)
                continue
            while piece:
                view = decoder.get_buffer()
                n = min(len(view), len(piece))
                view[:n] = piece[:n]
                piece = piece[n:]
                delivered += decoder.buffer_updated(n)
        decoder.eof()
        assert len(delivered) == len(frames)
        assert b"".join(encoder.encode_frame(f) for f in delivered) == wire
        assert b"".join(encoder.encode_frames(delivered)) == wire


def test_a_huge_length_field_is_reported_without_wrapping(both_codecs):
    # Found by fuzz_differential: C arithmetic on the field wrapped around.
    frame = b"\xff" * 8
    messages = []
    for codec in both_codecs:
        with pytest.raises(MalformedHeaderError) as info:
            codec.FrameEncoder(width=8, length_adjustment=-1).encode_frame(frame)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "says 18446744073709551622" in messages[0]
