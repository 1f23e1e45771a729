"""Property and differential tests: how the stream is cut never matters, and
the compiled core and its twin agree on every stream, good or bad."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecodec import PRESETS, MessageEncoder
from framecodec.errors import ProtocolError

from .codec_support import bodies_for

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

payload_lists = st.lists(st.binary(max_size=300), max_size=20)
big_payload = st.integers(min_value=60_000, max_value=140_000).map(
    lambda n: bytes(n % 251 for n in range(n))
)


def cut_points(data, rng, max_piece):
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_piece)
        yield data[pos : pos + size]
        pos += size


def run(decoder, data, seed, max_piece, through_get_buffer):
    """Decode ``data`` cut at random; the frames, or (error type, message, frames so far)."""
    rng = random.Random(seed)
    out = []
    try:
        for piece in cut_points(data, rng, max_piece):
            if through_get_buffer:
                while piece:
                    view = decoder.get_buffer(rng.choice([-1, 1, len(piece)]))
                    n = min(len(view), len(piece))
                    view[:n] = piece[:n]
                    piece = piece[n:]
                    out += decoder.buffer_updated(n)
            else:
                out += decoder.feed(piece)
        decoder.eof()
    except ProtocolError as exc:
        return ("error", type(exc).__name__, str(exc), out + exc.frames)
    return ("ok", out)


def expected_frames(preset, encoded_frames, payloads):
    return encoded_frames if PRESETS[preset].strip == 0 else payloads


@SETTINGS
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    payloads=payload_lists,
    big=st.one_of(st.none(), big_payload),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([1, 5, 100, 70_000]),
    through_get_buffer=st.booleans(),
)
def test_any_cutting_gives_back_exactly_the_frames(
    codec_both, preset, payloads, big, seed, max_piece, through_get_buffer
):
    if big is not None and preset != "uint16":
        payloads = [*payloads[:3], big, *payloads[3:]]
    payloads = bodies_for(preset, payloads)
    for codec in codec_both:
        encoder = codec.FrameEncoder(preset)
        frames = [encoder.encode(p) for p in payloads]
        result = run(
            codec.FrameDecoder(preset), b"".join(frames), seed, max_piece, through_get_buffer
        )
        assert result == ("ok", expected_frames(preset, frames, payloads))


@SETTINGS
@given(
    messages=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.text(max_size=50),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        ),
        max_size=10,
    ),
    seed=st.integers(0, 2**32),
    max_piece=st.sampled_from([1, 7, 1000]),
    through_get_buffer=st.booleans(),
)
def test_messages_survive_any_cutting(codec_both, messages, seed, max_piece, through_get_buffer):
    encoder = MessageEncoder()
    wire = b"".join(encoder.encode(m) for m in messages)
    for codec in codec_both:
        status, decoded = run(codec.MessageDecoder(), wire, seed, max_piece, through_get_buffer)
        assert status == "ok"
        values = [m.value for m in decoded]
        assert values == [
            m if not isinstance(m, (bytearray, memoryview)) else bytes(m) for m in messages
        ]


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if data and choice < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif data and choice < 0.75:
            del data[rng.randrange(len(data)) :]
        else:
            data[rng.randrange(len(data) + 1) : 0] = bytes(
                rng.randrange(256) for _ in range(rng.randint(1, 9))
            )
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    payloads=payload_lists,
    seed=st.integers(0, 2**32),
    options=st.sampled_from(
        [
            {},
            {"max_frame_size": 50},
            {"max_frame_size": 50, "discard_oversized": True},
            {"max_frame_size": 50, "on_oversized": "raise"},
            {"max_frame_length": 60, "on_oversized": "discard"},
            {"strip": 0},
        ]
    ),
)
def test_compiled_and_twin_agree_on_mutated_streams(both_codecs, preset, payloads, seed, options):
    compiled, twin = both_codecs
    rng = random.Random(seed)
    wire = mutate(twin.FrameEncoder(preset).encode_many(bodies_for(preset, payloads)), rng)
    max_piece = rng.choice([1, 3, 64, 4096])
    via = rng.random() < 0.5
    results = [
        run(codec.FrameDecoder(preset, **options), wire, seed, max_piece, via)
        for codec in (compiled, twin)
    ]
    assert results[0] == results[1]
    # The same stream fed whole gives the same outcome as fed in pieces.
    assert (
        run(compiled.FrameDecoder(preset, **options), wire, seed, len(wire) + 1, False)
        == results[0]
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), seed=st.integers(0, 2**32))
def test_compiled_and_twin_agree_on_random_bytes(both_codecs, data, seed):
    compiled, twin = both_codecs
    for make in (
        lambda c: c.FrameDecoder(max_frame_size=1000),
        lambda c: c.FrameDecoder("multiprocessing"),
        lambda c: c.FrameDecoder("postgres"),
        lambda c: c.FrameDecoder(width=8, length_adjustment=-3),
        lambda c: c.MessageDecoder(max_content_size=100),
    ):
        assert run(make(compiled), data, seed, 17, False) == run(make(twin), data, seed, 17, True)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.dictionaries(st.text(max_size=4), st.integers(), max_size=2), max_size=4),
    seed=st.integers(0, 2**32),
)
def test_compiled_and_twin_agree_on_mutated_messages(both_codecs, messages, seed):
    rng = random.Random(seed)
    wire = mutate(b"".join(MessageEncoder().encode(m) for m in messages), rng)
    results = [
        run(c.MessageDecoder(max_content_size=500), wire, seed, 5, False) for c in both_codecs
    ]
    assert results[0] == results[1]
