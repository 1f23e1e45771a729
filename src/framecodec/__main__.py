"""Command line: ``python -m framecodec {bench,serve,send} ...``: the argparse
root; the network commands live in cli.py, the benchmark's in benchmarks/."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import benchmarks, cli


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecodec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    benchmarks.add_parser(commands)
    cli.add_parsers(commands)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
