"""FrameDecoder and FrameEncoder, run against both implementations."""

import array
import struct

import pytest

from framecodec import PRESETS, FrameFormat
from framecodec.errors import (
    FrameTooLargeError,
    IncompleteFrameError,
    MalformedHeaderError,
    ProtocolError,
)

from .codec_support import bodies_for, read_like_a_socket

PAYLOADS = [b"", b"a", b"hello", bytes(range(256)) * 3, b"\x00" * 70_000]


def feed_in_pieces(decoder, data, size):
    out = []
    for start in range(0, len(data), size):
        out += decoder.feed(data[start : start + size])
    return out


def feed_through_get_buffer(decoder, data, size):
    """The recv_into path: copy at most ``size`` bytes into each view handed out."""
    out = []
    pos = 0
    while pos < len(data):
        view = decoder.get_buffer()
        n = min(len(view), size, len(data) - pos)
        view[:n] = data[pos : pos + n]
        pos += n
        out += decoder.buffer_updated(n)
    return out


# -- round trips ------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_every_preset_round_trips_fed_in_pieces(codec, preset, piece):
    encoder = codec.FrameEncoder(preset)
    decoder = codec.FrameDecoder(preset)
    payloads = bodies_for(preset, PAYLOADS if preset != "uint16" else PAYLOADS[:4])
    frames = [encoder.encode(p) for p in payloads]
    got = feed_in_pieces(decoder, b"".join(frames), piece)
    if PRESETS[preset].strip == 0:
        assert got == frames  # delivered whole, header included
    else:
        assert got == payloads
    assert decoder.buffered == 0
    decoder.eof()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("piece", [1, 3, 1000, 1 << 20])
def test_every_preset_round_trips_through_get_buffer(codec, preset, piece):
    encoder = codec.FrameEncoder(preset)
    decoder = codec.FrameDecoder(preset, strip=None)
    payloads = bodies_for(preset, PAYLOADS if preset != "uint16" else PAYLOADS[:4])
    data = encoder.encode_many(payloads)
    assert feed_through_get_buffer(decoder, data, piece) == payloads


def test_default_format_is_a_four_byte_big_endian_prefix(codec):
    assert codec.FrameEncoder().encode(b"abc") == b"\x00\x00\x00\x03abc"
    assert codec.FrameDecoder().feed(b"\x00\x00\x00\x03abc\x00\x00\x00") == [b"abc"]


@pytest.mark.parametrize(
    "options, wire",
    [
        ({"width": 1}, b"\x03abc"),
        ({"width": 2}, b"\x00\x03abc"),
        ({"width": 3}, b"\x00\x00\x03abc"),
        ({"width": 3, "byteorder": "little"}, b"\x03\x00\x00abc"),
        ({"width": 8}, b"\x00" * 7 + b"\x03abc"),
        ({"width": 4, "byteorder": "little"}, b"\x03\x00\x00\x00abc"),
        ({"length_adjustment": -4}, b"\x00\x00\x00\x07abc"),  # length counts itself
        ({"length_adjustment": 2}, b"\x00\x00\x00\x01abc"),
    ],
)
def test_length_field_options_match_the_wire(codec, options, wire):
    assert codec.FrameEncoder(**options).encode(b"abc") == wire
    assert codec.FrameDecoder(**options).feed(wire) == [b"abc"]


def test_length_offset_and_strip(codec):
    wire = b"T\x00\x00\x00\x03abc"
    assert codec.FrameEncoder(length_offset=1).encode(b"abc", prefix=b"T") == wire
    assert codec.FrameDecoder(length_offset=1).feed(wire) == [b"abc"]
    assert codec.FrameDecoder(length_offset=1, strip=0).feed(wire) == [wire]
    assert codec.FrameDecoder(length_offset=1, strip=1).feed(wire) == [wire[1:]]


def test_postgres_preset_reads_real_messages(codec):
    # A ReadyForQuery message ('Z', length 5 counting itself, status 'I')
    # followed by a CommandComplete ('C', "SELECT 1\0").
    ready = b"Z\x00\x00\x00\x05I"
    complete = b"C" + struct.pack(">I", 4 + 9) + b"SELECT 1\x00"
    decoder = codec.FrameDecoder("postgres")
    assert decoder.feed(ready + complete) == [ready, complete]
    assert codec.FrameEncoder("postgres").encode(b"I", prefix=b"Z") == ready


