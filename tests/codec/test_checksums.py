"""Per-frame CRC32C (the ``checksum`` format option), on both cores: the
checksum's published test vectors, every engine against the others, the wire
layout, damaged frames never delivered, the on_oversized policies, and
streams cut anywhere."""

import itertools
import os
import platform
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import PRESETS, ChecksumError, FrameFormat, ProtocolError
from framecodec.errors import IncompleteFrameError

from .codec_support import bodies_for, read_like_a_socket

# RFC 3720 (iSCSI) B.4, and the check value every CRC catalogue gives.
VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (
        bytes.fromhex(
            "01c00000000000000000000000000000"
            "14000000000004000000001400000018"
            "28000000000000000200000000000000"
        ),
        0xD9963A56,
    ),
]
PRESETS_WITH_CHECKSUM = sorted(name for name in PRESETS if not PRESETS[name].large_length_escape)


def engines(codec):
    return [*codec.CHECKSUM_ENGINES, "auto"]


def sealed(frame):
    """A format frame followed by its checksum, as the option puts it on the wire."""
    from framecodec.codec import _impl

    return frame + struct.pack(">I", _impl.load("python").crc32c(frame))


# -- the checksum itself -----------------------------------------------------------


@pytest.mark.parametrize("data, expected", VECTORS)
def test_known_vectors(codec, data, expected):
    for engine in engines(codec):
        assert codec._crc32c_using(engine, data) == expected, engine
    assert codec.crc32c(data) == expected
    assert codec.crc32c(bytearray(data)) == expected
    assert codec.crc32c(memoryview(data)) == expected


def test_results_chain_as_zlib_crc32_does(codec):
    data = os.urandom(5000)
    for cut in (0, 1, 7, 8, 1023, 3072, 4999, 5000):
        assert codec.crc32c(data[cut:], codec.crc32c(data[:cut])) == codec.crc32c(data)


def test_every_engine_of_both_cores_agrees_at_every_alignment_and_length(both_codecs):
    compiled, twin = both_codecs
    rng = random.Random(13)
    block = bytes(rng.getrandbits(8) for _ in range(9000))
    view = memoryview(block)
    # Lengths around each lane size of the compiled engines (8-byte words,
    # 3 x 128 and 3 x 1024 byte lanes; 256-byte folding steps, then 64-byte
    # ones, from 256 bytes), at every offset from an 8-byte boundary.
    sizes = (256, 320, 384, 512, 576, 768, 3072, 3456, 6144, 8448)
    lengths = sorted({*range(0, 80), *(k + d for k in sizes for d in (-9, -1, 0, 1, 8, 63, 64))})
    for offset in range(8):
        for length in lengths:
            data = view[offset : offset + length]
            value = rng.getrandbits(32)
            expected = twin.crc32c(data, value)
            for engine in engines(compiled):
                assert compiled._crc32c_using(engine, data, value) == expected, (
                    engine,
                    offset,
                    length,
                )


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as info:
            return {flag for line in info if line.startswith("flags") for flag in line.split()}
    except OSError:
        return None


@pytest.mark.skipif(cpu_flags() is None, reason="needs /proc/cpuinfo to know the CPU's features")
def test_the_compiled_core_uses_what_the_cpu_has(both_codecs):
    compiled, twin = both_codecs
    flags = cpu_flags()
    wanted = ["table"]
    if platform.machine() in ("x86_64", "AMD64") and "sse4_2" in flags:
        wanted.append("sse4.2")
        if {"avx512f", "avx512vl", "vpclmulqdq"} <= flags:
            wanted.append("vpclmulqdq")
    assert list(compiled.CHECKSUM_ENGINES) == wanted
    assert twin.CHECKSUM_ENGINES == ("table",)


