"""Command line: ``framecodec {bench,serve,send} ...`` (or ``python -m
framecodec``): the argparse root; the network commands live in cli.py, the
benchmark's in benchmarks/."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import IMPLEMENTATION, __version__, benchmarks, cli

DESCRIPTION = """\
framecodec frames messages over stream sockets (TCP, Unix, TLS).

Run an echo service (serve), send payloads to one and print the replies
(send), or measure framecodec against the alternatives (bench).
COMMAND --help describes each command and its options."""

EPILOG = """\
exit status:
  0    success
  1    an error, reported on one line
  2    a usage error (bad command line)
  130  interrupted (Ctrl-C)"""


def program_name(argv0: str) -> str:
    """How help and usage name the program: the script's own name, or
    ``python -m framecodec`` when run as a module (argv[0] is __main__.py)."""
    name = os.path.basename(argv0)
    if not name or name == "__main__.py" or name.endswith(".py"):
        return "python -m framecodec"
    root, ext = os.path.splitext(name)
    return root if ext.lower() == ".exe" else name


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name(sys.argv[0] if sys.argv else ""),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"framecodec {__version__} (core: {IMPLEMENTATION})"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=cli.CommandParser
    )
    benchmarks.add_parser(commands)
    cli.add_parsers(commands)
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return cli.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
