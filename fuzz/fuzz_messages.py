#!/usr/bin/env python3
"""atheris harness: MessageDecoder of the compiled core, against a reference model.

The input chooses max_header_size, max_content_size, read_size and
prealloc_limit, and the same delivery plan as fuzz_frames.py (feed,
get_buffer/buffer_updated with input-chosen cut points, synthesized runs for
contents past the 64 KiB in-place threshold, misuse, kept views, eof).  The
stream is the tutorial protocol: 2-byte header length, JSON header, content.
The seed corpus holds valid messages; fuzz/messages.dict gives the JSON
vocabulary.  Run with fuzz/run.sh fuzz_messages SECONDS.
"""

import sys

import _fuzzlib as lib

compiled = None


def TestOneInput(data: bytes) -> None:
    check_input(data, compiled)


def check_input(data: bytes, core) -> None:
    """Run one input against ``core`` (a codec core module); raise on a finding."""
    cfg = lib.parse_input(data)
    decoder = core.MessageDecoder(**cfg.message_options)
    probe = lib.Lockstep([], lambda call: True)
    probe.run(cfg)
    stream = bytes(probe.delivered)
    items = lib.reference_messages(cfg.message_options, stream)
    ref: list = []
    check = lib.OracleCheck(decoder, items, True, ref)
    driver = lib.Lockstep(
        [decoder], check, allow_retain=True, limit=lib.checked_until(items, len(stream))
    )
    ref.append(driver)
    driver.run(cfg)
    check.finish(driver)


def main() -> None:
    import atheris

    global compiled
    with lib.instrumented_imports():
        import framecodec
        import framecodec.codec.messages  # noqa: F401
    compiled, _twin = lib.load_cores()
    lib.instrument_driver()  # coverage of the options and the delivery plan (lib.DRIVER)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
