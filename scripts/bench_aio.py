"""framecodec.aio against asyncio streams, and serve(workers=1) against workers=2.

    python scripts/bench_aio.py [--quick] [--seconds S]

Part 1, one-way throughput over TCP loopback, sender and receiver in
separate processes, for 16 B, 256 B, 4 KiB, 64 KiB and 1 MiB frames:

- receiving side: one fast blocking sender (pre-encoded frames, ``sendall``)
  feeds each asyncio receiver, so the rows differ only in how they receive:
  asyncio streams (``readexactly`` the header, then the payload) against
  framecodec.aio (a plain handler per frame, and the batch shape), on the
  default loop and on uvloop where installed;
- end to end: each side of each contender as its users write it, asyncio
  streams (``write`` + ``drain`` per frame, ``readexactly``) against
  framecodec.aio (``await conn.send`` per frame, a handler per frame).

Part 2, requests/s of ``serve(..., workers=N)`` for N = 1 and 2, with a
load generator in another process: 16 connections, each keeping a window of
requests in flight (pipelined, so that it costs less per request than the
server), for an echo handler and a JSON handler (parse, compute, reply).

Each figure is the median of ``--reps`` runs, the contenders interleaved so
that the machine's other load weighs on all alike.  Everything is bounded:
the whole script stops measuring after ``--budget`` seconds (default 110).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import framecodec
from framecodec import FrameDecoder, FrameEncoder
from framecodec.benchmarks import aio_roles

SIZES = [16, 256, 4096, 64 * 1024, 1024 * 1024]
HEADER = struct.Struct(">I")
CTX = multiprocessing.get_context("fork")
perf_counter = time.perf_counter

try:
    import uvloop
except ImportError:  # measured where installed
    uvloop = None


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


def run_on(kind: str, coroutine: Any) -> Any:
    loop = new_loop(kind)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# -- receivers: run in a child, on an inherited listening socket --------------------------


async def streams_receive(sock: socket.socket, count: int) -> Tuple[int, float]:
    """The asyncio streams receiver: readexactly the header, then the payload."""
    done: asyncio.Future[Tuple[int, float]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(count):
                (length,) = HEADER.unpack(await reader.readexactly(4))
                await reader.readexactly(length)
            end = perf_counter()
            if await reader.read(1):
                raise ValueError("the stream went on")
            done.set_result((count, end))
        except BaseException as exc:
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        return await done


def receiver_main(kind: str, sock: socket.socket, count: int, results: Any) -> None:
    contender, _, loop = kind.partition("@")
    cpu = time.process_time()  # this process's user + system time
    if contender == "streams":
        frames, end = run_on(loop, streams_receive(sock, count))
    else:
        batch = contender == "aio-batch"
        frames, end = run_on(loop, aio_roles.receive_frames(sock, count, batch=batch))
    results.send((frames, end, time.process_time() - cpu))


# -- senders ---------------------------------------------------------------------------


def blast(address: Tuple[str, int], payload: bytes, count: int) -> float:
    """The common fast sender: pre-encoded frames, one sendall per ~256 KiB."""
    encoder = FrameEncoder()
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sock:
        start = perf_counter()
        if len(payload) >= 64 * 1024:
            header = encoder.header(len(payload))
            for _ in range(count):
                sock.sendmsg([header, payload])  # blocking: all of it
        else:
            per = max(1, 256 * 1024 // (len(payload) + 4))
            chunk = encoder.encode_many([payload] * per)
            full, rest = divmod(count, per)
            for _ in range(full):
                sock.sendall(chunk)
            if rest:
                sock.sendall(encoder.encode_many([payload] * rest))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the receiver closes once it has counted everything
    return start


async def streams_send(address: Tuple[str, int], payload: bytes, count: int) -> float:
    """The asyncio streams sender: one write and one drain per frame."""
    _, writer = await asyncio.open_connection(*address)
    start = perf_counter()
    pack = HEADER.pack
    for _ in range(count):
        writer.write(pack(len(payload)) + payload)
        await writer.drain()
    writer.close()
    await writer.wait_closed()
    return start


def sender_main(kind: str, address: Tuple[str, int], size: int, count: int, results: Any) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    if kind == "blast":
        results.send(blast(address, payload, count))
    elif kind == "streams":
        results.send(run_on("asyncio", streams_send(address, payload, count)))
    else:
        results.send(
            run_on("asyncio", aio_roles.send_frames(f"{address[0]}:{address[1]}", payload, count))
        )


def one_stream(
    receiver: str, sender: str, size: int, count: int, timeout: float = 60.0
) -> Tuple[float, float]:
    """Seconds from the sender's first frame to the receiver's last, and the
    receiver's CPU seconds."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    rx_results, rx_send = CTX.Pipe(False)
    tx_results, tx_send = CTX.Pipe(False)
    rx = CTX.Process(target=receiver_main, args=(receiver, listener, count, rx_send))
    rx.start()
    address = listener.getsockname()
    listener.close()
    tx = CTX.Process(target=sender_main, args=(sender, address, size, count, tx_send))
    tx.start()
    try:
        if not (rx_results.poll(timeout) and tx_results.poll(timeout)):
            raise TimeoutError(f"{receiver} <- {sender}, {size} B: no result in {timeout} s")
        frames, end, cpu = rx_results.recv()
        start = tx_results.recv()
        if frames != count:
            raise RuntimeError(f"{count} frames sent, {frames} received")
        return float(end - start), float(cpu)
    finally:
        for process in (rx, tx):
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in (rx_results, rx_send, tx_results, tx_send):
            pipe.close()


