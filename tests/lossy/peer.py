"""The programs run inside the namespaces of a lossy link (link.py starts them
with ``ip netns exec``): ``python -m tests.lossy.peer ROLE ...``.

server  a framecodec server (selector, threads or aio) on the link's server
        address that checks each frame's checksum and order and echoes it;
        prints {"port": N} once listening, serves until its standard input
        closes (so it never outlives the test), then prints its stats.
client  sends frames of random sizes, each carrying a sha256 of its body,
        with framecodec.connect or framecodec.aio, a bounded window in
        flight, and checks every echo: intact, in order; prints the result.
udp-recv / udp-send   numbered datagrams, for counting what the relay does.
tcp-recv / tcp-send   a raw TCP byte stream, for counting corrupted bytes.

Every result is one JSON line on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import select
import socket
import ssl
import struct
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional

SEQ = struct.Struct("!Q")
HEAD = SEQ.size + 32  # sequence number, sha256(sequence number + body)
REFUSED = b"\xff" * SEQ.size  # the server's reply to a frame that failed its check
WINDOW_BYTES = 64 * 1024  # echoed bytes in flight: always fit the kernel's socket buffers
WINDOW_FRAMES = 64


def emit(record: Dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# -- frames -----------------------------------------------------------------------


def frame_sizes(count: int, max_size: int, budget: int, seed: int) -> List[int]:
    """``count`` body sizes, log-uniform in 0..max_size (so most are small
    and some are large), including 0 and max_size, their total kept near
    ``budget``: once it is spent the rest are 0-64 bytes."""
    rng = random.Random(seed)
    sizes = [0, max_size][:count]
    total = sum(sizes)
    top = math.log2(max_size + 1)
    while len(sizes) < count:
        size = min(max_size, int(2 ** rng.uniform(0, top)) - 1)
        if total + size > budget:
            size = rng.randint(0, 64)
        sizes.append(size)
        total += size
    rng.shuffle(sizes)
    return sizes


def make_frame(seq: int, body: bytes) -> bytes:
    number = SEQ.pack(seq)
    return number + hashlib.sha256(number + body).digest() + body


def check_frame(frame: bytes, expected_seq: int) -> Optional[str]:
    """None if ``frame`` is intact and is number ``expected_seq``, else what is wrong."""
    if len(frame) < HEAD:
        return f"frame {expected_seq}: {len(frame)} bytes, shorter than its header"
    number = frame[: SEQ.size]
    if number == REFUSED:
        return "the server refused a frame: " + bytes(frame[SEQ.size :]).decode(errors="replace")
    if hashlib.sha256(number + frame[HEAD:]).digest() != frame[SEQ.size : HEAD]:
        return f"frame {expected_seq}: checksum mismatch ({len(frame)} bytes)"
    (seq,) = SEQ.unpack(number)
    if seq != expected_seq:
        return f"frame {seq} arrived where frame {expected_seq} was due"
    return None


# -- server -----------------------------------------------------------------------


class Checker:
    """The server's handler: check, then echo; a bad frame gets REFUSED + why."""

    def __init__(self) -> None:
        self.expected = 0
        self.errors: List[str] = []

    def __call__(self, frame: bytes) -> bytes:
        problem = check_frame(frame, self.expected)
        self.expected += 1
        if problem is not None:
            self.errors.append(problem)
            return REFUSED + problem.encode()
        return frame


def wait_for_stdin_eof() -> None:
    while sys.stdin.buffer.read(4096):
        pass


def serve(args: argparse.Namespace) -> int:
    import framecodec

    context = framecodec.server_context(args.cert, args.key) if args.cert else None
    checker = Checker()
    address = f"{args.host}:{args.port}"
    if args.backend == "aio":
        stats = asyncio.run(serve_aio(address, checker, context))
    else:
        server = framecodec.serve(address, checker, backend=args.backend, ssl_context=context)
        with server.start():
            emit({"port": server.address.port})
            wait_for_stdin_eof()
        stats = dict(server.stats)
    emit({"stats": stats, "errors": checker.errors, "checked": checker.expected})
    return 0


