"""Format options at Netty's level: strip up to the whole header, limits on
the payload or the whole frame, the http2 and mysql presets, and the
on_oversized policy; every test on both cores."""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import PRESETS, FrameFormat, MessageEncoder
from framecodec.codec.formats import PRESET_CEILING
from framecodec.errors import FrameTooLargeError, IncompleteFrameError, ProtocolError

# -- the whole header and strip ----------------------------------------------------


def http2_frame(payload, frame_type=0, flags=0, stream=1):
    return (
        len(payload).to_bytes(3, "big")
        + bytes([frame_type, flags])
        + struct.pack(">I", stream)
        + payload
    )


@pytest.mark.parametrize(
    "options, header_size, payload_offset",
    [
        ({}, 4, 4),
        ({"length_offset": 1, "length_adjustment": -4}, 5, 5),  # postgres
        ({"width": 3, "length_adjustment": 6}, 3, 9),  # http2
        ({"width": 3, "length_adjustment": 1}, 3, 4),  # mysql
        ({"length_offset": 2, "width": 2, "length_adjustment": 3}, 4, 7),
    ],
)
def test_payload_offset_is_the_whole_header(options, header_size, payload_offset):
    fmt = FrameFormat(**options)
    assert (fmt.header_size, fmt.payload_offset) == (header_size, payload_offset)


def test_strip_the_whole_http2_header(codec):
    # Netty's LengthFieldBasedFrameDecoder(..., 0, 3, 6, 9): the payload alone.
    decoder = codec.FrameDecoder(width=3, length_adjustment=6, strip=9)
    wire = http2_frame(b"hello") + http2_frame(b"", frame_type=4) + http2_frame(b"!")
    assert decoder.feed(wire) == [b"hello", b"", b"!"]
    for strip in range(10):
        frames = codec.FrameDecoder(width=3, length_adjustment=6, strip=strip).feed(wire)
        assert frames == [
            http2_frame(b"hello")[strip:],
            http2_frame(b"", 4)[strip:],
            http2_frame(b"!")[strip:],
        ]