def test_both_encoders_write_the_same_sealed_frames_at_every_length(both_codecs):
    # The compiled encoder computes the checksum as it copies the payload
    # (in one pass where the CPU folds), from any offset of any buffer type.
    compiled, twin = both_codecs
    rng = random.Random(17)
    block = bytearray(rng.getrandbits(8) for _ in range(9000))
    view = memoryview(block)
    lengths = sorted(
        {*range(0, 70), *(k + d for k in (256, 320, 512, 4096, 8448) for d in (-1, 0, 1, 63))}
    )
    sealed_compiled = compiled.FrameEncoder(checksum="crc32c")
    sealed_twin = twin.FrameEncoder(checksum="crc32c")
    for offset in (0, 1, 7):
        payloads = [view[offset : offset + length] for length in lengths]
        expected = [sealed_twin.encode(payload) for payload in payloads]
        assert [sealed_compiled.encode(payload) for payload in payloads] == expected
        assert sealed_compiled.encode_many(payloads) == b"".join(expected)
        assert sealed_compiled.encode_many([bytes(p) for p in payloads]) == b"".join(expected)


@pytest.mark.parametrize("strip", [None, 0, 2])
def test_both_decoders_check_sealed_frames_at_every_length(both_codecs, strip):
    # The compiled decoder checks a frame as it copies the body out of its
    # buffer (in one pass where the CPU folds), the header (kept or stripped)
    # going into the checksum all the same: a damaged byte anywhere, the
    # body's first and last included, is caught, with both cores' figures.
    compiled, twin = both_codecs
    options = {} if strip is None else {"strip": strip}
    rng = random.Random(18)
    lengths = sorted({*range(0, 70), *(k + d for k in (256, 320, 4096, 8448) for d in (-1, 0, 1))})
    bodies = [rng.randbytes(length) for length in lengths]
    wire = twin.FrameEncoder(**options, checksum="crc32c").encode_many(bodies)
    expected = twin.FrameDecoder(**options).feed(twin.FrameEncoder(**options).encode_many(bodies))
    for codec in (compiled, twin):
        assert codec.FrameDecoder(**options, checksum="crc32c").feed(wire) == expected
    for length in (0, 63, 255, 256, 257, 4097, 8447):
        frame = twin.FrameEncoder(**options, checksum="crc32c").encode(rng.randbytes(length))
        for position in sorted({0, 3, 4, 5, len(frame) - 5, len(frame) - 6, len(frame) - 1}):
            damaged = bytearray(frame)
            damaged[position] ^= 0x01
            outcomes = []
            for codec in (compiled, twin):
                decoder = codec.FrameDecoder(**options, checksum="crc32c")
                try:
                    outcomes.append(("frames", decoder.feed(bytes(damaged))))
                except ChecksumError as exc:
                    outcomes.append((str(exc), exc.expected, exc.actual, decoder.corrupted))
                except ProtocolError as exc:  # a damaged length field can announce anything
                    outcomes.append((type(exc), exc.frames))
            assert outcomes[0] == outcomes[1], (length, position)
            if position >= 4:  # past the length field: this very frame fails its checksum
                message, carried, actual, corrupted = outcomes[0]
                assert message.startswith(f"frame of {len(frame) - 4} bytes fails its checksum")
                assert carried != actual and corrupted == 1, (length, position)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=5000), value=st.integers(0, 0xFFFFFFFF))
def test_both_cores_agree_on_random_data(both_codecs, data, value):
    compiled, twin = both_codecs
    expected = twin.crc32c(data, value)
    for engine in engines(compiled):
        assert compiled._crc32c_using(engine, data, value) == expected


def test_bad_arguments(codec):
    with pytest.raises(ValueError, match="between 0 and 0xFFFFFFFF"):
        codec.crc32c(b"x", 1 << 32)
    with pytest.raises(ValueError, match="between 0 and 0xFFFFFFFF"):
        codec.crc32c(b"x", -1)
    with pytest.raises(TypeError):
        codec.crc32c(b"x", 1.5)
    with pytest.raises(TypeError):
        codec.crc32c("text")
    with pytest.raises(ValueError, match="no CRC32C engine"):
        codec._crc32c_using("neon", b"x")


# -- the option ----------------------------------------------------------------------