# -- part 1 ------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, deadline: float) -> None:
    loops = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
    receive_rows = [(f"{who}@{loop}", "blast") for loop in loops for who in ("streams", "aio")]
    receive_rows += [("aio-batch@asyncio", "blast")]
    end_to_end_rows = [("streams@asyncio", "streams"), ("aio@asyncio", "aio")]
    rows = receive_rows + end_to_end_rows
    figures: Dict[Tuple[str, str, int], List[float]] = {}  # bytes per second
    cpu: Dict[Tuple[str, str, int], List[float]] = {}  # bytes per receiver CPU second
    for size in args.sizes:
        counts = {}
        for row in rows:  # calibration, also the warm-up: each run lasts about --seconds
            probe = max(20, min(200_000, (2 << 20) // (size + 4)))
            seconds, _ = one_stream(*row, size, probe)
            counts[row] = max(10, int(probe * args.seconds / max(seconds, 1e-4)))
        for _ in range(args.reps):
            for row in rows:
                if time.monotonic() > deadline:
                    break
                seconds, used = one_stream(*row, size, counts[row])
                total = counts[row] * (size + 4)
                figures.setdefault((*row, size), []).append(total / seconds)
                cpu.setdefault((*row, size), []).append(total / max(used, 1e-6))
        print(f"  measured {size} B", file=sys.stderr, flush=True)

    def table(
        title: str,
        rows: List[Tuple[str, str]],
        pairs: List[Tuple[int, int]],
        source: Dict[Tuple[str, str, int], List[float]] = figures,
    ) -> None:
        """``pairs``: (aio row, streams row) indexes whose ratio gets a column."""

        def median(row: Tuple[str, str], size: int) -> Optional[float]:
            samples = source.get((*row, size))
            return statistics.median(samples) if samples else None

        print(f"\n{title}\n")
        ratios = [f"aio / streams ({rows[a][0].partition('@')[2]})" for a, _ in pairs]
        print("| frame | " + " | ".join(r for r, _ in rows) + " | " + " | ".join(ratios) + " |")
        print("|---:|" + "---:|" * (len(rows) + len(pairs)))
        for size in args.sizes:
            values = [median(row, size) for row in rows]
            cells = [f"{v / 1e6:,.0f} MB/s" if v else "-" for v in values]
            for a, b in pairs:
                va, vb = values[a], values[b]
                cells.append(f"**{va / vb:.2f}x**" if va and vb else "-")
            print(f"| {human(size)} | " + " | ".join(cells) + " |")

    pairs = [(2 * i + 1, 2 * i) for i in range(len(loops))]
    table("Receiving, wall clock (one blocking sender feeds every receiver):", receive_rows, pairs)
    table(
        "Receiving, CPU: MB received per CPU second of the receiving process:",
        receive_rows,
        pairs,
        cpu,
    )
    table("End to end (each contender's own sender and receiver):", end_to_end_rows, [(1, 0)])


def human(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1 << 10:
        return f"{size >> 10} KiB"
    return f"{size} B"


# -- part 2: workers ------------------------------------------------------------------


def echo(frame: bytes) -> bytes:
    return frame


def json_handler(frame: bytes) -> bytes:
    request = json.loads(frame)
    total = sum(item["price"] * item["quantity"] for item in request["items"])
    return json.dumps(
        {"order": request["order"], "total": total, "n": len(request["items"])}
    ).encode()


JSON_REQUEST = json.dumps(
    {
        "order": 12345,
        "items": [{"sku": f"item-{i}", "price": i * 1.5, "quantity": i % 4 + 1} for i in range(12)],
    }
).encode()
HANDLERS: Dict[str, Tuple[Callable[[bytes], bytes], bytes, int]] = {
    # name: (handler, request, requests in flight per connection)
    "echo, 64 B": (echo, b"x" * 64, 32),
    "JSON order, 0.5 KiB": (json_handler, JSON_REQUEST, 8),
}


def server_main(handler_name: str, workers: int, control: Any) -> None:
    handler = HANDLERS[handler_name][0]
    pool = framecodec.serve("127.0.0.1:0", handler, workers=workers)
    with pool.start():
        control.send(pool.address.port)
        control.recv()  # until told to stop


def drive(
    port: int, request: bytes, clients: int, depth: int, duration: float, warmup: float
) -> int:
    """Replies completed in ``duration`` s by ``clients`` connections that each
    keep ``depth`` requests in flight, refilling as replies arrive."""
    wire = FrameEncoder().encode(request)
    selector = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(wire * depth)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, FrameDecoder())
            socks.append(sock)
        now = perf_counter()
        begin, end = now + warmup, now + warmup + duration
        completed = 0
        while now < end:
            for key, _ in selector.select(end - now):
                sock, decoder = key.fileobj, key.data
                n = sock.recv_into(decoder.get_buffer())  # type: ignore[union-attr]
                if not n:
                    raise EOFError("the server closed a connection")
                replies = len(decoder.buffer_updated(n))
                if replies:
                    sock.send(wire * replies)  # type: ignore[union-attr]  # small: fits
                    if now >= begin:
                        completed += replies
            now = perf_counter()
        return completed
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def load_main(port: int, request: bytes, depth: int, duration: float, results: Any) -> None:
    results.send(drive(port, request, 16, depth, duration, warmup=0.5))


def requests_per_second(handler_name: str, workers: int, duration: float) -> float:
    _, request, depth = HANDLERS[handler_name]
    control, remote = CTX.Pipe()
    server = CTX.Process(target=server_main, args=(handler_name, workers, remote))
    server.start()
    results, results_send = CTX.Pipe(False)
    try:
        if not control.poll(30):
            raise TimeoutError("the server did not start")
        port = control.recv()
        load = CTX.Process(target=load_main, args=(port, request, depth, duration, results_send))
        load.start()
        if not results.poll(duration + 30):
            raise TimeoutError("the load generator did not finish")
        completed = results.recv()
        load.join(10)
        return float(completed / duration)
    finally:
        control.send("stop")
        server.join(20)
        if server.is_alive():
            server.kill()
            server.join()
        for pipe in (control, remote, results, results_send):
            pipe.close()


def scaling(args: argparse.Namespace, deadline: float) -> None:
    figures: Dict[Tuple[str, int], List[float]] = {}
    for _ in range(args.reps):
        for name in HANDLERS:
            for workers in (1, 2):
                if time.monotonic() > deadline:
                    break
                figures.setdefault((name, workers), []).append(
                    requests_per_second(name, workers, args.load_seconds)
                )
    cpus = os.cpu_count()
    print(f"\nserve(..., workers=N), {cpus} CPUs, 16 pipelined connections, selector backend:\n")
    print("| handler | workers=1 | workers=2 | ratio |")
    print("|---|---:|---:|---:|")
    for name in HANDLERS:
        one, two = figures.get((name, 1)), figures.get((name, 2))
        if not (one and two):
            continue
        a, b = statistics.median(one), statistics.median(two)
        print(f"| {name} | {a:,.0f} req/s | {b:,.0f} req/s | {b / a:.2f}x |")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, shorter runs")
    parser.add_argument("--seconds", type=float, default=0.25, help="length of a throughput run")
    parser.add_argument("--load-seconds", type=float, default=2.0, help="length of a load run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=110.0, help="stop measuring after this")
    parser.add_argument("--part", choices=("all", "throughput", "workers"), default="all")
    args = parser.parse_args(argv)
    args.sizes = SIZES
    if args.quick:
        args.reps, args.seconds, args.load_seconds = 1, 0.1, 1.0
    started = time.monotonic()
    deadline = started + args.budget
    load = os.getloadavg()
    print(
        f"framecodec {framecodec.__version__} ({framecodec.IMPLEMENTATION}), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} at start"
    )
    if args.part in ("all", "throughput"):
        throughput(
            args, deadline - (0 if args.part == "throughput" else 8 * args.load_seconds * args.reps)
        )
    if args.part in ("all", "workers"):
        scaling(args, deadline + 20)
    print(
        f"\n({time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
