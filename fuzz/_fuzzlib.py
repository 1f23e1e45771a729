"""Shared machinery of the atheris harnesses in this directory.

* the input layout: a fixed-size configuration block (decoder options and a
  plan of how to deliver the stream), then the stream itself;
* a lock-step driver that delivers the stream to one or more decoders through
  feed() and get_buffer()/buffer_updated() with the cut points the plan
  chooses, plus synthesized runs of bytes (so a few KB of input can carry
  frames past the 64 KiB in-place threshold) and deliberate API misuse;
* reference models: a whole-stream, non-streaming reading of the frame and
  message formats, written independently of the core, which say what the
  decoder must have delivered (frames, errors, ``buffered``, ``discarded``,
  IncompleteFrameError's fields) after every call.

Everything here is plain Python and runs without atheris, so the harnesses
can replay inputs under the ordinary interpreter too (see replay.py).

Layout of an input (all harnesses)::

    [kind 1][frame options 12][message options 8][plan 8 x 3][stream ...]

Bytes past the end of a short input read as zero, so every input is valid.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

BIG_FRAME = 64 * 1024  # the core's threshold for receiving a frame in place
PRESET_CHOICES = (None, "grpc", "multiprocessing", "postgres", "uint16", "uint32", "uint64")
WIDTHS = (1, 2, 3, 4, 8)
PLAN_ENTRIES = 8
FRAME_OPTION_BYTES = 12
MESSAGE_OPTION_BYTES = 8
CONFIG_BYTES = 1 + FRAME_OPTION_BYTES + MESSAGE_OPTION_BYTES + 3 * PLAN_ENTRIES

# Bounds that keep one execution fast and small.
PAD_UNIT = 8  # a pad entry synthesizes size * PAD_UNIT bytes (up to 512 KiB)
PAD_BUDGET = 192 * 1024  # synthesized bytes per input
MAX_CALLS = 1000  # decoder calls per input
MAX_ITEMS = 1000  # frames the reference model reads; the run stops before the stream passes them
MAX_SIZEHINT = 1 << 20  # get_buffer hints stay sane: the hint comes from the
# application, not the peer (absurd hints are covered by a regression test)

# Plan entry modes (mode byte % 8).
FEED, FEED_OTHER_TYPE, GETBUF_DEFAULT, GETBUF_HINT, PAD_FEED, PAD_GETBUF, MISUSE, RETAIN = range(8)

# The Python modules of the codec that atheris instruments for coverage (the
# compiled core gets its coverage from -fsanitize=fuzzer-no-link; the twin,
# loaded by path, from instrument_module()).  Not the network layer.
INSTRUMENTED = [
    "framecodec.codec._impl",
    "framecodec.errors",
    "framecodec.codec.formats",
    "framecodec.codec.messages",
]


def instrumented_imports():
    """atheris.instrument_imports() for INSTRUMENTED, excluding every other
    module of the package (whatever the package's __init__ imports)."""
    import importlib.util

    import atheris

    spec = importlib.util.find_spec("framecodec")
    names = set()
    for location in spec.submodule_search_locations or ():
        names.update(p.stem for p in Path(location).glob("*.py"))
    exclude = sorted(
        f"framecodec.{n}"
        for n in names
        if f"framecodec.{n}" not in INSTRUMENTED and n != "__init__"
    )
    return atheris.instrument_imports(include=["framecodec"], exclude=exclude)


# Set FRAMECODEC_FUZZ_TOLERATE_KNOWN=1 to keep fuzzing past findings already
# reported (each is a regression test in the final report); by default every
# finding stops the fuzzer.
TOLERATE_KNOWN = os.environ.get("FRAMECODEC_FUZZ_TOLERATE_KNOWN", "") not in ("", "0")


class Finding(AssertionError):
    """The core misbehaved: the fuzzer reports this input as a crash."""


# ---------------------------------------------------------------------------
# Input layout


class Reader:
    """Reads little-endian fields; past the end of the data everything is zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        pos = self.pos
        self.pos += 1
        return self.data[pos] if pos < len(self.data) else 0

    def u16(self) -> int:
        return self.u8() | (self.u8() << 8)

    def u24(self) -> int:
        return self.u16() | (self.u8() << 16)

    def rest(self) -> bytes:
        return self.data[self.pos :]


class Writer:
    """Builds inputs for the seed corpus, field by field, in Reader's layout."""

    def __init__(self) -> None:
        self.out = bytearray()

    def u8(self, v: int) -> Writer:
        self.out.append(v & 0xFF)
        return self

    def u16(self, v: int) -> Writer:
        return self.u8(v).u8(v >> 8)

    def u24(self, v: int) -> Writer:
        return self.u16(v).u8(v >> 16)

    def raw(self, data: bytes) -> Writer:
        self.out += data
        return self


def _signed8(v: int) -> int:
    return v - 256 if v >= 128 else v


# Special codes of the option bytes, so the fuzzer reaches the boundaries.
ADJUSTMENT_SPECIALS = {
    0x7F: "-width",
    0x7E: "-header",
    0x7D: 1 << 32,
    0x7C: -(1 << 32),
    0x7B: BIG_FRAME,
    0x7A: -BIG_FRAME,
}
MAX_FRAME_SIZE_TABLE = (
    0,
    1,
    BIG_FRAME - 1,
    BIG_FRAME,
    BIG_FRAME + 1,
    (1 << 31) - 1,
    1 << 32,
    None,
    16 * 1024 * 1024,
)  # None: the core's own limit


@dataclass
class Config:
    kind: int  # what the differential harness decodes: frames (even) or messages (odd)
    preset: Optional[str]
    frame_options: dict
    eof: bool
    message_options: dict
    plan: List[Tuple[int, int]]
    fill: int  # the byte that synthesized runs repeat
    stream: bytes


def parse_input(data: bytes) -> Config:
    from framecodec.codec.formats import MAX_FRAME_SIZE_LIMIT, PRESETS, FrameFormat

    r = Reader(data)
    kind = r.u8()
    # -- frame options (12 bytes)
    preset = PRESET_CHOICES[r.u8() % len(PRESET_CHOICES)]
    flags = r.u8()
    width = WIDTHS[r.u8() % len(WIDTHS)]
    offset = r.u8() % 5
    adjustment_code = r.u8()
    strip_code = r.u8()
    max_frame_code = r.u24()
    prealloc_code = r.u16()
    read_code = r.u8()
    options: dict = {}
    if preset is None:
        options.update(width=width, length_offset=offset)
        base = FrameFormat(width=width, length_offset=offset)
    else:
        base = PRESETS[preset]
    if flags & 0x01:
        if max_frame_code >= 0xFFFF00:
            limit = MAX_FRAME_SIZE_TABLE[(max_frame_code & 0xFF) % len(MAX_FRAME_SIZE_TABLE)]
            options["max_frame_size"] = MAX_FRAME_SIZE_LIMIT if limit is None else limit
        else:
            options["max_frame_size"] = max_frame_code
    if flags & 0x02:
        options["discard_oversized"] = True
    if flags & 0x04:
        options["prealloc_limit"] = (
            prealloc_code + 1 if prealloc_code < 0x8000 else (prealloc_code - 0x8000) * 64 + 1
        )
    if flags & 0x08:
        options["read_size"] = read_code + 1 if read_code < 0x80 else (read_code - 0x7F) * 1024
    if flags & 0x20:
        options["byteorder"] = "little"
    if flags & 0x40:
        special = ADJUSTMENT_SPECIALS.get(adjustment_code)
        if special == "-width":
            options["length_adjustment"] = -base.width
        elif special == "-header":
            options["length_adjustment"] = -base.header_size
        elif special is not None:
            options["length_adjustment"] = special
        else:
            options["length_adjustment"] = _signed8(adjustment_code)
    if flags & 0x10:  # anything up to the whole header
        adjustment = options.get("length_adjustment", base.length_adjustment)
        whole = base.header_size + max(0, adjustment)  # payload_offset
        options["strip"] = None if strip_code == 0xFF else strip_code % (whole + 1)
    eof = bool(flags & 0x80)
    # -- message options (8 bytes)
    mflags = r.u8()
    header_code = r.u16()
    content_code = r.u24()
    fill = r.u8()
    mread = r.u8()
    message_options: dict = {}
    if mflags & 0x01:
        message_options["max_header_size"] = 1 + header_code % 0xFFFF
    if mflags & 0x02:
        message_options["max_content_size"] = content_code
    if mflags & 0x04:
        message_options["read_size"] = mread + 1
    if mflags & 0x08:
        message_options["prealloc_limit"] = (
            prealloc_code + 1 if prealloc_code < 0x8000 else (prealloc_code - 0x8000) * 64 + 1
        )
    if mflags & 0x10:
        eof = not eof
    # -- plan (8 x 3 bytes)
    plan = []
    for _ in range(PLAN_ENTRIES):
        mode = r.u8()
        plan.append((mode, r.u16()))
    return Config(kind, preset, options, eof, message_options, plan, fill, r.rest())


def build_input(
    *,
    kind=0,
    preset=None,
    flags=0,
    width_index=3,
    offset=0,
    adjustment_code=0,
    strip_code=0,
    max_frame_code=0,
    prealloc_code=0,
    read_code=0,
    mflags=0,
    header_code=0,
    content_code=0,
    fill=0,
    mread=0,
    plan=(),
    stream=b"",
) -> bytes:
    """The inverse of parse_input, for the seed corpus (codes as parse_input reads them)."""
    w = Writer()
    w.u8(kind)
    w.u8(PRESET_CHOICES.index(preset)).u8(flags).u8(width_index).u8(offset)
    w.u8(adjustment_code).u8(strip_code).u24(max_frame_code).u16(prealloc_code).u8(read_code)
    w.u8(mflags).u16(header_code).u24(content_code).u8(fill).u8(mread)
    entries = list(plan) or [(FEED, 4096)]
    for i in range(PLAN_ENTRIES):
        mode, size = entries[i % len(entries)]
        w.u8(mode).u16(size)
    w.raw(stream)
    assert len(w.out) == CONFIG_BYTES + len(stream)
    return bytes(w.out)


# ---------------------------------------------------------------------------
# Driving decoders in lock step


@dataclass
class Outcome:
    """What one call on one decoder did."""

    value: Any = None  # the call's return value (a list of frames for feed/buffer_updated)
    exc: Optional[BaseException] = None

    @property
    def raised(self) -> bool:
        return self.exc is not None


@dataclass
class Call:
    """One call, made on every decoder in lock step."""

    op: str  # "feed", "buffer_updated", "eof", "misuse", "get_buffer"
    total: int  # stream bytes delivered to each decoder after the call
    outcomes: List[Outcome]
    expect_api_error: Optional[type] = None  # misuse calls: the error the API documents


def _attempt(fn: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(value=fn())
    except Exception as exc:
        return Outcome(exc=exc)


class Lockstep:
    """Delivers one stream to several decoders (the differential harness gives
    two: compiled and twin) with the same cut points, recording each call.

    ``check`` is called after every call; it raises Finding or returns False
    to stop the run (a decoder is failed or unusable).
    """

    def __init__(
        self,
        decoders: Sequence[Any],
        check: Callable[[Call], bool],
        allow_retain: bool = False,
        limit: Optional[int] = None,
    ) -> None:
        self.limit = limit  # deliver no byte past this (where the reference model stops)
        self.decoders = list(decoders)
        self.check = check
        self.allow_retain = allow_retain
        self.total = 0
        self.calls = 0
        self.pad_left = PAD_BUDGET
        self.delivered = bytearray()  # the whole stream as the decoders received it
        self.retained: List[memoryview] = []
        self.stopped = False

    # -- one call --------------------------------------------------------

    def _record(self, op: str, outcomes: List[Outcome], expect: Optional[type] = None) -> None:
        self.calls += 1
        if not self.check(Call(op, self.total, outcomes, expect)):
            self.stopped = True
        if self.calls >= MAX_CALLS:
            self.stopped = True

    def _past_limit(self, size: int) -> bool:
        if self.limit is not None and self.total + size > self.limit:
            self.stopped = True
        return self.stopped

    def feed(self, chunk: bytes, as_type: int = 0) -> None:
        if self._past_limit(len(chunk)):
            return
        self.total += len(chunk)
        self.delivered += chunk
        if as_type == 1:
            arg: Any = bytearray(chunk)
        elif as_type == 2:
            arg = memoryview(b"\xee" + chunk)[1:]  # a view at an offset
        else:
            arg = chunk
        self._record("feed", [_attempt(lambda d=d: d.feed(arg)) for d in self.decoders])

    def through_buffer(self, chunk: bytes, sizehint: int, retain: int = 0) -> None:
        """Deliver ``chunk`` through get_buffer()/buffer_updated() rounds."""
        if self._past_limit(len(chunk)):
            return
        pos = 0
        while pos < len(chunk) and not self.stopped:
            got = [_attempt(lambda d=d: d.get_buffer(sizehint)) for d in self.decoders]
            if any(o.raised for o in got):
                self._record("get_buffer", got)
                return
            views = [o.value for o in got]
            for view in views:
                if not isinstance(view, memoryview) or view.readonly or len(view) == 0:
                    raise Finding(f"get_buffer({sizehint}) returned an unusable view: {view!r}")
            n = min([len(chunk) - pos] + [len(v) for v in views])
            for view in views:
                view[:n] = chunk[pos : pos + n]
                if retain and self.allow_retain:
                    # A misbehaving caller keeps part of the view past the next call.
                    if retain == 1:
                        self.retained.append(view[: max(1, n)])
                    elif retain == 2:
                        self.retained.append(memoryview(view))  # re-exported: cannot be released
                    else:
                        self.retained.append(view)
            retain = 0
            del views, got
            pos += n
            self.total += n
            self.delivered += chunk[pos - n : pos]
            self._record(
                "buffer_updated", [_attempt(lambda d=d: d.buffer_updated(n)) for d in self.decoders]
            )

    def misuse(self, code: int) -> None:
        """API misuse the decoder documents: ValueError / RuntimeError, nothing else."""
        which = code % 4
        if which == 0:  # a legal no-op: an empty buffer_updated
            got = [_attempt(d.get_buffer) for d in self.decoders]
            if any(o.raised for o in got):
                self._record("get_buffer", got)
                return
            self._record(
                "buffer_updated", [_attempt(lambda d=d: d.buffer_updated(0)) for d in self.decoders]
            )
        elif which == 1:  # more bytes than the view had
            sizes = []
            for d in self.decoders:
                outcome = _attempt(lambda d=d: len(d.get_buffer()))
                sizes.append(outcome)
            if any(o.raised for o in sizes):
                self._record("get_buffer", sizes)
                return
            self._record(
                "misuse",
                [
                    _attempt(lambda d=d, s=s: d.buffer_updated(s.value + 1))
                    for d, s in zip(self.decoders, sizes)
                ],
                ValueError,
            )
        elif which == 2:  # negative
            got = [_attempt(d.get_buffer) for d in self.decoders]
            if any(o.raised for o in got):
                self._record("get_buffer", got)
                return
            self._record(
                "misuse",
                [_attempt(lambda d=d: d.buffer_updated(-1)) for d in self.decoders],
                ValueError,
            )
        else:  # no get_buffer before it (the previous call consumed the view)
            self._record(
                "misuse",
                [_attempt(lambda d=d: d.buffer_updated(1)) for d in self.decoders],
                RuntimeError,
            )

    def eof(self) -> None:
        self._record("eof", [_attempt(d.eof) for d in self.decoders])

    # -- the plan --------------------------------------------------------

    def run(self, cfg: Config) -> None:
        """Cycle through the plan until the stream is delivered (finishing the
        cycle in which it ends, so synthesized runs after the last stream
        bytes happen too); then eof() if the input asks for it."""
        stream = cfg.stream
        pos = 0
        while not self.stopped:
            progressed = False
            for mode, size in cfg.plan:
                if self.stopped:
                    break
                mode %= 8
                if mode in (FEED, FEED_OTHER_TYPE):
                    if pos >= len(stream):
                        continue
                    chunk = stream[pos : pos + size]  # size 0: an empty feed
                    pos += len(chunk)
                    progressed |= bool(chunk)
                    self.feed(chunk, 0 if mode == FEED else 1 + (size & 1))
                elif mode in (GETBUF_DEFAULT, GETBUF_HINT, RETAIN):
                    chunk = stream[pos : pos + max(1, size)]
                    if not chunk:
                        continue
                    pos += len(chunk)
                    progressed = True
                    if mode == GETBUF_DEFAULT:
                        hint = 0
                    elif mode == GETBUF_HINT:
                        hint = min(size, MAX_SIZEHINT)
                    else:
                        hint = -1
                    self.through_buffer(chunk, hint, retain=(1 + size % 3) if mode == RETAIN else 0)
                elif mode in (PAD_FEED, PAD_GETBUF):
                    n = min(size * PAD_UNIT, self.pad_left)
                    if n <= 0:
                        continue
                    self.pad_left -= n
                    progressed = True
                    pad = bytes([cfg.fill]) * n
                    if mode == PAD_FEED:
                        self.feed(pad)
                    else:
                        self.through_buffer(pad, 0)
                elif mode == MISUSE:
                    self.misuse(size)
            if pos >= len(stream) or self.stopped:
                break
            if not progressed:  # a plan that delivers nothing: send the rest at once
                chunk = stream[pos:]
                pos = len(stream)
                self.feed(chunk)
                break
        if cfg.eof and not self.stopped:
            self.eof()


# ---------------------------------------------------------------------------
# Reference model of the frame format (whole stream, not streaming)


class Item:
    """One frame, discarded frame, or bad header of the stream, in order."""

    __slots__ = (
        "big",
        "end",
        "error",
        "first_part",
        "header_end",
        "kind",
        "long_header",
        "payload",
        "start",
        "strip",
    )

    def __init__(
        self,
        kind,
        start,
        header_end,
        end,
        payload=None,
        error=None,
        big=False,
        strip=0,
        first_part=0,
        long_header=0,
    ):
        self.kind = kind  # "frame", "discard", "error", "partial" (stream ends in a header)
        self.start = start
        self.header_end = header_end  # where its header is complete (None: never)
        self.end = end  # where its bytes end (None for errors and unfinished headers)
        self.payload = payload  # frame: the expected bytes (or Message)
        self.error = error  # error: the exception type
        self.big = big  # a frame received in its own storage while incomplete
        self.strip = strip  # header bytes not counted in ``buffered`` while in that storage
        self.first_part = first_part  # bytes of header the decoder asks for first
        self.long_header = long_header  # bytes of the whole header, once the first part is seen


def reference_frames(fmt: Any, stream: bytes, max_items: int = MAX_ITEMS) -> List[Item]:
    """Every item of ``stream`` under FrameFormat ``fmt``; the last may be unfinished.

    At most ``max_items`` items: see checked_until()."""
    from framecodec.errors import FrameTooLargeError, MalformedHeaderError

    items: List[Item] = []
    append = items.append
    header_size = fmt.header_size
    order = fmt.byteorder
    offset = fmt.length_offset
    adjustment = fmt.length_adjustment
    limit = fmt.max_frame_size
    escape = fmt.large_length_escape
    strip_default = fmt.strip
    # The decoder reads a frame once its length field and the bytes strip
    # removes have arrived (strip may reach past the length field).
    first = max(header_size, header_size if strip_default is None else strip_default)
    from_bytes = int.from_bytes
    n = len(stream)
    pos = 0
    while pos < n and len(items) < max_items:
        if n - pos < first:
            append(Item("partial", pos, None, None, first_part=first, long_header=first))
            return items
        raw = from_bytes(stream[pos + offset : pos + header_size], order)
        head = header_size
        if escape and raw > 0x7FFFFFFF:
            if raw != 0xFFFFFFFF:  # negative in a signed 4-byte field
                append(
                    Item(
                        "error",
                        pos,
                        pos + max(head, first),
                        None,
                        error=MalformedHeaderError,
                        first_part=first,
                        long_header=head,
                    )
                )
                return items
            head += 8
            if n - pos < head:
                append(Item("partial", pos, None, None, first_part=first, long_header=head))
                return items
            raw = from_bytes(stream[pos + header_size : pos + head], "big")
        body = raw + adjustment
        payload = raw + min(adjustment, 0)  # max_frame_size counts what follows payload_offset
        error = None
        if raw >= 1 << 61:
            error = FrameTooLargeError
        elif body < 0:
            error = MalformedHeaderError
        elif payload > limit and not fmt.discard_oversized:
            error = FrameTooLargeError
        if error is not None:
            append(
                Item(
                    "error",
                    pos,
                    pos + max(head, first),
                    None,
                    error=error,
                    first_part=first,
                    long_header=head,
                )
            )
            return items
        end = pos + head + body
        if payload > limit:
            append(
                Item(
                    "discard", pos, pos + max(head, first), end, first_part=first, long_header=head
                )
            )
        else:
            strip = head if strip_default is None else strip_default
            append(
                Item(
                    "frame",
                    pos,
                    pos + max(head, first),
                    end,
                    stream[pos + strip : end],
                    None,
                    head + body - strip >= BIG_FRAME,
                    strip,
                    header_size,
                    head,
                )
            )
        pos = end
    return items


def checked_until(items: List[Item], stream_length: int) -> int:
    """How much of the stream the items account for (all of it unless cut at max_items)."""
    if len(items) < MAX_ITEMS or items[-1].end is None:
        return stream_length
    return items[-1].end


def reference_messages(options: dict, stream: bytes) -> List[Item]:
    """Every item of a JSON-header message stream; the last may be unfinished."""
    from framecodec.codec.messages import (
        DEFAULT_MAX_CONTENT_SIZE,
        DEFAULT_MAX_HEADER_SIZE,
        Message,
        parse_message_header,
    )
    from framecodec.errors import FrameTooLargeError, MalformedHeaderError, ProtocolError

    max_header = options.get("max_header_size", DEFAULT_MAX_HEADER_SIZE)
    max_content = options.get("max_content_size", DEFAULT_MAX_CONTENT_SIZE)
    items: List[Item] = []
    n = len(stream)
    pos = 0
    while pos < n and len(items) < MAX_ITEMS:
        if n - pos < 2:
            items.append(Item("partial", pos, None, None, first_part=2, long_header=2))
            return items
        header_length = int.from_bytes(stream[pos : pos + 2], "big")
        head = 2 + header_length

        def add(kind, header_end, end=None, **extra):
            items.append(Item(kind, pos, header_end, end, first_part=2, long_header=head, **extra))

        if header_length == 0:
            add("error", pos + 2, error=MalformedHeaderError)
            return items
        if header_length > max_header:
            add("error", pos + 2, error=FrameTooLargeError)
            return items
        header_end = pos + head
        if header_end > n:
            add("partial", None)
            return items
        try:
            header, length = parse_message_header(stream[pos + 2 : header_end], max_content)
        except ProtocolError as exc:
            add("error", header_end, error=type(exc))
            return items
        except Exception as exc:
            add("error", header_end, error=type(exc), payload=exc)
            return items
        end = header_end + length
        add(
            "frame",
            header_end,
            end,
            payload=Message(header, stream[header_end:end]),
            big=length >= BIG_FRAME,
            strip=head,
        )
        pos = end
    return items


@dataclass
class Expected:
    frames: list  # the frames completed since the previous expectation
    discarded: int
    error: Optional[Item]  # the bad header, once complete
    buffered: int
    between: bool  # eof() would succeed
    missing: int  # IncompleteFrameError.missing at eof()


class Expectation:
    """Walks the reference items as the delivered total grows (it never
    shrinks): ``at(total)`` is the state a decoder must be in after ``total``
    bytes, with the frames completed since the previous ``at``.  Linear in
    the stream, however many calls deliver it."""

    def __init__(self, items: List[Item], messages: bool) -> None:
        self.items = items
        self.messages = messages
        self.k = 0  # items[:k] are complete frames or discards
        self.discards_done = 0

    def at(self, total: int) -> Expected:
        items = self.items
        frames = []
        k = self.k
        while k < len(items):
            item = items[k]
            if item.kind not in ("frame", "discard") or item.end > total:
                break
            if item.kind == "frame":
                frames.append(item.payload)
            else:
                self.discards_done += 1
            k += 1
        self.k = k
        discarded = self.discards_done
        if k == len(items):
            return Expected(frames, discarded, None, 0, True, 0)
        item = items[k]
        if item.kind == "error":
            if item.header_end <= total:
                return Expected(frames, discarded, item, 0, False, 0)
        elif item.kind == "discard" and item.header_end <= total:
            discarded += 1
        return _pending(frames, discarded, item, total, self.messages)


def _pending(frames, discarded, item, total, messages) -> Expected:
    have = total - item.start
    if have <= 0:
        return Expected(frames, discarded, None, 0, True, 0)
    if (
        item.header_end is not None
        and item.header_end <= total
        and item.kind in ("frame", "discard")
    ):
        if item.kind == "discard":
            return Expected(frames, discarded, None, 0, False, item.end - total)
        # Header parsed: a message's header leaves the buffer; a big frame's
        # stripped header bytes are not counted once it is in its own storage.
        if messages:
            buffered = total - item.header_end
        elif item.big:
            buffered = have - item.strip
        else:
            buffered = have
        return Expected(frames, discarded, None, buffered, False, item.end - total)
    # Header incomplete: the decoder asks for its first part (the length
    # field; a message's 2-byte header length), then for the rest (the
    # multiprocessing escape's 8-byte length; a message's JSON header).
    need = item.first_part if have < item.first_part else item.long_header
    return Expected(frames, discarded, None, have, False, need - have)


# ---------------------------------------------------------------------------
# Checking outcomes


def protocol_error_types():
    from framecodec.errors import ProtocolError

    return ProtocolError


def frames_equal(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if type(x) is bytes or type(y) is bytes:
            if type(x) is not bytes or type(y) is not bytes or x != y:
                return False
        elif (
            repr(x.header) != repr(y.header)
            or x.content != y.content
            or type(x.content) is not bytes
        ):
            # repr: a NaN in a JSON header is unequal to itself
            return False
    return True


def describe(frames: list, limit: int = 4) -> str:
    parts = []
    for f in frames[:limit]:
        if type(f) is bytes:
            parts.append(f"bytes[{len(f)}]{f[:16]!r}")
        else:
            parts.append(repr(f)[:120])
    more = f" +{len(frames) - limit}" if len(frames) > limit else ""
    return f"{len(frames)}: [{', '.join(parts)}{more}]"


# Findings already reported (FRAMECODEC_FUZZ_TOLERATE_KNOWN=1 lets a run go on
# past them).  Each predicate takes the exception a decoder raised.
def known_message_header_crash(exc: BaseException) -> bool:
    """parse_message_header lets non-ProtocolError exceptions out (see the report)."""
    if isinstance(exc, RecursionError):
        return True  # deeply nested JSON header
    if isinstance(exc, UnicodeEncodeError) and "surrogates not allowed" in str(exc):
        return True  # content-encoding with a lone surrogate, given to codecs.lookup
    if type(exc) is ValueError and "embedded null character" in str(exc):
        return True  # content-encoding with a NUL, given to codecs.lookup
    return False


# ---------------------------------------------------------------------------
# Loading the cores


def load_cores(need_compiled: bool = True):
    """(compiled, twin) from the framecodec on sys.path, warning if not sanitized."""
    from framecodec.codec import _impl

    compiled = _impl.load("cython") if need_compiled else None
    twin = _impl.load("python")
    if compiled is not None and not os.environ.get("FRAMECODEC_FUZZ_QUIET"):
        so = Path(compiled.__file__)
        if b"__asan_report" not in so.read_bytes():
            sys.stderr.write(
                f"WARNING: {so} is not built with AddressSanitizer; fuzz/run.sh uses the\n"
                "         sanitized build of fuzz/build_sanitized.sh\n"
            )
    return compiled, twin


def instrument_module(module, only: Optional[Sequence[str]] = None) -> int:
    """atheris coverage for a module loaded outside the import system (the
    twin is loaded by path, which instrument_imports() does not see); with
    ``only``, for those of its top-level names alone."""
    import atheris

    count = 0
    name = module.__name__
    seen = set()

    def visit(obj):
        nonlocal count
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, type) and obj.__module__ == name:
            for member in vars(obj).values():
                visit(member)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                if f is not None:
                    visit(f)
        elif isinstance(obj, (staticmethod, classmethod)):
            visit(obj.__func__)
        elif (
            callable(obj) and getattr(obj, "__module__", None) == name and hasattr(obj, "__code__")
        ):
            atheris.instrument_func(obj)
            count += 1

    for key, value in list(vars(module).items()):
        if only is None or key in only:
            visit(value)
    return count


# What of this module atheris instruments: the input's option flags and the
# delivery plan's paths (which plan entries ran, which misuse, how a view was
# kept), not the reference models and checks.  Those run a branch per frame
# and per call, and their states repeat what the core's own coverage sees;
# tracing them took about half of every execution.
DRIVER = ("parse_input", "Lockstep")


def instrument_driver() -> int:
    """atheris coverage of the input parsing and the delivery plan (DRIVER)."""
    return instrument_module(sys.modules[__name__], only=DRIVER)


# ---------------------------------------------------------------------------
# The oracle check of the single-core harnesses


class OracleCheck:
    """Checks every call on one decoder against the reference model.

    Tolerated exceptions: ProtocolError subclasses where the model expects
    them, the documented ValueError/RuntimeError of buffer_updated misuse,
    and BufferError once the harness kept a view past its validity (then the
    run stops: the decoder's state is unspecified).  Anything else is a
    Finding.
    """

    def __init__(self, decoder: Any, items: List[Item], messages: bool, driver_ref: list) -> None:
        from framecodec.errors import IncompleteFrameError, ProtocolError

        self.ProtocolError = ProtocolError
        self.IncompleteFrameError = IncompleteFrameError
        self.decoder = decoder
        self.items = items
        self.messages = messages
        self.driver_ref = driver_ref  # [Lockstep], for the retained views
        self.expectation = Expectation(items, messages)
        self.delivered = 0
        self.failed: Optional[BaseException] = None
        self.snapshots: List[Tuple[Any, bytes]] = []

    def _retained(self) -> bool:
        return bool(self.driver_ref and self.driver_ref[0].retained)

    def _unexpected(self, call: Call, exc: BaseException) -> bool:
        if isinstance(exc, BufferError) and self._retained():
            return False  # the documented answer to a view kept too long
        if self.messages and TOLERATE_KNOWN and known_message_header_crash(exc):
            return False
        raise Finding(
            f"{call.op} at {call.total} bytes raised {type(exc).__name__}: {exc}"
        ) from exc

    def __call__(self, call: Call) -> bool:
        outcome = call.outcomes[0]
        exc = outcome.exc
        if self.failed is not None:
            # A failed decoder raises the same type again on every call, empty-handed.
            if exc is None or type(exc) is not type(self.failed):
                raise Finding(
                    f"{call.op} on a failed decoder gave {outcome!r}, not {type(self.failed).__name__}"
                )
            if not str(exc).startswith("decoder failed earlier: ") or exc.frames:
                raise Finding(
                    f"{call.op} on a failed decoder raised {exc!r} with frames {exc.frames!r}"
                )
            return False
        if call.expect_api_error is not None:
            if exc is None or type(exc) is not call.expect_api_error:
                if exc is not None and not isinstance(exc, self.ProtocolError):
                    return self._unexpected(call, exc)
                raise Finding(
                    f"buffer_updated misuse gave {outcome!r}, not {call.expect_api_error.__name__}"
                )
            return True
        if call.op == "get_buffer":  # only recorded when it raised
            return self._unexpected(call, exc)
        expected = self.expectation.at(call.total)
        if exc is not None and not isinstance(exc, self.ProtocolError):
            return self._unexpected(call, exc)
        if call.op == "eof":
            return self._check_eof(call, exc, expected)
        if exc is not None:
            if expected.error is None or type(exc) is not expected.error.error:
                raise Finding(
                    f"{call.op} at {call.total} bytes raised {type(exc).__name__}: {exc}; "
                    f"the model expects {expected.error and expected.error.error}"
                )
            got = exc.frames
        else:
            if expected.error is not None:
                raise Finding(
                    f"{call.op} at {call.total} bytes raised nothing; the model expects "
                    f"{expected.error.error.__name__} for the header at {expected.error.start}"
                )
            got = outcome.value
            if type(got) is not list:
                raise Finding(f"{call.op} returned {type(got).__name__}, not list")
        self._take(got)
        if not frames_equal(got, expected.frames):
            raise Finding(
                f"{call.op} at {call.total} bytes (after {self.delivered - len(got)} frames) "
                f"delivered {describe(got)}, the model expects {describe(expected.frames)}"
            )
        if exc is not None:
            self.failed = exc
            return True  # one more call checks the failed state
        buffered = self.decoder.buffered
        if buffered != expected.buffered:
            raise Finding(
                f"after {call.op} at {call.total} bytes: buffered={buffered}, "
                f"the model expects {expected.buffered}"
            )
        if not self.messages and self.decoder.discarded != expected.discarded:
            raise Finding(
                f"after {call.op} at {call.total} bytes: discarded={self.decoder.discarded}, "
                f"the model expects {expected.discarded}"
            )
        return True

    def _take(self, frames: list) -> None:
        self.delivered += len(frames)
        if self._retained():
            for frame in frames:
                content = frame if type(frame) is bytes else frame.content
                self.snapshots.append((content, bytes(bytearray(content))))

    def _check_eof(self, call: Call, exc: Optional[BaseException], expected: Expected) -> bool:
        if expected.error is not None:
            raise Finding("the model expected an error before eof")
        if expected.between:
            if exc is not None:
                raise Finding(f"eof() between frames at {call.total} bytes raised {exc!r}")
            return True
        if type(exc) is not self.IncompleteFrameError:
            raise Finding(
                f"eof() inside a frame at {call.total} bytes gave {exc!r}, not IncompleteFrameError"
            )
        if exc.frames:
            raise Finding(f"eof() carried frames {describe(exc.frames)}")
        if (exc.missing, exc.buffered) != (expected.missing, expected.buffered):
            raise Finding(
                f"eof() at {call.total} bytes: missing={exc.missing} buffered={exc.buffered}, the model "
                f"expects missing={expected.missing} buffered={expected.buffered} ({exc})"
            )
        self.failed = exc
        return True

    def finish(self, driver: Lockstep) -> None:
        """A caller that kept views writes through them at the end: that must
        never reach a delivered frame (which is immutable bytes), and must
        not touch freed memory (ASan watches the reads and writes)."""
        for view in driver.retained:
            try:
                if TOLERATE_KNOWN and type(view.obj).__name__ == "_FrameStorage":
                    continue  # known: a kept view of in-place storage dangles after delivery
                view[:] = b"\x5a" * len(view)
                bytes(view)
            except (ValueError, TypeError):  # released by the decoder: fine
                pass
        for content, snapshot in self.snapshots:
            if content != snapshot:
                if TOLERATE_KNOWN and len(content) >= BIG_FRAME:
                    continue  # known: an in-place frame aliases a kept view
                raise Finding(
                    f"a delivered frame of {len(content)} bytes changed after delivery: a view the "
                    f"caller kept writes into it (now {content[:16]!r}, was {snapshot[:16]!r})"
                )