def test_the_option_is_validated():
    assert FrameFormat(checksum="crc32c").trailer_size == 4
    assert FrameFormat().trailer_size == 0
    for wrong in ("crc32", "CRC32C", True, 0):
        with pytest.raises(ValueError, match="checksum must be one of 'crc32c'"):
            FrameFormat(checksum=wrong)
    with pytest.raises(ValueError, match="large_length_escape"):
        FrameFormat(large_length_escape=True, checksum="crc32c")


def test_no_combination_with_the_multiprocessing_preset(codec):
    for make in (codec.FrameDecoder, codec.FrameEncoder):
        with pytest.raises(ValueError, match=r"multiprocessing\.connection"):
            make("multiprocessing", checksum="crc32c")


def test_messages_take_no_checksum(codec):
    with pytest.raises(TypeError):
        codec.MessageDecoder(checksum="crc32c")


def test_wire_layout(codec):
    # The format's frame, unchanged (the length field does not count the
    # checksum), then the CRC32C of all of it in network byte order.
    encoder = codec.FrameEncoder(checksum="crc32c")
    frame = b"\x00\x00\x00\x05hello"
    assert encoder.encode(b"hello") == frame + struct.pack(">I", codec.crc32c(frame))
    assert encoder.encode(b"") == sealed(b"\x00\x00\x00\x00")
    assert encoder.encode_many([b"a", b"bc"]) == sealed(b"\0\0\0\1a") + sealed(b"\0\0\0\2bc")
    # The header bytes before the length field are covered too.
    grpc = codec.FrameEncoder("grpc", checksum="crc32c")
    assert grpc.encode(b"hi", prefix=b"\x01") == sealed(b"\x01\x00\x00\x00\x02hi")


@pytest.mark.parametrize("preset", PRESETS_WITH_CHECKSUM)
def test_every_preset_round_trips(codec, preset):
    largest = min(70_000, (1 << 8 * PRESETS[preset].width) - 16)  # over 64 KiB where it fits
    payloads = [b"", b"x", os.urandom(1000), os.urandom(largest), b"tail"]
    bodies = bodies_for(preset, payloads)
    encoder = codec.FrameEncoder(preset, checksum="crc32c")
    plain = codec.FrameEncoder(preset)
    wire = encoder.encode_many(bodies)
    assert wire == b"".join(sealed(plain.encode(body)) for body in bodies)
    assert b"".join(encoder.encode_vectored(bodies)) == wire
    assert b"".join(encoder.encode(body) for body in bodies) == wire
    expected = codec.FrameDecoder(preset).feed(plain.encode_many(bodies))
    assert codec.FrameDecoder(preset, checksum="crc32c").feed(wire) == expected
    decoder = codec.FrameDecoder(preset, checksum="crc32c")
    assert read_like_a_socket(decoder, wire, []) == expected
    assert decoder.corrupted == 0
    decoder.eof()


@pytest.mark.parametrize(
    "options",
    [
        {"strip": 0},
        {"strip": 2},
        {"length_adjustment": -4},  # the field counts itself
        {"length_offset": 2, "width": 2, "length_adjustment": 3, "strip": 7},
        {"width": 3, "byteorder": "little", "length_adjustment": 1, "strip": 0},
    ],
)
def test_it_composes_with_strip_and_length_adjustment(codec, options):
    largest = min(80_000, (1 << 8 * options.get("width", 4)) - 16)
    bodies = [b"12345678" + os.urandom(n) for n in (0, 5, 300, largest)]
    plain = codec.FrameEncoder(**options)
    wire = codec.FrameEncoder(**options, checksum="crc32c").encode_many(bodies)
    assert wire == b"".join(sealed(plain.encode(body)) for body in bodies)
    frames = codec.FrameDecoder(**options, checksum="crc32c").feed(wire)
    assert frames == codec.FrameDecoder(**options).feed(plain.encode_many(bodies))


