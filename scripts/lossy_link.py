"""Frames over a lossy, slow link between two network namespaces, as the
tests in tests/lossy run them, with every rate and size settable.

    sudo python scripts/lossy_link.py                       # every backend, plain and TLS
    sudo python scripts/lossy_link.py --backend aio --tls --drop 0.05 --frames 5000
    sudo python scripts/lossy_link.py --undetected 0.01     # a faulty middlebox
    sudo python scripts/lossy_link.py --duration 60         # runs of up to a minute each

Needs root, /dev/net/tun and iproute2 (ip, tc); TLS needs trustme (the test
extra).  Each run prints one line: frames checked, throughput, what the
relay did, any error; the exit status is 1 if any run lost or changed a
frame.  Namespaces, devices and programs are removed at the end, however
the runs ended.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from typing import List, Optional

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.lossy import link as lossy
from tests.lossy.relay import Impairments
from tests.lossy.scenarios import TLSFiles, frames


def tls_files(directory: str) -> TLSFiles:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(lossy.SERVER_ADDRESS)
    files = TLSFiles(f"{directory}/cert.pem", f"{directory}/key.pem", f"{directory}/ca.pem")
    cert.cert_chain_pems[0].write_to_path(files.cert)
    cert.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca)
    return files


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("selector", "threads", "aio"), action="append",
                        help="server backend (repeat for several; default: all three)")  # fmt: skip
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="TLS runs only")
    tls.add_argument("--plain", action="store_true", help="plain runs only")
    parser.add_argument("--frames", type=int, default=2000, help="frames per run (2000)")
    parser.add_argument("--max-size", type=int, default=256 * 1024, help="largest body (256 KiB)")
    parser.add_argument("--budget", type=int, default=1_500_000,
                        help="total body bytes per run, roughly (1.5 MB)")  # fmt: skip
    parser.add_argument("--rate", default="10mbit", help="tc tbf rate each way ('none': no limit)")
    parser.add_argument("--delay", type=float, default=20.0, help="ms each way (20)")
    parser.add_argument("--jitter", type=float, default=5.0, help="+- ms (5)")
    parser.add_argument("--drop", type=float, default=0.02, help="packet loss rate (0.02)")
    parser.add_argument("--reorder", type=float, default=0.05, help="reordering rate (0.05)")
    parser.add_argument("--duplicate", type=float, default=0.01, help="duplication rate (0.01)")
    parser.add_argument("--corrupt", type=float, default=0.001,
                        help="corruption TCP's checksum catches (0.001)")  # fmt: skip
    parser.add_argument("--undetected", type=float, default=0.0,
                        help="TCP payload corruption with the checksum fixed (0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--duration", type=float, default=120.0, help="deadline of a run, s (120)")
    args = parser.parse_args(argv)

    reason = lossy.unavailable()
    if reason is not None:
        print(f"lossy_link: {reason}", file=sys.stderr)
        return 2
    impairments = Impairments(
        delay=args.delay / 1000, jitter=args.jitter / 1000, drop=args.drop,
        reorder=args.reorder, duplicate=args.duplicate, corrupt=args.corrupt,
        undetected=args.undetected, seed=args.seed,
    )  # fmt: skip
    print(f"link: {args.rate}, {impairments.describe()}")
    modes = [False] if args.plain else [True] if args.tls else [False, True]
    failed = 0
    with tempfile.TemporaryDirectory() as directory:
        files = tls_files(directory) if True in modes else None
        rate = None if args.rate == "none" else args.rate
        with lossy.LossyLink(impairments, rate=rate) as link:
            for backend in args.backend or ["selector", "threads", "aio"]:
                for use_tls in modes:
                    result = frames(
                        link, backend, files if use_tls else None, count=args.frames,
                        max_size=args.max_size, budget=args.budget, seed=args.seed,
                        deadline=args.duration,
                    )  # fmt: skip
                    failed += not result["ok"]
                    relay = result["relay"]
                    problem = result.get("error") or (result.get("errors") or [None])[0]
                    print(
                        f"{backend:8} {'tls' if use_tls else 'plain':5} "
                        f"{'ok  ' if result['ok'] else 'FAIL'} "
                        f"{result.get('received')}/{result.get('frames')} frames, "
                        f"{result.get('body_bytes', 0) / 1e6:.2f} MB each way in "
                        f"{result.get('seconds')} s = "
                        f"{result.get('bytes_per_second', 0) * 8 / 1e6:.2f} Mbit/s; relay: "
                        f"{relay.get('received', 0)} packets, {relay.get('dropped', 0)} dropped, "
                        f"{relay.get('reordered', 0)} reordered, "
                        f"{relay.get('duplicated', 0)} duplicated, "
                        f"{relay.get('corrupted', 0)} corrupted, "
                        f"{relay.get('undetected', 0)} undetected"
                        + (f"; {problem}" if problem else ""),
                        flush=True,
                    )
                    server_errors = result.get("server", {}).get("errors")
                    if server_errors:
                        print(f"         server: {server_errors[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
