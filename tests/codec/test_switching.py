"""Switching framing mid-stream: stop_after(), detach(), and the patterns
of docs/switching.md (PostgreSQL's startup packet, a fixed preface)."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import MessageEncoder
from framecodec.errors import DecoderDetachedError

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# PostgreSQL's startup packet: a 4-byte length that counts itself, no type byte.
UNTYPED = {"length_adjustment": -4}


def startup_packet(body=b"\x00\x03\x00\x00user\x00alice\x00\x00"):
    return (4 + len(body)).to_bytes(4, "big") + body


def query(sql):
    body = sql.encode() + b"\x00"
    return b"Q" + (4 + len(body)).to_bytes(4, "big") + body


def test_startup_and_query_in_one_read(codec):
    wire = startup_packet() + query("SELECT 1") + query("SELECT 2")
    # Without switching, the startup packet's first byte reads as a type and
    # the next four as a length: here a frame of 5,888 bytes that never comes.
    assert codec.FrameDecoder("postgres").feed(wire) == []
    startup = codec.FrameDecoder(**UNTYPED)
    startup.stop_after(1)
    assert startup.feed(wire) == [startup_packet()[4:]]
    assert startup.stopped and not startup.mid_frame
    assert startup.buffered == len(wire) - len(startup_packet())
    startup.eof()  # what it holds is for the next decoder, not a frame of its own
    messages = codec.FrameDecoder("postgres")
    assert messages.feed(startup.detach()) == [query("SELECT 1"), query("SELECT 2")]


def test_further_feeds_are_held_once_stopped(codec):
    decoder = codec.FrameDecoder(**UNTYPED)
    decoder.stop_after(2)
    wire = startup_packet(b"a") + startup_packet(b"bc") + startup_packet(b"def")
    assert decoder.feed(wire[:3]) == []
    assert decoder.feed(wire[3:8]) == [b"a"]
    assert not decoder.stopped
    assert decoder.feed(wire[8:]) == [b"bc"]
    assert decoder.feed(b"more") == []
    assert decoder.detach() == startup_packet(b"def") + b"more"


def test_get_buffer_never_offers_room_past_the_last_frame(codec):
    wire = startup_packet() + query("SELECT 1")
    decoder = codec.FrameDecoder(**UNTYPED)
    decoder.stop_after(1)
    pos = 0
    frames = []
    sizes = []
    while not decoder.stopped:
        view = decoder.get_buffer(4096)  # the hint is no licence to read past the frame
        n = min(len(view), len(wire) - pos)
        sizes.append(len(view))
        view[:n] = wire[pos : pos + n]
        pos += n
        frames += decoder.buffer_updated(n)
    assert frames == [startup_packet()[4:]]
    assert pos == len(startup_packet())  # a socket would still hold the query
    assert sizes == [4, len(startup_packet()) - 4]
    assert decoder.detach() == b""


def test_a_large_last_frame_received_in_place_then_stopped(codec):
    big = bytes(range(256)) * 400  # over BIG_FRAME: received in its own storage
    wire = codec.FrameEncoder().encode_many([b"x", big]) + b"after"
    for via_buffer in (False, True):
        decoder = codec.FrameDecoder()
        decoder.stop_after(2)
        if via_buffer:
            frames = []
            pos = 0
            while not decoder.stopped:
                view = decoder.get_buffer()
                n = min(len(view), len(wire) - pos)
                view[:n] = wire[pos : pos + n]
                pos += n
                frames += decoder.buffer_updated(n)
            rest = decoder.detach() + wire[pos:]
        else:
            frames = decoder.feed(wire[:1000]) + decoder.feed(wire[1000:])
            rest = decoder.detach()
        assert frames == [b"x", big]
        assert rest == b"after"


def test_detach_inside_a_frame_received_in_place_keeps_its_header(codec):
    big = bytes(200_000)
    wire = codec.FrameEncoder("postgres").encode(big, prefix=b"D")
    decoder = codec.FrameDecoder("postgres", strip=5)  # delivers the body alone
    decoder.feed(wire[:70_000])
    assert decoder.mid_frame
    rest = decoder.detach()
    assert rest == wire[:70_000]
    assert codec.FrameDecoder("postgres").feed(rest + wire[70_000:]) == [wire]


def test_message_decoder_stops_and_detaches(codec):
    encoder = MessageEncoder()
    wire = b"".join(encoder.encode({"n": n}) for n in range(3))
    decoder = codec.MessageDecoder()
    decoder.stop_after(1)
    assert [m.value for m in decoder.feed(wire)] == [{"n": 0}]
    rest = decoder.detach()
    assert [m.value for m in codec.MessageDecoder().feed(rest)] == [{"n": 1}, {"n": 2}]


def test_message_decoder_detach_mid_content_keeps_the_header(codec):
    for content in (b"x" * 100, b"y" * 100_000):  # buffered, and received in place
        wire = MessageEncoder().encode(content)
        decoder = codec.MessageDecoder()
        decoder.feed(wire[: len(wire) - 10])
        rest = decoder.detach()
        assert rest == wire[: len(wire) - 10]
        assert [m.value for m in codec.MessageDecoder().feed(rest + wire[-10:])] == [content]


def test_a_detached_decoder_refuses_every_call(codec):
    decoder = codec.FrameDecoder()
    decoder.feed(b"\x00\x00")
    assert decoder.detach() == b"\x00\x00"
    assert decoder.buffered == 0 and not decoder.mid_frame and decoder.stopped
    for call in (
        lambda: decoder.feed(b"x"),
        decoder.get_buffer,
        lambda: decoder.buffer_updated(0),
        decoder.eof,
        decoder.detach,
        lambda: decoder.stop_after(1),
    ):
        with pytest.raises(DecoderDetachedError, match="FrameDecoder was detached"):
            call()


def test_detach_is_refused_while_discarding(codec):
    decoder = codec.FrameDecoder(max_frame_size=10, discard_oversized=True)
    decoder.feed(codec.FrameEncoder().encode(bytes(100))[:50])
    with pytest.raises(RuntimeError, match="being discarded"):
        decoder.detach()
    decoder.feed(bytes(54))  # still usable: the discard ends, the stream goes on
    assert decoder.feed(codec.FrameEncoder().encode(b"ok")) == [b"ok"]


def test_stop_after_takes_a_positive_count(codec):
    decoder = codec.FrameDecoder()
    for bad in (0, -1, 1 << 63):
        with pytest.raises(ValueError, match="stop_after needs between 1 and"):
            decoder.stop_after(bad)
    with pytest.raises(TypeError):
        decoder.stop_after(1.5)


def test_stop_after_again_once_stopped(codec):
    encoder = codec.FrameEncoder()
    decoder = codec.FrameDecoder()
    decoder.stop_after(1)
    assert decoder.feed(encoder.encode(b"a")) == [b"a"]
    decoder.stop_after(1)  # nothing held: it may go on, one more frame
    assert decoder.feed(encoder.encode_many([b"b", b"c"])) == [b"b"]
    with pytest.raises(RuntimeError, match="detach"):
        decoder.stop_after(1)
    assert decoder.detach() == encoder.encode(b"c")


def test_a_frame_in_progress_counts_as_the_first(codec):
    wire = codec.FrameEncoder().encode_many([b"abc", b"def"])
    decoder = codec.FrameDecoder()
    assert decoder.feed(wire[:5]) == []
    decoder.stop_after(1)
    assert decoder.feed(wire[5:]) == [b"abc"]
    assert decoder.detach() == wire[7:]


def test_a_fixed_length_preface_then_frames(codec):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    wire = preface + settings_frame
    # A decoder whose 1-byte "length" is the preface's first byte: a frame
    # of exactly 24 bytes when the stream starts with "P".
    opening = codec.FrameDecoder(width=1, length_adjustment=len(preface) - 1 - wire[0], strip=0)
    opening.stop_after(1)
    assert opening.feed(wire[:10]) == []
    assert opening.feed(wire[10:]) == [preface]
    frames = codec.FrameDecoder(width=3, length_adjustment=6, strip=0)
    assert frames.feed(opening.detach()) == [settings_frame]


# -- differential: random streams, random cuts, both cores, both paths


def feed_pieces(decoder, pieces, rng, through_get_buffer):
    """Feed ``pieces`` until the decoder stops; the frames and what it was
    not given (a socket's unread bytes)."""
    out = []
    unread = b""
    for index, piece in enumerate(pieces):
        if decoder.stopped:
            unread = b"".join(pieces[index:])
            break
        if not through_get_buffer:
            out += decoder.feed(piece)
            continue
        while piece:
            if decoder.stopped:
                break
            view = decoder.get_buffer(rng.choice([-1, 1, len(piece)]))
            n = min(len(view), len(piece))
            view[:n] = piece[:n]
            piece = piece[n:]
            out += decoder.buffer_updated(n)
        if piece:
            unread = piece + b"".join(pieces[index + 1 :])
            break
    return out, unread


def cut(data, rng, max_piece):
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_piece)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


