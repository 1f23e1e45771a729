"""MultiClient: many connections, one thread."""

from __future__ import annotations

import socket
import ssl

import pytest

import framecodec
from framecodec import MultiClient
from framecodec.net.transport import ConnectionState

from ..net_support import TIMEOUT, unix_path, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")


def upper(frame):
    return frame.upper()


def multi(net, **options):
    if net.tls:
        options.setdefault("ssl_context", framecodec.client_context(net.pki.ca))
    return MultiClient(timeout=TIMEOUT, **options)


def test_200_connections_from_one_thread(net):
    server = net.serve(upper)
    hostname = "localhost" if net.tls else None
    with multi(net) as clients:
        conns = [
            clients.connect(server.address, server_hostname=hostname, data=i) for i in range(200)
        ]
        for conn in conns:
            conn.send(b"request %d" % conn.data)  # queued until connected
        replies = {}
        for conn, frame in clients.frames(timeout=TIMEOUT):
            replies[conn.data] = frame
            conn.close()
        assert replies == {i: b"REQUEST %d" % i for i in range(200)}
        assert all(conn.closed and conn.error is None for conn in conns)


def test_several_servers_with_a_callback(make_net):
    nets = [make_net(family, False) for family in ("tcp4", "tcp6", "unix")]
    servers = [net.serve(lambda frame, n=n: b"%d:%s" % (n, frame)) for n, net in enumerate(nets)]
    got = []

    def on_frame(conn, frame):
        got.append(frame)
        if len(conn.data) == 2:
            conn.close()
        conn.data.append(frame)

    with MultiClient(timeout=TIMEOUT) as clients:
        for server in servers:
            conn = clients.connect(server.address, data=[])
            conn.send_many([b"a", b"b", b"c"])
        clients.run(on_frame, timeout=TIMEOUT)
    assert sorted(got) == sorted(b"%d:%s" % (n, x) for n in range(3) for x in (b"a", b"b", b"c"))


def test_a_failing_connection_leaves_the_others_alone(make_net):
    net = make_net("tcp4", False)
    server = net.serve(upper)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()
    closed = []
    with MultiClient(timeout=TIMEOUT, on_close=closed.append) as clients:
        refused = clients.connect(dead)
        missing = clients.connect("unix:/tmp/fc-nobody-here.sock")
        good = clients.connect(server.address)
        good.send(b"hi")
        received = []
        for conn, frame in clients:
            received.append((conn, frame))
            conn.close()
    assert received == [(good, b"HI")]
    assert isinstance(refused.error, ConnectionRefusedError)
    assert isinstance(missing.error, FileNotFoundError)
    assert set(closed) == {refused, missing, good}


def test_connect_and_handshake_timeouts(make_net, pki):
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts nothing, says nothing
        context = framecodec.client_context(pki.ca)
        with MultiClient(timeout=0.3, ssl_context=context) as clients:
            conn = clients.connect(listener.getsockname(), server_hostname="localhost")
            assert list(clients.frames(timeout=TIMEOUT)) == []
        assert isinstance(conn.error, TimeoutError)
        assert "TLS handshake" in str(conn.error)


def test_frames_timeout_when_nothing_arrives(make_net):
    net = make_net("tcp4", False)
    server = net.serve(lambda frame: None)
    with MultiClient() as clients:
        clients.connect(server.address).send(b"no answer")
        with pytest.raises(TimeoutError, match="no frame"):
            for _ in clients.frames(timeout=0.2):
                pass


def test_unix_connects_retry_while_the_backlog_is_full(make_net):
    server = framecodec.serve("unix:" + unix_path(), upper, backlog=1)
    try:
        with MultiClient(timeout=TIMEOUT) as clients:
            conns = [clients.connect(server.address, data=i) for i in range(20)]
            assert any(conn.stream is None for conn in conns)  # refused for now: EAGAIN
            for conn in conns:
                conn.send(b"%d" % conn.data)
            server.start()
            replies = {}
            for conn, frame in clients.frames(timeout=TIMEOUT):
                replies[conn.data] = frame
                conn.close()
        assert replies == {i: b"%d" % i for i in range(20)}
    finally:
        server.shutdown()


def test_close_sends_what_is_queued_first(make_net):
    net = make_net("tcp4", False)
    received = []
    server = net.serve(lambda frame: received.append(frame))
    with MultiClient(timeout=TIMEOUT) as clients:
        conn = clients.connect(server.address)
        conn.send(b"x" * 3_000_000)
        conn.send(b"last words")
        assert conn.pending > 3_000_000
        assert conn.state is ConnectionState.OPEN and not conn.closing
        conn.close()
        assert conn.state is ConnectionState.CLOSING and conn.closing and not conn.closed
        with pytest.raises(framecodec.ConnectionClosed):
            conn.send(b"too late")
        assert list(clients.frames(timeout=TIMEOUT)) == []
    assert conn.state is ConnectionState.CLOSED and conn.closed and not conn.closing
    assert conn.error is None
    wait_until(lambda: len(received) == 2)
    assert received[1] == b"last words"


def test_tls_certificate_error_is_per_connection(make_net, pki):
    net = make_net("tcp4", True)
    server = net.serve(upper)
    with MultiClient(timeout=TIMEOUT, ssl_context=framecodec.client_context(pki.ca)) as clients:
        wrong = clients.connect(server.address, server_hostname="example.com")
        right = clients.connect(server.address, server_hostname="localhost")
        right.send(b"ok")
        frames = []
        for conn, frame in clients:
            frames.append(frame)
            conn.close()
    assert frames == [b"OK"]
    assert isinstance(wrong.error, ssl.SSLCertVerificationError)
