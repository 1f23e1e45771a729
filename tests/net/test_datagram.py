"""One message per datagram, over UDP (IPv4, IPv6) and Unix datagram sockets."""

from __future__ import annotations

import contextlib
import errno
import socket
import time

import pytest

import framecodec
from framecodec import DatagramClient, FrameTooLargeError, MessageEncoder

from ..net_support import FAMILIES, TIMEOUT, bind_address, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")

messages = MessageEncoder()


@pytest.fixture(params=FAMILIES, ids=["udp4", "udp6", "unix"])
def address(request):
    return bind_address(request.param)


@contextlib.contextmanager
def serving(address, handler, **options):
    server = framecodec.serve_datagrams(address, handler, **options).start()
    try:
        yield server
    finally:
        server.shutdown()


def raw_sender(server):
    """An unconnected datagram socket able to receive replies."""
    sock = socket.socket(server.address.family, socket.SOCK_DGRAM)
    sock.bind("" if server.address.is_unix else (server.address.host, 0))
    sock.settimeout(TIMEOUT)
    return sock


def test_request_reply(address):
    def handler(message):
        if message.content_type == "text/json":
            return {"echo": message.value}
        return message  # the same content type back

    with (
        serving(address, handler) as server,
        DatagramClient(server.address, timeout=TIMEOUT) as client,
    ):
        assert client.request({"q": "ü"}).value == {"echo": {"q": "ü"}}
        reply = client.request(b"\x00\x01", content_type="binary/thing")
        assert (reply.content_type, reply.content) == ("binary/thing", b"\x00\x01")
        client.send("fire and forget")
        # The server counts a datagram as received before it replies: wait
        # for the reply's count too, not only the third arrival.
        wait_until(lambda: server.stats["received"] == 3 and server.stats["replied"] == 3)


def test_a_lost_reply_is_retried(address):
    seen = []

    def forgetful(message):
        seen.append(message.value)
        return None if len(seen) == 1 else message.value.upper()  # "loses" the first

    with (
        serving(address, forgetful) as server,
        DatagramClient(server.address, timeout=0.4, retries=2) as client,
    ):
        assert client.request("again").value == "AGAIN"
        assert seen == ["again", "again"]
        assert client.stats["retries"] == 1


def test_retries_are_bounded(address):
    with (
        serving(address, lambda message: None) as server,
        DatagramClient(server.address, timeout=0.1, retries=2) as client,
    ):
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="3 attempt"):
            client.request("anyone?")
        assert 0.29 < time.monotonic() - start < 2
        wait_until(lambda: server.stats["received"] == 3)


def test_a_late_reply_is_not_taken_for_the_next_one(address):
    def handler(message):
        if message.value == "slow":
            time.sleep(0.3)
        return message.value

    with (
        serving(address, handler) as server,
        DatagramClient(server.address, timeout=0.1, retries=0) as client,
    ):
        with pytest.raises(TimeoutError):
            client.request("slow")
        client.timeout = TIMEOUT
        assert client.request("fast").value == "fast"
        assert client.stats["stale"] == 1


def test_bad_datagrams_are_dropped_and_counted(address):
    def handler(message):
        if message.value == "boom":
            raise RuntimeError("handler bug")
        return message.value

    with serving(address, handler, max_datagram_size=1000) as server:
        with contextlib.closing(raw_sender(server)) as raw:
            target = server.address.sockaddr
            raw.sendto(b"\x00\x05hello", target)  # not JSON
            raw.sendto(messages.encode("x") + b"junk", target)  # trailing bytes
            raw.sendto(messages.encode("x" * 100)[:-1], target)  # cut short
            raw.sendto(b"", target)
            raw.sendto(messages.encode("y" * 2000), target)  # over the limit
            raw.sendto(messages.encode("boom"), target)
            raw.sendto(messages.encode("fine"), target)
            reply = framecodec.MessageDecoder().feed(raw.recv(2000))
        assert [m.value for m in reply] == ["fine"]
        assert server.stats["malformed"] == 4
        assert server.stats["oversized"] == 1
        assert server.stats["handler_errors"] == 1
        assert server.stats["received"] == 7


def test_replies_that_cannot_be_sent_are_counted():
    big_answer = "x" * 5000
    with serving(bind_address("unix"), lambda _: big_answer, max_datagram_size=1000) as server:
        client = DatagramClient(server.address, timeout=0.2, retries=0)
        with client, pytest.raises(TimeoutError):
            client.request("too big an answer")
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as unnamed:
            unnamed.sendto(messages.encode("who?"), server.address.sockaddr)  # no address to answer
        wait_until(lambda: server.stats["unanswerable"] == 2)


def test_a_port_in_use_is_not_shared(address):
    with serving(address, lambda message: message) as server:
        with pytest.raises(OSError) as info:
            framecodec.serve_datagrams(str(server.address), lambda message: message)
        assert info.value.errno == errno.EADDRINUSE


def test_client_errors():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with DatagramClient(f"127.0.0.1:{port}", timeout=TIMEOUT) as client:
        with pytest.raises(ConnectionRefusedError):  # the ICMP "port unreachable"
            client.request("hello?")
        with pytest.raises(FrameTooLargeError):
            client.request(b"x" * 70_000)
    with pytest.raises(OSError):
        DatagramClient("unix:/tmp/fc-no-datagram-server.sock")
    with pytest.raises(ValueError):
        DatagramClient("127.0.0.1:9", retries=-1)
