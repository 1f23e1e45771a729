"""The driver of the concurrency measurement: many clients, one request each in flight.

Each client sends a request, waits for the whole reply, and sends the next
one (a closed loop), so the rate measured is what the server sustains, not
how deep a queue can grow.  The driver is one process with one selector:
cheaper per request than any server measured, and the same for them all.
Replies are counted only inside the measured window, after a warm-up; each
must be exactly as long as its request.  At the end every client collects
its last reply, so that servers see clean ends of stream.
"""

from __future__ import annotations

import importlib
import selectors
import socket
import ssl
from typing import Any, List

from .base import HEADER, STEP_TIMEOUT, Endpoint, perf_counter


def drive_frames(
    endpoint: Endpoint,
    address: str,
    payload: bytes,
    clients: int,
    duration: float,
    warmup: float,
) -> int:
    """Requests completed in ``duration`` seconds by ``clients`` connections
    sending 4-byte-length frames (raw echo servers return the same bytes)."""
    message = HEADER.pack(len(payload)) + payload
    size = len(message)
    socks: List[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(clients):
            sock = endpoint.connect(address)
            socks.append(sock)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, [0])  # bytes of the reply so far
        buf = bytearray(65536)
        for sock in socks:
            sock.send(message)
        now = perf_counter()
        begin = now + warmup
        end = begin + duration
        completed = 0
        while now < end:
            events = selector.select(end - now)
            now = perf_counter()
            counting = now >= begin
            for key, _ in events:
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    n = sock.recv_into(buf)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                if not n:
                    raise EOFError("the server closed a connection")
                got = key.data[0] + n
                if got < size:
                    key.data[0] = got
                    continue
                if got > size:
                    raise ValueError("a reply is longer than its request")
                key.data[0] = 0
                if counting:
                    completed += 1
                if sock.send(message) != size:
                    raise RuntimeError("a small request did not fit the socket buffer")
        for sock in socks:  # each has one request in flight: take its reply
            sock.settimeout(STEP_TIMEOUT)
            got = selector.get_key(sock).data[0]
            while got < size:
                n = sock.recv_into(buf, size - got)
                if not n:
                    raise EOFError("the server closed a connection")
                got += n
        return completed
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def drive_zmq(address: str, payload: bytes, clients: int, duration: float, warmup: float) -> int:
    """The same with ``clients`` REQ sockets against a REP server."""
    zmq: Any = importlib.import_module("zmq")
    context = zmq.Context()
    poller = zmq.Poller()
    socks: List[Any] = []
    try:
        for _ in range(clients):
            sock = context.socket(zmq.REQ)
            sock.linger = 0
            sock.rcvtimeo = int(STEP_TIMEOUT * 1000)
            sock.connect(address)
            poller.register(sock, zmq.POLLIN)
            socks.append(sock)
        for sock in socks:
            sock.send(payload)
        now = perf_counter()
        begin = now + warmup
        end = begin + duration
        completed = 0
        while now < end:
            events = poller.poll(max(1, int((end - now) * 1000)))
            now = perf_counter()
            counting = now >= begin
            for sock, _ in events:
                if len(sock.recv()) != len(payload):
                    raise ValueError("a reply is not as long as its request")
                if counting:
                    completed += 1
                sock.send(payload)
        for sock in socks:
            sock.recv()
        return completed
    finally:
        for sock in socks:
            sock.close()
        context.term()
