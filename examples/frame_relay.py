"""A relay of whole frames: each frame a client sends goes to an upstream
server as it is, and the upstream's reply comes back as it is.

    python examples/frame_relay.py LISTEN UPSTREAM [FORMAT]
    python examples/frame_relay.py 127.0.0.1:50052 127.0.0.1:50051 grpc

For a format that delivers whole frames (grpc, postgres: ``strip=0``), a
frame handler's return value is sent as a whole frame, header included, so
relaying is one line: the upstream client's ``request`` is the handler.
Nothing here splits a header from a body; the codec checks each frame's
length field on the way out.  (One reply per frame, as gRPC's unary calls;
the default selector backend runs every handler on one thread, which the
single upstream connection needs.)
"""

from __future__ import annotations

import sys
from typing import List, Optional

import framecodec


def relay(listen: str, upstream: framecodec.Client, format: str = "grpc") -> framecodec.Server:
    """A server on ``listen`` relaying every frame through ``upstream``."""
    return framecodec.serve(listen, upstream.request, format=format)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: frame_relay.py LISTEN UPSTREAM [FORMAT]", file=sys.stderr)
        return 2
    listen, upstream, *format = args
    client = framecodec.connect(upstream, format=format[0] if format else "grpc")
    with client, relay(listen, client, *format) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