@pytest.mark.parametrize("preset", ["grpc", "postgres", "http2", "mysql"])
def test_whole_frames_are_relayed_with_their_checksum(codec, preset):
    # A whole-frame preset delivers the frame without its checksum;
    # encode_frame() puts it back on the wire with one.
    wire = codec.FrameEncoder(preset, checksum="crc32c").encode_many(
        bodies_for(preset, [b"one", os.urandom(70_000)])
    )
    frames = codec.FrameDecoder(preset, checksum="crc32c").feed(wire)
    relay = codec.FrameEncoder(preset, checksum="crc32c")
    assert b"".join(relay.encode_frame(frame) for frame in frames) == wire
    assert b"".join(relay.encode_frames(frames)) == wire


def test_the_limits_count_the_frame_without_its_checksum(codec):
    wire = codec.FrameEncoder(checksum="crc32c").encode(b"x" * 10)
    assert codec.FrameDecoder(checksum="crc32c", max_frame_size=10).feed(wire) == [b"x" * 10]
    assert codec.FrameDecoder(checksum="crc32c", max_frame_length=14).feed(wire) == [b"x" * 10]


# -- damage ------------------------------------------------------------------------


def flipped(data, bit):
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def test_every_flipped_bit_of_body_or_checksum_is_caught(codec):
    wire = codec.FrameEncoder(checksum="crc32c").encode(bytes(range(40)))
    for bit in range(32, 8 * len(wire)):  # past the length field
        decoder = codec.FrameDecoder(checksum="crc32c")
        with pytest.raises(ChecksumError, match="frame of 44 bytes fails its checksum") as caught:
            decoder.feed(flipped(wire, bit))
        assert caught.value.frames == []
        assert caught.value.actual != caught.value.expected
        assert decoder.corrupted == 1


@pytest.mark.parametrize("preset", ["uint32", "postgres", "http2"])
def test_no_flipped_bit_anywhere_delivers_a_frame(codec, preset):
    good = codec.FrameEncoder(preset, checksum="crc32c").encode_many(
        bodies_for(preset, [b"first", bytes(range(30))])
    )
    expected = codec.FrameDecoder(preset, checksum="crc32c").feed(good)
    first = len(codec.FrameEncoder(preset, checksum="crc32c").encode(bodies_for(preset, [b""])[0]))
    first += 5  # the first frame's payload
    for bit in range(8 * first, 8 * len(good)):  # every bit of the second frame
        decoder = codec.FrameDecoder(preset, checksum="crc32c", max_frame_size=1000)
        frames = []
        try:
            frames += decoder.feed(flipped(good, bit))
            decoder.eof()
        except ProtocolError as exc:  # ChecksumError, or a length field gone wrong
            frames += exc.frames
        assert frames == expected[:1], bit


def test_a_frame_received_in_place_is_checked(codec):
    payload = os.urandom(300_000)
    wire = codec.FrameEncoder(checksum="crc32c").encode(payload)
    for position in (4, 100_000, len(wire) - 1):
        damaged = bytearray(wire)
        damaged[position] ^= 0x10
        decoder = codec.FrameDecoder(checksum="crc32c")
        with pytest.raises(ChecksumError, match="300004 bytes fails its checksum"):
            read_like_a_socket(decoder, bytes(damaged), [])
        decoder = codec.FrameDecoder(checksum="crc32c")
        with pytest.raises(ChecksumError):
            for i in range(0, len(damaged), 7000):
                decoder.feed(damaged[i : i + 7000])
    assert read_like_a_socket(codec.FrameDecoder(checksum="crc32c"), wire, []) == [payload]