async def serve_aio(address: str, checker: Checker, context: Optional[ssl.SSLContext]) -> dict:
    import framecodec.aio

    server = await framecodec.aio.start_server(address, checker, ssl_context=context)
    async with server:
        emit({"port": server.address.port})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_stdin_eof)
    return dict(server.stats)


# -- client -----------------------------------------------------------------------


class Run:
    """One client's frames, what is in flight, and what came back."""

    def __init__(self, args: argparse.Namespace) -> None:
        rng = random.Random(args.seed + 1)
        self.frames = [
            make_frame(seq, rng.randbytes(size))
            for seq, size in enumerate(
                frame_sizes(args.frames, args.max_size, args.budget, args.seed)
            )
        ]
        self.deadline = time.monotonic() + args.deadline
        self.in_flight: Deque[int] = deque()
        self.in_flight_bytes = 0
        self.received = 0
        self.errors: List[str] = []

    def window_full(self, next_size: int) -> bool:
        if not self.in_flight:
            return False
        return (
            len(self.in_flight) >= WINDOW_FRAMES or self.in_flight_bytes + next_size > WINDOW_BYTES
        )

    def sent(self, seq: int) -> None:
        self.in_flight.append(seq)
        self.in_flight_bytes += len(self.frames[seq])
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"the run's deadline passed after {seq} frames")

    def got(self, frame: bytes) -> None:
        seq = self.in_flight.popleft()
        self.in_flight_bytes -= len(self.frames[seq])
        problem = check_frame(frame, seq)
        if problem is None and bytes(frame) != self.frames[seq]:
            problem = f"frame {seq}: intact but not the frame sent"
        if problem is not None:
            self.errors.append(problem)
            raise AssertionError(problem)
        self.received += 1

    def result(self, started: float, error: Optional[BaseException]) -> Dict[str, Any]:
        seconds = time.monotonic() - started
        body = sum(len(frame) - HEAD for frame in self.frames[: self.received])
        return {
            "ok": error is None and self.received == len(self.frames),
            "frames": len(self.frames),
            "received": self.received,
            "body_bytes": body,
            "seconds": round(seconds, 3),
            "bytes_per_second": round(body / seconds) if seconds else 0,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "errors": self.errors,
        }


def client_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    import framecodec

    return framecodec.client_context(args.ca) if args.ca else None


def run_blocking(args: argparse.Namespace, run: Run) -> None:
    import framecodec

    context = client_context(args)
    tls = {"ssl_context": context, "server_hostname": args.host} if context else {}
    with framecodec.connect(f"{args.host}:{args.port}", timeout=args.timeout, **tls) as client:
        for seq, frame in enumerate(run.frames):
            while run.window_full(len(frame)):
                run.got(client.recv())
            client.send(frame)
            run.sent(seq)
        while run.in_flight:
            run.got(client.recv())


async def run_aio(args: argparse.Namespace, run: Run) -> None:
    import framecodec.aio

    context = client_context(args)
    tls = {"ssl_context": context, "server_hostname": args.host} if context else {}
    conn = await framecodec.aio.open_connection(
        f"{args.host}:{args.port}", timeout=args.timeout, **tls
    )
    try:
        for seq, frame in enumerate(run.frames):
            while run.window_full(len(frame)):
                run.got(await asyncio.wait_for(conn.recv(), args.timeout))
            await asyncio.wait_for(conn.send(frame), args.timeout)
            run.sent(seq)
        while run.in_flight:
            run.got(await asyncio.wait_for(conn.recv(), args.timeout))
    finally:
        await conn.close()


def client(args: argparse.Namespace) -> int:
    run = Run(args)
    started = time.monotonic()
    error: Optional[BaseException] = None
    try:
        if args.backend == "aio":
            asyncio.run(run_aio(args, run))
        else:
            run_blocking(args, run)
    except Exception as exc:  # reported, not raised: the test reads the result
        error = exc
    result = run.result(started, error)
    emit(result)
    return 0 if result["ok"] else 1


# -- datagram and raw stream probes ----------------------------------------------


