#!/usr/bin/env python3
"""Run a harness's TestOneInput without libFuzzer: on files, or on random inputs.

    python fuzz/replay.py fuzz_frames fuzz/artifacts/fuzz_frames/crash-...   # reproduce
    python fuzz/replay.py fuzz_frames fuzz/corpus/fuzz_frames                # every seed
    python fuzz/replay.py fuzz_differential --random 2000 --seed 1           # smoke test

It uses whatever framecodec is importable (the dev build, or the sanitized
one under fuzz/run.sh's environment), prints each failing input's traceback
and exits non-zero if any input failed.
"""

import argparse
import importlib
import os
import random
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("FRAMECODEC_FUZZ_QUIET", "1")

import _fuzzlib as lib


def load(harness: str):
    """The harness's check, bound to the cores on sys.path."""
    module = importlib.import_module(harness)
    compiled, twin = lib.load_cores()
    if harness == "fuzz_differential":
        return lambda data: module.check_input(data, compiled, twin)
    return lambda data: module.check_input(data, compiled)


def random_input(rng: random.Random) -> bytes:
    """A structured random input: a random config, then a stream of plausible frames."""
    config = bytes(rng.getrandbits(8) for _ in range(lib.CONFIG_BYTES))
    stream = bytearray()
    for _ in range(rng.randrange(0, 6)):
        size = rng.choice([0, 1, 3, 200, 70_000 // 8])
        width = rng.choice([1, 2, 4, 8])
        stream += (size % (1 << (8 * width))).to_bytes(width, rng.choice(["big", "little"]))
        stream += bytes(rng.getrandbits(8) for _ in range(min(size, 64)))
    return config + bytes(stream)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("harness")
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--random", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    check = load(args.harness)
    inputs = []
    for p in map(Path, args.paths):
        files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
        inputs += [(str(f), f.read_bytes()) for f in files]
    rng = random.Random(args.seed)
    inputs += [(f"random #{i}", random_input(rng)) for i in range(args.random)]
    failed = 0
    for name, data in inputs:
        try:
            check(data)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({len(data)} bytes): {data[:80].hex()}...")
            traceback.print_exc()
            if failed >= 5:
                break
    print(f"{args.harness}: {len(inputs)} inputs, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
