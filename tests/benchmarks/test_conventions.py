"""The benchmark's conventions: progress whatever stderr is, every step
counted beforehand, Ctrl-C keeping what was measured, options checked
before anything runs, a failed plot losing nothing, spreads reported."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any, Dict, List

import pytest

from framecodec.benchmarks import cli, report, runner
from framecodec.benchmarks.contenders import BY_KEY
from framecodec.benchmarks.progress import Progress

from .test_netbench import tiny_plan

CONTENDERS = ("raw", "naive", "selector")


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_off_a_terminal_is_one_line_per_step() -> None:
    out = Pipe()
    progress = Progress(3, out)
    progress("first")
    progress("second")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("bench: [") and lines[0].endswith("s] 1/3 first")
    assert lines[1].endswith("2/3 second")


def test_the_step_count_is_the_steps_a_run_takes() -> None:
    plan = tiny_plan()
    contenders = [BY_KEY[key] for key in CONTENDERS]
    texts: List[str] = []
    runner.run(plan, contenders, None, texts.append)
    assert len(texts) == runner.count_steps(plan, contenders) > 0


def test_ctrl_c_keeps_what_was_measured(tmp_path: Any, monkeypatch: Any) -> None:
    plan = tiny_plan()
    contenders = [BY_KEY[key] for key in CONTENDERS]
    steps = runner.count_steps(plan, contenders)
    calls = []

    def interrupting(text: str) -> None:
        calls.append(text)
        if text.startswith("latency"):  # throughput done, latency begun
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Progress", lambda total: _Recorder(interrupting))
    results = cli.run_and_report(plan, contenders, {}, None)
    assert results["interrupted"] is True
    assert len(calls) < steps
    assert {row["contender"] for row in results["throughput"]} == set(CONTENDERS)
    assert "concurrency" not in results and "memory" not in results
    assert "INTERRUPTED" in results["report"]
    assert "One-way throughput over TCP loopback" in results["report"]


class _Recorder:
    terminal = True  # no "starting" line

    def __init__(self, call: Any) -> None:
        self.call = call

    def __call__(self, text: str) -> None:
        self.call(text)

    def clear(self) -> None:
        pass


def test_the_command_saves_an_interrupted_run(tmp_path: Any, monkeypatch: Any, capsys: Any) -> None:
    def interrupted(*args: Any) -> Dict[str, Any]:
        return {"interrupted": True, "report": "partial report", "throughput": []}

    monkeypatch.setattr(cli, "run_and_report", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli.main(_args()) == 130
    captured = capsys.readouterr()
    assert "partial report" in captured.out
    assert "interrupted" in captured.err
    saved = list(tmp_path.glob("framecodec-bench-partial-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["interrupted"] is True


def test_a_plot_that_fails_loses_no_result(tmp_path: Any, monkeypatch: Any, capsys: Any) -> None:
    row = {"transport": "tcp", "size": 16, "error": None}

    def measured(*args: Any) -> Dict[str, Any]:
        return {"interrupted": False, "report": "the report", "throughput": [row]}

    def broken(results: Any, path: str) -> None:
        raise ValueError("no axes")

    monkeypatch.setattr(cli, "run_and_report", measured)
    monkeypatch.setattr(report, "plot", broken)
    find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(  # matplotlib "installed"; the rest as it is
        cli.importlib.util,
        "find_spec",
        lambda name: object() if name == "matplotlib" else find_spec(name),
    )
    path = tmp_path / "out.json"
    assert cli.main(_args(json=str(path), plot=str(tmp_path / "p.png"))) == 1
    captured = capsys.readouterr()
    assert "the report" in captured.out
    assert "no plot drawn (ValueError: no axes)" in captured.err
    assert json.loads(path.read_text())["throughput"] == [row]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--transports", "tcpp"], "transports are tcp and unix"),
        (["--sizes", "16,x"], "not a list of sizes"),
        (["--sizes", "0"], "sizes must be between"),
        (["--reps", "0"], "must be a positive whole number"),
    ],
)
def test_bad_options_stop_before_anything_runs(argv: List[str], message: str, capsys: Any) -> None:
    parser = argparse.ArgumentParser(prog="framecodec")
    cli.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_spread_is_the_interquartile_range_over_the_median() -> None:
    assert runner.spread([10.0, 10.0, 10.0]) == 0.0
    assert runner.spread([8.0, 10.0, 12.0]) == pytest.approx(0.2)  # quartiles 9 and 11
    assert runner.spread([1.0, 2.0]) is None
    unstable = {"spread": 0.5, "label": "x"}
    lines = report.unstable_lines({"throughput": [unstable, {"spread": 0.05}]})
    assert "1 figure(s) marked '!'" in " ".join(lines)
    assert report._spread(unstable) == "50%!"


def _args(**overrides: Any) -> argparse.Namespace:
    values: Dict[str, Any] = dict(
        codec=False, instructions=False, baseline=None, save_baseline=None, plot=None,
        quick=True, sizes=None, transports=None, reps=None, sections=None, only=["raw"],
        json=None,
    )  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)
