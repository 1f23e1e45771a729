"""``python -m framecodec bench --codec --instructions``: instructions per frame.

Wall-clock figures move with the machine's load; instruction counts do not.
This benchmark runs the codec's contenders under valgrind's callgrind and
reports the instructions each spends per frame, so a change to the core can
be judged to the instruction on a shared, noisy machine.

How the per-frame figure excludes everything else: a child process runs the
cases under callgrind (two children at once, each given half of the cases).
For each case it prepares two inputs, a small and a large run of the same
frames, then calls a marker function between the steps; ``--dump-before``
makes callgrind write its counters out at each marker.  The small run's
count and the large run's count both include the same fixed costs (creating
the decoder, the calls around the loop), so their difference divided by the
difference in frames is the work per frame alone: interpreter start-up,
imports and preparing the inputs fall outside both.

The marker is ``os.getppid()``: a C function nothing else in the child calls.
Counts repeat exactly for the same code, interpreter, Cython and compiler.
They do move with the heap's layout, which any change to code the child
loads shifts: whether realloc can grow a list of frames in place or must
copy it is worth up to ~7% of a 16 B frame's count.  Each figure is therefore
the median over three layouts (see HEAP_LAYOUTS), and a baseline check
allows 10%.  A baseline file records the interpreter and machine, and is
compared only with figures measured under the same.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from statistics import median
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import codec as codec_bench
from .capi_contender import READER as CAPI_READER

SIZES = [16, 64, 1024, 64 * 1024]
# Stream bytes in the small and the large run of each case: whole numbers of
# the 64 KiB pieces the decoders are fed, so both runs see the same mix of
# frames cut by piece boundaries.
SMALL_RUN = 4 * codec_bench.CHUNK
LARGE_RUN = 12 * codec_bench.CHUNK
MARKER = "getppid"
TOLERANCE = 0.10  # a framecodec figure this much over its baseline fails --baseline
# Where malloc's heap has free room decides whether a growing list of frames
# is extended in place or copied by realloc: up to ~10% of a small frame's
# count.  Each case runs after each of these numbers of mid-size blocks is
# allocated, and the median of the layouts is its figure.
HEAP_LAYOUTS = (0, 8, 60)

# framecodec with checksum="crc32c": what the checksum costs, beside the rows without.
CHECKSUMMED = "framecodec+crc"
# The contenders whose figures the baseline check guards: framecodec's own.
GUARDED = ("framecodec", CHECKSUMMED)
# (operation, contender) in report order; framecodec's rows are the guarded ones.
ROWS = [
    ("decode (feed)", "framecodec"),
    ("decode (get_buffer)", "framecodec"),
    ("decode (C API)", "framecodec"),
    ("decode (feed)", CHECKSUMMED),
    ("decode (get_buffer)", CHECKSUMMED),
    ("decode (feed)", "msgpack"),
    ("decode (feed)", "naive"),
    ("encode", "framecodec"),
    ("encode_many", "framecodec"),
    ("encode_many", CHECKSUMMED),
    ("encode_many", "naive"),
]
# Goals the report states (the issue's): instructions per 16 B frame decoded,
# and how many times fewer than msgpack's at these sizes.
GOAL_DECODE_16 = 200
GOAL_VS_MSGPACK = 3.0
GOAL_VS_MSGPACK_SIZES = (16, 64)


# -- the child: runs under callgrind ------------------------------------------


def _frames(size: int, stream_bytes: int) -> List[bytes]:
    payload = bytes(i % 251 for i in range(size))
    return [payload] * max(1, stream_bytes // (size + 4))


def _case(operation: str, contender: str, size: int) -> Tuple[Callable[[Any], Any], Any, Any, int]:
    """The function a case runs and its small and large inputs, with the
    large run's extra frames."""
    small, large = _frames(size, SMALL_RUN), _frames(size, LARGE_RUN)
    extra = len(large) - len(small)
    if operation.startswith("decode"):
        if contender == "msgpack":
            import msgpack

            def packed(frames: List[bytes]) -> List[bytes]:
                data = b"".join(msgpack.packb(frame) for frame in frames)
                return codec_bench.chunked(data, codec_bench.CHUNK)

            return codec_bench.msgpack_decode(msgpack), packed(small), packed(large), extra
        options = {"checksum": "crc32c"} if contender == CHECKSUMMED else {}
        encoder = _core().FrameEncoder(max_frame_size=1 << 30, **options)
        streams = [encoder.encode_many(frames) for frames in (small, large)]
        if operation == "decode (get_buffer)":
            by_buffer = codec_bench.decode_by_get_buffer(_core(), **options)
            return by_buffer, streams[0], streams[1], extra
        if operation == "decode (C API)":
            return _capi_decode(), streams[0], streams[1], extra
        chunks = [codec_bench.chunked(stream, codec_bench.CHUNK) for stream in streams]
        run = (
            codec_bench.naive_decode
            if contender == "naive"
            else codec_bench.decode_by_feed(_core(), **options)
        )
        return run, chunks[0], chunks[1], extra
    per_batch = max(1, codec_bench.CHUNK // size)

    def batches(frames: List[bytes]) -> List[List[bytes]]:
        return [frames[i : i + per_batch] for i in range(0, len(frames), per_batch)]

    if contender == "naive":
        return (
            codec_bench.encode_in_batches(codec_bench.naive_encode),
            batches(small),
            batches(large),
            extra,
        )
    options = {"checksum": "crc32c"} if contender == CHECKSUMMED else {}
    encoder = _core().FrameEncoder(max_frame_size=1 << 30, **options)
    if operation == "encode":
        encode = encoder.encode

        def one_by_one(frames: List[bytes]) -> List[bytes]:
            return [encode(frame) for frame in frames]

        return one_by_one, small, large, extra
    return codec_bench.encode_in_batches(encoder.encode_many), batches(small), batches(large), extra


def _core() -> Any:
    from ..codec import _impl

    return _impl.load("cython")


def _capi_reader() -> Any:
    """The C API's benchmark consumer (capi.pxd's next_frame, from Cython),
    which setup.py builds beside the compiled core; ImportError without it."""
    return importlib.import_module(CAPI_READER)


def _capi_decode() -> Callable[[bytes], int]:
    """The get_buffer row's stream and pieces, its frames pulled as spans."""
    reader = _capi_reader()
    core = _core()

    def run(stream: bytes) -> int:
        decoder = core.FrameDecoder(max_frame_size=1 << 30)
        return int(reader.decode_stream(decoder, stream, codec_bench.CHUNK))

    return run


def child(cases: List[Tuple[str, str, int]]) -> None:
    """Run each case's small and large input between markers, once for each
    heap layout; print the extra frames of each case as JSON for the parent."""
    marker = os.getppid
    extras = []
    gc.disable()  # the collector's timing is the interpreter's, not the codec's
    for operation, contender, size in cases:
        run, small, large, extra = _case(operation, contender, size)
        run(small)  # warm: first-call costs (caches, specialisation) stay out
        for blocks in HEAP_LAYOUTS:
            pad = [bytearray(600 + 37 * i) for i in range(blocks)]
            marker()
            run(small)
            marker()
            run(large)
            marker()
            del pad
        extras.append(extra)
    print(json.dumps(extras))


# -- the parent: starts callgrind, reads its dumps -------------------------------


def valgrind_missing() -> Optional[str]:
    if shutil.which("valgrind") is None:
        return (
            "valgrind is not installed: instruction counts need its callgrind tool "
            "(Debian/Ubuntu: apt-get install valgrind)"
        )
    return None


def _dump_totals(directory: str) -> List[int]:
    """The instruction totals of callgrind's dumps, in the order written."""
    parts: List[Tuple[int, int]] = []
    for name in os.listdir(directory):
        part = total = None
        with open(os.path.join(directory, name)) as dump:
            for line in dump:
                if line.startswith("part:"):
                    part = int(line.split()[1])
                elif line.startswith("summary:"):
                    total = int(line.split()[1])
        if part is not None and total is not None:
            parts.append((part, total))
    return [total for _, total in sorted(parts)]


def count(cases: List[Tuple[str, str, int]], python: str = sys.executable) -> List[float]:
    """Instructions per frame of each case, from one callgrind run."""
    with tempfile.TemporaryDirectory(prefix="fc-callgrind-") as directory:
        command = [
            "valgrind", "--tool=callgrind", f"--dump-before={MARKER}",
            f"--callgrind-out-file={directory}/callgrind.out", "--quiet",
            python, "-m", "framecodec.benchmarks.instructions", "--child", json.dumps(cases),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same dicts and sets each run
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
        extras = json.loads(done.stdout.strip().splitlines()[-1])
        totals = _dump_totals(directory)
    # Dump k holds what ran between marker k-1 and marker k.  Each run (a
    # case in one heap layout) places three markers: before its small run,
    # after it, after its large run; so run r's small and large runs are
    # dumps 3r+1 and 3r+2 (0-based; dump 0 is start-up).
    layouts = len(HEAP_LAYOUTS)
    if len(totals) < 3 * layouts * len(cases) + 1:
        raise RuntimeError(f"callgrind wrote {len(totals)} dumps for {len(cases)} cases")
    figures = []
    for i, extra in enumerate(extras):
        runs = range(i * layouts, (i + 1) * layouts)
        figures.append(median([(totals[3 * r + 2] - totals[3 * r + 1]) / extra for r in runs]))
    return figures


def _have_capi() -> bool:
    try:
        _capi_reader()
    except ImportError:
        return False
    return True


def measure(sizes: List[int], have_msgpack: bool) -> Dict[str, Any]:
    """Every row at every size: {"rows": [...], "absent": {...}}.  The cases
    are split in two children that run at once (valgrind is single-threaded)."""
    have_capi = _have_capi()
    rows = [
        row
        for row in ROWS
        if (row[1] != "msgpack" or have_msgpack) and (row[0] != "decode (C API)" or have_capi)
    ]
    cases = [(op, who, size) for size in sizes for op, who in rows]
    halves = [cases[0::2], cases[1::2]]
    with ThreadPoolExecutor(2) as pool:
        counted = list(pool.map(count, halves))
    figures: Dict[Tuple[str, str, int], float] = {}
    for half, numbers in zip(halves, counted):
        figures.update(zip(half, numbers))
    absent = {} if have_msgpack else {"msgpack": "not installed (pip install msgpack)"}
    if not have_capi:
        absent["decode (C API)"] = "the C API's benchmark consumer was not built (needs Cython)"
    return {
        "rows": [
            {
                "operation": op,
                "contender": who,
                "size": size,
                "instructions": figures[op, who, size],
            }
            for op, who, size in cases
        ],
        "absent": absent,
    }


# -- report, baseline ----------------------------------------------------------------


def environment() -> Dict[str, str]:
    """What the counts depend on: a baseline is compared only under the same."""
    from .. import __version__

    try:
        valgrind = subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        valgrind = "none"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "valgrind": valgrind,
        "framecodec": __version__,
    }


def _key(row: Dict[str, Any]) -> str:
    return f"{row['operation']} {row['contender']} {row['size']}"


def format_table(result: Dict[str, Any], baseline: Optional[Dict[str, Any]]) -> str:
    sizes = sorted({row["size"] for row in result["rows"]})
    before = {_key(row): row["instructions"] for row in (baseline or {}).get("rows", [])}
    heading = f"{'operation':<20} {'contender':<11}" + "".join(
        f"{codec_bench.format_size(size):>16}" for size in sizes
    )
    lines = [heading, "-" * len(heading)]
    by_row: Dict[Tuple[str, str], Dict[int, Dict[str, Any]]] = {}
    for row in result["rows"]:
        by_row.setdefault((row["operation"], row["contender"]), {})[row["size"]] = row
    for (operation, contender), cells in by_row.items():
        line = f"{operation:<20} {contender:<11}"
        for size in sizes:
            row = cells[size]
            text = f"{row['instructions']:,.0f}"
            if _key(row) in before and contender in GUARDED:
                change = row["instructions"] / before[_key(row)] - 1
                text += f" ({change:+.0%})"
            line += f"{text:>16}"
        lines.append(line)
    return "\n".join(lines)


def goals(result: Dict[str, Any]) -> List[str]:
    figure = {
        (r["operation"], r["contender"], r["size"]): r["instructions"] for r in result["rows"]
    }
    lines = []
    feed16 = figure.get(("decode (feed)", "framecodec", 16))
    if feed16 is not None:
        verdict = "met" if feed16 <= GOAL_DECODE_16 else "MISSED"
        lines.append(
            f"decode 16 B: {feed16:.0f} instructions per frame "
            f"(goal <= {GOAL_DECODE_16}): {verdict}"
        )
    for size in GOAL_VS_MSGPACK_SIZES:
        ours = figure.get(("decode (feed)", "framecodec", size))
        theirs = figure.get(("decode (feed)", "msgpack", size))
        if ours and theirs:
            ratio = theirs / ours
            verdict = "met" if ratio >= GOAL_VS_MSGPACK else "MISSED"
            lines.append(
                f"msgpack's Unpacker at {size} B: {ratio:.1f}x framecodec's instructions "
                f"(goal >= {GOAL_VS_MSGPACK:.0f}x): {verdict}"
            )
    return lines


def compare(
    result: Dict[str, Any], baseline: Dict[str, Any], tolerance: float
) -> Tuple[List[str], Optional[str]]:
    """framecodec's figures more than ``tolerance`` over the baseline, and
    why no comparison was made, if it was not."""
    here, there = result["environment"], baseline.get("environment", {})
    differs = [
        key for key in ("python", "implementation", "machine") if here.get(key) != there.get(key)
    ]
    if differs:
        shown = ", ".join(f"{key} {there.get(key)} there, {here.get(key)} here" for key in differs)
        return [], f"the baseline was measured elsewhere ({shown}): not compared"
    before = {_key(row): row["instructions"] for row in baseline.get("rows", [])}
    worse = []
    for row in result["rows"]:
        old = before.get(_key(row))
        if row["contender"] in GUARDED and old and row["instructions"] > old * (1 + tolerance):
            worse.append(
                f"{_key(row)}: {row['instructions']:,.0f} instructions per frame, "
                f"baseline {old:,.0f} ({row['instructions'] / old - 1:+.1%})"
            )
    return worse, None


def main(args: argparse.Namespace) -> int:
    missing = valgrind_missing()
    if missing:
        print(f"framecodec bench --instructions: {missing}", file=sys.stderr)
        return 1
    try:
        _core()
    except ImportError:
        print(
            "framecodec bench --instructions: the compiled core is not installed here; "
            "instruction counts are taken of the compiled core only",
            file=sys.stderr,
        )
        return 1
    try:
        import msgpack  # noqa: F401

        have_msgpack = True
    except ImportError:
        have_msgpack = False
    sizes = args.sizes or SIZES
    print(
        "framecodec instruction counts (callgrind), per frame, start-up and set-up excluded",
        file=sys.stderr,
    )
    result = measure(sizes, have_msgpack)
    result["environment"] = environment()
    baseline = None
    if args.baseline:
        with open(args.baseline) as source:
            baseline = json.load(source)
    env = result["environment"]
    print(
        f"framecodec {env['framecodec']} instruction counts per frame, "
        f"CPython {env['python']} on {env['machine']}, {env['valgrind']}"
    )
    print(
        f"decoders fed in {codec_bench.CHUNK // 1024} KiB pieces, encoders given "
        f"{codec_bench.CHUNK // 1024} KiB batches; (+n%) against {args.baseline or 'no baseline'}\n"
    )
    print(format_table(result, baseline))
    for name, reason in result["absent"].items():
        print(f"not measured: {name}: {reason}")
    print()
    for line in goals(result):
        print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    if args.save_baseline:
        with open(args.save_baseline, "w") as out:
            json.dump(result, out, indent=1)
            out.write("\n")
        print(f"baseline written to {args.save_baseline}")
    if baseline is None:
        return 0
    worse, skipped = compare(result, baseline, args.tolerance)
    if skipped:
        print(f"\nbaseline {args.baseline}: {skipped}")
        return 0
    if worse:
        print(
            f"\n{len(worse)} figure(s) more than {args.tolerance:.0%} worse than {args.baseline}:"
        )
        for line in worse:
            print(f"  {line}")
        return 1
    print(f"\nno framecodec figure is more than {args.tolerance:.0%} worse than {args.baseline}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child([tuple(case) for case in json.loads(sys.argv[2])])
    else:
        raise SystemExit("run as: python -m framecodec bench --codec --instructions")