@pytest.mark.parametrize("piece", [1, 5, 1000, 1 << 20])
def test_strip_past_the_length_field_for_large_frames(codec, piece):
    big = bytes(range(256)) * 258  # over 64 KiB: received in its own storage
    wire = http2_frame(big) + http2_frame(b"x") + http2_frame(big)
    decoder = codec.FrameDecoder("http2", strip=9)
    got = []
    for start in range(0, len(wire), piece):
        got += decoder.feed(wire[start : start + piece])
    assert got == [big, b"x", big]
    decoder = codec.FrameDecoder("http2", strip=7)
    got, pos = [], 0
    while pos < len(wire):
        view = decoder.get_buffer()
        n = min(len(view), piece, len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        pos += n
        got += decoder.buffer_updated(n)
    assert got == [http2_frame(big)[7:], b"\x00\x01x", http2_frame(big)[7:]]
    decoder.eof()


@pytest.mark.parametrize(
    "options, most",
    [
        ({"width": 3, "length_adjustment": 6}, 9),
        ({}, 4),
        ({"length_offset": 1, "length_adjustment": -4}, 5),
        ({"large_length_escape": True}, 4),
    ],
)
def test_strip_stops_at_the_whole_header(codec, options, most):
    codec.FrameDecoder(**options, strip=most)
    with pytest.raises(ValueError, match=f"strip must be between 0 and {most}, not {most + 1}"):
        codec.FrameDecoder(**options, strip=most + 1)


def test_a_frame_is_never_shorter_than_the_whole_header(codec):
    # The shortest frames a negative adjustment allows still hold the header
    # that strip may remove; a shorter one is malformed, as before.
    decoder = codec.FrameDecoder(length_offset=1, length_adjustment=-4, strip=5)
    assert decoder.feed(b"Z\x00\x00\x00\x04") == [b""]
    with pytest.raises(ProtocolError, match="negative frame length"):
        decoder.feed(b"Z\x00\x00\x00\x03")


# -- limits ------------------------------------------------------------------------


def test_max_frame_size_counts_the_payload_after_the_whole_header(codec):
    decoder = codec.FrameDecoder("http2", max_frame_size=10)
    assert decoder.feed(http2_frame(b"x" * 10)) == [http2_frame(b"x" * 10)]
    with pytest.raises(
        FrameTooLargeError, match=r"payload of 11 bytes exceeds max_frame_size \(10\)"
    ):
        decoder.feed(http2_frame(b"x" * 11))
    decoder = codec.FrameDecoder("postgres", max_frame_size=3)  # the body after the length
    assert decoder.feed(b"Q\x00\x00\x00\x07abc") == [b"Q\x00\x00\x00\x07abc"]
    with pytest.raises(FrameTooLargeError, match="payload of 4 bytes"):
        decoder.feed(b"Q\x00\x00\x00\x08abcd")


@pytest.mark.parametrize(
    "preset, frame",
    [
        ("uint32", b"\x00\x00\x00\x06abcdef"),  # 10 bytes in all
        ("http2", http2_frame(b"a")),
        ("postgres", b"Q\x00\x00\x00\x08abcd"),
        ("mysql", b"\x06\x00\x00\x00abcdef"),
        ("multiprocessing", b"\x00\x00\x00\x06abcdef"),
    ],
)
def test_max_frame_length_counts_the_whole_frame(codec, preset, frame):
    length = len(frame)
    strip = PRESETS[preset].strip
    expected = frame if strip == 0 else frame[PRESETS[preset].header_size :]
    assert codec.FrameDecoder(preset, max_frame_length=length).feed(frame) == [expected]
    with pytest.raises(
        FrameTooLargeError,
        match=rf"frame of {length} bytes exceeds max_frame_length \({length - 1}\)",
    ):
        codec.FrameDecoder(preset, max_frame_length=length - 1).feed(frame)
    # The encoder refuses what the decoder would.
    encoder = codec.FrameEncoder(preset, max_frame_length=length - 1)
    header_size = PRESETS[preset].header_size
    with pytest.raises(FrameTooLargeError, match="max_frame_length"):
        encoder.header(length - header_size)
    assert len(encoder.header(length - header_size - 1)) == header_size


def test_the_stricter_limit_wins(codec):
    decoder = codec.FrameDecoder(max_frame_size=100, max_frame_length=8)
    assert decoder.feed(b"\x00\x00\x00\x04abcd") == [b"abcd"]
    with pytest.raises(FrameTooLargeError, match="max_frame_length"):
        decoder.feed(b"\x00\x00\x00\x05")


def test_escaped_multiprocessing_header_counts_in_the_whole_frame(codec):
    escaped = b"\xff\xff\xff\xff" + struct.pack(">Q", 3) + b"abc"  # 15 bytes
    assert codec.FrameDecoder("multiprocessing", max_frame_length=15).feed(escaped) == [b"abc"]
    with pytest.raises(FrameTooLargeError, match="frame of 15 bytes"):
        codec.FrameDecoder("multiprocessing", max_frame_length=14).feed(escaped)


def test_a_full_size_http2_frame_decodes_with_the_presets_defaults(codec):
    payload = b"\x07" * ((1 << 24) - 1)
    frame = http2_frame(payload, frame_type=0, flags=1, stream=3)
    decoder = codec.FrameDecoder("http2")
    got = []
    for start in range(0, len(frame), 1 << 20):
        got += decoder.feed(frame[start : start + (1 << 20)])
    assert len(got) == 1 and got[0][:9] == frame[:9] and len(got[0]) == len(frame)
    assert codec.FrameEncoder("http2").header(len(frame) - 3) == frame[:3]


def test_a_20_mb_postgres_datarow_decodes_with_the_presets_defaults(codec):
    column = b"x" * 20_000_000
    body = struct.pack(">hi", 1, len(column)) + column
    row = b"D" + struct.pack(">I", 4 + len(body)) + body
    decoder = codec.FrameDecoder("postgres")
    got = []
    for start in range(0, len(row), 1 << 20):
        got += decoder.feed(row[start : start + (1 << 20)])
    assert got == [row]


@pytest.mark.parametrize(
    "preset, most",
    [
        ("http2", (1 << 24) - 1),
        ("mysql", (1 << 24) - 1),
        ("postgres", PRESET_CEILING),
        ("grpc", PRESET_CEILING),
        ("uint32", 16 << 20),
    ],
)
def test_preset_limits_are_the_protocols_up_to_the_ceiling(codec, preset, most):
    fmt = PRESETS[preset]
    assert fmt.max_frame_size == most <= PRESET_CEILING
    decoder = codec.FrameDecoder(preset, strip=fmt.header_size)
    raw = most - min(0, fmt.length_adjustment)  # the field announcing that payload
    header = bytes(fmt.length_offset) + raw.to_bytes(fmt.width, fmt.byteorder)
    assert decoder.feed(header) == []  # accepted: its payload is awaited
    if raw + 1 < 1 << (8 * fmt.width):
        with pytest.raises(FrameTooLargeError):
            codec.FrameDecoder(preset).feed(
                bytes(fmt.length_offset) + (raw + 1).to_bytes(fmt.width, fmt.byteorder)
            )


# -- the new presets --------------------------------------------------------------


def test_http2_preset_delivers_whole_frames(codec):
    # A SETTINGS frame (type 4) with MAX_FRAME_SIZE = 2^24 - 1, its ACK, a
    # HEADERS frame (type 1, END_HEADERS) on stream 1.
    settings = http2_frame(struct.pack(">HI", 5, (1 << 24) - 1), frame_type=4, stream=0)
    ack = http2_frame(b"", frame_type=4, flags=1, stream=0)
    headers = http2_frame(b"\x82\x86\x84", frame_type=1, flags=4, stream=1)
    decoder = codec.FrameDecoder("http2")
    assert decoder.feed(settings + ack + headers) == [settings, ack, headers]
    assert codec.FrameEncoder("http2").encode(headers[3:]) == headers


def test_mysql_preset_delivers_whole_packets(codec):
    # A COM_QUERY packet (sequence id 0) and an OK packet (sequence id 1).
    query = b"\x09\x00\x00\x00\x03SELECT 1"
    ok = b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
    assert codec.FrameDecoder("mysql").feed(query + ok) == [query, ok]
    assert codec.FrameDecoder("mysql", strip=4).feed(query) == [b"\x03SELECT 1"]
    assert codec.FrameEncoder("mysql").encode(b"\x01" + ok[4:]) == ok


# -- on_oversized -----------------------------------------------------------------


def test_discard_oversized_is_on_oversized_discard():
    assert FrameFormat(discard_oversized=True).on_oversized == "discard"
    assert FrameFormat(on_oversized="discard").discard_oversized is True
    assert FrameFormat().on_oversized == "fail"
    raising = FrameFormat(discard_oversized=True).replace(on_oversized="raise")
    assert (raising.on_oversized, raising.discard_oversized) == ("raise", False)
    assert raising.replace(discard_oversized=True).on_oversized == "discard"
    assert (
        FrameFormat(on_oversized="discard").replace(discard_oversized=False).on_oversized == "fail"
    )
    assert (
        FrameFormat(on_oversized="raise").replace(discard_oversized=False).on_oversized == "raise"
    )
    with pytest.raises(ValueError, match="contradicts on_oversized='raise'"):
        FrameFormat(discard_oversized=True, on_oversized="raise")
    with pytest.raises(ValueError, match="on_oversized must be one of 'fail', 'discard', 'raise'"):
        FrameFormat(on_oversized="drop")


def test_on_oversized_raise_raises_for_the_frame_then_goes_on(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, on_oversized="raise")
    wire = encoder.encode_many([b"one", b"x" * 50, b"two", b"three"])
    with pytest.raises(FrameTooLargeError, match="payload of 50 bytes") as info:
        decoder.feed(wire)
    assert info.value.frames == [b"one"]
    assert decoder.discarded == 1
    assert decoder.buffered == len(wire) - 7 - 54  # the frames behind it wait
    assert decoder.feed(b"") == [b"two", b"three"]
    assert decoder.feed(encoder.encode(b"four")) == [b"four"]
    decoder.eof()


def test_eof_asks_for_the_frames_behind_an_oversized_one(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=2, on_oversized="raise")
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encoder.encode_many([b"long", b"ok"]))
    with pytest.raises(RuntimeError, match=r'call feed\(b""\) before eof\(\)'):
        decoder.eof()
    assert decoder.feed(b"") == [b"ok"]
    decoder.eof()
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encoder.encode(b"long") + b"\x00\x00")  # then part of a header
    assert decoder.feed(b"") == []
    with pytest.raises(IncompleteFrameError, match="2 bytes buffered, 2 more needed"):
        decoder.eof()