def test_grpc_preset_keeps_the_compressed_flag(codec):
    message = b"\x01" + struct.pack(">I", 3) + b"zip"
    assert codec.FrameDecoder("grpc").feed(message) == [message]
    assert codec.FrameEncoder("grpc").encode(b"zip", prefix=b"\x01") == message


def test_prefix_must_be_length_offset_bytes(codec):
    with pytest.raises(ValueError, match=r"exactly length_offset \(1\) bytes, not 2"):
        codec.FrameEncoder(length_offset=1).encode(b"x", prefix=b"ab")


def test_encode_many_equals_the_frames_joined(codec):
    encoder = codec.FrameEncoder()
    payloads = [b"x" * n for n in range(50)]
    assert encoder.encode_many(payloads) == b"".join(encoder.encode(p) for p in payloads)
    assert encoder.encode_many(iter(payloads)) == encoder.encode_many(payloads)
    assert encoder.encode_many([]) == b""


BIG = 64 * 1024  # the core's BIG_FRAME


def test_encode_vectored_joins_small_payloads_and_leaves_large_ones_in_place(codec):
    encoder = codec.FrameEncoder()
    small = [b"a" * 10, b"b" * 20]
    big = bytearray(b"B" * BIG)
    wide = memoryview(array.array("I", range(BIG // 4)))  # len() counts items
    buffers = encoder.encode_vectored([*small, big, *small, wide, b"z"])
    assert buffers[0] == encoder.encode_many(small)
    assert buffers[1] == encoder.header(len(big)) and buffers[2] is big  # not copied
    assert buffers[3] == encoder.encode_many(small)
    assert buffers[4] == encoder.header(len(big))
    assert buffers[5].nbytes == len(big) and buffers[5].obj is wide.obj  # a view, no copy
    assert buffers[6] == encoder.encode(b"z")
    wire = b"".join(bytes(b) for b in buffers)
    frames = [*small, bytes(big), *small, wide.tobytes(), b"z"]
    assert wire == b"".join(encoder.encode(p) for p in frames)
    assert encoder.encode_vectored(iter(small)) == [encoder.encode_many(small)]
    assert encoder.encode_vectored([]) == []


def test_header_is_what_encode_puts_before_the_payload(codec):
    encoder = codec.FrameEncoder()
    assert encoder.header(5) + b"12345" == encoder.encode(b"12345")


BUFFER_TYPES = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": lambda b: memoryview(bytearray(b)),
    "array": lambda b: array.array("B", b),
}


@pytest.mark.parametrize("make", BUFFER_TYPES.values(), ids=BUFFER_TYPES.keys())
def test_any_byte_buffer_is_accepted(codec, make):
    wire = codec.FrameEncoder().encode(make(b"abc"))
    assert wire == b"\x00\x00\x00\x03abc"
    assert codec.FrameDecoder().feed(make(wire)) == [b"abc"]


def test_multibyte_items_count_bytes_not_items(codec):
    payload = array.array("I", [1, 2])
    wire = codec.FrameEncoder().encode(payload)
    assert wire[:4] == struct.pack(">I", payload.itemsize * 2)
    assert codec.FrameDecoder().feed(array.array("I", wire + b"\x00" * (-len(wire) % 4))) == [
        payload.tobytes()
    ]


def test_frames_are_bytes(codec):
    frames = codec.FrameDecoder().feed(codec.FrameEncoder().encode_many([b"a", b"b" * 100_000]))
    assert [type(f) for f in frames] == [bytes, bytes]


# -- limits -------------------------------------------------------------------


def test_max_frame_size_is_inclusive(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10)
    assert decoder.feed(encoder.encode(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(
        FrameTooLargeError, match=r"frame payload of 11 bytes exceeds max_frame_size \(10\)"
    ):
        decoder.feed(encoder.encode(b"x" * 11))


def test_oversized_header_fails_before_any_payload_arrives(codec):
    decoder = codec.FrameDecoder(max_frame_size=100)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 101))  # the header alone


def test_frames_before_a_bad_header_ride_on_the_exception(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=5)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(encoder.encode(b"one") + encoder.encode(b"two") + encoder.encode(b"toolong"))
    assert info.value.frames == [b"one", b"two"]


def test_a_failed_decoder_keeps_failing(codec):
    decoder = codec.FrameDecoder(max_frame_size=5)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 6))
    for call in (lambda: decoder.feed(b"\x00\x00\x00\x01a"), decoder.get_buffer, decoder.eof):
        with pytest.raises(FrameTooLargeError, match="decoder failed earlier") as info:
            call()
        assert info.value.frames == []


