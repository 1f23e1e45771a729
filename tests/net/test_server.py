"""Servers on real sockets: every backend x {IPv4, IPv6, Unix} x {plain, TLS}."""

from __future__ import annotations

import collections
import logging
import os
import resource
import selectors
import socket
import ssl
import threading
import time
from typing import Any

import pytest

import framecodec
from framecodec import ConnectionClosed, ConnectionHandler, FrameDecoder, FrameEncoder

from ..net_support import FAMILIES, TIMEOUT, reset, thread, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")

encoder = FrameEncoder()


def upper(frame):
    return frame.upper()


def read_to_eof(sock):
    decoder = FrameDecoder()
    frames = []
    while True:
        data = sock.recv(65536)
        if not data:
            decoder.eof()
            return frames
        frames += decoder.feed(data)


# -- the matrix -------------------------------------------------------------------


def test_request_response(net, backend):
    server = net.serve(upper, backend=backend)
    client = net.connect(server)
    assert client.request(b"hello") == b"HELLO"
    client.send_many([b"a", b"", b"c" * 5000])
    assert [client.recv() for _ in range(3)] == [b"A", b"", b"C" * 5000]
    if net.family == "unix":
        assert server.address.path.startswith("/tmp/fc-")
    else:
        assert server.address.port > 0  # the real port, not the 0 asked for


def test_messages_echo_keeps_content_type(net, backend):
    server = net.serve(lambda message: message, backend=backend, protocol="messages")
    client = net.connect(server, protocol="messages")
    reply = client.request({"query": "ü", "n": [1, 2]})
    assert (reply.content_type, reply.value) == ("text/json", {"query": "ü", "n": [1, 2]})
    reply = client.request(b"\x00\xff", content_type="binary/custom")
    assert (reply.content_type, reply.content) == ("binary/custom", b"\x00\xff")
    reply = client.request("plain", headers={"x-trace": 7})
    assert (reply.value, reply.header["x-trace"]) == ("plain", 7)


def test_many_concurrent_clients(net, backend):
    count = 200 if backend == "selector" else 48
    server = net.serve(upper, backend=backend)
    clients = [net.connect(server) for _ in range(count)]
    wait_until(lambda: len(server.connections) == count, message="all connections open at once")
    for i, client in enumerate(clients):
        client.send(b"client %d" % i)
    for i, client in enumerate(clients):
        assert client.recv() == b"CLIENT %d" % i
    assert server.stats["accepted"] == count


def test_64_mib_frames(net, backend):
    size = 64 << 20
    server = net.serve(lambda frame: frame, backend=backend, max_frame_size=size)
    client = net.connect(server, max_frame_size=size)
    payload = os.urandom(1 << 20) * 64
    assert client.request(payload) == payload


def exchange_in_pieces(sock, pieces, expected):
    """Send ``pieces`` one by one while reading replies 4099 bytes at a time,
    from one thread (an SSLSocket must not be read and written concurrently)."""
    sock.setblocking(False)
    pieces = collections.deque(pieces)
    decoder = FrameDecoder()
    received = []
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while len(received) < expected:
            assert time.monotonic() < deadline, "exchange timed out"
            if not pieces:
                selector.modify(sock, selectors.EVENT_READ)
            for _, mask in selector.select(1):
                try:
                    if mask & selectors.EVENT_WRITE and pieces:
                        sent = sock.send(pieces[0])  # after SSLWant*, retried unchanged
                        if len(pieces[0]) <= 1:
                            time.sleep(0.001)  # let single bytes arrive one by one
                        pieces[0] = pieces[0][sent:]
                        if not pieces[0]:
                            pieces.popleft()
                    if mask & selectors.EVENT_READ:
                        chunk = sock.recv(4099)
                        assert chunk, "server closed early"
                        received += decoder.feed(chunk)
                        while getattr(sock, "pending", lambda: 0)():
                            received += decoder.feed(sock.recv(4099))
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
    return received


def test_partial_reads_and_writes(net, backend):
    """Headers and payloads split at every point on the way in; replies read
    in small pieces, so the server's writes stop and resume many times."""
    server = net.serve(lambda frame: frame, backend=backend)
    raw = net.raw(server)
    if net.family != "unix":
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payloads = [
        os.urandom(n) for n in (0, 1, 3, 4, 5, 1000, 65535, 65536, 65537, 300_000, 3_000_000)
    ]
    stream = encoder.encode_many(payloads)
    pieces = [stream[i : i + 1] for i in range(40)]  # the first headers, byte by byte
    pos, step = 40, 7
    while pos < len(stream):
        pieces.append(stream[pos : pos + step])
        pos += step
        step = step * 3 + 1
    assert exchange_in_pieces(raw, pieces, len(payloads)) == payloads