def test_on_oversized_raise_drops_the_frame_as_it_arrives(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, on_oversized="raise")
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(encoder.encode(b"ok") + struct.pack(">I", 1_000_000) + b"x" * 100)
    assert (info.value.frames, decoder.buffered, decoder.mid_frame) == ([b"ok"], 0, True)
    assert decoder.feed(b"x" * 999_000) == []  # dropped, not buffered
    assert decoder.buffered == 0
    assert decoder.feed(b"x" * 900 + encoder.encode(b"next")) == [b"next"]
    assert decoder.discarded == 1


def test_on_oversized_raise_on_the_get_buffer_path(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, on_oversized="raise")
    wire = encoder.encode_many([b"a", b"y" * 300_000, b"b", b"z" * 20, b"c"])
    got, errors, pos = [], 0, 0
    while pos < len(wire):
        view = decoder.get_buffer()
        n = min(len(view), 7000, len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        pos += n
        try:
            got += decoder.buffer_updated(n)
        except FrameTooLargeError as exc:
            got += exc.frames
            errors += 1
    got += decoder.feed(b"")
    assert (got, errors, decoder.discarded) == ([b"a", b"b", b"c"], 2, 2)


def test_on_oversized_fail_is_for_good(codec):
    decoder = codec.FrameDecoder(max_frame_size=10, on_oversized="fail")
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 11))
    with pytest.raises(FrameTooLargeError, match="decoder failed earlier"):
        decoder.feed(b"")


