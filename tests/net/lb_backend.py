"""A backend behind the load balancer (tests/net/test_load_balancer.py).

``python lb_backend.py ADDRESS NAME`` serves ADDRESS and answers each frame
with NAME, a space and the frame, so a client can tell which backend
answered and that the answer is its own.  It prints "ready ADDRESS" once
listening, and runs until killed.
"""

from __future__ import annotations

import sys

import framecodec


def main() -> None:
    address, name = sys.argv[1], sys.argv[2].encode()

    def answer(frame: bytes) -> bytes:
        return name + b" " + frame

    server = framecodec.serve(address, answer)
    print(f"ready {server.address}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
