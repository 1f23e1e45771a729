#!/usr/bin/env python3
"""Misbehaving peers against running servers: the table in docs/reliability.md.

For each backend ("selector", "threads", "aio": framecodec.aio on a loop
thread of its own), plain and TLS, a server runs in a
process of its own (so that its memory is read from outside, in
/proc/<pid>/status, and a crash shows as the process dying) with four
listeners on 127.0.0.1: frames (uint32 lengths), frames64 (uint64 lengths
that count themselves, length_adjustment=-8), messages (JSON headers), all
three with the settings below, and defaults (uint32 frames, no option set:
the memory-flood case's target, where the default memory budget holds).
A steady client, in another process, sends requests to all four in a loop
and records errors and latencies.  Each attack runs from this process; then
the script checks that the server is alive, that it closed every connection
the attack opened, and reads its counters (over a pipe to the server
process), the steady client's figures for the attack's window and the
server's peak RSS.

    python scripts/attack_report.py            # every case, about 2-3 minutes
    python scripts/attack_report.py --quick    # fewer and shorter, under a minute

Loopback only; every wait is bounded.  The Markdown table goes between the
attack-table markers of docs/reliability.md (--no-write to skip), the raw
figures to --json if given.  Needs trustme (the test extra) for certificates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

import framecodec
from framecodec import FrameDecoder, FrameEncoder, MessageDecoder, MessageEncoder, ProtocolError
from framecodec.net.server.base import IDLE_AGE
from framecodec.net.transport import ConnectionClosed

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START_MARK = "<!-- attack-table:start -->"
END_MARK = "<!-- attack-table:end -->"

MAX_FRAME_SIZE = 1 << 20
MAX_HEADER_SIZE = 8192
HIGH_WATER = 256 * 1024
MAX_CONNECTIONS = 64
READ_SIZE = 64 * 1024  # the decoders' default read size
FRAMES64: Dict[str, Any] = {"format": "uint64", "length_adjustment": -8}  # counts itself
COUNTERS = (
    "accepted",
    "rejected",
    "evicted",
    "clean_closes",
    "protocol_errors",
    "timeouts",
    "tls_failures",
    "network_errors",
    "handler_errors",
    "accept_pauses",
    "over_budget",
)
# The memory-flood case: peers sending 1 MiB requests, never reading.
FLOOD_REQUEST = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What differs between a full run and --quick."""

    frame_timeout: float
    idle_timeout: float
    peers: int  # connections per slow-peer case
    flood_peers: int  # connections of the memory-flood case
    burst: int
    overflow_extra: int
    min_window: float  # cheap attacks repeat for this long, so the steady p99 means something

    def server_options(self) -> Dict[str, Any]:
        return {
            "frame_timeout": self.frame_timeout,
            "idle_timeout": self.idle_timeout,
            "max_connections": MAX_CONNECTIONS,
            "overflow": "close_idle",  # the default
            "high_water": HIGH_WATER,
        }


FULL = Settings(
    frame_timeout=2.0,
    idle_timeout=4.0,
    peers=20,
    flood_peers=200,
    burst=1000,
    overflow_extra=16,
    min_window=1.5,
)
QUICK = Settings(
    frame_timeout=1.0,
    idle_timeout=1.5,
    peers=8,
    flood_peers=50,
    burst=1000,
    overflow_extra=8,
    min_window=0.25,
)


def listener_options() -> Dict[str, Dict[str, Any]]:
    return {
        "frames": {"protocol": "frames", "max_frame_size": MAX_FRAME_SIZE},
        "frames64": {"protocol": "frames", "max_frame_size": MAX_FRAME_SIZE, **FRAMES64},
        "messages": {
            "protocol": "messages",
            "max_header_size": MAX_HEADER_SIZE,
            "max_content_size": MAX_FRAME_SIZE,
        },
        # No server option set here: serve()'s and start_server()'s defaults.
        "defaults": {"protocol": "frames"},
    }


