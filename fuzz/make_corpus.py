#!/usr/bin/env python3
"""Write the seed corpus: fuzz/corpus/<harness>/ (small files, committed).

    python fuzz/make_corpus.py        # rewrites the three directories

Seeds are valid and edge-case streams of every preset, custom formats, the
multiprocessing escape, big frames reached through synthesized runs,
oversized frames with and without discard_oversized, truncated streams,
and messages of the JSON-header protocol -- each with a delivery plan
(feed whole, byte by byte, through get_buffer, mixed).  The layout is
_fuzzlib.build_input's.  Only the pure-Python encoders are used, so this
runs with any framecodec on the path.
"""

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import _fuzzlib as lib
from _fuzzlib import (
    FEED,
    FEED_OTHER_TYPE,
    GETBUF_DEFAULT,
    GETBUF_HINT,
    MISUSE,
    PAD_FEED,
    PAD_GETBUF,
    RETAIN,
    build_input,
)

from framecodec import (
    PRESETS,
    _impl,
)
from framecodec.codec.messages import MessageEncoder

twin = _impl.load("python")

PLANS = {
    "whole": [(FEED, 4096)],
    "bytewise": [(FEED, 1)],
    "getbuf": [(GETBUF_DEFAULT, 4096)],
    "getbuf3": [(GETBUF_HINT, 3)],
    "mixed": [
        (FEED, 5),
        (GETBUF_HINT, 7),
        (FEED_OTHER_TYPE, 2),
        (GETBUF_DEFAULT, 100),
        (MISUSE, 0),
        (FEED, 1),
        (MISUSE, 1),
        (FEED, 64),
    ],
}
PAYLOADS = [b"", b"a", b"hello", bytes(range(200))]
BIG = 70_000  # past the 64 KiB in-place threshold