def test_idle_timeout(net, backend):
    server = net.serve(upper, backend=backend, idle_timeout=0.3)
    client = net.connect(server)
    assert client.request(b"x") == b"X"
    start = time.monotonic()
    with pytest.raises(ConnectionClosed):
        client.recv()
    assert 0.25 < time.monotonic() - start < 3
    wait_until(lambda: server.stats["timeouts"] == 1)


def test_slow_loris_is_dropped_by_the_frame_deadline(net, backend):
    server = net.serve(upper, backend=backend, frame_timeout=0.3, idle_timeout=5)
    raw = net.raw(server)
    raw.sendall(encoder.header(100))
    start = time.monotonic()
    try:
        while server.stats["timeouts"] == 0 and time.monotonic() - start < 3:
            raw.sendall(b"x")  # a byte every 50 ms: never idle, never done
            time.sleep(0.05)
    except OSError:
        pass  # the server hung up
    wait_until(lambda: server.stats["timeouts"] == 1, timeout=3)
    assert time.monotonic() - start < 2


def test_a_steady_stream_outlives_the_frame_deadline(net, backend):
    """Every read of a stream may end inside a frame; each frame still
    completes in time, so the stream must not be taken for one slow frame."""
    received = []
    server = net.serve(received.extend, backend=backend, batch=True, frame_timeout=0.3)
    raw = net.raw(server)
    sizes = [3000 + (i * 7919) % 2000 for i in range(2000)]  # reads land anywhere in frames
    stream = encoder.encode_many([b"s" * size for size in sizes])
    pos = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.0:  # more than three frame deadlines
        raw.sendall(stream[pos : pos + 1000])
        pos += 1000
        time.sleep(0.002)
    raw.sendall(stream[pos:])
    wait_until(lambda: len(received) == len(sizes) or server.stats["closed"])
    assert server.stats["timeouts"] == 0
    assert [len(frame) for frame in received] == sizes


def test_peer_reset_mid_frame(net, backend):
    server = net.serve(upper, backend=backend)
    other = net.connect(server)
    raw = net.raw(server)
    raw.sendall(encoder.header(1000) + b"partial")
    wait_until(
        lambda: any(conn.memory for conn in server.connections), message="partial frame buffered"
    )
    reset(raw)  # a Unix socket cannot reset: its peer sees end of stream inside the frame
    wait_until(lambda: server.stats["closed"] == 1)
    assert server.stats["clean_closes"] == 0
    assert server.stats["network_errors"] + server.stats["protocol_errors"] == 1
    assert other.request(b"still here") == b"STILL HERE"


