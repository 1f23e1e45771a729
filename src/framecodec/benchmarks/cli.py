"""``python -m framecodec bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from .base import Contender, TlsFiles
from .runner import SECTIONS, make_plan


def _sizes(text: str) -> List[int]:
    return [int(part) for part in text.split(",") if part]


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
    parser.add_argument("--transports", type=_names, help="tcp, unix or both (default: both)")
    parser.add_argument("--reps", type=int, help="repetitions of each figure")
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
    """A throwaway CA and localhost certificate: trustme's, else openssl's.
    Returns the files, or None and why there are none."""
    if importlib.util.find_spec("trustme") is not None:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        files = TlsFiles(os.path.join(directory, "server.pem"), os.path.join(directory, "ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(files.cert)
        ca.cert_pem.write_to_path(files.ca)
        return files, None
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, "no certificate maker: install trustme (pip install trustme) or openssl"
    key = os.path.join(directory, "key.pem")
    crt = os.path.join(directory, "cert.pem")
    command = [
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", key, "-out", crt, "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        return None, f"openssl could not make a certificate: {done.stderr.decode()[-200:]}"
    both = os.path.join(directory, "server.pem")
    with open(both, "wb") as out:
        for part in (key, crt):
            with open(part, "rb") as source:
                out.write(source.read())
    return TlsFiles(both, crt), None


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


class Progress:
    """One line on stderr, rewritten in place, when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.enabled:
            line = f"[{time.monotonic() - self.started:5.0f} s] {text}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stderr.write("\r" + line[:width].ljust(width))
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()


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
    if args.json:
        from .report import write_json

        write_json(results, args.json)
    if args.plot:
        from .report import plot

        plot(results, args.plot)
    return 0


def run_and_report(
    plan: Any, contenders: List[Contender], absent: Dict[str, str], tls: Optional[TlsFiles]
) -> Dict[str, Any]:
    """Run the plan; the results with their meta data, targets and text report."""
    from .. import __version__
    from .report import evaluate_targets, render
    from .runner import run

    progress = Progress()
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
