"""The instruction-count benchmark (``bench --codec --instructions``).

Its arithmetic and its baseline check are tested on made-up figures; one
real callgrind run of two cases checks that the counts come out per frame
and the same twice (they are deterministic, which is the point of them).
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any, Dict, List

import pytest

from framecodec.benchmarks import instructions

from ..conftest import needs_compiled_core

needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed: no callgrind here"
)


def result(figures: Dict[str, float], **environment: str) -> Dict[str, Any]:
    env = {"python": "3.11.7", "implementation": "CPython", "machine": "x86_64"}
    env.update(environment)
    rows = []
    for key, value in figures.items():
        operation, contender, size = key.rsplit(" ", 2)
        rows.append(
            {
                "operation": operation,
                "contender": contender,
                "size": int(size),
                "instructions": value,
            }
        )
    return {"rows": rows, "environment": env, "absent": {}}


def test_a_framecodec_figure_over_the_tolerance_fails_the_check() -> None:
    baseline = result({"decode (feed) framecodec 16": 200.0, "encode framecodec 16": 1000.0})
    now = result({"decode (feed) framecodec 16": 221.0, "encode framecodec 16": 1090.0})
    worse, skipped = instructions.compare(now, baseline, 0.10)
    assert skipped is None
    assert len(worse) == 1
    assert worse[0].startswith("decode (feed) framecodec 16: 221 instructions")
    assert "+10.5%" in worse[0]


def test_the_checksummed_rows_are_guarded_too() -> None:
    baseline = result({"decode (feed) framecodec+crc 16": 300.0})
    now = result({"decode (feed) framecodec+crc 16": 340.0})
    worse, _ = instructions.compare(now, baseline, 0.10)
    assert len(worse) == 1 and worse[0].startswith("decode (feed) framecodec+crc 16: 340")


def test_figures_within_the_tolerance_or_better_pass() -> None:
    baseline = result({"decode (feed) framecodec 16": 200.0})
    for figure in (150.0, 200.0, 219.9):
        worse, _ = instructions.compare(
            result({"decode (feed) framecodec 16": figure}), baseline, 0.10
        )
        assert worse == []


def test_other_contenders_are_reported_not_guarded() -> None:
    baseline = result({"decode (feed) msgpack 16": 600.0})
    worse, _ = instructions.compare(result({"decode (feed) msgpack 16": 900.0}), baseline, 0.10)
    assert worse == []


def test_a_baseline_from_another_interpreter_is_not_compared() -> None:
    baseline = result({"decode (feed) framecodec 16": 100.0}, python="3.12.1")
    worse, skipped = instructions.compare(
        result({"decode (feed) framecodec 16": 500.0}), baseline, 0.10
    )
    assert worse == []
    assert skipped is not None and "python 3.12.1 there, 3.11.7 here" in skipped


def test_goals_are_stated_with_their_verdicts() -> None:
    lines = instructions.goals(
        result(
            {
                "decode (feed) framecodec 16": 190.0,
                "decode (feed) msgpack 16": 600.0,
                "decode (feed) framecodec 64": 250.0,
                "decode (feed) msgpack 64": 600.0,
            }
        )
    )
    assert lines[0] == "decode 16 B: 190 instructions per frame (goal <= 200): met"
    assert lines[1].startswith("msgpack's Unpacker at 16 B: 3.2x") and lines[1].endswith("met")
    assert lines[2].startswith("msgpack's Unpacker at 64 B: 2.4x") and lines[2].endswith("MISSED")


def test_dumps_are_read_in_the_order_callgrind_wrote_them(tmp_path: Any) -> None:
    for part, total in [(3, 30), (1, 10), (2, 20)]:
        (tmp_path / f"callgrind.out.{part}").write_text(
            f"version: 1\ncmd: python\npart: {part}\nsummary: {total}\n"
        )
    (tmp_path / "unrelated").write_text("no counters here\n")
    assert instructions._dump_totals(str(tmp_path)) == [10, 20, 30]


@needs_valgrind
@needs_compiled_core
def test_a_real_callgrind_run_counts_per_frame_and_repeats_exactly() -> None:
    cases: List[Any] = [("decode (feed)", "framecodec", 64), ("encode_many", "naive", 64)]
    first = instructions.count(cases)
    assert first == instructions.count(cases)
    decode, naive_encode = first
    # Per frame, not per run: a 64 B frame costs hundreds of instructions to
    # decode, not the hundreds of thousands a whole run of them does.
    assert 50 < decode < 2000
    assert 200 < naive_encode < 20000


@needs_valgrind
@needs_compiled_core
def test_the_command_checks_a_baseline_and_fails_on_a_regression(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = argparse.Namespace(
        sizes=[1024],
        json=None,
        baseline=None,
        tolerance=0.10,
        save_baseline=str(tmp_path / "b.json"),
    )
    assert instructions.main(args) == 0
    saved = json.loads((tmp_path / "b.json").read_text())
    assert {row["size"] for row in saved["rows"]} == {1024}
    # A baseline claiming half of today's figures: every framecodec row
    # regresses.  (Today's figures are the saved ones again: the run is
    # deterministic, and one real run is enough for this test.)
    measured = json.loads(json.dumps({key: saved[key] for key in ("rows", "absent")}))
    monkeypatch.setattr(instructions, "measure", lambda sizes, have_msgpack: dict(measured))
    for row in saved["rows"]:
        row["instructions"] /= 2
    (tmp_path / "half.json").write_text(json.dumps(saved))
    args.save_baseline, args.baseline = None, str(tmp_path / "half.json")
    assert instructions.main(args) == 1
    out = capsys.readouterr().out
    assert "decode (feed) framecodec 1024:" in out
    assert "msgpack 1024:" not in out.split("worse than")[-1]
    assert "worse than" in out
