"""The Cython-level API (capi.pxd), built here as a consumer builds it.

examples/cython_checksum and a probe module are compiled against the
installed package; the probe's frames and errors are compared with the
Python API's on the same streams, then the example checksums 16 B frames
over loopback TCP.
"""

import importlib.util
import os
import pathlib
import socket
import sys
import threading

import pytest

import framecodec
from framecodec import FrameDecoder, FrameEncoder
from framecodec.errors import FrameTooLargeError, MalformedHeaderError, ProtocolError

from ..conftest import needs_compiled_core

pytestmark = [
    needs_compiled_core,  # the C API is the compiled core's: PyPy and pure builds have none
    pytest.mark.skipif(
        sys.implementation.name != "cpython", reason="PyPy has no compiled core, so no C API"
    ),
]

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLE = HERE.parent.parent / "examples" / "cython_checksum"
TIMEOUT = 30.0


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(checksum, probe): the example and the probe, compiled into a temp dir."""
    pytest.importorskip("Cython", reason="building a C API consumer needs Cython (test extra)")
    build = _load("cython_checksum_build", EXAMPLE / "build.py")
    out = str(tmp_path_factory.mktemp("capi"))
    build.build(out, sources=("checksum.pyx", str(HERE / "capi_probe.pyx")))
    sys.path.insert(0, out)
    try:
        import capi_probe
        import checksum
    finally:
        sys.path.remove(out)
    return checksum, capi_probe


def python_api(decoder, data, piece=None):
    """The Python API on the same stream, through get_buffer in the same pieces."""
    frames = []
    done = 0
    while done < len(data):
        view = decoder.get_buffer()
        n = min(len(view), len(data) - done, piece or len(data))
        view[:n] = data[done : done + n]
        done += n
        try:
            frames.extend(decoder.buffer_updated(n))
        except ProtocolError as exc:
            frames.extend(exc.frames)
            return frames, exc
    return frames, None


def c_api(probe, decoder, data, piece=None):
    frames = []
    try:
        if piece is None:
            probe.feed(decoder, data, frames)
        else:
            probe.feed_in_pieces(decoder, data, piece, frames)
    except ProtocolError as exc:
        frames.extend(exc.frames)
        return frames, exc
    return frames, None


def state(decoder):
    """What a caller can see of a decoder after a stream."""
    seen = [decoder.buffered, decoder.mid_frame, decoder.stopped, decoder.discarded]
    try:
        decoder.eof()
        seen.append(None)
    except Exception as exc:  # the very error each API ends with
        seen.append((type(exc), str(exc)))
    return seen


def stream(payloads, **options):
    return FrameEncoder(**options).encode_many(payloads)


SMALL = [bytes([i % 251]) * (i % 40) for i in range(500)]
MIXED = [b"a" * 16, os.urandom(70_000), b"", b"b" * 300, os.urandom(200_000), b"c" * 16]

CASES = {
    "small frames": ({}, stream(SMALL)),
    "large frames in place": ({}, stream(MIXED)),
    "uint16 little-endian": (
        {"width": 2, "byteorder": "little"},
        stream(SMALL, width=2, byteorder="little"),
    ),
    "multiprocessing escape": (
        {"format": "multiprocessing"},
        stream(MIXED, format="multiprocessing"),
    ),
    "an oversized frame fails": (
        {"max_frame_size": 100},
        stream([*SMALL[:5], b"x" * 101, *SMALL[:5]]),
    ),
    "oversized frames discarded": (
        {"max_frame_size": 100, "on_oversized": "discard"},
        stream([*SMALL[:50], b"x" * 5000, *SMALL[:50]]),
    ),
    "a bad header": (
        {"length_adjustment": -8},
        stream([b"12345678" + b"p" * 20]) + b"\x00\x00\x00\x01",
    ),
    "a truncated stream": ({}, stream(SMALL[:20])[:-3]),
    "checksummed frames": ({"checksum": "crc32c"}, stream(SMALL + MIXED, checksum="crc32c")),
    "a corrupted frame fails": (
        {"checksum": "crc32c"},
        stream(SMALL[:30], checksum="crc32c") + b"\x00\x00\x00\x01x\x00\x00\x00\x00",
    ),
    "corrupted frames discarded": (
        {"checksum": "crc32c", "on_oversized": "discard"},
        (stream(SMALL[:30], checksum="crc32c") + b"\x00\x00\x00\x01x\x00\x00\x00\x00") * 3,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_c_api_delivers_and_fails_as_the_python_api(built, case):
    _, probe = built
    options, data = CASES[case]
    expected, expected_error = python_api(FrameDecoder(**options), data)
    decoder = FrameDecoder(**options)
    frames, error = c_api(probe, decoder, data)
    assert frames == expected
    assert type(error) is type(expected_error)
    assert str(error) == str(expected_error)
    reference = FrameDecoder(**options)
    python_api(reference, data)
    if error is None:
        assert state(decoder) == state(reference)
    else:
        # After a protocol error the Python API's ``buffered`` still counts
        # the frames riding on the error; next_frame had handed those out.
        assert state(decoder)[1:] == state(reference)[1:]


# Reads this long split frames inside headers, inside bodies and between
# them; next_frame then runs inline, through _c_next, and through the shared
# path in turn.
PIECES = [3, 21, 4093]


@pytest.mark.parametrize("piece", PIECES)
@pytest.mark.parametrize("case", list(CASES))
def test_split_reads_give_the_python_apis_frames_and_errors(built, case, piece):
    _, probe = built
    options, data = CASES[case]
    expected, expected_error = python_api(FrameDecoder(**options), data, piece)
    decoder = FrameDecoder(**options)
    frames, error = c_api(probe, decoder, data, piece)
    assert frames == expected
    assert type(error) is type(expected_error)
    assert str(error) == str(expected_error)
    reference = FrameDecoder(**options)
    python_api(reference, data, piece)
    assert state(decoder)[1:] == state(reference)[1:]


@pytest.mark.parametrize("piece", [1, 7, 64])
def test_stop_after_in_split_reads_stops_at_the_same_frame(built, piece):
    _, probe = built
    data = stream(SMALL[:30]) + b"other protocol"
    decoder = FrameDecoder()
    decoder.stop_after(12)
    frames = []
    probe.feed_in_pieces(decoder, data, piece, frames)
    assert frames == SMALL[:12]
    assert decoder.stopped
    assert decoder.detach() == stream(SMALL[12:30]) + b"other protocol"


def test_stop_after_between_frames_of_one_read_counts_from_there(built):
    # Frames already buffered and taken inline: stop_after, a public call,
    # ends the inline path, so the count starts at the next frame.
    _, probe = built
    payloads = [bytes([i]) * 16 for i in range(10)]
    decoder = FrameDecoder()
    before, after = probe.pull_then_stop(decoder, stream(payloads), 3, 2)
    assert before == payloads[:3]
    assert after == payloads[3:5]
    assert decoder.stopped
    assert decoder.detach() == stream(payloads[5:])


def test_frames_of_one_read_are_spans_of_one_buffer(built):
    # Ordinary frames come as (pointer, length) into the decoder's buffer,
    # back to back behind their 4-byte headers: no bytes object each.
    _, probe = built
    payloads = [b"x" * (i % 20) for i in range(100)]
    spans = probe.span_offsets(FrameDecoder(), stream(payloads))
    offset = 0
    for (at, size), payload in zip(spans, payloads):
        assert (at, size) == (offset, len(payload))
        offset += len(payload) + 4
    assert len(spans) == len(payloads)


def test_oversized_raise_carries_on_as_the_python_api(built):
    _, probe = built
    data = stream([b"a" * 10, b"x" * 500, b"b" * 10, b"c" * 10], max_frame_size=4000)
    decoder = FrameDecoder(max_frame_size=100, on_oversized="raise")
    frames = []
    with pytest.raises(FrameTooLargeError) as caught:
        probe.feed(decoder, data, frames)
    assert frames + caught.value.frames == [b"a" * 10]
    assert probe.pull(decoder) == [b"b" * 10, b"c" * 10]  # the next call carries on
    assert decoder.discarded == 1
    decoder.eof()


def test_stop_after_holds_the_rest_for_detach(built):
    _, probe = built
    data = stream([b"one", b"two", b"three"]) + b"other protocol"
    decoder = FrameDecoder()
    decoder.stop_after(2)
    frames = []
    probe.feed(decoder, data, frames)
    assert frames == [b"one", b"two"]
    assert decoder.stopped
    assert probe.pull(decoder) == []
    assert decoder.detach() == stream([b"three"]) + b"other protocol"


def test_a_failed_decoder_raises_again(built):
    _, probe = built
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        probe.feed(decoder, stream([b"x" * 11]), [])
    with pytest.raises(FrameTooLargeError):
        probe.pull(decoder)
    with pytest.raises(FrameTooLargeError):
        probe.received(decoder, 0)


def test_frames_received_checks_its_call(built):
    _, probe = built
    decoder = FrameDecoder()
    with pytest.raises(RuntimeError, match="without a preceding get_buffer"):
        probe.received(decoder, 1)
    view = decoder.get_buffer(10)
    with pytest.raises(ValueError, match="nbytes must be between 0 and"):
        probe.received(decoder, len(view) + 1)
    decoder.get_buffer(10)
    with pytest.raises(MalformedHeaderError):
        # the bytes are recorded, then parsed by next_frame
        FrameDecoder(length_adjustment=-8).feed(b"\x00\x00\x00\x01")


def test_the_example_checksums_16_byte_frames_over_tcp(built):
    checksum, _ = built
    reference = _load("cython_checksum_reference", EXAMPLE / "reference.py")
    payloads = [os.urandom(16) for _ in range(50_000)]
    data = FrameEncoder().encode_many(payloads)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def send():
        with listener, listener.accept()[0] as conn:
            conn.sendall(data)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as sock:
            result = checksum.checksum_socket(sock, framecodec.FrameDecoder())
    finally:
        sender.join(TIMEOUT)
    assert not sender.is_alive()
    assert result == reference.checksum_frames(payloads)
    assert result[0] == 50_000