def test_a_length_too_large_to_count_fails_for_good_even_when_raising(codec):
    decoder = codec.FrameDecoder(width=8, on_oversized="raise")
    with pytest.raises(FrameTooLargeError, match="length field announces"):
        decoder.feed(struct.pack(">Q", 1 << 63))
    with pytest.raises(FrameTooLargeError, match="decoder failed earlier"):
        decoder.feed(b"")


# -- how the bytes are cut never matters -------------------------------------------

POLICY_SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
OVERSIZED = "<oversized>"


def decode_resuming(decoder, data, seed, max_piece, through_get_buffer, resuming):
    """("ok", frames, discarded), with OVERSIZED in frames where a
    FrameTooLargeError was raised and decoding went on (``resuming``: the
    policy is "raise"); ("error", frames, error type) when the decoder failed."""
    rng = random.Random(seed)
    out = []

    def call(fn, *args):
        try:
            out.extend(fn(*args))
            return True
        except FrameTooLargeError as exc:
            if not resuming:
                raise
            out.extend(exc.frames)
            out.append(OVERSIZED)
            return False

    try:
        pos = 0
        while pos < len(data):
            size = rng.randint(1, max_piece)
            piece, pos = data[pos : pos + size], pos + size
            if not through_get_buffer:
                call(decoder.feed, piece)
                continue
            while piece:
                view = decoder.get_buffer(rng.choice([-1, 1, len(piece)]))
                n = min(len(view), len(piece))
                view[:n] = piece[:n]
                piece = piece[n:]
                call(decoder.buffer_updated, n)
        while not call(decoder.feed, b""):
            pass  # frames received behind an oversized one
        decoder.eof()
    except ProtocolError as exc:
        return ("error", out + exc.frames, type(exc).__name__)
    return ("ok", out, decoder.discarded)


