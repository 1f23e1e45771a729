"""The search service of the classic sockets tutorial's app-server, on framecodec.

    python examples/app_server.py 127.0.0.1:65432

A JSON request {"action": "search", "value": ...} is answered with
{"result": ...}; any other content type gets its first ten bytes echoed
back as "binary/custom-server-binary-type".  The tutorial's hand-written
selector loop, buffering and header parsing are all framecodec's job here.
"""

from __future__ import annotations

import logging
import sys

import framecodec
from framecodec import Message

ANSWERS = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "Forged in the fires of Mount Doom. \U0001f48d",
    "\U0001f436": "\U0001f43e Fetching the stick! \U0001f3d1",
}


def handle(request: Message) -> object:
    if request.content_type == "text/json":
        query = request.value
        action = query.get("action") if isinstance(query, dict) else None
        if action != "search":
            return {"result": f'Error: invalid action "{action}".'}
        value = query.get("value")
        return {"result": ANSWERS.get(value, f'No match for "{value}".')}
    reply = b"First 10 bytes of request: " + request.content[:10]
    return Message({"content-type": "binary/custom-server-binary-type"}, reply)


def main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: app_server.py ADDRESS   (e.g. 127.0.0.1:65432)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with framecodec.serve(argv[0], handle, protocol="messages") as server:
        print(f"listening on {server.address}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("caught keyboard interrupt, exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
