#!/usr/bin/env python3
"""atheris harness: the compiled core against its pure-Python twin.

The same input, chunked the same way, goes to a decoder of each core (a
FrameDecoder or, when the first byte is odd, a MessageDecoder) in lock step.
After every call both must agree exactly: frames (or messages), exception
type and message, the frames riding on the exception, IncompleteFrameError's
missing/buffered, and the ``buffered`` / ``discarded`` counters.  Then the
encoders and pack_uint/unpack_uint of both cores get the decoded payloads and
integers read from the input, and must agree byte for byte (or raise alike).

get_buffer() may offer views of different sizes (the compiled core receives
a large frame in a bytes object of its final size, the twin in a growing
bytearray), so each round writes as many bytes as the smaller view holds,
into both.  Kept views are not exercised here: there the cores differ by
design (the twin's storage can refuse to grow with BufferError).
Run with fuzz/run.sh fuzz_differential SECONDS.
"""

import sys

import _fuzzlib as lib

compiled = twin = None


def _same_exception(a: BaseException, b: BaseException, where: str) -> None:
    if type(a) is not type(b) or a.args != b.args:
        raise lib.Finding(
            f"{where}: compiled raised {type(a).__name__}{a.args!r}, "
            f"twin raised {type(b).__name__}{b.args!r}"
        )


class DiffCheck:
    def __init__(self, decoders, messages: bool) -> None:
        from framecodec.errors import IncompleteFrameError, ProtocolError

        self.ProtocolError = ProtocolError
        self.IncompleteFrameError = IncompleteFrameError
        self.decoders = decoders
        self.messages = messages
        self.failed = False

    def __call__(self, call: lib.Call) -> bool:
        a, b = call.outcomes
        where = f"{call.op} at {call.total} bytes"
        if a.raised != b.raised:
            raise lib.Finding(f"{where}: compiled gave {a!r}, twin gave {b!r}")
        if a.raised:
            _same_exception(a.exc, b.exc, where)
            exc = a.exc
            if isinstance(exc, self.ProtocolError):
                if not lib.frames_equal(a.exc.frames, b.exc.frames):
                    raise lib.Finding(
                        f"{where}: frames on the exception differ: "
                        f"{lib.describe(a.exc.frames)} / {lib.describe(b.exc.frames)}"
                    )
                if isinstance(exc, self.IncompleteFrameError) and (
                    (a.exc.missing, a.exc.buffered) != (b.exc.missing, b.exc.buffered)
                ):
                    raise lib.Finding(f"{where}: IncompleteFrameError fields differ")
            elif call.expect_api_error is None or type(exc) is not call.expect_api_error:
                if not (
                    self.messages and lib.TOLERATE_KNOWN and lib.known_message_header_crash(exc)
                ):
                    raise lib.Finding(
                        f"{where}: both cores raised {type(exc).__name__}: {exc}"
                    ) from exc
                return False
        elif call.op != "eof" and not lib.frames_equal(a.value, b.value):
            raise lib.Finding(
                f"{where}: compiled delivered {lib.describe(a.value)}, "
                f"twin delivered {lib.describe(b.value)}"
            )
        c, t = self.decoders
        if c.buffered != t.buffered:
            raise lib.Finding(f"{where}: buffered {c.buffered} (compiled) != {t.buffered} (twin)")
        if not self.messages and c.discarded != t.discarded:
            raise lib.Finding(
                f"{where}: discarded {c.discarded} (compiled) != {t.discarded} (twin)"
            )
        if a.raised and call.expect_api_error is None:
            if self.failed:
                return False  # checked one call on the failed decoders
            self.failed = True
        return True


def _both(where: str, fn):
    """fn(core) for both cores; they must return equal values or raise alike."""
    results = []
    for core in (compiled, twin):
        try:
            results.append((True, fn(core)))
        except Exception as exc:
            results.append((False, exc))
    (ok_a, a), (ok_b, b) = results
    if ok_a != ok_b:
        raise lib.Finding(f"{where}: compiled gave {a!r}, twin gave {b!r}")
    if not ok_a:
        _same_exception(a, b, where)
        return None
    if type(a) is not type(b) or a != b:
        raise lib.Finding(f"{where}: compiled gave {a!r:.200}, twin gave {b!r:.200}")
    return a