payload_sizes = st.lists(
    st.one_of(st.integers(0, 40), st.integers(41, 200), st.sampled_from([70_000, 100_000])),
    max_size=12,
)


@POLICY_SETTINGS
@given(
    preset=st.sampled_from(["uint32", "http2", "mysql", "postgres", "multiprocessing"]),
    sizes=payload_sizes,
    policy=st.sampled_from(["fail", "discard", "raise"]),
    limit=st.sampled_from(["max_frame_size", "max_frame_length"]),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([1, 5, 100, 70_000, 1 << 20]),
    through_get_buffer=st.booleans(),
)
def test_oversized_policies_do_not_depend_on_the_cuts(
    both_codecs, preset, sizes, policy, limit, seed, max_piece, through_get_buffer
):
    if max_piece < 100:  # byte by byte, small frames are enough (and the twin is slow)
        sizes = [min(n, 300) for n in sizes]
    fmt = PRESETS[preset]
    fields = max(0, fmt.length_adjustment)
    bodies = [bytes(range(1, fields + 1)) + bytes([n % 251]) * n for n in sizes]
    limit_value = 40 if limit == "max_frame_size" else 40 + fmt.payload_offset
    options = {limit: limit_value, "on_oversized": policy}
    wire = both_codecs[1].FrameEncoder(preset, max_frame_size=1 << 20).encode_many(bodies)
    strip = fmt.header_size if fmt.strip is None else fmt.strip
    frames, pos = [], 0
    for body in bodies:
        end = pos + fmt.header_size + len(body)
        frames.append(wire[pos + strip : end] if len(body) - fields <= 40 else OVERSIZED)
        pos = end
    if policy == "discard":
        expected = ("ok", [f for f in frames if f is not OVERSIZED], frames.count(OVERSIZED))
    elif policy == "raise":
        expected = ("ok", frames, frames.count(OVERSIZED))
    elif OVERSIZED in frames:
        expected = ("error", frames[: frames.index(OVERSIZED)], "FrameTooLargeError")
    else:
        expected = ("ok", frames, 0)
    for codec in both_codecs:
        decoder = codec.FrameDecoder(preset, **options)
        got = decode_resuming(decoder, wire, seed, max_piece, through_get_buffer, policy == "raise")
        assert got == expected


# -- the message decoder ------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 9, 1 << 20])
def test_message_decoder_on_oversized(codec, piece):
    encoder = MessageEncoder()
    wire = b"".join(encoder.encode(c) for c in [b"ok", b"x" * 150_000, b"y" * 101, {"a": 1}])
    results = {}
    for policy in ("fail", "discard", "raise"):
        decoder = codec.MessageDecoder(max_content_size=100, on_oversized=policy)
        resuming = policy == "raise"
        results[policy] = decode_resuming(decoder, wire, piece, piece, piece == 9, resuming)[:2]
        if policy != "fail":
            assert decoder.discarded == 2
    values = {
        k: (status, [m if m is OVERSIZED else m.value for m in got])
        for k, (status, got) in results.items()
    }
    assert values == {
        "fail": ("error", [b"ok"]),
        "discard": ("ok", [b"ok", {"a": 1}]),
        "raise": ("ok", [b"ok", OVERSIZED, OVERSIZED, {"a": 1}]),
    }


def test_message_decoder_refuses_an_unknown_policy(codec):
    with pytest.raises(ValueError, match="on_oversized must be one of"):
        codec.MessageDecoder(on_oversized="ignore")


def test_message_content_left_unfinished_is_incomplete(codec):
    decoder = codec.MessageDecoder(max_content_size=10, on_oversized="discard")
    decoder.feed(MessageEncoder().encode(b"z" * 50)[:-5])
    with pytest.raises(IncompleteFrameError):
        decoder.eof()