def frame_seeds():
    seeds = []
    for preset in sorted(PRESETS):
        enc = twin.FrameEncoder(preset)
        fmt = PRESETS[preset]
        stream = b"".join(enc.encode(p) for p in PAYLOADS)
        for name, plan in PLANS.items():
            seeds.append(build_input(preset=preset, plan=plan, stream=stream))
        # oversized: an error, then with discard_oversized a skip and a good frame
        big_stream = enc.encode(bytes(300)) + enc.encode(b"ok")
        seeds.append(
            build_input(
                preset=preset,
                flags=0x01,
                max_frame_code=100,
                plan=PLANS["mixed"],
                stream=big_stream,
            )
        )
        seeds.append(
            build_input(
                preset=preset,
                flags=0x01 | 0x02,
                max_frame_code=100,
                plan=PLANS["getbuf3"],
                stream=big_stream,
            )
        )
        # truncated, then eof
        seeds.append(
            build_input(preset=preset, flags=0x80, plan=PLANS["mixed"], stream=stream[:-3])
        )
        # a big frame: its header in the stream, its body synthesized, then a small frame
        if fmt.width < 3:
            continue
        header = enc.header(BIG)
        tail = enc.encode(b"after")
        for pad_mode in (PAD_FEED, PAD_GETBUF):
            plan = [(FEED, len(header)), (pad_mode, BIG // lib.PAD_UNIT), (FEED, 4096)]
            seeds.append(build_input(preset=preset, fill=0x41, plan=plan, stream=header + tail))
            # ... received in a growing bytearray: small prealloc_limit and read_size
            seeds.append(
                build_input(
                    preset=preset,
                    flags=0x04 | 0x08,
                    prealloc_code=99,
                    read_code=10,
                    fill=0x42,
                    plan=plan,
                    stream=header + tail,
                )
            )
    # views kept past their validity: of the shared buffer, and of a big frame's
    # storage growing in a bytearray (small prealloc_limit); BufferError is the
    # documented answer when memory must move
    enc = twin.FrameEncoder()
    for retain_size in (30, 31, 32):  # the three ways of keeping (size % 3)
        seeds.append(
            build_input(
                preset="uint32",
                plan=[(RETAIN, retain_size), (FEED, 7)],
                stream=enc.encode(b"k" * 20) * 3,
            )
        )
        seeds.append(
            build_input(
                preset="uint32",
                flags=0x04,
                prealloc_code=999,
                fill=0x43,
                plan=[(FEED, 4), (RETAIN, retain_size), (PAD_GETBUF, BIG // lib.PAD_UNIT)],
                stream=enc.header(BIG) + b"k" * retain_size,
            )
        )
    # multiprocessing's escape: 0xFFFFFFFF then an 8-byte length
    esc = b"\xff\xff\xff\xff" + (5).to_bytes(8, "big") + b"12345"
    seeds.append(build_input(preset="multiprocessing", plan=PLANS["bytewise"], stream=esc + esc))
    big_esc = b"\xff\xff\xff\xff" + BIG.to_bytes(8, "big")
    seeds.append(
        build_input(
            preset="multiprocessing",
            fill=7,
            flags=0x80,
            plan=[(FEED, 12), (PAD_GETBUF, BIG // lib.PAD_UNIT)],
            stream=big_esc,
        )
    )
    seeds.append(
        build_input(preset="multiprocessing", plan=PLANS["whole"], stream=b"\x80\x00\x00\x00")
    )
    # postgres length field below 4: negative body
    seeds.append(build_input(preset="postgres", plan=PLANS["whole"], stream=b"Q\x00\x00\x00\x02"))
    # custom formats: width 3 little-endian, offset 2, length counting the header, strip 1
    for width_index in range(5):
        seeds.append(
            build_input(
                preset=None,
                flags=0x10 | 0x20 | 0x40,
                width_index=width_index,
                offset=2,
                adjustment_code=0x7E,
                strip_code=1,
                plan=PLANS["mixed"],
                stream=b"ab"
                + bytes([9, 0, 0, 0, 0, 0, 0, 0])[: [1, 2, 3, 4, 8][width_index]]
                + b"xyz" * 3,
            )
        )
    # the largest max_frame_size, a huge length field
    seeds.append(
        build_input(
            preset="uint64",
            flags=0x01,
            max_frame_code=0xFFFF07,
            plan=PLANS["whole"],
            stream=b"\xff" * 8,
        )
    )
    return seeds


def message_seeds():
    enc = MessageEncoder()
    msgs = [
        enc.encode({"action": "search", "value": "morpheus"}),
        enc.encode("hello"),
        enc.encode(b"\x00\x01binary"),
        enc.encode({"k": [1, 2.5, None, True]}, headers={"x-id": 7}),
        enc.encode("", content_encoding="latin-1"),
    ]
    stream = b"".join(msgs)
    seeds = []
    for name, plan in PLANS.items():
        seeds.append(build_input(kind=1, plan=plan, stream=stream))
    seeds.append(build_input(kind=1, flags=0x80, plan=PLANS["mixed"], stream=stream[:-4]))
    # small limits
    seeds.append(
        build_input(
            kind=1,
            mflags=0x01 | 0x02,
            header_code=40,
            content_code=3,
            plan=PLANS["mixed"],
            stream=stream,
        )
    )
    seeds.append(
        build_input(
            kind=1,
            mflags=0x04 | 0x08,
            mread=3,
            prealloc_code=5,
            plan=PLANS["getbuf3"],
            stream=stream,
        )
    )
    # a big content, synthesized
    header = json.dumps(
        {
            "byteorder": "little",
            "content-type": "binary/octet-stream",
            "content-encoding": "binary",
            "content-length": BIG,
        }
    ).encode()
    big = len(header).to_bytes(2, "big") + header
    for pad_mode in (PAD_FEED, PAD_GETBUF):
        seeds.append(
            build_input(
                kind=1,
                fill=0x30,
                plan=[(FEED, len(big)), (pad_mode, BIG // lib.PAD_UNIT), (FEED, 4096)],
                stream=big + msgs[1],
            )
        )
    # bad headers
    for bad in (
        b"\x00\x00",
        b"\x00\x02{}",
        b"\x00\x04null",
        b'\x00\x03{"a',
        b"\x00\x10" + b'{"content-length' + b"\x00" * 8,
        len(b"[1]").to_bytes(2, "big") + b"[1]",
    ):
        seeds.append(build_input(kind=1, plan=PLANS["whole"], stream=msgs[0] + bad))
    h = {
        "byteorder": "big",
        "content-type": "text/plain",
        "content-encoding": "utf-8",
        "content-length": -1,
    }
    raw = json.dumps(h).encode()
    seeds.append(build_input(kind=1, plan=PLANS["whole"], stream=len(raw).to_bytes(2, "big") + raw))
    return seeds


def write(directory: Path, seeds) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    total = 0
    for data in seeds:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    corpus = HERE / "corpus"
    frames, messages = frame_seeds(), message_seeds()
    for name, seeds in (
        ("fuzz_frames", frames),
        ("fuzz_messages", messages),
        ("fuzz_differential", frames + messages),
    ):
        size = write(corpus / name, seeds)
        print(f"{name}: {len(seeds)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