def test_a_failed_decoder_raises_again_with_the_cause_and_its_fields(codec):
    decoder = codec.FrameDecoder()
    decoder.feed(codec.FrameEncoder().encode(b"whole") + struct.pack(">I", 10) + b"abc")
    with pytest.raises(IncompleteFrameError) as first:
        decoder.eof()
    assert (first.value.missing, first.value.buffered) == (7, 7)
    with pytest.raises(IncompleteFrameError, match="decoder failed earlier") as again:
        decoder.feed(b"more")
    assert again.value.__cause__ is first.value
    assert (again.value.missing, again.value.buffered) == (7, 7)
    assert again.value.frames == []


def test_discard_oversized_skips_the_frame_and_goes_on(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, discard_oversized=True)
    wire = encoder.encode(b"ok") + encoder.encode(b"x" * 5000) + encoder.encode(b"next")
    assert feed_in_pieces(decoder, wire, 3) == [b"ok", b"next"]
    assert decoder.discarded == 1
    assert decoder.buffered == 0


def test_discard_oversized_does_not_buffer_the_frame(codec):
    decoder = codec.FrameDecoder(max_frame_size=10, discard_oversized=True)
    decoder.feed(struct.pack(">I", 10_000_000) + b"x" * 100)
    assert decoder.buffered == 0
    with pytest.raises(IncompleteFrameError, match="9999900 more needed"):
        decoder.eof()


def test_discard_through_get_buffer(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, discard_oversized=True)
    wire = encoder.encode(b"x" * 300_000) + encoder.encode(b"after")
    assert feed_through_get_buffer(decoder, wire, 10_000) == [b"after"]
    assert decoder.discarded == 1


@pytest.mark.parametrize("raw", [1 << 63, (1 << 64) - 1, 1 << 61])
def test_huge_eight_byte_lengths_are_too_large_not_wrapped(codec, raw):
    decoder = codec.FrameDecoder(width=8, max_frame_size=1 << 40, discard_oversized=True)
    with pytest.raises(FrameTooLargeError, match=f"length field announces {raw} bytes"):
        decoder.feed(struct.pack(">Q", raw))


def test_negative_length_after_adjustment_is_malformed(codec):
    decoder = codec.FrameDecoder(length_adjustment=-4)
    with pytest.raises(MalformedHeaderError, match="negative frame length -1"):
        decoder.feed(b"\x00\x00\x00\x03")


def test_adjustment_overflowing_the_limit_is_too_large(codec):
    # A positive adjustment adds header bytes: they count in the whole frame,
    # not in the payload.
    options = {"width": 8, "length_adjustment": 1 << 32, "max_frame_size": 1 << 40}
    with pytest.raises(FrameTooLargeError, match="payload of 1099511627777 bytes"):
        codec.FrameDecoder(**options).feed(struct.pack(">Q", (1 << 40) + 1))
    decoder = codec.FrameDecoder(**options, max_frame_length=1 << 40)
    with pytest.raises(FrameTooLargeError, match="exceeds max_frame_length"):
        decoder.feed(struct.pack(">Q", (1 << 40)))


def test_encoder_refuses_what_the_field_cannot_express(codec):
    with pytest.raises(FrameTooLargeError, match="1-byte length field"):
        codec.FrameEncoder(width=1).encode(b"x" * 256)
    assert len(codec.FrameEncoder(width=1).encode(b"x" * 255)) == 256
    with pytest.raises(FrameTooLargeError, match="max_frame_size"):
        codec.FrameEncoder(max_frame_size=3).encode(b"abcd")
    with pytest.raises(FrameTooLargeError):
        codec.FrameEncoder(length_adjustment=5).encode(b"abc")  # field would be negative


def test_a_silent_peer_costs_at_most_prealloc_limit(codec):
    decoder = codec.FrameDecoder(max_frame_size=1 << 30, prealloc_limit=4096, read_size=1024)
    decoder.feed(struct.pack(">I", 1 << 29) + b"x" * 100)
    assert len(decoder.get_buffer()) == 4096 - 100


