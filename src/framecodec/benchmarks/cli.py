"""``python -m framecodec bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from .base import Contender, TlsFiles
from .progress import Progress
from .runner import SECTIONS, make_plan


def _sizes(text: str) -> List[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes in bytes: {text!r}") from None
    if not sizes or any(size < 1 or size > 1 << 30 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be between 1 and {1 << 30} bytes: {text!r}")
    return sizes


def _transports(text: str) -> List[str]:
    names = _names(text)
    unknown = [name for name in names if name not in ("tcp", "unix")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"transports are tcp and unix, not {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return value


def _names(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parser(commands: Any) -> None:
    from .contenders import CONTENDERS

    parser = commands.add_parser(
        "bench",
        help="measure framecodec against the alternatives over loopback sockets",
        description=(
            "One-way throughput, request/response latency, 64 concurrent clients and "
            "receiver memory, for framecodec and the alternatives, in one run, with "
            "ratios to the naive loop and to raw sockets measured in the same run."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="fewer sizes, shorter runs (<1 min)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw throughput against frame size (needs matplotlib)"
    )
    parser.add_argument("--sizes", type=_sizes, help="comma-separated frame sizes in bytes")
    parser.add_argument(
        "--only",
        type=_names,
        help="comma-separated contenders: " + ",".join(c.key for c in CONTENDERS),
    )
    parser.add_argument(
        "--sections", type=_names, help="comma-separated, of: " + ",".join(SECTIONS)
    )
    parser.add_argument("--transports", type=_transports, help="tcp, unix or both (default: both)")
    parser.add_argument("--reps", type=_positive, help="repetitions of each figure")
    parser.add_argument(
        "--codec",
        action="store_true",
        help="run the in-memory codec micro-benchmark instead (--quick, --json, --sizes apply)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="with --codec: count instructions per frame under valgrind's callgrind "
        "(noise-free; needs valgrind)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="with --instructions: compare with this baseline; exit 1 if a framecodec "
        "figure is more than --tolerance worse",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="with --baseline: the allowed worsening, as a fraction (default: 0.10)",
    )
    parser.add_argument(
        "--save-baseline",
        metavar="FILE",
        help="with --instructions: write the figures as a baseline",
    )
    parser.set_defaults(run=main)


def make_tls_files(directory: str) -> Tuple[Optional[TlsFiles], Optional[str]]:
    """A throwaway CA and localhost certificate from trustme (in the bench
    extra).  Returns the files, or None and why there are none."""
    if importlib.util.find_spec("trustme") is None:
        return None, "no certificates: install trustme (pip install 'framecodec[bench]')"
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = TlsFiles(os.path.join(directory, "server.pem"), os.path.join(directory, "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(files.cert)
    ca.cert_pem.write_to_path(files.ca)
    return files, None


def choose(
    only: Optional[List[str]], tls: Optional[TlsFiles], tls_reason: Optional[str]
) -> Tuple[List[Contender], Dict[str, str]]:
    """The contenders to run, and those left out with the reason."""
    from .contenders import BY_KEY, CONTENDERS

    unknown = [key for key in only or () if key not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    chosen: List[Contender] = []
    absent: Dict[str, str] = {}
    for contender in CONTENDERS:
        if only and contender.key not in only:
            continue
        reason = contender.available()
        if reason is None and contender.tls and tls is None:
            reason = tls_reason or "no certificate"
        if reason is not None:
            absent[contender.label] = reason
        else:
            chosen.append(contender)
    return chosen, absent


def main(args: argparse.Namespace) -> int:
    if args.codec:
        if args.plot:
            raise SystemExit("--plot draws the socket benchmark; leave out --codec")
        if args.instructions:
            from . import instructions

            return instructions.main(args)
        from . import codec as codec_bench

        return codec_bench.main(args)
    if args.instructions or args.baseline or args.save_baseline:
        raise SystemExit("--instructions, --baseline and --save-baseline go with --codec")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("--plot needs matplotlib: pip install 'framecodec[bench]'")
    plan = make_plan(args.quick)
    if args.sizes:
        plan.sizes = args.sizes
    if args.transports:
        plan.transports = args.transports
    if args.reps:
        plan.reps = args.reps
    if args.sections:
        unknown = set(args.sections) - set(SECTIONS)
        if unknown:
            raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}")
        plan.sections = tuple(args.sections)
    with tempfile.TemporaryDirectory(prefix="fcbench-") as directory:
        tls, tls_reason = make_tls_files(directory)
        contenders, absent = choose(args.only, tls, tls_reason)
        results = run_and_report(plan, contenders, absent, tls)
    print(results["report"])
    del results["report"]
    status = 0
    json_path = args.json
    if results["interrupted"]:
        status = 130
        json_path = json_path or time.strftime("framecodec-bench-partial-%Y%m%d-%H%M%S.json")
        print(f"bench: interrupted; the figures above are those measured so far ({json_path})",
              file=sys.stderr)  # fmt: skip
    if json_path:
        from .report import write_json

        write_json(results, json_path)
    if args.plot and results.get("throughput"):
        from .report import plot

        try:
            plot(results, args.plot)
        except Exception as exc:  # the results are printed and saved already
            print(f"bench: no plot drawn ({type(exc).__name__}: {exc})", file=sys.stderr)
            status = status or 1
    return status


def run_and_report(
    plan: Any, contenders: List[Contender], absent: Dict[str, str], tls: Optional[TlsFiles]
) -> Dict[str, Any]:
    """Run the plan; the results with their meta data, targets and text report."""
    from .. import __version__
    from .report import evaluate_targets, render
    from .runner import count_steps, run

    progress = Progress(count_steps(plan, contenders))
    if not progress.terminal:  # at once, so a log shows the run has begun
        sys.stderr.write(f"bench: {progress.line('steps to run; starting')}\n")
        sys.stderr.flush()
    try:
        results = run(plan, contenders, tls, progress)
    finally:
        progress.clear()
    implementations = results.pop("implementations")
    main_core = implementations.get("main", "not run")
    results["meta"] = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "version": __version__,
        "implementation": f"{main_core} core",
        "implementations": implementations,
        "mode": "quick" if plan.quick else "full",
        "reps": plan.reps,
        "sizes": plan.sizes,
        "transports": plan.transports,
        "absent": absent,
    }
    if implementations.get("pure", "python") != "python":
        absent["framecodec pure Python"] = "FRAMECODEC_PURE_PYTHON=1 did not take effect"
    results["targets"] = evaluate_targets(results)
    results["report"] = render(results)
    return results
