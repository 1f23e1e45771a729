"""pytest-benchmark versions of ``python -m framecodec bench``: ``pytest bench/``.

The cases are the same functions the command times, so the two cannot drift.
"""

import pytest

from framecodec.codec import _impl, bench

SIZES = [16, 64, 1024, 64 * 1024, 1024 * 1024]
CONTENDERS = ["naive", "cython", "python"]


def _stream(size):
    count = bench.frame_count_for(size, quick=True)
    payloads = [bytes(i % 251 for i in range(size))] * count
    return count, payloads, bench.naive_encode(payloads)


def _decoder_for(contender):
    if contender == "naive":
        return bench.naive_decode
    return bench.decode_by_feed(_impl.load(contender))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contender", CONTENDERS)
def test_decode_feed(benchmark, contender, size):
    count, _, stream = _stream(size)
    chunks = bench.chunked(stream, bench.CHUNK)
    assert benchmark(_decoder_for(contender), chunks) == count


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contender", ["cython", "python"])
def test_decode_get_buffer(benchmark, contender, size):
    count, _, stream = _stream(size)
    assert benchmark(bench.decode_by_get_buffer(_impl.load(contender)), stream) == count


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("contender", CONTENDERS)
def test_encode_many(benchmark, contender, size):
    _, payloads, stream = _stream(size)
    if contender == "naive":
        encode = bench.naive_encode
    else:
        encode = _impl.load(contender).FrameEncoder(max_frame_size=1 << 30).encode_many
    per_batch = max(1, bench.CHUNK // size)
    batches = [payloads[i : i + per_batch] for i in range(0, len(payloads), per_batch)]
    assert b"".join(benchmark(bench.encode_in_batches(encode), batches)) == stream


@pytest.mark.parametrize("size", SIZES)
def test_msgpack_unpacker(benchmark, size):
    msgpack = pytest.importorskip("msgpack")
    count, payloads, _ = _stream(size)
    packed = bench.chunked(b"".join(msgpack.packb(p) for p in payloads), bench.CHUNK)
    assert benchmark(bench.msgpack_decode(msgpack), packed) == count