def test_reserved_counts_the_storage_a_large_frame_set_aside(codec):
    decoder = codec.FrameDecoder(max_frame_size=1 << 30, prealloc_limit=100_000)
    decoder.feed(b"\x00\x10")
    assert decoder.reserved == decoder.buffered == 2
    decoder.feed(b"\x00\x00" + b"x" * 1000)  # a 1 MiB frame begins
    assert decoder.buffered == 1000
    assert decoder.reserved == 100_000  # prealloc_limit, set aside for it
    (frame,) = decoder.feed(b"x" * ((1 << 20) - 1000) + b"\x00")
    assert len(frame) == 1 << 20
    assert decoder.reserved == decoder.buffered == 1


def test_a_size_hint_bounds_what_a_large_frame_reserves(codec):
    """A caller that reads little at a time (a server near its memory
    budget) has a large frame's storage reserve little more than it read."""
    decoder = codec.FrameDecoder(max_frame_size=1 << 30)
    wire = codec.FrameEncoder().encode(bytes(range(256)) * 4096)  # 1 MiB
    pos = 0
    frames = []
    while not frames:
        view = decoder.get_buffer(4096)
        n = min(4096, len(view), len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        pos += n
        frames = decoder.buffer_updated(n)
        if not frames:
            assert decoder.reserved <= decoder.buffered * 5 // 4 + 2 * 4096
    assert frames == [wire[4:]]
    unhinted = codec.FrameDecoder(max_frame_size=1 << 30)
    unhinted.feed(wire[:4096])
    assert unhinted.reserved == 256 * 1024  # the default prealloc_limit


def test_memory_is_committed_as_bytes_arrive_not_as_headers_promise(codec):
    decoder = codec.FrameDecoder(max_frame_size=1 << 30, prealloc_limit=4096)
    decoder.feed(struct.pack(">I", 1 << 29) + b"x" * 100_000)
    view = decoder.get_buffer()
    # Storage is at most four times what arrived (here 100 kB), never the
    # 512 MiB announced.
    assert 100_000 + len(view) <= 4 * 100_000
    assert len(view) > 0
    assert decoder.buffered == 100_000 + 4 - 4  # header stripped, payload held


# -- large frames land in place -------------------------------------------------


def test_get_buffer_never_reaches_past_a_large_frame(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder()
    big = bytes(range(256)) * 1024  # 256 KiB
    wire = encoder.encode(big) + encoder.encode(b"tail")
    decoder.feed(wire[:100])
    received = 96
    while received < len(big):
        view = decoder.get_buffer()
        assert len(view) <= len(big) - received
        view[:] = big[received : received + len(view)]
        received += len(view)
        frames = decoder.buffer_updated(len(view))
    assert frames == [big]
    assert decoder.feed(wire[4 + len(big) :]) == [b"tail"]


def test_after_a_large_frame_reads_stop_at_the_next_header(codec):
    # Back-to-back large frames: each header is read alone, so the payload
    # behind it is read straight into the frame's own storage, never into the
    # shared buffer to be copied from there.
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(read_size=64 * 1024)
    big = bytes(range(256)) * 256  # 64 KiB
    sizes = []
    assert read_like_a_socket(decoder, encoder.encode(big), sizes) == [big]
    sizes.clear()
    assert read_like_a_socket(decoder, encoder.encode(big) * 3, sizes) == [big] * 3
    assert sizes == [4, len(big)] * 3


def test_small_frames_after_a_large_one_get_full_reads_again(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(read_size=64 * 1024)
    big, small = b"B" * (128 * 1024), b"s" * 10
    sizes = []
    wire = encoder.encode(big) + encoder.encode(small) * 3
    assert read_like_a_socket(decoder, wire, sizes) == [big] + [small] * 3
    # the header alone, then just the rest of the small frame it begins...
    assert sizes[-3:-1] == [4, len(small)]
    assert sizes[-1] >= 64 * 1024  # ...then whole reads again
    # That read brought 28 bytes: the stream went quiet, so the next read
    # is offered half as much (see the next tests).
    assert len(decoder.get_buffer()) == 32 * 1024


def fill(decoder, data):
    """One read of ``data`` (which fits the view) through get_buffer."""
    view = decoder.get_buffer()
    assert len(view) >= len(data)
    view[: len(data)] = data
    return len(view), decoder.buffer_updated(len(data))


def test_reads_are_offered_more_room_while_they_fill_it(codec):
    decoder = codec.FrameDecoder(read_size=64 * 1024)
    stream = codec.FrameEncoder().encode(b"x" * 12) * 20_000  # 16 B frames
    offered, pos = [], 0
    for _ in range(5):
        view = decoder.get_buffer()
        offered.append(len(view))
        view[:] = stream[pos : pos + len(view)]  # a read that fills the view
        pos += len(view)
        decoder.buffer_updated(len(view))
    assert offered[0] == 1024  # a new connection starts small...
    assert offered[1] >= 4 * 1024 and offered[2] >= 16 * 1024  # ...grows 4x a full read...
    assert offered[3] >= 64 * 1024 and offered[4] < 2 * 64 * 1024  # ...up to read_size


def test_small_reads_halve_the_room_down_to_its_minimum(codec):
    decoder = codec.FrameDecoder(read_size=64 * 1024)
    frame = codec.FrameEncoder().encode(b"y" * 12)
    for _ in range(3):  # full reads: room up to read_size
        size = len(decoder.get_buffer())
        fill(decoder, (frame * (size // 16 + 1))[:size])
    offered = []
    for _ in range(8):  # then a 16 B request at a time
        size, frames = fill(decoder, frame)
        offered.append(size)
        assert len(frames) == 1
    assert offered[0] >= 64 * 1024
    assert offered == sorted(offered, reverse=True)
    # Down to the minimum (the view is all the buffer's spare room, and a
    # buffer up to 4x what it needs is left as it is).
    assert offered[-1] <= 4 * 1024


def test_a_rest_of_frame_is_offered_whole(codec):
    decoder = codec.FrameDecoder(read_size=64 * 1024)
    fill(decoder, codec.FrameEncoder().header(40_000) + b"z" * 10)
    # 40,000 bytes announced, 10 here: the next read may bring the rest at once.
    assert len(decoder.get_buffer()) >= 40_000 - 10


try:
    import tracemalloc
except ImportError:  # PyPy has none
    tracemalloc = None

needs_tracemalloc = pytest.mark.skipif(
    tracemalloc is None, reason="no tracemalloc here (PyPy): decoders' memory is traced on CPython"
)


def traced_bytes_per_decoder(make, count=200):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoders = [make() for _ in range(count)]
        return (tracemalloc.get_traced_memory()[0] - before) / len(decoders)
    finally:
        tracemalloc.stop()


@needs_tracemalloc
def test_a_connection_that_sent_a_byte_costs_little_memory(codec):
    def one_byte():
        decoder = codec.FrameDecoder()
        fill(decoder, b"\0")
        return decoder

    # Before the read room adapted, each held read_size (64 KiB).
    assert traced_bytes_per_decoder(one_byte) < 4 * 1024


@needs_tracemalloc
def test_a_quiet_connection_gives_back_its_peak_buffer(codec):
    frame = codec.FrameEncoder().encode(b"q" * 12)

    def burst_then_quiet():
        decoder = codec.FrameDecoder()
        for _ in range(4):  # full reads of 16 B frames, then a frame's start
            size = len(decoder.get_buffer())
            fill(decoder, (frame * (size // 16 + 1))[:size])
        fill(decoder, b"\0")  # and one byte more: the stream went quiet
        assert decoder.buffered < 16
        return decoder

    assert traced_bytes_per_decoder(burst_then_quiet) < 4 * 1024


def test_sizehint_is_honoured(codec):
    decoder = codec.FrameDecoder(read_size=16)
    assert len(decoder.get_buffer(1000)) >= 1000
    assert len(decoder.get_buffer()) >= 16


@pytest.mark.parametrize("bad", [1.0, "1", None])
def test_both_cores_refuse_a_non_integer_size_alike(codec, bad):
    decoder = codec.FrameDecoder()
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        decoder.get_buffer(bad)
    decoder.get_buffer()
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        decoder.buffer_updated(bad)
    decoder.get_buffer()
    assert decoder.buffer_updated(0) == []  # the decoder is unharmed
    assert decoder.get_buffer(True) is not None  # bool is an int


def test_buffer_updated_checks_its_argument(codec):
    decoder = codec.FrameDecoder()
    with pytest.raises(RuntimeError, match="without a preceding get_buffer"):
        decoder.buffer_updated(1)
    view = decoder.get_buffer()
    with pytest.raises(ValueError, match="between 0 and"):
        decoder.buffer_updated(len(view) + 1)
    view = decoder.get_buffer()
    assert decoder.buffer_updated(0) == []


def test_the_view_is_released_at_the_next_call(codec):
    decoder = codec.FrameDecoder()
    view = decoder.get_buffer()
    view[:4] = b"\x00\x00\x00\x01"
    decoder.buffer_updated(4)
    with pytest.raises(ValueError):
        view[0] = 1  # released: it can no longer write into the decoder's memory


def test_moving_memory_under_a_kept_view_is_a_buffer_error(codec):
    decoder = codec.FrameDecoder(read_size=8)
    kept = memoryview(decoder.get_buffer())  # a second view the decoder cannot release
    kept[:5] = b"\x00\x00\x00\x01a"
    assert decoder.buffer_updated(5) == [b"a"]
    with pytest.raises(BufferError):
        decoder.get_buffer(1 << 20)  # needs to grow the buffer kept is pinned to
    kept.release()
    assert len(decoder.get_buffer(1 << 20)) >= 1 << 20


def test_a_delivered_frame_never_changes(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder()
    frames = decoder.feed(encoder.encode(b"first") + b"\x00\x00")
    assert decoder.feed(b"\x00\x05" + b"zzzzz") == [b"zzzzz"]
    decoder.feed(encoder.encode(b"y" * 100_000))
    assert frames == [b"first"]


# -- end of stream -------------------------------------------------------------


def test_eof_between_frames_is_clean(codec):
    decoder = codec.FrameDecoder()
    decoder.feed(codec.FrameEncoder().encode(b"done"))
    decoder.eof()


@pytest.mark.parametrize(
    "cut, buffered, missing",
    [(2, 2, 2), (4, 4, 10), (9, 9, 5)],  # inside the header, just after it, mid-payload
)
def test_eof_inside_a_frame_says_how_much_is_missing(codec, cut, buffered, missing):
    decoder = codec.FrameDecoder()
    decoder.feed(codec.FrameEncoder().encode(b"x" * 10)[:cut])
    assert decoder.buffered == buffered
    with pytest.raises(
        IncompleteFrameError, match=f"{buffered} bytes buffered, {missing} more needed"
    ) as info:
        decoder.eof()
    assert (info.value.buffered, info.value.missing) == (buffered, missing)


def test_eof_inside_a_large_frame(codec):
    decoder = codec.FrameDecoder()
    decoder.feed(codec.FrameEncoder().encode(b"x" * 200_000)[:100_004])
    with pytest.raises(IncompleteFrameError) as info:
        decoder.eof()
    assert info.value.missing == 100_000


# -- multiprocessing.connection's format ------------------------------------------


def test_multiprocessing_escape_for_frames_of_2_gib_and_more(codec):
    encoder = codec.FrameEncoder("multiprocessing", max_frame_size=1 << 40)
    assert encoder.header(0x7FFFFFFF) == b"\x7f\xff\xff\xff"
    assert encoder.header(0x80000000) == b"\xff\xff\xff\xff" + struct.pack(">Q", 0x80000000)
    # Decoding an escaped header for a small frame (legal, if unusual).
    wire = b"\xff\xff\xff\xff" + struct.pack(">Q", 3) + b"abc"
    assert feed_in_pieces(codec.FrameDecoder("multiprocessing"), wire, 1) == [b"abc"]


def test_multiprocessing_negative_lengths_are_malformed(codec):
    with pytest.raises(MalformedHeaderError, match=r"negative frame length \(0x80000000\)"):
        codec.FrameDecoder("multiprocessing").feed(b"\x80\x00\x00\x00")


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"width": 5}, ValueError, "width must be one of"),
        ({"byteorder": "middle"}, ValueError, "byteorder must be one of"),
        ({"strip": 5}, ValueError, "strip must be between 0 and 4"),
        ({"max_frame_size": -1}, ValueError, "max_frame_size must be between"),
        ({"length_offset": "1"}, TypeError, "length_offset must be an int"),
        ({"large_length_escape": True, "width": 2}, ValueError, "large_length_escape needs"),
        ({"colour": "red"}, TypeError, "unknown frame format option"),
    ],
)
def test_bad_options_are_refused(codec, options, error, message):
    with pytest.raises(error, match=message):
        codec.FrameDecoder(**options)
    with pytest.raises(error, match=message):
        codec.FrameEncoder(**options)


def test_unknown_preset(codec):
    with pytest.raises(ValueError, match="unknown frame format 'nope'"):
        codec.FrameDecoder("nope")


def test_format_object_and_overrides(codec):
    fmt = FrameFormat(width=2)
    decoder = codec.FrameDecoder(fmt, max_frame_size=3)
    assert decoder.format == FrameFormat(width=2, max_frame_size=3)
    assert codec.FrameEncoder("uint16").format == fmt


def test_protocol_errors_are_value_errors():
    assert issubclass(ProtocolError, ValueError)
    for cls in (FrameTooLargeError, MalformedHeaderError, IncompleteFrameError):
        assert issubclass(cls, ProtocolError)


def test_a_kept_view_of_a_large_frame_never_reaches_the_delivered_frame(codec):
    payload = bytes(range(256)) * 400  # 100 kB: received in its own storage
    wire = codec.FrameEncoder().encode(payload)
    decoder = codec.FrameDecoder()
    decoder.feed(wire[:1000])
    view = decoder.get_buffer()
    kept = memoryview(view)  # a second view the decoder cannot release
    kept[: len(wire) - 1000] = wire[1000:]
    (frame,) = decoder.buffer_updated(len(wire) - 1000)
    kept[:10] = b"\xff" * 10  # still writable: it points at memory the frame does not share
    assert frame == payload
    kept.release()


def test_large_frame_storage_does_not_grow_under_a_kept_view(codec):
    decoder = codec.FrameDecoder(prealloc_limit=70_000, read_size=70_000)
    decoder.feed(codec.FrameEncoder().header(300_000))
    kept = memoryview(decoder.get_buffer())
    kept[:] = b"x" * len(kept)
    decoder.buffer_updated(len(kept))
    with pytest.raises(BufferError):
        decoder.get_buffer()  # the storage must grow, and kept pins it
    kept.release()
    assert len(decoder.get_buffer()) > 0


def test_mid_frame_says_whether_a_frame_has_begun(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder(max_frame_size=10, discard_oversized=True)
    assert not decoder.mid_frame
    decoder.feed(b"\x00\x00")
    assert decoder.mid_frame
    decoder.feed(b"\x00\x02ab")
    assert not decoder.mid_frame
    decoder.feed(encoder.encode(b"x" * 50)[:20])  # oversized: being discarded
    assert decoder.mid_frame and decoder.buffered == 0
    decoder.feed(b"x" * 34)
    assert not decoder.mid_frame


KEPT_VIEW = r"""
import json, sys
from framecodec.codec import _impl
codec = _impl.load(sys.argv[1])
decoder = codec.FrameDecoder()
decoder.feed((100_000).to_bytes(4, "big"))
view = decoder.get_buffer(); kept = view[:64]; view[:] = b"x" * len(view)
(frame,) = decoder.buffer_updated(len(view))
others = [bytes([i]) * 100_000 for i in range(1, 9)]
seen = bytes(kept); kept[:] = b"Z" * 64
intact = all(o == bytes([i]) * 100_000 for i, o in enumerate(others, 1))
print(json.dumps({"seen": seen.decode("latin-1"), "frame_intact": frame == b"x" * 100_000,
                  "others_intact": intact}))
"""


def test_a_view_kept_past_delivery_of_a_large_frame_stays_valid(codec):
    # In a child process: a use-after-free must not take down pytest.
    import json
    import subprocess
    import sys

    name = "cython" if codec.COMPILED else "python"
    out = subprocess.run(
        [sys.executable, "-c", KEPT_VIEW, name], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"seen": "x" * 64, "frame_intact": True, "others_intact": True}


def test_an_absurd_size_hint_is_refused_alike_by_both_cores(codec):
    import sys

    decoder = codec.FrameDecoder()
    decoder.feed(b"\x00")
    with pytest.raises(OverflowError):
        decoder.get_buffer(sys.maxsize)