class AioServers:
    """framecodec.aio servers on a loop thread of their own, seen as the
    blocking ones are (address, stats, connections, memory, shutdown)."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, handler: Any, **options: Any) -> Any:
        import asyncio

        from framecodec import aio

        future = asyncio.run_coroutine_threadsafe(
            aio.start_server(f"{HOST}:0", handler, **options), self.loop
        )
        return future.result(20)

    def close(self, servers: List[Any]) -> None:
        import asyncio

        async def close_all() -> None:
            for server in servers:
                server.close()
            for server in servers:
                await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- the server process ---------------------------------------------------------------


def upper(frame: bytes) -> bytes:
    return frame.upper()


def echo(message: Any) -> Any:
    return message


def run_server_child(config: Dict[str, Any]) -> None:
    """Serve the three listeners; answer "stats" and "quit" lines on stdin."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    context = None
    if config["tls"]:
        context = framecodec.server_context(config["cert"], config["key"])
    servers: Dict[str, Any] = {}
    aio_servers = AioServers() if config["backend"] == "aio" else None
    for name, options in listener_options().items():
        handler = echo if options["protocol"] == "messages" else upper
        settings = {} if name == "defaults" else config["server_options"]
        if aio_servers is not None:
            servers[name] = aio_servers.start(handler, ssl_context=context, **settings, **options)
            continue
        servers[name] = framecodec.serve(
            f"{HOST}:0",
            handler,
            backend=config["backend"],
            ssl_context=context,
            **settings,
            **options,
        )
        servers[name].start()
    peaks = {name: 0 for name in servers}
    memory_peaks = {name: 0 for name in servers}
    lock = threading.Lock()
    stop = threading.Event()

    def sample_memory() -> None:
        # The largest per-connection buffer (input plus unsent replies) seen
        # since the last "stats": to compare with the documented bound.
        while not stop.wait(0.01):
            for name, server in servers.items():
                try:
                    largest = max((conn.memory for conn in server.connections), default=0)
                    held = server.memory  # what its memory budget counts
                except Exception:  # a connection closing under our feet
                    continue
                with lock:
                    peaks[name] = max(peaks[name], largest)
                    memory_peaks[name] = max(memory_peaks[name], held)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    print(json.dumps({name: server.address.port for name, server in servers.items()}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() != "stats":
                break
            report = {}
            with lock:
                for name, server in servers.items():
                    report[name] = {
                        **{key: server.stats[key] for key in COUNTERS},
                        "open": len(server.connections),
                        "peak_conn_memory": peaks[name],
                        "peak_memory": memory_peaks[name],
                        "memory_budget": server.memory_budget,
                    }
                    peaks[name] = 0
                    memory_peaks[name] = 0
            print(json.dumps(report), flush=True)
    finally:
        stop.set()
        sampler.join(1)
        if aio_servers is not None:
            aio_servers.close(list(servers.values()))
        for server in servers.values() if aio_servers is None else ():
            server.shutdown(timeout=2)


# -- the steady client process --------------------------------------------------------


def run_steady_child(config: Dict[str, Any]) -> None:
    """Request and check replies on every listener in a loop; on "begin" start
    a window, on "end" print its figures; stop at "quit", end of input or
    after max_seconds."""
    context = None
    if config["tls"]:
        context = framecodec.client_context(config["ca"])
    ports: Dict[str, int] = config["ports"]
    lock = threading.Lock()
    latencies: List[float] = []
    errors: List[str] = []
    stop = threading.Event()

    def connect(name: str) -> framecodec.Client:
        options = dict(listener_options()[name])
        options.pop("max_header_size", None)
        return framecodec.connect(
            f"{HOST}:{ports[name]}",
            ssl_context=context,
            server_hostname="localhost" if context else None,
            timeout=5.0,
            **options,
        )

    def control() -> None:
        for line in sys.stdin:
            command = line.strip()
            with lock:
                if command == "begin":
                    latencies.clear()
                    errors.clear()
                    continue
                if command != "end":
                    break
                ordered = sorted(latencies)
                print(
                    json.dumps(
                        {
                            "requests": len(ordered) + len(errors),
                            "errors": len(errors),
                            "error_samples": errors[:3],
                            "p50_ms": percentile(ordered, 50) * 1000,
                            "p99_ms": percentile(ordered, 99) * 1000,
                            "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
                        }
                    ),
                    flush=True,
                )
        stop.set()

    clients: Dict[str, Optional[framecodec.Client]] = {name: connect(name) for name in ports}
    threading.Thread(target=control, daemon=True).start()
    print("ready", flush=True)
    deadline = time.monotonic() + config["max_seconds"]
    count = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for name in ports:
            count += 1
            start = time.perf_counter()
            try:
                client = clients[name]
                if client is None:
                    client = clients[name] = connect(name)
                if name == "messages":
                    reply = client.request({"n": count})
                    ok = reply.value == {"n": count}
                else:
                    reply = client.request(b"steady %d" % count)
                    ok = reply == b"STEADY %d" % count
                if not ok:
                    raise AssertionError(f"wrong reply {reply!r}")
            except Exception as exc:
                with lock:
                    errors.append(f"{name}: {exc!r}"[:200])
                client = clients.pop(name, None)
                if client is not None:
                    client.close()
                clients[name] = None  # reconnect next round
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
        time.sleep(0.004)  # a steady rate, not a benchmark: the machine is shared
    for client in clients.values():
        if client is not None:
            client.close()


def percentile(ordered: List[float], pct: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * pct / 100) - 1)]


# -- handles on the child processes ---------------------------------------------------