bodies = st.lists(
    st.one_of(st.binary(max_size=200), st.integers(65_000, 70_000).map(bytes)),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(
    first=bodies,
    second=st.lists(st.binary(max_size=200), max_size=8),
    stop=st.integers(1, 6),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([3, 100, 5000, 300_000]),
    through_get_buffer=st.booleans(),
)
def test_switch_loses_no_byte_on_any_cut(
    codec_both, first, second, stop, seed, max_piece, through_get_buffer
):
    """Untyped frames, then postgres messages: stopped after ``stop``
    frames, the rest decodes as the second framing, whatever the cuts."""
    results = []
    for codec in codec_both:
        untyped = codec.FrameEncoder(**UNTYPED)
        typed = [codec.FrameEncoder("postgres").encode(b, prefix=b"Q") for b in second]
        head = [untyped.encode(b) for b in first]
        wire = b"".join(head) + b"".join(typed)
        rng = random.Random(seed)
        decoder = codec.FrameDecoder(**UNTYPED)
        stop = min(stop, len(first))  # past them, typed bytes are no untyped frames
        decoder.stop_after(stop)
        frames, unread = feed_pieces(decoder, cut(wire, rng, max_piece), rng, through_get_buffer)
        assert decoder.stopped
        assert frames == list(first[:stop])
        held = decoder.detach()
        if through_get_buffer:
            assert held == b""  # the reads took nothing past the last frame
        tail = b"".join(head[stop:])
        assert held + unread == tail + b"".join(typed)
        assert codec.FrameDecoder("postgres").feed((held + unread)[len(tail) :]) == typed
        results.append((frames, held + unread))
    assert all(r == results[0] for r in results)


@SETTINGS
@given(
    preset=st.sampled_from(["uint32", "uint16", "postgres", "grpc", "multiprocessing"]),
    payloads=st.lists(
        st.one_of(st.binary(max_size=300), st.integers(65_000, 70_000).map(bytes)), max_size=6
    ),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([7, 1000, 200_000]),
    through_get_buffer=st.booleans(),
)
def test_detach_anywhere_returns_every_byte_not_delivered(
    codec_both, preset, payloads, seed, max_piece, through_get_buffer
):
    if preset == "uint16":
        payloads = [p for p in payloads if len(p) < 65_536]
    results = []
    for codec in codec_both:
        encoder = codec.FrameEncoder(preset)
        wire = encoder.encode_many(payloads)
        rng = random.Random(seed)
        pieces = cut(wire, rng, max_piece)
        given_pieces = pieces[: rng.randint(0, len(pieces))]
        decoder = codec.FrameDecoder(preset)
        frames, unread = feed_pieces(decoder, given_pieces, rng, through_get_buffer)
        held = decoder.detach()
        fed = b"".join(given_pieces)
        assert unread == b""
        after = codec.FrameDecoder(preset).feed(held + wire[len(fed) :])
        assert len(frames) + len(after) == len(payloads)
        delivered = encoder.encode_many(payloads[: len(frames)])
        assert held == fed[len(delivered) :]
        results.append((frames, held))
    assert all(r == results[0] for r in results)


@SETTINGS
@given(
    contents=st.lists(
        st.one_of(st.binary(max_size=100), st.integers(65_000, 80_000).map(bytes)), max_size=5
    ),
    stop=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([9, 1000, 200_000]),
    through_get_buffer=st.booleans(),
)
def test_messages_stop_and_detach_on_any_cut(
    codec_both, contents, stop, seed, max_piece, through_get_buffer
):
    encoded = [MessageEncoder().encode(c) for c in contents]
    wire = b"".join(encoded) + b"tail"
    results = []
    for codec in codec_both:
        rng = random.Random(seed)
        decoder = codec.MessageDecoder()
        decoder.stop_after(stop)
        messages, unread = feed_pieces(decoder, cut(wire, rng, max_piece), rng, through_get_buffer)
        assert [m.content for m in messages] == contents[:stop]
        held = decoder.detach()
        if len(contents) >= stop:
            assert held + unread == b"".join(encoded[stop:]) + b"tail"
        results.append(([m.content for m in messages], held + unread))
    assert all(r == results[0] for r in results)
