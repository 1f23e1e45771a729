#!/usr/bin/env python3
"""atheris harness: FrameDecoder of the compiled core, against a reference model.

Every input chooses a preset (or a custom format) and option variations --
max_frame_size limits, discard_oversized, small prealloc_limit and
read_size, strip, byteorder, length_adjustment -- and a plan of how the
stream is delivered: feed() with bytes/bytearray/memoryview, get_buffer()
with and without size hints then buffer_updated(), synthesized runs of bytes
that carry frames past the 64 KiB in-place threshold, API misuse, views kept
past their validity, and eof().  See _fuzzlib.py for the layout.

After every call the decoder must agree with a whole-stream reading of the
format (frames delivered, error type, buffered, discarded, eof's missing and
buffered).  Any exception other than the documented ones is a finding, as is
any sanitizer report.  Run with fuzz/run.sh fuzz_frames SECONDS.
"""

import sys

import _fuzzlib as lib

compiled = None


def TestOneInput(data: bytes) -> None:
    check_input(data, compiled)


def check_input(data: bytes, core) -> None:
    """Run one input against ``core`` (a codec core module); raise on a finding."""
    cfg = lib.parse_input(data)
    try:
        decoder = core.FrameDecoder(cfg.preset, **cfg.frame_options)
    except (ValueError, TypeError):
        return  # an invalid option combination, rejected as documented
    stream = _whole_stream(cfg)
    items = lib.reference_frames(decoder.format, stream)
    ref: list = []
    check = lib.OracleCheck(decoder, items, False, ref)
    driver = lib.Lockstep(
        [decoder], check, allow_retain=True, limit=lib.checked_until(items, len(stream))
    )
    ref.append(driver)
    driver.run(cfg)
    check.finish(driver)


def _whole_stream(cfg) -> bytes:
    """What the plan will deliver: the stream with the synthesized runs in place."""
    probe = lib.Lockstep([], lambda call: True)
    probe.run(cfg)
    return bytes(probe.delivered)


def main() -> None:
    import atheris

    global compiled
    with lib.instrumented_imports():
        import framecodec  # noqa: F401
    compiled, _twin = lib.load_cores()
    lib.instrument_driver()  # coverage of the options and the delivery plan (lib.DRIVER)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
