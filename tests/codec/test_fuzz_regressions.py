"""Regression tests from fuzzing the codec core (fuzz/, docs/reliability.md).

The atheris harnesses' own checks run here on both cores, without atheris:

* every seed of fuzz/corpus/fuzz_frames and fuzz/corpus/fuzz_messages is
  decoded with its input-chosen options and cut points, and after every call
  the decoder must agree with the whole-stream reference model of
  fuzz/_fuzzlib.py (frames, error types, ``buffered``, ``discarded``,
  IncompleteFrameError's fields), raising nothing but ProtocolError
  subclasses and the documented API errors;
* every seed of fuzz/corpus/fuzz_differential is decoded by the compiled
  core and the twin in lock step, and they must agree exactly.

An input that crashed a harness goes into CRASH_INPUTS once the core
handles it, with a plain test of the bug beside it, so the fixed bug stays
fixed on both cores.  Findings the core does not handle yet are kept out of
this file (their tests fail); docs/reliability.md lists them.
"""

import importlib
import sys
from pathlib import Path

import pytest

from framecodec.errors import MalformedHeaderError

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = ("fuzz_frames", "fuzz_messages", "fuzz_differential")

# (harness, input as hex, what it found): inputs that made a harness report a
# finding, replayed through that harness's checks on both cores.
CRASH_INPUTS = [
    # fuzz_messages, 323 s into its first run: a message header of 0x5b5b
    # bytes, all "[", synthesized through get_buffer with read_size=1; json
    # raised RecursionError through MessageDecoder (fixed in 3178e85).
    (
        "fuzz_messages",
        "0079100000005c0000001379105c13080010005b0075656e637479706500000010",
        "RecursionError from a deeply nested JSON header",
    ),
]


@pytest.fixture(scope="module")
def harness():
    """The harness modules of fuzz/ (plain Python; atheris is not needed)."""
    sys.path.insert(0, str(FUZZ_DIR))
    try:
        return {name: importlib.import_module(name) for name in HARNESSES}
    finally:
        sys.path.remove(str(FUZZ_DIR))


def seeds(name):
    paths = sorted((FUZZ_DIR / "corpus" / name).iterdir())
    assert paths, f"no seeds in fuzz/corpus/{name}; run fuzz/make_corpus.py"
    return [(path.name, path.read_bytes()) for path in paths]


def run_all(check, inputs):
    failures = []
    for name, data in inputs:
        try:
            check(data)
        except AssertionError as exc:  # the harnesses' Finding
            failures.append(f"{name}: {exc}")
    assert not failures, f"{len(failures)} of {len(inputs)} inputs failed:\n" + "\n".join(
        failures[:5]
    )


@pytest.mark.parametrize("name", ["fuzz_frames", "fuzz_messages"])
def test_seed_corpus_agrees_with_the_reference_model(codec, harness, name):
    run_all(lambda data: harness[name].check_input(data, codec), seeds(name))


def test_seed_corpus_decodes_identically_in_both_cores(both_codecs, harness):
    compiled, twin = both_codecs
    run_all(
        lambda data: harness["fuzz_differential"].check_input(data, compiled, twin),
        seeds("fuzz_differential"),
    )


@pytest.mark.parametrize("name, data, found", CRASH_INPUTS, ids=[c[2] for c in CRASH_INPUTS])
def test_input_that_crashed_a_harness(codec, both_codecs, harness, name, data, found):
    raw = bytes.fromhex(data)
    harness[name].check_input(raw, codec)
    harness["fuzz_differential"].check_input(
        bytes([raw[0] | 1]) + raw[1:] if name == "fuzz_messages" else raw, *both_codecs
    )


def _header(encoding_json):
    return (
        b'{"byteorder": "little", "content-type": "text/plain", "content-encoding": '
        + encoding_json
        + b', "content-length": 0}'
    )


# Message headers that made parse_message_header raise something other than
# a ProtocolError, escaping MessageDecoder (fixed in 3178e85).
HOSTILE_HEADERS = {
    "deeply-nested-json": b"[" * 60_000,  # was RecursionError (found by fuzz_messages)
    "lone-surrogate-encoding": _header(b'"\\ud800"'),  # was UnicodeEncodeError from codecs.lookup
    "nul-in-encoding": _header(b'"utf\\u00008"'),  # was ValueError: embedded null character
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
def test_hostile_message_headers_are_malformed_header_errors(codec, name):
    header = HOSTILE_HEADERS[name]
    decoder = codec.MessageDecoder()
    wire = len(header).to_bytes(2, "big") + header
    with pytest.raises(MalformedHeaderError):
        decoder.feed(wire)
    with pytest.raises(MalformedHeaderError, match="decoder failed earlier"):
        decoder.feed(b"\x00")


def test_the_model_catches_a_decoder_that_drops_a_frame(codec, harness):
    """The replay above proves something only if the model can fail."""

    class DropsSecondFrame:
        def __init__(self, *args, **kwargs):
            self._decoder = codec.FrameDecoder(*args, **kwargs)
            self.format = self._decoder.format

        def feed(self, data):
            frames = self._decoder.feed(data)
            return frames[:1] + frames[2:]

        def __getattr__(self, name):
            return getattr(self._decoder, name)

    class Core:
        FrameDecoder = DropsSecondFrame

    lib = harness["fuzz_frames"].lib
    data = lib.build_input(
        preset="uint32",
        plan=[(lib.FEED, 4096)],
        stream=codec.FrameEncoder().encode_many([b"a", b"b", b"c"]),
    )
    with pytest.raises(AssertionError, match="the model expects 3"):
        harness["fuzz_frames"].check_input(data, Core)
