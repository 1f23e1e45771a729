"""The classic sockets tutorial's app-client, on framecodec.

    python examples/app_client.py 127.0.0.1:65432 search ring
    python examples/app_client.py 127.0.0.1:65432 binary hello

"search" sends a JSON request; any other action sends action + value as
binary content of type "binary/custom-client-binary-type".
"""

from __future__ import annotations

import sys

import framecodec


def request(address: str, action: str, value: str) -> framecodec.Message:
    with framecodec.connect(address, protocol="messages", timeout=10) as client:
        if action == "search":
            return client.request({"action": action, "value": value})
        content = (action + value).encode("utf-8")
        return client.request(content, content_type="binary/custom-client-binary-type")


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: app_client.py ADDRESS ACTION VALUE", file=sys.stderr)
        return 2
    reply = request(*argv)
    if reply.content_type == "text/json":
        print(f"got result: {reply.value['result']}")
    else:
        print(f"got response: {reply.content!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