def test_discard_drops_and_counts(codec):
    payloads = [b"a" * 5, os.urandom(100_000), b"b" * 50, b"c" * 7, os.urandom(90_000), b"d"]
    encoder = codec.FrameEncoder(checksum="crc32c")
    frames = [encoder.encode(p) for p in payloads]
    frames[1] = flipped(frames[1], 8 * 5000)
    frames[3] = flipped(frames[3], 8 * 6)
    wire = b"".join(frames)
    expected = [payloads[i] for i in (0, 2, 4, 5)]
    for feed in ("whole", "bytes", "socket"):
        decoder = codec.FrameDecoder(checksum="crc32c", on_oversized="discard")
        if feed == "whole":
            got = decoder.feed(wire)
        elif feed == "bytes":
            got = []
            for i in range(0, len(wire), 997):
                got += decoder.feed(wire[i : i + 997])
        else:
            got = read_like_a_socket(decoder, wire, [])
        assert got == expected, feed
        assert (decoder.discarded, decoder.corrupted) == (2, 2)
        decoder.eof()


def test_raise_reports_each_bad_frame_and_goes_on(codec):
    encoder = codec.FrameEncoder(checksum="crc32c")
    frames = [encoder.encode(p) for p in (b"one", b"two", b"three", b"four")]
    frames[1] = flipped(frames[1], 8 * 5)
    decoder = codec.FrameDecoder(checksum="crc32c", on_oversized="raise")
    with pytest.raises(ChecksumError) as caught:
        decoder.feed(b"".join(frames))
    assert caught.value.frames == [b"one"]
    with pytest.raises(RuntimeError, match=r'feed\(b""\)'):
        decoder.eof()
    assert decoder.feed(b"") == [b"three", b"four"]
    assert (decoder.discarded, decoder.corrupted) == (1, 1)
    decoder.eof()


def test_fail_stays_failed(codec):
    wire = codec.FrameEncoder(checksum="crc32c").encode_many([b"good", b"bad"])
    decoder = codec.FrameDecoder(checksum="crc32c")
    with pytest.raises(ChecksumError) as caught:
        decoder.feed(wire[:-1] + bytes([wire[-1] ^ 1]))
    assert caught.value.frames == [b"good"]
    with pytest.raises(ChecksumError, match="decoder failed earlier"):
        decoder.feed(b"")


def test_a_stream_cut_before_the_checksum_is_incomplete(codec):
    wire = codec.FrameEncoder(checksum="crc32c").encode(b"payload")
    decoder = codec.FrameDecoder(checksum="crc32c")
    assert decoder.feed(wire[:-2]) == []
    assert decoder.mid_frame
    with pytest.raises(IncompleteFrameError) as caught:
        decoder.eof()
    assert caught.value.missing == 2


def test_detach_hands_over_the_checksum_bytes_too(codec):
    encoder = codec.FrameEncoder(checksum="crc32c")
    wire = encoder.encode(b"one") + encoder.encode(b"two")
    decoder = codec.FrameDecoder(checksum="crc32c")
    decoder.stop_after(1)
    assert decoder.feed(wire[:-1]) == [b"one"]
    assert decoder.detach() == encoder.encode(b"two")[:-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from([0, 1, 3, 100, 4096, 65_535, 70_000]), max_size=6),
    cuts=st.lists(st.integers(0, 200_000), max_size=8),
    damage=st.one_of(st.none(), st.integers(0, 10**9)),
    policy=st.sampled_from(["fail", "discard", "raise"]),
)
def test_both_cores_agree_on_cut_and_damaged_streams(both_codecs, sizes, cuts, damage, policy):
    rng = random.Random(len(sizes))
    payloads = [bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1) for n in sizes]
    payloads = [p[:n] for p, n in zip(payloads, sizes)]
    wire = both_codecs[1].FrameEncoder(checksum="crc32c").encode_many(payloads)
    if damage is not None and wire:
        wire = flipped(wire, damage % (8 * len(wire)))
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    results = []
    for codec in both_codecs:
        decoder = codec.FrameDecoder(checksum="crc32c", on_oversized=policy)
        seen = []
        for start, stop in itertools.pairwise(points):
            try:
                seen.append(decoder.feed(wire[start:stop]))
            except ProtocolError as exc:
                seen.append((type(exc), str(exc), exc.frames))
                if policy == "fail":
                    break
        results.append((seen, decoder.discarded, decoder.corrupted))
    assert results[0] == results[1]
