"""``python -m framecodec bench --codec``: the codec core in memory against
what users write by hand.  (``python -m framecodec bench`` alone measures
over real sockets: see framecodec.benchmarks.)

Every figure is measured in the same run on the same machine, and each row
shows its ratio to the naive baseline measured beside it, so the ratios hold
however busy the machine is.  Contenders:

- cython, python: framecodec's compiled core and its pure-Python twin;
- naive: the loop users write by hand (``struct.unpack_from`` plus slicing to
  decode, ``struct.pack`` plus concatenation to encode);
- cython+crc: the compiled core with ``checksum="crc32c"`` (each frame
  followed by its CRC32C, checked on receipt), beside its row without;
- msgpack: msgpack's C ``Unpacker`` streaming the same payloads as bin
  objects, where msgpack is installed (the best C streaming decoder Python
  users already have).
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import time
from typing import Any, Callable, Dict, List, Tuple

from ..codec import _impl
from .progress import Progress

SIZES = [16, 64, 1024, 4096, 64 * 1024, 1024 * 1024]
QUICK_SIZES = [16, 64, 1024, 4096, 1024 * 1024]
CHECKSUMMED = "cython+crc"  # the compiled core with checksum="crc32c"
CHUNK = 64 * 1024  # decoders are fed the stream in pieces of this size
_unpack_length = struct.Struct(">I").unpack_from
_pack_length = struct.Struct(">I").pack


# -- the naive baseline -------------------------------------------------------


def naive_decode(chunks: List[bytes]) -> int:
    """The hand-written receive loop: append, unpack headers, slice frames."""
    buf = b""
    count = 0
    frames: List[bytes] = []
    for chunk in chunks:
        buf = buf + chunk if buf else chunk
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = _unpack_length(buf, pos)
            if end - pos - 4 < length:
                break
            frames.append(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
        buf = buf[pos:]
        count += len(frames)
        frames.clear()
    return count


def naive_encode(payloads: List[bytes]) -> bytes:
    return b"".join([_pack_length(len(p)) + p for p in payloads])


def encode_in_batches(
    encode_many: Callable[[List[bytes]], bytes],
) -> Callable[[List[List[bytes]]], List[bytes]]:
    """Encoders get the frames in batches of about 64 KiB, one send's worth."""

    def run(batches: List[List[bytes]]) -> List[bytes]:
        return [encode_many(batch) for batch in batches]

    return run


# -- contenders ------------------------------------------------------------------


def decode_by_feed(core: Any, **options: Any) -> Callable[[List[bytes]], int]:
    def run(chunks: List[bytes]) -> int:
        decoder = core.FrameDecoder(max_frame_size=1 << 30, **options)
        feed = decoder.feed
        return sum(len(feed(chunk)) for chunk in chunks)

    return run


def decode_by_get_buffer(core: Any, **options: Any) -> Callable[[bytes], int]:
    """The recv_into path, with a memory copy standing in for the kernel's."""

    def run(stream: bytes) -> int:
        decoder = core.FrameDecoder(max_frame_size=1 << 30, **options)
        source = memoryview(stream)
        get_buffer = decoder.get_buffer
        buffer_updated = decoder.buffer_updated
        pos = 0
        count = 0
        end = len(stream)
        while pos < end:
            view = get_buffer(CHUNK)
            n = min(len(view), CHUNK, end - pos)
            view[:n] = source[pos : pos + n]
            pos += n
            count += len(buffer_updated(n))
        return count

    return run


def msgpack_decode(msgpack: Any) -> Callable[[List[bytes]], int]:
    def run(chunks: List[bytes]) -> int:
        unpacker = msgpack.Unpacker(max_buffer_size=1 << 30)
        count = 0
        for chunk in chunks:
            unpacker.feed(chunk)
            for _ in unpacker:
                count += 1
        return count

    return run


# -- measuring -------------------------------------------------------------------


def measure(fn: Callable[[Any], Any], arg: Any, repeat: int, check: Callable[[Any], bool]) -> float:
    """Fastest of ``repeat`` runs of fn(arg), each checked.

    The minimum, as timeit reports: on a shared machine the other runs
    measure interference, not the code.
    """
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(arg)
        times.append(time.perf_counter() - start)
        if not check(result):
            raise AssertionError(f"{fn} gave a wrong result: {result!r:.80}")
    return min(times)