def test_peer_that_never_reads_cannot_grow_server_memory(net, backend):
    request_size, reply_size, high_water = 1024, 8192, 256 * 1024
    reply = b"r" * reply_size
    server = net.serve(lambda frame: reply, backend=backend, high_water=high_water)
    raw = net.raw(server)
    raw.settimeout(0.5)
    batch = encoder.encode(b"q" * request_size) * 64
    sent = peak = 0

    def sample():
        return max([peak] + [conn.memory for conn in server.connections])

    with pytest.raises((socket.timeout, TimeoutError)):  # the server pushed back
        while sent < 16 << 20:  # would queue 128 MiB of replies if nothing pushed back
            raw.sendall(batch)
            sent += len(batch)
            peak = sample()
    peak = sample()
    # The server stopped reading: the requests it accepted, replies and all,
    # stay within the budget plus the replies to one read.  One read takes
    # what the decoder's buffer has room for: read_size (64 KiB) asked, but a
    # buffer that grew to hold a frame's tail is up to twice that.
    one_read = (2 * 64 * 1024 // request_size + 1) * (reply_size + request_size)
    assert 0 < peak <= high_water + one_read + 64 * 1024
    assert sent < 16 << 20


def test_shutdown_lets_in_flight_replies_drain(net, backend):
    started = threading.Event()

    def slow(frame):
        started.set()
        time.sleep(0.3)
        return frame.upper()

    server = net.serve(slow, backend=backend)
    busy, idle = net.connect(server), net.connect(server)
    wait_until(lambda: len(server.connections) == 2)
    busy.send(b"in flight")
    assert started.wait(TIMEOUT)
    start = time.monotonic()
    server.shutdown(timeout=5)
    assert time.monotonic() - start < 2
    assert busy.recv() == b"IN FLIGHT"
    with pytest.raises(ConnectionClosed):
        busy.recv()
    with pytest.raises(ConnectionClosed):
        idle.recv()
    with pytest.raises(OSError):  # refused, or the Unix socket file is gone
        net.connect(server)


def test_handler_exception_closes_only_that_connection(net, backend, caplog):
    def handler(frame):
        if frame == b"boom":
            raise RuntimeError("kaboom")
        return frame

    server = net.serve(handler, backend=backend)
    good, bad = net.connect(server), net.connect(server)
    assert good.request(b"1") == b"1"
    bad.send(b"boom")
    with pytest.raises(ConnectionClosed):
        bad.recv()
    assert good.request(b"2") == b"2"
    wait_until(lambda: server.stats["handler_errors"] == 1)
    # The server counts the failure, then logs it: wait for the log too.
    wait_until(lambda: "RuntimeError: kaboom" in caplog.text, message="the traceback logged")
    assert len(server.connections) == 1


def test_protocol_error_answers_earlier_frames_then_closes(net, backend):
    server = net.serve(upper, backend=backend, max_frame_size=1000)
    raw = net.raw(server)
    raw.sendall(encoder.encode(b"ok") + FrameEncoder(max_frame_size=10**6).header(5000))
    assert read_to_eof(raw) == [b"OK"]
    wait_until(lambda: server.stats["protocol_errors"] == 1)


def test_batch_handler_gets_the_frames_of_a_read(net, backend):
    calls = []

    def batch(frames):
        calls.append(len(frames))
        return [frame.upper() for frame in frames]

    server = net.serve(batch, backend=backend, batch=True)
    client = net.connect(server)
    payloads = [b"m%d" % i for i in range(5000)]
    client.send_many(payloads)
    assert [client.recv() for _ in payloads] == [p.upper() for p in payloads]
    assert sum(calls) == len(payloads)
    assert len(calls) <= 50  # one call per read, not per frame


# -- handler shapes, half-close, limits: one point of the matrix suffices ---------


class Streamer(ConnectionHandler):
    """Answers N with N frames, and the end of input with a total."""

    log: list = []

    def connection_made(self, connection):
        super().connection_made(connection)
        self.total = 0

    def frame_received(self, frame):
        n = int(frame)
        self.connection.send_many(b"%d/%d" % (i, n) for i in range(n))
        self.total += n

    def eof_received(self):
        time.sleep(0.05)  # replies still pending when the peer has stopped writing
        self.connection.send(b"total %d" % self.total)

    def connection_lost(self, exc):
        self.log.append(exc)


@pytest.mark.parametrize("family", FAMILIES)
def test_half_close_still_gets_replies(make_net, family, backend):
    Streamer.log = []
    net = make_net(family, False)
    server = net.serve(Streamer, backend=backend)
    raw = net.raw(server)
    raw.sendall(encoder.encode_many([b"2", b"1"]))
    raw.shutdown(socket.SHUT_WR)
    assert read_to_eof(raw) == [b"0/2", b"1/2", b"0/1", b"total 3"]
    wait_until(lambda: Streamer.log == [None])


def test_connection_handler_keeps_state(tcp, backend):
    Streamer.log = []
    server = tcp.serve(Streamer, backend=backend)
    client = tcp.connect(server)
    client.send(b"3")
    assert [client.recv() for _ in range(3)] == [b"0/3", b"1/3", b"2/3"]
    client.close()
    wait_until(lambda: Streamer.log == [None])


def test_batch_flag_needs_a_function(tcp):
    with pytest.raises(ValueError, match="batch"):
        framecodec.serve("127.0.0.1:0", Streamer, batch=True)


def test_max_connections_wait(tcp, backend):
    server = tcp.serve(upper, backend=backend, max_connections=2, overflow="wait")
    first, second = tcp.connect(server), tcp.connect(server)
    assert first.request(b"1") == b"1" and second.request(b"2") == b"2"
    third = tcp.connect(server)  # completed by the kernel, waiting in the backlog
    third.send(b"3")
    third.timeout = 0.3
    with pytest.raises(TimeoutError):
        third.recv()
    third.timeout = TIMEOUT
    first.close()
    assert third.recv() == b"3"


def test_max_connections_reject(tcp, backend):
    server = tcp.serve(upper, backend=backend, max_connections=1, overflow="reject")
    first = tcp.connect(server)
    assert first.request(b"1") == b"1"
    second = tcp.connect(server)
    with pytest.raises(ConnectionError):  # closed at once, or reset
        second.request(b"2")
    wait_until(lambda: server.stats["rejected"] == 1)
    assert first.request(b"still") == b"STILL"


def test_running_out_of_file_descriptors_resets_waiting_clients(tcp, backend):
    """At the descriptor limit a client in the backlog is reset at once (the
    server's spare descriptor accepts and closes it), not left to its own
    timeout; the server neither spins nor stops serving, and accepts again
    once descriptors are back."""
    server = tcp.serve(upper, backend=backend)
    existing = tcp.connect(server)
    assert existing.request(b"a") == b"A"
    waiting = socket.socket()
    waiting.settimeout(TIMEOUT)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    refused: Any = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
        began = time.monotonic()
        cpu = time.process_time()
        try:
            waiting.connect(server.address.sockaddr)  # the kernel queues it; accept() fails
            refused = waiting.recv(1) or b"closed"
        except ConnectionError as exc:
            refused = exc
        waited = time.monotonic() - began
        time.sleep(0.3)
        cpu = time.process_time() - cpu
        answer = existing.request(b"b")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        waiting.close()
    assert refused is not None and waited < 2, (refused, waited)
    assert server.stats["rejected"] >= 1
    assert cpu < 0.25, "the server spun while out of descriptors"
    assert answer == b"B"  # open connections kept working
    assert tcp.connect(server).request(b"c") == b"C"  # accepting again


def test_serve_rejects_bad_arguments_cleanly():
    with pytest.raises(ValueError, match="backend"):
        framecodec.serve("127.0.0.1:0", upper, backend="fork")
    with pytest.raises(ValueError, match="overflow"):
        framecodec.serve("127.0.0.1:0", upper, overflow="drop")
    with pytest.raises(TypeError, match="handler"):
        framecodec.serve("127.0.0.1:0", 42)
    with pytest.raises(TypeError, match="format"):
        framecodec.serve("127.0.0.1:0", upper, protocol="messages", format="uint16")


def test_serve_forever_in_the_callers_thread_and_shutdown_from_a_handler(tcp, backend):
    def handler(frame):
        server.shutdown()  # returns at once: the loop stops after this call
        return frame

    server = framecodec.serve("127.0.0.1:0", handler, backend=backend)
    client = framecodec.connect(server.address, timeout=TIMEOUT)  # waits in the backlog
    with client, thread(server.serve_forever):
        assert client.request(b"bye") == b"bye"
        with pytest.raises(ConnectionClosed):
            client.recv()
    with pytest.raises(RuntimeError, match="stopped"):
        server.serve_forever()


def test_logs_connections(tcp, caplog):
    caplog.set_level(logging.INFO, logger="framecodec.server")
    server = tcp.serve(upper)
    client = tcp.connect(server)
    client.request(b"x")
    client.close()
    wait_until(lambda: server.stats["closed"] == 1)
    assert "connection from 127.0.0.1" in caplog.text
    assert "closed" in caplog.text


def test_shutdown_answers_the_requests_it_has_received(backend):
    """shutdown() ends each connection's input only: a request the server
    has received is answered before the close.  (The threads backend cut
    both directions, losing the reply in about 1 trial of 8.)"""
    lost = []
    for trial in range(50):
        server = framecodec.serve("127.0.0.1:0", upper, backend=backend).start()
        try:
            with framecodec.connect(server.address, timeout=TIMEOUT) as client:
                assert client.request(b"warm") == b"WARM"
                client.send(b"req")
                server.shutdown(5)
                try:
                    reply = client.recv()
                except ConnectionError as exc:
                    reply = exc
                if reply != b"REQ":
                    lost.append((trial, reply))
        finally:
            server.shutdown(0)
    assert not lost


def test_a_peer_that_stops_reading_is_closed_as_stalled(tcp, backend, caplog):
    """A peer that takes none of its replies for write_timeout is closed, and
    counted and logged as the network ending it is, not as a handler's
    failure (the threads backend blamed the handler whose send blocked)."""

    def huge(frame):
        return frame * (8 << 20)  # more than the socket buffers hold

    with caplog.at_level(logging.INFO, "framecodec.server"):
        server = tcp.serve(huge, backend=backend, write_timeout=0.5)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(TIMEOUT)
        try:
            stalled.connect(server.address.sockaddr)
            stalled.sendall(encoder.encode(b"x"))
            began = time.monotonic()
            wait_until(lambda: server.stats["closed"] == 1, timeout=5, message="the close")
            assert time.monotonic() - began < 3
        finally:
            stalled.close()
    assert server.stats["network_errors"] == 1 and server.stats["handler_errors"] == 0
    assert "stalled: took none of its replies for 0.5 s" in caplog.text
    assert "handler failed" not in caplog.text


def test_write_timeout_is_checked(tcp):
    with pytest.raises(ValueError, match="write_timeout"):
        framecodec.serve("127.0.0.1:0", upper, write_timeout=0)
