"""Address syntax, resolution and binding."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from framecodec import Address, parse_address
from framecodec.net.addresses import bind_socket, connect_socket

from ..net_support import TIMEOUT, has_ipv6_loopback, unix_path

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:80", Address(host="127.0.0.1", port=80)),
        (("127.0.0.1", 80), Address(host="127.0.0.1", port=80)),
        ("localhost:0", Address(host="localhost", port=0)),
        (":8080", Address(host="", port=8080)),
        ("[::1]:443", Address(host="::1", port=443)),
        (("::1", 443), Address(host="::1", port=443)),
        (("[::1]", "443"), Address(host="::1", port=443)),
        ("[fe80::1%lo]:9", Address(host="fe80::1%lo", port=9)),
        ("unix:/tmp/x.sock", Address(path="/tmp/x.sock")),
        ("unix:relative.sock", Address(path="relative.sock")),
        ("unix:@name", Address(path="@name")),
    ],
)
def test_parse(text, expected):
    address = parse_address(text)
    assert address == expected
    assert parse_address(str(address)) == address  # round trip through the syntax
    assert parse_address(address) is address


@pytest.mark.parametrize(
    "text, message",
    [
        ("localhost", "lacks a port"),
        ("/tmp/x.sock", "unix:/tmp/x.sock"),
        ("::1:80", r"brackets: \[::1\]:80"),
        ("[::1]", r"\[::1\]:port"),
        ("host:99999", "ports are integers"),
        ("host:http", "ports are integers"),
        ("host:-1", "ports are integers"),
        (("host", True), "ports are integers"),
        ("unix:", "needs a path"),
        (("a", 1, 2), r"\(host, port\)"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_parse_rejects_other_types():
    with pytest.raises(TypeError):
        parse_address(8080)


def test_family_and_sockaddr():
    assert parse_address("1.2.3.4:5").family == socket.AF_INET
    assert parse_address("[::1]:5").family == socket.AF_INET6
    assert parse_address("unix:/x").family == socket.AF_UNIX
    assert parse_address("unix:@name").sockaddr == "\0name"
    assert parse_address("[::1]:5").sockaddr == ("::1", 5)
    assert Address.from_sockaddr(("::1", 5, 0, 0)) == Address(host="::1", port=5)
    assert Address.from_sockaddr(b"\0abc") == Address(path="@abc")
    assert Address.from_sockaddr("/tmp/s") == Address(path="/tmp/s")


@pytest.mark.parametrize(
    "text", ["127.0.0.1:0", "[::1]:0", "unix:@", "unix:@fc-test-name", "unix:PATH"]
)
def test_bind_reports_the_real_address_and_connects(text):
    if text.startswith("[") and not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    text = text.replace("PATH", unix_path())
    bound = bind_socket(text, backlog=5)
    try:
        real = bound.address
        if real.is_unix:
            assert real.path and real.path != "@"  # "unix:@" autobinds a name
        else:
            assert real.port > 0
        with connect_socket(str(real), timeout=TIMEOUT) as client:
            peer, _ = bound.sock.accept()
            peer.close()
            assert client.getpeername() == bound.sock.getsockname()
    finally:
        bound.close()
    if real.is_unix and not real.path.startswith("@"):
        assert not os.path.exists(real.path)  # removed on close


def test_names_are_resolved_and_each_address_tried():
    bound = bind_socket("127.0.0.1:0", backlog=5)
    try:
        # "localhost" may give ::1 first, where nothing listens on this port.
        with connect_socket(("localhost", bound.address.port), timeout=TIMEOUT) as client:
            assert client.getpeername()[1] == bound.address.port
        with pytest.raises(socket.gaierror):
            connect_socket("no-such-host.invalid:80", timeout=TIMEOUT)
    finally:
        bound.close()


def test_stale_unix_socket_file_is_replaced_but_a_live_one_is_not():
    path = unix_path()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, with no one behind it
    bound = bind_socket("unix:" + path, backlog=5)
    try:
        with pytest.raises(OSError) as info:
            bind_socket("unix:" + path, backlog=5)  # a live server's path
        assert info.value.errno == errno.EADDRINUSE
        assert path in str(info.value)
    finally:
        bound.close()
    with open(path, "w"):
        pass  # not a socket: never ours to remove
    try:
        with pytest.raises(OSError):
            bind_socket("unix:" + path, backlog=5)
        assert os.path.exists(path)
    finally:
        os.unlink(path)


def test_closing_does_not_remove_a_replacement_file():
    path = unix_path()
    first = bind_socket("unix:" + path, backlog=5)
    os.unlink(path)
    second = bind_socket("unix:" + path, backlog=5)
    first.close()
    assert os.path.exists(path)  # the second server's file
    second.close()
    assert not os.path.exists(path)


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_address_lets_a_restarted_server_bind_at_once(reuse):
    bound = bind_socket("127.0.0.1:0", backlog=5)
    port = bound.address.port
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    peer, _ = bound.sock.accept()
    peer.close()  # the server closes first: its side lingers in TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    bound.close()
    if reuse:
        bind_socket(f"127.0.0.1:{port}", backlog=5, reuse_address=True).close()
    else:
        with pytest.raises(OSError) as info:
            bind_socket(f"127.0.0.1:{port}", backlog=5, reuse_address=False)
        assert info.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("backlog", [2, 7])
def test_backlog_is_passed_to_listen(backlog):
    bound = bind_socket("unix:" + unix_path(), backlog=backlog)
    waiting = []
    try:
        for _ in range(backlog + 5):  # a full Unix backlog refuses at once (EAGAIN)
            sock = socket.socket(socket.AF_UNIX)
            waiting.append(sock)
            sock.setblocking(False)
            if sock.connect_ex(bound.address.sockaddr) == errno.EAGAIN:
                break
        assert len(waiting) - 1 in (backlog, backlog + 1)  # Linux queues backlog + 1
    finally:
        for sock in waiting:
            sock.close()
        bound.close()
