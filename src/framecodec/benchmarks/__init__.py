"""``python -m framecodec bench``: framecodec beside what users would pick instead.

One command measures framecodec and its alternatives over real loopback
sockets, in the same run on the same machine, and prints each row's ratio
to the naive hand-written loop and to raw sockets moving the same bytes
without framing, so the ratios hold however busy the machine is.

- contenders.py: what is measured, each contender's receiver and sender
  (one-way streams) and echo server and client (request/response);
- loadgen.py: the driver of 64 concurrent clients;
- workers.py: the processes that run senders and receivers, so that the
  GIL of one side never throttles the other;
- runner.py: the plan (sizes, repetitions, calibration) and the medians;
- report.py: the tables, the targets, JSON and the plot;
- cli.py: the command line.

``python -m framecodec bench --codec`` runs the in-memory codec
micro-benchmark (framecodec.benchmarks.codec) instead.
"""

from .cli import add_parser

__all__ = ["add_parser"]
