"""framecodec servers with peers nobody here wrote: multiprocessing.connection,
and a client built the classic sockets tutorial's way."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from multiprocessing.connection import Client as MPClient
from multiprocessing.reduction import ForkingPickler

import pytest

from ..net_support import TIMEOUT

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.parametrize("family", ["tcp4", "unix"])
def test_multiprocessing_client_exchanges_frames(make_net, backend, family):
    net = make_net(family, False)
    server = net.serve(lambda frame: frame[::-1], backend=backend, format="multiprocessing")
    sizes = [0, 1, 1000, 70_000, 3_000_000]
    with MPClient(server.address.sockaddr) as conn:  # no authkey: plain frames
        for size in sizes:
            payload = os.urandom(size)
            conn.send_bytes(payload)
            assert conn.recv_bytes() == payload[::-1]
        value = ("a", "pickled", {"object": 1})
        conn.send(value)  # pickles ride in the same frames
        assert conn.recv_bytes() == bytes(ForkingPickler.dumps(value))[::-1]


class TutorialClient:
    """The tutorial's client side of its protocol, with its buffering: a
    2-byte header length, a JSON header, then the content."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def send(self, content, content_type, encoding):
        header = {
            "byteorder": sys.byteorder,
            "content-type": content_type,
            "content-encoding": encoding,
            "content-length": len(content),
        }
        header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
        self.sock.sendall(struct.pack(">H", len(header_bytes)) + header_bytes + content)

    def _fill(self, size):
        while len(self.buffer) < size:
            data = self.sock.recv(4096)
            assert data, "server closed"
            self.buffer += data

    def receive(self):
        self._fill(2)
        header_length = struct.unpack(">H", self.buffer[:2])[0]
        self.buffer = self.buffer[2:]
        self._fill(header_length)
        header = json.loads(self.buffer[:header_length].decode("utf-8"))
        self.buffer = self.buffer[header_length:]
        for key in ("byteorder", "content-length", "content-type", "content-encoding"):
            assert key in header
        self._fill(header["content-length"])
        content = self.buffer[: header["content-length"]]
        self.buffer = self.buffer[header["content-length"] :]
        if header["content-type"] == "text/json":
            return header, json.loads(content.decode(header["content-encoding"]))
        return header, content


def test_tutorial_style_client_talks_to_a_message_server(make_net, backend):
    net = make_net("tcp4", False)

    def search(message):
        if message.content_type == "text/json":
            return {"result": f"searched for {message.value['value']}"}
        return message  # binary: echoed with its own content type

    server = net.serve(search, backend=backend, protocol="messages")
    with socket.create_connection(
        (server.address.host, server.address.port), timeout=TIMEOUT
    ) as sock:
        client = TutorialClient(sock)
        request = json.dumps({"action": "search", "value": "ring 💍"}).encode("utf-8")
        client.send(request, "text/json", "utf-8")
        header, value = client.receive()
        assert value == {"result": "searched for ring 💍"}
        assert header["content-type"] == "text/json"
        client.send(b"\x00binary", "binary/custom-client-binary-type", "binary")
        header, content = client.receive()
        assert content == b"\x00binary"
        assert header["content-type"] == "binary/custom-client-binary-type"