def _encoders(cfg, payloads) -> None:
    fmt_args = (cfg.preset,)
    opts = cfg.frame_options
    try:
        encoders = (compiled.FrameEncoder(*fmt_args, **opts), twin.FrameEncoder(*fmt_args, **opts))
    except (ValueError, TypeError):
        return
    pick = {id(compiled): encoders[0], id(twin): encoders[1]}
    payloads = payloads[:64]
    _both("encode_many", lambda core: pick[id(core)].encode_many(payloads))
    _both(
        "encode_many(bytearray)",
        lambda core: pick[id(core)].encode_many([bytearray(p) for p in payloads[:4]]),
    )
    for p in payloads[:8]:
        _both("encode", lambda core: pick[id(core)].encode(p))
    stream = cfg.stream
    for end in (len(stream), cfg.fill % (len(stream) + 1)):
        _both(
            f"encode_frame(stream[:{end}])", lambda core: pick[id(core)].encode_frame(stream[:end])
        )
    offset = encoders[0].format.length_offset
    prefix = stream[:offset] if len(stream) >= offset else None
    for size in (len(stream), int.from_bytes(stream[:3], "little"), -len(stream)):
        _both(f"header({size})", lambda core: pick[id(core)].header(size, prefix))
    for width in lib.WIDTHS:
        for order in ("big", "little"):
            value = int.from_bytes(stream[:9], "big") >> (cfg.fill % 72)
            _both(
                f"pack_uint({value}, {width}, {order})",
                lambda core: core.pack_uint(value, width, order),
            )
            off = cfg.fill % 8
            _both(
                f"unpack_uint(stream, {width}, {order}, {off})",
                lambda core: core.unpack_uint(stream, width, order, off),
            )


def _switching(cfg, messages: bool) -> None:
    """stop_after() then detach(): both cores deliver the same frames and
    hand over the same bytes (or raise alike), however the stream is cut."""
    from framecodec.errors import ProtocolError

    stop = cfg.fill % 5 + 1
    stream = cfg.stream

    def run(core, piece):
        if messages:
            decoder = core.MessageDecoder(**cfg.message_options)
        else:
            decoder = core.FrameDecoder(cfg.preset, **cfg.frame_options)
        decoder.stop_after(stop)
        out = []
        try:
            pos = 0
            while pos < len(stream):
                # Once stopped a decoder only keeps what it is fed: the rest
                # goes in one piece (byte by byte it made this harness's
                # slowest part, through the instrumented twin).
                take = len(stream) - pos if decoder.stopped else piece
                out += decoder.feed(stream[pos : pos + take])
                pos += take
        except ProtocolError as exc:
            return ("error", type(exc).__name__, str(exc), out + exc.frames)
        if len(out) > stop:
            raise lib.Finding(f"stop_after({stop}) delivered {len(out)} frames")
        try:
            rest = decoder.detach()
        except RuntimeError as exc:  # inside a discarded frame
            return ("refused", str(exc), out)
        return ("detached", out, rest, decoder.stopped)

    for piece in (1, 7, len(stream) + 1):
        _both(f"stop_after({stop}), pieces of {piece}", lambda core: run(core, piece))


def TestOneInput(data: bytes) -> None:
    check_input(data, compiled, twin)


def check_input(data: bytes, compiled_core, twin_core) -> None:
    """Run one input against the two cores; raise on a finding."""
    global compiled, twin
    compiled, twin = compiled_core, twin_core
    cfg = lib.parse_input(data)
    messages = bool(cfg.kind & 1)
    decoders = []
    for core in (compiled, twin):
        try:
            if messages:
                decoders.append(core.MessageDecoder(**cfg.message_options))
            else:
                decoders.append(core.FrameDecoder(cfg.preset, **cfg.frame_options))
        except Exception as exc:
            decoders.append(exc)
    a, b = decoders
    if isinstance(a, Exception) or isinstance(b, Exception):
        if not (isinstance(a, Exception) and isinstance(b, Exception)):
            raise lib.Finding(f"construction: compiled gave {a!r}, twin gave {b!r}")
        _same_exception(a, b, "construction")
        return
    _switching(cfg, messages)
    check = DiffCheck(decoders, messages)
    delivered = []
    driver = lib.Lockstep(decoders, check)
    driver.run(cfg)
    if not messages:
        probe = lib.Lockstep([], lambda call: True)
        probe.run(cfg)
        delivered = [
            item.payload
            for item in lib.reference_frames(a.format, bytes(probe.delivered))
            if item.kind == "frame"
        ]
        _encoders(cfg, delivered)


def main() -> None:
    import atheris

    global compiled, twin
    with lib.instrumented_imports():
        import framecodec
        import framecodec.codec.messages  # noqa: F401
    compiled, twin = lib.load_cores()
    count = lib.instrument_module(twin)
    lib.instrument_driver()  # coverage of the options and the delivery plan (lib.DRIVER)
    sys.stderr.write(f"INFO: instrumented {count} functions of the pure-Python twin\n")
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