def udp_recv(args: argparse.Namespace) -> int:
    """Collect numbered datagrams until ``idle`` seconds pass without one (or
    ``limit`` in all); report every sequence number in arrival order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((args.host, args.port))
        emit({"port": sock.getsockname()[1]})
        seqs: List[int] = []
        bad = 0
        deadline = time.monotonic() + args.limit
        idle = args.first_wait
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], idle)
            if not ready:
                break
            data = sock.recv(65535)
            idle = args.idle
            seq = SEQ.unpack_from(data)[0] if len(data) >= SEQ.size else -1
            if data != udp_payload(seq, args.size):
                bad += 1
            seqs.append(seq)
    emit({"seqs": seqs, "bad": bad})
    return 0


def udp_payload(seq: int, size: int) -> bytes:
    number = SEQ.pack(seq)
    return (number + hashlib.sha256(number).digest() * (size // 32 + 1))[:size]


def udp_send(args: argparse.Namespace) -> int:
    """``count`` numbered datagrams, ``interval`` seconds apart (in bursts of 10)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        started = time.monotonic()
        for seq in range(args.count):
            sock.sendto(udp_payload(seq, args.size), (args.host, args.port))
            if seq % 10 == 9:
                lag = started + (seq + 1) * args.interval - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
    emit({"sent": args.count})
    return 0


def stream_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def tcp_recv(args: argparse.Namespace) -> int:
    """Accept one connection, read to its end, count the bytes that differ
    from what tcp-send sends (the same seeded bytes)."""
    expected = stream_bytes(args.size, args.seed)
    with socket.create_server((args.host, args.port)) as listener:
        emit({"port": listener.getsockname()[1]})
        listener.settimeout(args.timeout)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(args.timeout)
            chunks = []
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    got = b"".join(chunks)
    differ = sum(1 for a, b in zip(got, expected) if a != b)
    emit({"received": len(got), "differing_bytes": differ, "intact": got == expected})
    return 0


def tcp_send(args: argparse.Namespace) -> int:
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
        sock.sendall(stream_bytes(args.size, args.seed))
    emit({"sent": args.size})
    return 0


# -- command line -----------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m tests.lossy.peer")
    roles = top.add_subparsers(dest="role", required=True)

    def role(name: str) -> argparse.ArgumentParser:
        sub = roles.add_parser(name)
        sub.add_argument("--host", required=True)
        sub.add_argument("--port", type=int, default=0)
        sub.add_argument("--timeout", type=float, default=30.0)
        return sub

    server = role("server")
    server.add_argument("--backend", choices=("selector", "threads", "aio"), required=True)
    server.add_argument("--cert")
    server.add_argument("--key")
    client_args = role("client")
    client_args.add_argument("--backend", choices=("blocking", "aio"), required=True)
    client_args.add_argument("--ca")
    client_args.add_argument("--frames", type=int, default=1000)
    client_args.add_argument("--max-size", type=int, default=256 * 1024)
    client_args.add_argument("--budget", type=int, default=1 << 20)
    client_args.add_argument("--seed", type=int, default=13)
    client_args.add_argument("--deadline", type=float, default=120.0)
    for name in ("udp-recv", "udp-send"):
        sub = role(name)
        sub.add_argument("--size", type=int, default=64)
        if name == "udp-recv":
            sub.add_argument("--first-wait", type=float, default=10.0)
            sub.add_argument("--idle", type=float, default=1.0)
            sub.add_argument("--limit", type=float, default=60.0)
        else:
            sub.add_argument("--count", type=int, default=1000)
            sub.add_argument("--interval", type=float, default=0.0005)
    for name in ("tcp-recv", "tcp-send"):
        sub = role(name)
        sub.add_argument("--size", type=int, default=1 << 20)
        sub.add_argument("--seed", type=int, default=13)
    return top


ROLES = {
    "server": serve,
    "client": client,
    "udp-recv": udp_recv,
    "udp-send": udp_send,
    "tcp-recv": tcp_recv,
    "tcp-send": tcp_send,
}


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    return ROLES[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