def frame_count_for(size: int, quick: bool) -> int:
    # 4 MiB of payload per run: small enough to stay in the CPU cache, as
    # bytes just received from a socket are; a larger stream would measure
    # the memory bus instead of the decoders.
    budget = 4 * 1024 * 1024
    return max(8, budget // size)


def chunked(data: bytes, size: int) -> List[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def available_contenders() -> Tuple[Dict[str, Any], Any]:
    """The codec cores that load here, and msgpack or None."""
    cores = {}
    for name in ("cython", "python"):
        try:
            cores[name] = _impl.load(name)
        except ImportError:
            pass
    try:
        import msgpack
    except ImportError:
        msgpack = None
    return cores, msgpack


def bench_size(size: int, quick: bool, cores: Dict[str, Any], msgpack: Any) -> List[Dict[str, Any]]:
    """Rows for one frame size: (operation, contender, seconds) and rates."""
    repeat = 5 if quick else 15
    count = frame_count_for(size, quick)
    payloads = [bytes(i % 251 for i in range(size))] * count
    stream = naive_encode(payloads)
    chunks = chunked(stream, CHUNK)
    per_batch = max(1, CHUNK // size)
    batches = [payloads[i : i + per_batch] for i in range(0, count, per_batch)]

    def all_frames(n: int) -> bool:
        return n == count

    def same_stream(out: List[bytes]) -> bool:
        return b"".join(out) == stream

    compiled = cores.get("cython")
    if compiled is not None:
        sealed = compiled.FrameEncoder(max_frame_size=1 << 30, checksum="crc32c")
        sealed_stream: bytes = sealed.encode_many(payloads)
        sealed_chunks = chunked(sealed_stream, CHUNK)
    timings = [("decode (feed)", "naive", measure(naive_decode, chunks, repeat, all_frames))]
    for name, core in cores.items():
        seconds = measure(decode_by_feed(core), chunks, repeat, all_frames)
        timings.append(("decode (feed)", name, seconds))
    if compiled is not None:
        run = decode_by_feed(compiled, checksum="crc32c")
        timings.append(
            ("decode (feed)", CHECKSUMMED, measure(run, sealed_chunks, repeat, all_frames))
        )
    if msgpack is not None:
        packed = chunked(b"".join(msgpack.packb(p) for p in payloads), CHUNK)
        seconds = measure(msgpack_decode(msgpack), packed, repeat, all_frames)
        timings.append(("decode (feed)", "msgpack", seconds))
    # The naive loop has no get_buffer path: its row there is its feed figure.
    timings.append(("decode (get_buffer)", "naive", timings[0][2]))
    for name, core in cores.items():
        seconds = measure(decode_by_get_buffer(core), stream, repeat, all_frames)
        timings.append(("decode (get_buffer)", name, seconds))
    if compiled is not None:
        by_buffer = decode_by_get_buffer(compiled, checksum="crc32c")
        seconds = measure(by_buffer, sealed_stream, repeat, all_frames)
        timings.append(("decode (get_buffer)", CHECKSUMMED, seconds))
    naive_encoder = encode_in_batches(naive_encode)
    timings.append(("encode_many", "naive", measure(naive_encoder, batches, repeat, same_stream)))
    for name, core in cores.items():
        encoder = encode_in_batches(core.FrameEncoder(max_frame_size=1 << 30).encode_many)
        timings.append(("encode_many", name, measure(encoder, batches, repeat, same_stream)))
    if compiled is not None:
        encoder = encode_in_batches(sealed.encode_many)

        def same_sealed_stream(out: List[bytes]) -> bool:
            return b"".join(out) == sealed_stream

        seconds = measure(encoder, batches, repeat, same_sealed_stream)
        timings.append(("encode_many", CHECKSUMMED, seconds))

    naive_seconds = {op: seconds for op, who, seconds in timings if who == "naive"}
    return [
        {
            "operation": operation,
            "size": size,
            "frames": count,
            "contender": contender,
            "seconds": seconds,
            "frames_per_s": count / seconds,
            "mb_per_s": size * count / seconds / 1e6,
            "vs_naive": naive_seconds[operation] / seconds,
        }
        for operation, contender, seconds in timings
    ]


def run_benchmarks(
    sizes: List[int], quick: bool, progress: Callable[[str], None] = lambda s: None
) -> List[Dict[str, Any]]:
    cores, msgpack = available_contenders()
    rows: List[Dict[str, Any]] = []
    for size in sizes:
        progress(f"{format_size(size)} frames")
        rows += bench_size(size, quick, cores, msgpack)
    return rows


def format_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"


def format_table(rows: List[Dict[str, Any]]) -> str:
    heading = ("operation", "size", "contender", "frames/s", "MB/s", "vs naive")
    lines = ["{:<20} {:>7} {:<10} {:>12} {:>9} {:>9}".format(*heading), "-" * 72]
    previous = None
    for row in rows:
        key = (row["operation"], row["size"])
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        if row["operation"] == "decode (get_buffer)" and row["contender"] == "naive":
            continue  # the same naive figure as the feed row above it
        lines.append(
            f"{row['operation']:<20} {format_size(row['size']):>7} {row['contender']:<10} "
            f"{row['frames_per_s']:>12,.0f} {row['mb_per_s']:>9,.1f} {row['vs_naive']:>8.2f}x"
        )
    return "\n".join(lines)


def checksum_costs(rows: List[Dict[str, Any]]) -> List[str]:
    """Per size and operation: the compiled core's throughput with the
    checksum as a share of its throughput without (same run)."""
    plain = {(r["operation"], r["size"]): r["seconds"] for r in rows if r["contender"] == "cython"}
    lines = []
    for row in rows:
        if row["contender"] == CHECKSUMMED:
            base = plain[(row["operation"], row["size"])]
            lines.append(
                f"{row['operation']:<20} {format_size(row['size']):>7} "
                f"{base / row['seconds']:>6.0%} of the throughput without"
            )
    return lines


def main(args: argparse.Namespace) -> int:
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    started = time.time()
    progress = Progress(len(sizes))
    try:
        rows = run_benchmarks(sizes, args.quick, progress)
    finally:
        progress.clear()
    print(
        f"framecodec codec benchmark, {time.strftime('%Y-%m-%d')}, "
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{len(sizes)} sizes, {time.time() - started:.1f} s"
    )
    print(
        f"decoders fed in {CHUNK // 1024} KiB pieces, encoders given {CHUNK // 1024} KiB batches; "
        "each figure the fastest of several runs\n"
    )
    print(format_table(rows))
    costs = checksum_costs(rows)
    if costs:
        print('\nchecksum="crc32c" (cython+crc against cython):')
        print("\n".join(costs))
    if available_contenders()[1] is None:
        print("\nnot measured: msgpack: not installed (pip install msgpack)")
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version()}
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "rows": rows}, out, indent=1)
    return 0
