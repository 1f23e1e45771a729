"""The blocking client, against framecodec servers and hand-scripted peers."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from multiprocessing.connection import Listener

import pytest

import framecodec
from framecodec import (
    BufferTooSmallError,
    ConnectionClosed,
    FrameEncoder,
    FrameTooLargeError,
    IncompleteFrameError,
)

from ..net_support import TIMEOUT, recv_exactly, reset, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")

encoder = FrameEncoder()


@pytest.fixture
def echo(tcp):
    return tcp.serve(lambda frame: frame)


@pytest.fixture
def peer():
    """peer(script) -> address of a one-connection server running
    ``script(sock)`` in a thread; it is joined and closed afterwards."""
    listeners, threads = [], []

    def start(script):
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(TIMEOUT)
        listeners.append(listener)

        def run():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                script(conn)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        threads.append(worker)
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for worker in threads:
        worker.join(TIMEOUT)
        assert not worker.is_alive()
    for listener in listeners:
        listener.close()


def test_request_send_many_and_iteration(echo):
    with framecodec.connect(echo.address, timeout=TIMEOUT) as client:
        assert client.request(b"ping") == b"ping"
        client.send_many([b"one", b"two", memoryview(b"three"), bytearray(b"four")])
        assert [client.recv() for _ in range(4)] == [b"one", b"two", b"three", b"four"]
    assert client.closed
    with pytest.raises(ConnectionClosed):
        client.send(b"late")


def test_iteration_ends_at_a_clean_close(peer):
    def script(conn):
        conn.sendall(encoder.encode_many([b"a", b"b", b"c"]))

    with framecodec.connect(peer(script), timeout=TIMEOUT) as client:
        assert list(client) == [b"a", b"b", b"c"]
        with pytest.raises(ConnectionClosed):  # and again, every time
            client.recv()


def test_peer_vanishing_mid_frame_raises_incomplete_frame(peer):
    def script(conn):
        conn.sendall(encoder.encode(b"whole") + encoder.header(10) + b"half")

    with framecodec.connect(peer(script), timeout=TIMEOUT) as client:
        assert client.recv() == b"whole"
        with pytest.raises(IncompleteFrameError) as info:
            client.recv()
        assert (info.value.buffered, info.value.missing) == (8, 6)


def test_reset_mid_frame_raises_incomplete_frame_and_between_frames_a_reset(peer):
    ready = threading.Event()

    def mid_frame(conn):
        conn.sendall(encoder.header(10) + b"half")
        ready.wait(TIMEOUT)
        reset(conn)

    def between(conn):
        conn.sendall(encoder.encode(b"whole"))
        ready.wait(TIMEOUT)
        reset(conn)

    with (
        framecodec.connect(peer(mid_frame), timeout=TIMEOUT) as first,
        framecodec.connect(peer(between), timeout=TIMEOUT) as second,
    ):
        assert second.recv() == b"whole"
        time.sleep(0.05)  # let the half frame arrive before the reset
        ready.set()
        with pytest.raises(IncompleteFrameError):
            first.recv()
        with pytest.raises(ConnectionResetError):
            second.recv()


def test_frames_before_a_protocol_error_are_delivered_first(peer):
    def script(conn):
        big_header = FrameEncoder(max_frame_size=1 << 30).header(1 << 25)
        conn.sendall(encoder.encode_many([b"one", b"two"]) + big_header)

    with framecodec.connect(peer(script), timeout=TIMEOUT) as client:
        assert client.recv() == b"one"
        assert client.recv() == b"two"
        with pytest.raises(FrameTooLargeError):
            client.recv()
        assert client.closed
        with pytest.raises(FrameTooLargeError):
            client.recv()


def test_partial_reads_byte_by_byte(peer):
    data = encoder.encode_many([b"x" * 300, b"", b"yz"])

    def script(conn):
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            if i < 10:
                time.sleep(0.002)

    with framecodec.connect(peer(script), timeout=TIMEOUT) as client:
        assert list(client) == [b"x" * 300, b"", b"yz"]


def test_recv_timeout_leaves_the_client_usable(peer):
    go = threading.Event()

    def script(conn):
        conn.sendall(encoder.header(5) + b"ab")  # half a frame, then a pause
        go.wait(TIMEOUT)
        conn.sendall(b"cde" + encoder.encode(b"next"))
        recv_exactly(conn, 9)

    with framecodec.connect(peer(script), timeout=0.2) as client:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv()
        assert 0.15 < time.monotonic() - start < 2
        assert not client.closed
        go.set()
        assert client.recv() == b"abcde"  # nothing was lost or half-parsed
        assert client.recv() == b"next"
        client.send(b"after")


def test_recv_timeout_is_a_deadline_for_the_whole_frame(peer):
    def script(conn):
        conn.sendall(encoder.header(100))
        try:
            for _ in range(100):  # a byte every 50 ms: each read is quick, the frame is not
                conn.sendall(b"x")
                time.sleep(0.05)
        except OSError:
            pass

    with framecodec.connect(peer(script), timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv()
        assert time.monotonic() - start < 1.5


def test_send_timeout_cut_short_closes_the_client(peer):
    stop = threading.Event()

    def script(conn):
        stop.wait(TIMEOUT)  # never reads

    with framecodec.connect(peer(script), timeout=0.2) as client:
        try:
            with pytest.raises(TimeoutError, match="closed"):
                client.send(b"x" * (15 << 20))  # more than the socket buffers take
        finally:
            stop.set()
        assert client.closed
        with pytest.raises(ConnectionClosed):
            client.send(b"more")


def test_recv_into(echo):
    with framecodec.connect(echo.address, timeout=TIMEOUT) as client:
        client.send_many([b"12345", b"abcdefgh", b""])
        buffer = bytearray(6)
        assert client.recv_into(buffer) == 5
        assert buffer[:5] == b"12345"
        with pytest.raises(BufferTooSmallError) as info:
            client.recv_into(buffer)
        assert (info.value.needed, info.value.available) == (8, 6)
        assert "8 bytes" in str(info.value)
        with pytest.raises(BufferTooSmallError):
            client.recv_into(bytearray(10), offset=3)
        big = bytearray(12)
        assert client.recv_into(big, offset=4) == 8  # the same frame, kept
        assert big == b"\0\0\0\0abcdefgh"
        assert client.recv_into(memoryview(bytearray(1))) == 0
        with pytest.raises(TypeError):
            client.recv_into(b"readonly")


def test_recv_into_and_send_file_are_for_frames(tcp):
    server = tcp.serve(lambda message: message, protocol="messages")
    with framecodec.connect(server.address, protocol="messages", timeout=TIMEOUT) as client:
        with pytest.raises(TypeError, match="frames"):
            client.recv_into(bytearray(10))
        with pytest.raises(TypeError, match="frames"):
            client.send_file(io.BytesIO(b"x"))


def test_send_file_uses_sendfile(echo, tmp_path, monkeypatch):
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)
    path = tmp_path / "data"
    payload = os.urandom(3 << 20)
    path.write_bytes(b"skip" + payload)
    with framecodec.connect(echo.address, timeout=TIMEOUT) as client, open(path, "rb") as file:
        file.seek(4)
        assert client.send_file(file) == len(payload)
        assert client.recv() == payload
        assert calls, "the kernel did not copy the file"
        file.seek(4)
        assert client.send_file(file, count=10) == 10
        assert client.recv() == payload[:10]
        assert client.send_file(io.BytesIO(b"no descriptor")) == 13  # read and sent
        assert client.recv() == b"no descriptor"


def test_send_file_over_tls_falls_back_to_reads(make_net, tmp_path):
    net = make_net("tcp4", True)
    server = net.serve(lambda frame: frame)
    path = tmp_path / "data"
    payload = os.urandom(1 << 20)
    path.write_bytes(payload)
    client = net.connect(server)
    with open(path, "rb") as file:
        assert client.send_file(file) == len(payload)
    assert client.recv() == payload


def test_send_file_shorter_than_announced_closes(echo, tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"abc")
    with framecodec.connect(echo.address, timeout=TIMEOUT) as client, open(path, "rb") as file:
        with pytest.raises(ConnectionClosed, match="3 of the 10 bytes"):
            client.send_file(file, count=10)
        assert client.closed


def test_messages(tcp):
    server = tcp.serve(lambda message: {"echo": message.value}, protocol="messages")
    with framecodec.connect(server.address, protocol="messages", timeout=TIMEOUT) as client:
        reply = client.request("hi")
        assert reply.value == {"echo": "hi"}
        assert reply.content_type == "text/json"


def test_connect_tries_each_resolved_address(echo):
    # localhost may resolve to ::1 first, where nothing listens: the next works.
    with framecodec.connect(("localhost", echo.address.port), timeout=TIMEOUT) as client:
        assert client.request(b"by name") == b"by name"


def test_connect_errors():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        framecodec.connect(f"127.0.0.1:{port}", timeout=TIMEOUT)
    with pytest.raises(FileNotFoundError):
        framecodec.connect("unix:/tmp/fc-no-such-server.sock", timeout=TIMEOUT)
    with pytest.raises(ValueError, match="protocol"):
        framecodec.connect("127.0.0.1:1", protocol="http")
    with pytest.raises(TypeError, match="option"):
        framecodec.connect("127.0.0.1:1", max_frame_sise=10)


@pytest.mark.parametrize("family", ["tcp4", "unix"])
def test_interop_with_a_multiprocessing_listener(family):
    address = ("127.0.0.1", 0) if family == "tcp4" else f"/tmp/fc-mp-{os.getpid()}.sock"
    with Listener(address) as listener:  # no authkey: plain send_bytes/recv_bytes frames
        target = listener.address if family == "tcp4" else "unix:" + listener.address

        def serve_one():
            with listener.accept() as conn:
                while True:
                    try:
                        data = conn.recv_bytes()
                    except EOFError:
                        return
                    conn.send_bytes(data[::-1])

        worker = threading.Thread(target=serve_one, daemon=True)
        worker.start()
        with framecodec.connect(target, format="multiprocessing", timeout=TIMEOUT) as client:
            assert client.request(b"abc") == b"cba"
            big = os.urandom(3 << 20)
            assert client.request(big) == big[::-1]
        worker.join(TIMEOUT)
        assert not worker.is_alive()


def test_timeout_property(echo):
    with framecodec.connect(echo.address) as client:
        assert client.timeout is None
        client.timeout = 0.5
        assert client.socket.gettimeout() == 0.5
        with pytest.raises(ValueError):
            client.timeout = 0
        assert repr(client).startswith("<Client frames 127.0.0.1:")
        wait_until(lambda: len(echo.connections) == 1)