class Child:
    """A child process of this script, talking JSON lines over its stdin/stdout."""

    def __init__(self, role: str, config: Dict[str, Any], log: IO[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, f"--child-{role}", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        self.role = role

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"{self.role} process did not answer in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.role} process ended (exit code {self.proc.poll()})")
        return line

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str, timeout: float = 10.0) -> Any:
        self.tell(command)
        return json.loads(self.read_line(timeout))

    def stop(self) -> None:
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def proc_status(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes (empty once it has gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def reset_peak_rss(pid: int) -> bool:
    """Make VmHWM start again from the current RSS (Linux 4.0+)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class RssSampler:
    """Samples a process's RSS every 10 ms: the peak when VmHWM cannot be reset."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0))

    def close(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


# -- what an attack can do --------------------------------------------------------------


class Attack:
    """The attacker's side of one case: sockets to the server under attack,
    all closed when the case ends."""

    def __init__(self, config: Config, server: Child, ports: Dict[str, int]) -> None:
        self.config = config
        self.settings = config.settings
        self.tls = config.tls
        self.server = server
        self.ports = ports
        self.sockets: List[socket.socket] = []
        # (the valid request before was answered, how the connection ended, seconds)
        self.outcomes: List[Tuple[bool, str, float]] = []
        self.opened = 0  # connections, over all the rounds of a case
        self.client_context = framecodec.client_context(config.pki["ca"]) if config.tls else None

    def raw(self, listener: str = "frames", timeout: float = 5.0) -> socket.socket:
        """A TCP connection, without TLS even on a TLS server."""
        sock = socket.create_connection((HOST, self.ports[listener]), timeout=timeout)
        self.sockets.append(sock)
        self.opened += 1
        return sock

    def connect(self, listener: str = "frames", timeout: float = 5.0) -> socket.socket:
        """A connection as a client would open it: TLS on a TLS server."""
        sock = self.raw(listener, timeout)
        if self.client_context is None:
            return sock
        wrapped = self.client_context.wrap_socket(sock, server_hostname="localhost")
        self.sockets.append(wrapped)
        return wrapped

    def client_hello(self) -> bytes:
        """The first flight of a real TLS client, taken from a memory BIO."""
        assert self.client_context is not None
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        return outgoing.read()

    def open_connections(self) -> int:
        stats = self.server.ask("stats")
        return sum(listener["open"] for listener in stats.values())

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def shut_write(sock: socket.socket) -> None:
    """A TCP half-close; under TLS without close_notify (SSLSocket.shutdown
    would also detach OpenSSL, and we still read)."""
    socket.socket.shutdown(sock, socket.SHUT_WR)


def read_to_end(sock: socket.socket, decoder: Any, timeout: float) -> Tuple[List[Any], str, float]:
    """Read replies until the server ends the connection: (replies, how it
    ended, seconds taken)."""
    start = time.monotonic()
    replies: List[Any] = []
    while True:
        remaining = start + timeout - time.monotonic()
        if remaining <= 0:
            return replies, "still open", time.monotonic() - start
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return replies, "still open", time.monotonic() - start
        except ConnectionResetError:
            return replies, "reset", time.monotonic() - start
        except ssl.SSLError as exc:
            return replies, f"TLS alert ({exc.reason or exc})", time.monotonic() - start
        except OSError as exc:
            return replies, f"error {exc.errno}", time.monotonic() - start
        if not data:
            return replies, "closed", time.monotonic() - start
        with contextlib.suppress(ProtocolError):
            replies += decoder.feed(data)


def watch_until_closed(socks: List[socket.socket], timeout: float) -> List[Optional[float]]:
    """Seconds until each socket saw the server end it (None: still open)."""
    start = time.monotonic()
    ended: List[Optional[float]] = [None] * len(socks)
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        while selector.get_map():
            remaining = start + timeout - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                sock = socks[key.data]
                try:
                    while sock.recv(65536):
                        pass
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    pass
                ended[key.data] = time.monotonic() - start
                selector.unregister(sock)
    return ended


def summarize_ends(ends: List[Optional[float]]) -> str:
    done = [t for t in ends if t is not None]
    text = f"{len(done)}/{len(ends)} ended by the server"
    if done:
        text += f" after {min(done):.2f}-{max(done):.2f} s"
    return text


def describe_outcomes(outcomes: List[Tuple[bool, str, float]], what: str) -> str:
    if not outcomes:
        return ""
    got = sum(1 for answered, _, _ in outcomes if answered)
    ends = sorted({how for _, how, _ in outcomes})
    slowest = max(t for _, _, t in outcomes) * 1000
    return (
        f"{len(outcomes)} connections; {got} got {what}; "
        f"the server ended them ({'/'.join(ends)}) within {slowest:.0f} ms"
    )


# -- the cases ------------------------------------------------------------------------

frame_encoder = FrameEncoder()
frame64_encoder = FrameEncoder(**FRAMES64)
message_encoder = MessageEncoder()


def bad_frame_headers(attack: Attack, listener: str, headers: List[bytes]) -> str:
    encoder = frame64_encoder if listener == "frames64" else frame_encoder
    for header in headers:
        sock = attack.connect(listener)
        sock.sendall(encoder.encode(b"ok") + header)
        decoder = FrameDecoder(**FRAMES64) if listener == "frames64" else FrameDecoder()
        replies, how, took = read_to_end(sock, decoder, 5.0)
        attack.outcomes.append((replies == [b"OK"], how, took))
    return ""


def oversized_header(attack: Attack) -> str:
    return bad_frame_headers(
        attack, "frames", [struct.pack(">I", MAX_FRAME_SIZE + 1), struct.pack(">I", 2**32 - 1)]
    )


def negative_length(attack: Attack) -> str:
    return bad_frame_headers(attack, "frames64", [struct.pack(">Q", n) for n in (0, 7)])


def overflowing_length(attack: Attack) -> str:
    fields = (2**64 - 1, 2**63, 2**61, 2**61 - 1, MAX_FRAME_SIZE + 9)
    return bad_frame_headers(attack, "frames64", [struct.pack(">Q", n) for n in fields])


def bad_json_headers(attack: Attack, headers: List[bytes], lengths: Tuple[int, ...] = ()) -> str:
    """A valid message, then each header (or just a header length) on a
    connection of its own."""
    streams = [struct.pack(">H", len(header)) + header for header in headers]
    streams += [struct.pack(">H", length) for length in lengths]
    for stream in streams:
        sock = attack.connect("messages")
        sock.sendall(message_encoder.encode({"ok": 1}) + stream)
        replies, how, took = read_to_end(sock, MessageDecoder(), 5.0)
        attack.outcomes.append((len(replies) == 1, how, took))
    return ""


def keys(**values: Any) -> bytes:
    header = {
        "byteorder": "little",
        "content-type": "text/json",
        "content-encoding": "utf-8",
        "content-length": 2,
    }
    header.update(values)
    return json.dumps({k: v for k, v in header.items() if v is not None}).encode()


def json_not_json(attack: Attack) -> str:
    return bad_json_headers(attack, [b'{"content-type": ', b"\x00\x01garbage", b"{'a': 1}"])


def json_not_utf8(attack: Attack) -> str:
    return bad_json_headers(attack, [b'{"byteorder": "\xff\xfe"}', b"\xc0\xaf", b"\xed\xa0\x80"])


def json_not_object(attack: Attack) -> str:
    return bad_json_headers(attack, [b"[1, 2]", b'"text"', b"42", b"null"])


def json_missing_keys(attack: Attack) -> str:
    return bad_json_headers(
        attack, [b"{}", keys(**{"content-length": None}), keys(**{"content-type": None})]
    )


def json_bad_values(attack: Attack) -> str:
    values = [-1, "2", 1.5, True, 2**70, MAX_FRAME_SIZE + 1]
    headers = [keys(**{"content-length": v}) for v in values]
    headers.append(keys(**{"content-type": "text/plain", "content-encoding": "no-such-codec"}))
    # Header lengths the 2-byte field allows but the server does not.
    return bad_json_headers(attack, headers, lengths=(0, MAX_HEADER_SIZE + 1))


def json_parser_escapes(attack: Attack) -> str:
    """Headers that make parse_message_header raise something other than a
    ProtocolError (the codec finding in fuzz/_fuzzlib.py)."""
    text = {"content-type": "text/plain"}
    return bad_json_headers(
        attack,
        [
            b"[" * (MAX_HEADER_SIZE - 8),
            b'{"a": ' * 1100 + b"1" + b"}" * 1100,
            # json.dumps writes these as the escapes \ud800 and \u0000.
            keys(**text, **{"content-encoding": "\ud800"}),
            keys(**text, **{"content-encoding": "utf\x008"}),
        ],
    )


def slowloris(attack: Attack) -> str:
    socks = []
    for i in range(attack.settings.peers):
        listener = ("frames", "frames64", "messages")[i % 3]
        sock = attack.connect(listener)
        half = {"frames": frame_encoder.header(100)[:2], "frames64": b"\0\0\0\0"}
        sock.sendall(half.get(listener, b"\0"))  # messages: half the 2-byte length
        socks.append(sock)
    limit = attack.settings.frame_timeout * 2 + 3
    return summarize_ends(watch_until_closed(socks, limit))


def trickle(attack: Attack) -> str:
    """Long frames one byte per 50 ms (never complete in time), and one short
    frame the same way (complete in time: it must be answered)."""
    slow = [attack.connect(("frames", "messages")[i % 2]) for i in range(attack.settings.peers)]
    pending = [
        frame_encoder.encode(b"x" * 1000) if i % 2 == 0 else message_encoder.encode("y" * 1000)
        for i in range(len(slow))
    ]
    short = attack.connect("frames")
    short_bytes = frame_encoder.encode(b"tiny")
    start = time.monotonic()
    ends: List[Optional[float]] = [None] * len(slow)
    sent = [0] * len(slow)
    step = 0
    while time.monotonic() - start < attack.settings.frame_timeout * 2 + 3:
        open_ = [i for i, end in enumerate(ends) if end is None]
        if not open_ and step >= len(short_bytes):
            break
        for i in open_:
            try:
                slow[i].sendall(pending[i][sent[i] : sent[i] + 1])
                sent[i] += 1
                slow[i].setblocking(False)
                if slow[i].recv(1) == b"":
                    ends[i] = time.monotonic() - start
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            except OSError:
                ends[i] = time.monotonic() - start
            finally:
                if ends[i] is None:
                    slow[i].settimeout(5.0)
        if step < len(short_bytes):
            short.sendall(short_bytes[step : step + 1])
            step += 1
        time.sleep(0.05)
    replies, _, _ = read_to_end_one(short, FrameDecoder(), 5.0)
    bytes_sent = max(sent) if sent else 0
    return (
        f"short frame byte by byte: {'answered' if replies == [b'TINY'] else 'NOT answered'}; "
        f"long frames: {summarize_ends(ends)}, having sent at most {bytes_sent} bytes"
    )


def read_to_end_one(
    sock: socket.socket, decoder: Any, timeout: float
) -> Tuple[List[Any], str, float]:
    """Read until one reply has arrived (or the connection ends)."""
    start = time.monotonic()
    replies: List[Any] = []
    while not replies and time.monotonic() - start < timeout:
        sock.settimeout(max(0.01, start + timeout - time.monotonic()))
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        replies += decoder.feed(data)
    return replies, "", time.monotonic() - start


def never_reads(attack: Attack) -> str:
    """Requests of 64 KiB as fast as the server takes them on every
    connection, replies never read, until no send has made progress for
    0.5 s (the server pushed back); then silence, until the server drops them."""
    peers = max(2, attack.settings.peers // 2)
    socks = [attack.connect("frames") for _ in range(peers)]
    batch = memoryview(frame_encoder.encode(b"q" * (64 * 1024 - 4)))
    pending = [batch] * peers
    sent = [0] * peers
    progress = [time.monotonic()] * peers
    dropped: List[Optional[float]] = [None] * peers  # when the server ended it
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + 15
    cap = 256 << 20  # replies that would pile up if nothing pushed back
    while time.monotonic() < deadline:
        now = time.monotonic()
        live = [i for i in range(peers) if dropped[i] is None and sent[i] < cap]
        if all(now - progress[i] > 0.5 for i in live):
            break
        for i in live:
            try:
                # After SSLWantWriteError the same bytes go again, as OpenSSL requires.
                n = socks[i].send(pending[i])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                continue
            except OSError:
                dropped[i] = time.monotonic()
                continue
            sent[i] += n
            progress[i] = time.monotonic()
            pending[i] = pending[i][n:] or batch
        time.sleep(0.001)
    silent = time.monotonic()
    pushed_back = sum(1 for i in range(peers) if sent[i] < cap)
    ends = watch_until_closed(socks, attack.settings.idle_timeout * 2 + 3)
    after: List[Optional[float]] = []
    for i, end in enumerate(ends):
        when = dropped[i] if dropped[i] is not None else None if end is None else silent + end
        after.append(None if when is None else when - silent)
    bound = HIGH_WATER + READ_SIZE + MAX_FRAME_SIZE  # serve()'s docstring
    peak = attack.server.ask("stats")["frames"]["peak_conn_memory"]
    return (
        f"{pushed_back}/{peers} pushed back after {min(sent) >> 20}-{max(sent) >> 20} MiB "
        f"sent (most of it in kernel buffers); largest connection buffer {peak >> 10} KiB "
        f"(documented bound {bound >> 10} KiB); {summarize_ends(after)} of silence"
    )


def memory_flood(attack: Attack) -> str:
    """flood_peers connections to the defaults listener send 1 MiB requests
    as fast as the server takes them and never read the replies, for up to
    10 s (until no send has made progress for 1 s); meanwhile a fresh client
    connects anew every 50 ms for one request.  Then the peers go silent
    until the server has closed them (the attack's end closes the rest)."""
    peers = attack.settings.flood_peers
    socks = [attack.connect("defaults") for _ in range(peers)]
    batch = memoryview(frame_encoder.encode(b"m" * (FLOOD_REQUEST - 4)))
    pending = [batch] * peers
    sent = [0] * peers
    progress = [time.monotonic()] * peers
    cut = [False] * peers
    for sock in socks:
        sock.setblocking(False)
    fresh = {"ok": 0, "errors": 0, "sample": ""}
    stop = threading.Event()

    def fresh_clients() -> None:
        context = attack.client_context
        while not stop.wait(0.05):
            try:
                with framecodec.connect(
                    f"{HOST}:{attack.ports['defaults']}",
                    ssl_context=context,
                    server_hostname="localhost" if context else None,
                    timeout=5.0,
                ) as client:
                    if client.request(b"fresh") != b"FRESH":
                        raise AssertionError("wrong reply")
                fresh["ok"] += 1
            except Exception as exc:
                fresh["errors"] += 1
                fresh["sample"] = repr(exc)[:120]

    fresher = threading.Thread(target=fresh_clients, daemon=True)
    fresher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = time.monotonic()
            live = [i for i in range(peers) if not cut[i]]
            if not live or all(now - progress[i] > 1.0 for i in live):
                break
            for i in live:
                try:
                    n = socks[i].send(pending[i])
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    cut[i] = True
                    continue
                sent[i] += n
                progress[i] = time.monotonic()
                pending[i] = pending[i][n:] or batch
            time.sleep(0.002)
        # Silent now: those the budget holds are closed within a few seconds.
        ends = watch_until_closed(socks, 5)
    finally:
        stop.set()
        fresher.join(10)
    closed = sum(1 for i, end in enumerate(ends) if cut[i] or end is not None)
    report = attack.server.ask("stats")["defaults"]
    budget = report["memory_budget"] or 0
    errors = fresh["errors"]
    fresh_note = f"fresh clients {fresh['ok']} answered, {errors} errors"
    if errors:
        fresh_note = f"**{fresh_note}** ({fresh['sample']})"
    return (
        f"{sum(sent) >> 20} MiB sent by {peers} peers; server's accounting peaked at "
        f"{report['peak_memory'] / 2**20:.1f} MiB (budget {budget >> 20} MiB); "
        f"{closed}/{peers} closed by the server; {fresh_note}"
    )


def reset_mid_frame(attack: Attack) -> str:
    count = attack.settings.peers
    for i in range(count):
        if i % 2:
            sock = attack.connect("messages")
            sock.sendall(message_encoder.encode("z" * 1000)[:300])
        else:
            sock = attack.connect("frames")
            sock.sendall(frame_encoder.header(1000) + b"partial")
        time.sleep(0.005)  # let the server read the partial frame first
        reset(sock)
    return f"{attack.opened} connections reset inside a frame"


def half_close(attack: Attack) -> str:
    for cut in (False, True):
        sock = attack.connect("frames")
        stream = frame_encoder.encode_many([b"a", b"b", b"c"])
        if cut:
            stream += frame_encoder.header(100) + b"half"
        sock.sendall(stream)
        shut_write(sock)
        replies, how, took = read_to_end(sock, FrameDecoder(), 5.0)
        attack.outcomes.append((replies == [b"A", b"B", b"C"], how, took))
    return ""


def garbage_on_tls(attack: Attack) -> str:
    rng = random.Random(7)
    payloads = {
        "random bytes": bytes(rng.getrandbits(8) for _ in range(4096)),
        "TLS record header then garbage": b"\x16\x03\x01\x00\x40" + bytes(64),
        "HTTP request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a plain framecodec frame": frame_encoder.encode(b"hello?"),
    }
    for payload in payloads.values():
        sock = attack.raw("frames")
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        replies, how, took = read_to_end(sock, FrameDecoder(), 5.0)
        attack.outcomes.append((bool(replies), how, took))
    return ""


def tls_abort(attack: Attack) -> str:
    hello = attack.client_hello()
    for i in range(attack.settings.peers):
        sock = attack.raw("frames")
        variant = i % 4
        sock.sendall(hello if variant else hello[: len(hello) // 2])
        if variant >= 2:  # take the server's first flight, then vanish
            sock.settimeout(5.0)
            with contextlib.suppress(OSError):
                sock.recv(65536)
        if variant % 2:
            reset(sock)
        else:
            sock.close()
    return (
        f"{attack.opened} handshakes abandoned: half a ClientHello, a whole one, "
        "or after the server's reply; by FIN or RST"
    )


def burst(attack: Attack) -> str:
    """Connections opened and dropped in batches of 100, without waiting on
    the server: half by FIN, half by RST; on TLS every third sends a
    ClientHello first."""
    hello = attack.client_hello() if attack.tls else b""
    failed = opened = 0
    start = time.monotonic()
    for first in range(0, attack.settings.burst, 100):
        batch = []
        for _ in range(min(100, attack.settings.burst - first)):
            sock = socket.socket()
            sock.setblocking(False)
            error = sock.connect_ex((HOST, attack.ports["frames"]))
            if error not in (0, 115):  # EINPROGRESS
                failed += 1
                sock.close()
                continue
            batch.append(sock)
        with selectors.DefaultSelector() as selector:
            for sock in batch:
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + 3.0
            while selector.get_map() and time.monotonic() < deadline:
                for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                    selector.unregister(key.fileobj)
        for n, sock in enumerate(batch):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
                sock.close()
                continue
            opened += 1
            if hello and n % 3 == 0:
                with contextlib.suppress(OSError):
                    sock.send(hello)
            if n % 2:
                reset(sock)
            else:
                sock.close()
    took = time.monotonic() - start
    return f"{opened} opened and dropped in {took:.2f} s ({failed} failed to connect)"


def idle_flood(attack: Attack) -> str:
    """Twice max_connections idle connections, opened in two waves a little
    over IDLE_AGE apart, then a fresh client: overflow="close_idle" turns
    away what finds the server full of connections silent for less than
    IDLE_AGE, and closes the idlest for each newcomer once they have been
    silent that long."""
    refused: List[float] = []

    def wave() -> List[socket.socket]:
        """Open max_connections connections; those the server closes within
        0.3 s were refused."""
        start = time.monotonic()
        socks = []
        for _ in range(MAX_CONNECTIONS):
            try:
                socks.append(attack.connect("frames"))
            except OSError:  # refused during a TLS handshake
                refused.append(time.monotonic() - start)
        ends = watch_until_closed(socks, 0.3)
        refused.extend(end for end in ends if end is not None)
        return [sock for sock, end in zip(socks, ends) if end is None]

    first = wave()
    time.sleep(IDLE_AGE + 0.2)
    wave()
    time.sleep(IDLE_AGE + 0.2)
    start = time.monotonic()
    context = attack.client_context
    with framecodec.connect(
        f"{HOST}:{attack.ports['frames']}",
        ssl_context=context,
        server_hostname="localhost" if context else None,
        timeout=15.0,
    ) as fresh:
        reply = fresh.request(b"fresh")
    took = time.monotonic() - start
    closed = sum(end is not None for end in watch_until_closed(first, 5.0))
    text = (
        f"{2 * MAX_CONNECTIONS} idle connections in two waves {IDLE_AGE + 0.2:.1f} s apart: "
        f"{len(refused)} refused"
    )
    if refused:
        text += f" within {max(refused) * 1000:.0f} ms"
    return text + (
        f"; the first wave's {closed} closed by the server; then a fresh client "
        f"{'answered' if reply == b'FRESH' else repr(reply)} in {took * 1000:.0f} ms"
    )


def overflow(attack: Attack) -> str:
    """More clients than max_connections, each holding its connection 1 s
    after its answer: overflow="close_idle" closes the idlest (those holding
    on after their answer) to let the late ones in."""
    count = MAX_CONNECTIONS + attack.settings.overflow_extra
    waits: List[float] = []
    failures: List[str] = []
    lock = threading.Lock()
    context = attack.client_context

    refused: List[float] = []

    def client(i: int) -> None:
        start = time.monotonic()
        try:
            with framecodec.connect(
                f"{HOST}:{attack.ports['frames']}",
                ssl_context=context,
                server_hostname="localhost" if context else None,
                timeout=15.0,
            ) as conn:
                reply = conn.request(b"client %d" % i)
                took = time.monotonic() - start
                if reply != b"CLIENT %d" % i:
                    raise AssertionError(reply)
                with lock:
                    waits.append(took)
                time.sleep(1.0)
        except (ConnectionClosed, ConnectionError, ssl.SSLError) as exc:
            # Refused: the end of the stream, a reset, or an EOF in the handshake.
            with lock:
                if time.monotonic() - start < 1.0:
                    refused.append(time.monotonic() - start)  # overflow="reject", at once
                else:
                    failures.append(repr(exc)[:100])
        except Exception as exc:
            with lock:
                failures.append(repr(exc)[:100])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stuck = sum(thread.is_alive() for thread in threads)
    late = sorted(t for t in waits if t > 0.5)
    text = (
        f"{count} clients (max_connections {MAX_CONNECTIONS}, one held by the steady client): "
        f"{len(waits)} answered, {len(waits) - len(late)} at once"
    )
    if late:
        text += f", {len(late)} after waiting {late[0]:.1f}-{late[-1]:.1f} s"
    if refused:
        text += f"; {len(refused)} refused within {max(refused) * 1000:.0f} ms"
    if failures or stuck:
        text += f"; {len(failures)} failed, {stuck} stuck ({failures[:2]})"
    return text


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    sent: str
    run: Callable[[Attack], str]
    tls_only: bool = False
    # Cheap attacks repeat for Settings.min_window, so that the steady
    # client's p99 covers more than a few requests.
    repeat: bool = False
    # What each connection should get, for a summary of Attack.outcomes.
    expect: Optional[str] = None


CASES = [
    Case(
        "oversized",
        "Header over max_frame_size",
        "a valid frame, then a uint32 header announcing max_frame_size + 1 (1 MiB + 1), "
        "or 4 GiB - 1",
        oversized_header,
        repeat=True,
        expect="the reply to the valid frame before",
    ),
    Case(
        "negative",
        "Negative length after adjustment",
        "frames64 (uint64 length counting itself, adjustment -8): a valid frame, then "
        "length fields 0 and 7",
        negative_length,
        repeat=True,
        expect="the reply to the valid frame before",
    ),
    Case(
        "overflow-length",
        "Overflowing length",
        "frames64: a valid frame, then length fields 2^64-1, 2^63, 2^61, 2^61-1 and "
        "max_frame_size + 9",
        overflowing_length,
        repeat=True,
        expect="the reply to the valid frame before",
    ),
    Case(
        "json-not-json",
        "JSON header: not JSON",
        "messages: a valid message, then a header that is cut-off JSON, binary, or single-quoted",
        json_not_json,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "json-not-utf8",
        "JSON header: not UTF-8",
        "a valid message, then a header with bytes FF FE, an overlong C0 AF, or a "
        "lone surrogate ED A0 80",
        json_not_utf8,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "json-not-object",
        "JSON header: not an object",
        "a valid message, then a header that is a list, a string, a number, or null",
        json_not_object,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "json-missing-keys",
        "JSON header: missing keys",
        "a valid message, then {}, or the header without content-length or content-type",
        json_missing_keys,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "json-bad-values",
        "JSON header: bad values",
        'content-length -1, "2", 1.5, true, 2^70, max_content_size + 1; an unknown '
        "text encoding; header length 0 and max_header_size + 1",
        json_bad_values,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "json-escapes",
        "JSON header: parser escapes (known codec finding)",
        "a valid message, then a header of 8184 '[', or 1100 nested objects, or a text "
        "content-encoding holding a lone surrogate or a NUL",
        json_parser_escapes,
        repeat=True,
        expect="the reply to the valid message before",
    ),
    Case(
        "slowloris",
        "Half a header, then silence",
        "N connections (a third per listener) send half a length header and stall",
        slowloris,
    ),
    Case(
        "trickle",
        "One byte at a time",
        "N connections send a 1 KiB frame or message one byte per 50 ms; one more "
        "sends a 4-byte frame the same way",
        trickle,
    ),
    Case(
        "never-reads",
        "Never reads the replies",
        "N/2 connections send 64 KiB requests (replies as large) as fast as the "
        "server takes them and never read",
        never_reads,
    ),
    Case(
        "memory-flood",
        "Many peers never read 1 MiB replies (default options)",
        "flood_peers connections (200; --quick 50) to a server with no option set send "
        "1 MiB requests (replies as large) as fast as it takes them and never read; a "
        "fresh client connects every 50 ms for one request",
        memory_flood,
    ),
    Case(
        "reset",
        "Reset mid-frame",
        "N connections send part of a frame or message, then close with RST",
        reset_mid_frame,
        repeat=True,
    ),
    Case(
        "half-close",
        "Half-close",
        "3 requests then SHUT_WR (under TLS: a TCP FIN, no close_notify), or 3 "
        "requests and half a frame, then SHUT_WR",
        half_close,
        repeat=True,
        expect="all 3 replies",
    ),
    Case(
        "tls-garbage",
        "Garbage and plain TCP on the TLS port",
        "4 KiB of random bytes, a TLS record header then zeros, an HTTP request, a plain frame",
        garbage_on_tls,
        tls_only=True,
        repeat=True,
        expect="any reply (none expected)",
    ),
    Case(
        "tls-abort",
        "TLS client aborts mid-handshake",
        "half a ClientHello, a whole one, or after reading the server's reply; then FIN or RST",
        tls_abort,
        tls_only=True,
        repeat=True,
    ),
    Case(
        "burst",
        "Burst of connections",
        "1000 connections opened in batches of 100 and dropped at once (half FIN, half "
        "RST; on TLS a third send a ClientHello first)",
        burst,
    ),
    Case(
        "max-connections",
        "More connections than max_connections",
        f"max_connections + N clients ({MAX_CONNECTIONS} + 16) connect at once, each "
        "holding its connection 1 s after its answer",
        overflow,
    ),
    Case(
        "idle-flood",
        "Idle connections beyond max_connections",
        f"2 x max_connections ({2 * MAX_CONNECTIONS}) connections opened, sending nothing; "
        "then a fresh client",
        idle_flood,
    ),
]


# -- running ----------------------------------------------------------------------------


@dataclass
class Config:
    backend: str
    tls: bool
    settings: Settings
    pki: Dict[str, str]
    workdir: str

    @property
    def label(self) -> str:
        return f"{self.backend}{' TLS' if self.tls else ''}"


@dataclass
class Row:
    case: str
    backend: str
    tls: bool
    server_did: str = ""
    observed: str = ""
    steady: Dict[str, Any] = field(default_factory=dict)
    rss_before: int = 0
    rss_peak: int = 0
    alive: bool = True
    settled: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.alive and not self.steady.get("errors") and self.settled == "all closed"


def stats_delta(before: Dict[str, Any], after: Dict[str, Any]) -> str:
    parts = []
    for key in COUNTERS:
        change = sum(after[name][key] - before[name][key] for name in after)
        if change:
            parts.append(f"{key} {change}")
    return ", ".join(parts) or "nothing counted"


@contextlib.contextmanager
def processes(config: Config) -> Iterator[Tuple[Child, Child, Dict[str, int]]]:
    name = f"{config.backend}-{'tls' if config.tls else 'plain'}.log"
    with contextlib.ExitStack() as stack:
        server_log = stack.enter_context(open(Path(config.workdir) / f"server-{name}", "a"))
        steady_log = stack.enter_context(open(Path(config.workdir) / f"steady-{name}", "a"))
        server = Child(
            "server",
            {
                "backend": config.backend,
                "tls": config.tls,
                "cert": config.pki["cert"],
                "key": config.pki["key"],
                "server_options": config.settings.server_options(),
            },
            server_log,
        )
        stack.callback(server.stop)
        ports = json.loads(server.read_line(20))
        steady = Child(
            "steady",
            {"tls": config.tls, "ca": config.pki["ca"], "ports": ports, "max_seconds": 900},
            steady_log,
        )
        stack.callback(steady.stop)
        steady.read_line(20)
        yield server, steady, ports


def run_case(
    case: Case, config: Config, server: Child, steady: Child, ports: Dict[str, int]
) -> Row:
    row = Row(case.key, config.backend, config.tls)
    before = server.ask("stats")
    baseline_open = sum(listener["open"] for listener in before.values())
    baseline_fds = open_fds(server.pid)
    reset_peak_rss(server.pid)
    row.rss_before = proc_status(server.pid).get("VmRSS", 0)
    sampler = RssSampler(server.pid)
    steady.tell("begin")
    start = time.monotonic()
    attack = Attack(config, server, ports)
    try:
        note = case.run(attack)
        rounds = 1
        while (
            case.repeat and rounds < 1000 and time.monotonic() - start < config.settings.min_window
        ):
            attack.close()
            note = case.run(attack)  # the counts in a note are cumulative
            rounds += 1
        if case.expect:
            note = describe_outcomes(attack.outcomes, case.expect)
        if rounds > 1:
            note += f" ({rounds} rounds)"
        row.observed = note
    except Exception as exc:
        row.observed = f"attack raised {exc!r}"[:300]
    finally:
        attack.close()
    # The server must end every connection the attack opened, and free its descriptors.
    settle_deadline = time.monotonic() + config.settings.idle_timeout + 5
    while server.alive() and time.monotonic() < settle_deadline:
        with contextlib.suppress(Exception):
            if attack.open_connections() == baseline_open and open_fds(server.pid) <= baseline_fds:
                row.settled = "all closed"
                break
        time.sleep(0.05)
    else:
        if server.alive():
            row.settled = (
                f"{attack.open_connections() - baseline_open} connections, "
                f"{open_fds(server.pid) - baseline_fds} descriptors still open"
            )
    row.seconds = time.monotonic() - start
    row.alive = server.alive()
    row.steady = steady.ask("end") if steady.alive() else {"errors": "steady client died"}
    hwm = proc_status(server.pid).get("VmHWM", 0)
    row.rss_peak = max(hwm, sampler.close())
    if row.alive:
        row.server_did = stats_delta(before, server.ask("stats"))
    else:
        row.server_did = f"DIED (exit code {server.proc.poll()})"
    return row


def run_config(config: Config, cases: List[Case]) -> List[Row]:
    rows: List[Row] = []
    todo = [case for case in cases if config.tls or not case.tls_only]
    while todo:
        with processes(config) as (server, steady, ports):
            while todo:
                case = todo.pop(0)
                row = run_case(case, config, server, steady, ports)
                rows.append(row)
                print(
                    f"  {config.label:13} {case.key:17} {'ok ' if row.ok else 'BAD'} "
                    f"{row.seconds:5.1f} s  {row.server_did}; {row.observed}; "
                    f"steady {row.steady.get('errors')} errors p99 "
                    f"{row.steady.get('p99_ms', 0):.1f} ms; "
                    f"RSS {row.rss_peak / 2**20:.1f} MiB; {row.settled}",
                    flush=True,
                )
                if not row.alive:
                    break  # a fresh server for the cases left
    return rows


def make_pki(directory: str) -> Dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    paths = {}
    for name, blob in (
        ("ca", ca.cert_pem),
        ("cert", cert.cert_chain_pems[0]),
        ("key", cert.private_key_pem),
    ):
        path = os.path.join(directory, f"{name}.pem")
        blob.write_to_path(path)
        paths[name] = path
    return paths


# -- the report ---------------------------------------------------------------------------


def markdown(rows: List[Row], settings: Settings, quick: bool, seconds: float) -> str:
    by_case = {case.key: case for case in CASES}
    lines = [
        f"Generated by `python scripts/attack_report.py{' --quick' if quick else ''}` "
        f"({seconds:.0f} s on this machine, Python {sys.version.split()[0]}, "
        f"{framecodec.IMPLEMENTATION} core).  Server settings: frame_timeout "
        f"{settings.frame_timeout:g} s, idle_timeout {settings.idle_timeout:g} s, "
        f'max_connections {MAX_CONNECTIONS} (overflow "close_idle"), high_water '
        f"{HIGH_WATER >> 10} KiB, max_frame_size {MAX_FRAME_SIZE >> 20} MiB, max_header_size "
        f"{MAX_HEADER_SIZE}; N = {settings.peers}.  Handlers: upper-case the frame, echo the "
        "message.  A steady client sends requests to all four listeners throughout (the "
        'fourth, "defaults", has no option set: the memory-flood case attacks it).',
        "",
        "| Case | What was sent |",
        "|---|---|",
    ]
    for case in CASES:
        lines.append(f"| {case.title} | {case.sent} |")
    lines += [
        "",
        "Steady: requests / errors / p99 latency during the case (attack plus the wait "
        "for the server to close the attack's connections).  RSS: the server process's "
        "peak during the case (VmHWM, reset before each case), and its RSS before.",
        "",
        "| Case | Server | Server counted | Attacker saw | Steady req / err / p99 | "
        "Peak RSS (before) | Up, all closed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        steady = row.steady
        errors = steady.get("errors", "?")
        if steady.get("error_samples"):
            errors = f"**{errors}** ({'; '.join(steady['error_samples'])})"
        status = "yes" if row.alive and row.settled == "all closed" else f"**{row.settled}**"
        if not row.alive:
            status = "**server died**"
        lines.append(
            f"| {by_case[row.case].title} | {row.backend}{' TLS' if row.tls else ''} | "
            f"{row.server_did} | {row.observed} | {steady.get('requests', '?')} / {errors} / "
            f"{steady.get('p99_ms', 0):.1f} ms | {row.rss_peak / 2**20:.1f} MiB "
            f"({row.rss_before / 2**20:.1f}) | {status} |"
        )
    return "\n".join(lines)


def write_doc(table: str, path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{START_MARK}\n{table}\n{END_MARK}"
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        text = head + block + tail
    else:
        raise SystemExit(
            f"{path} has no {START_MARK} ... {END_MARK} markers; add them where the table goes"
        )
    path.write_text(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timeouts, fewer peers")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC}")
    parser.add_argument("--backend", choices=("selector", "threads", "aio"), action="append")
    parser.add_argument("--case", action="append", help="run only these cases (keys)")
    parser.add_argument("--tls", choices=("plain", "tls"), action="append")
    parser.add_argument("--child-server", help=argparse.SUPPRESS)
    parser.add_argument("--child-steady", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_server:
        run_server_child(json.loads(args.child_server))
        return 0
    if args.child_steady:
        run_steady_child(json.loads(args.child_steady))
        return 0
    settings = QUICK if args.quick else FULL
    cases = [case for case in CASES if not args.case or case.key in args.case]
    backends = args.backend or ["selector", "threads", "aio"]
    modes = [mode == "tls" for mode in (args.tls or ["plain", "tls"])]
    started = time.monotonic()
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="attack-report-") as workdir:
        pki = make_pki(workdir)
        for backend in backends:
            for tls in modes:
                config = Config(backend, tls, settings, pki, workdir)
                print(f"{config.label}:", flush=True)
                rows += run_config(config, cases)
        bad = [row for row in rows if not row.ok]
        for row in bad:
            name = f"server-{row.backend}-{'tls' if row.tls else 'plain'}.log"
            tail = (Path(workdir) / name).read_text().splitlines()[-5:]
            print(f"problem in {row.case} ({row.backend}, tls={row.tls}); log tail:", *tail)
    seconds = time.monotonic() - started
    table = markdown(rows, settings, args.quick, seconds)
    if args.json:
        Path(args.json).write_text(
            json.dumps([row.__dict__ for row in rows], indent=2, default=str) + "\n"
        )
    if not args.no_write:
        write_doc(table, DOC)
        print(f"table written to {DOC}")
    print(f"{len(rows)} cases in {seconds:.0f} s; {len(bad)} with a problem")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
