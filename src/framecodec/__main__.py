"""Command line: ``python -m framecodec {bench,serve,send} ...``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecodec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from . import benchmarks, netcli

    benchmarks.add_parser(commands)
    netcli.add_parsers(commands)

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
