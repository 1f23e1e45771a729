"""The send queue and the protocols, against scripted sockets."""

from __future__ import annotations

import random
import socket
import ssl

import pytest

from framecodec import FrameDecoder, Message, MessageDecoder, MessageEncoder
from framecodec.errors import ProtocolError
from framecodec.net import transport
from framecodec.net.protocols import FrameProtocol, MessageProtocol, make_protocol
from framecodec.net.transport import IOV_MAX, TLS_WRITE, OutputQueue

pytestmark = pytest.mark.usefixtures("no_leaks")


class ChoppySocket:
    """sendmsg (and send, for a lone buffer) takes a random part of what it
    is offered, sometimes nothing."""

    def __init__(self, seed):
        self.random = random.Random(seed)
        self.data = bytearray()
        self.calls = []

    def sendmsg(self, buffers):
        assert len(buffers) <= IOV_MAX
        self.calls.append(len(buffers))
        offered = b"".join(bytes(b) for b in buffers)
        if self.random.random() < 0.2:
            raise BlockingIOError
        taken = self.random.randint(1, len(offered))
        self.data += offered[:taken]
        return taken

    def send(self, data):
        return self.sendmsg([data])


def flush_all(queue, sock):
    for _ in range(100_000):
        try:
            queue.flush(sock)
            return
        except (BlockingIOError, ssl.SSLWantWriteError):
            continue
    raise AssertionError("flush never finished")


@pytest.mark.skipif(
    not transport.HAS_SENDMSG,
    reason="this Python writes joined chunks with send(), not sendmsg (see transport.HAS_SENDMSG)",
)
@pytest.mark.parametrize("seed", range(5))
def test_partial_sends_resume_exactly(seed):
    rng = random.Random(seed)
    buffers = [bytes([i % 256]) * rng.randint(1, 3000) for i in range(3000)]  # more than IOV_MAX
    queue = OutputQueue()
    queue.push(buffers)
    assert queue.size == sum(map(len, buffers))
    sock = ChoppySocket(seed)
    flush_all(queue, sock)
    assert bytes(sock.data) == b"".join(buffers)
    assert queue.size == 0 and not queue
    assert max(sock.calls) == IOV_MAX  # batches as large as the system allows


class FussyTLSSocket:
    """Like OpenSSL: after SSLWantWriteError the same bytes must come again."""

    def __init__(self):
        self.data = bytearray()
        self.retry = None
        self.random = random.Random(7)
        self.sizes = []

    def send(self, data):
        data = bytes(data)
        if self.retry is not None:
            assert data == self.retry, "a retried TLS write changed"
            self.retry = None
        elif self.random.random() < 0.3:
            self.retry = data
            raise ssl.SSLWantWriteError()
        self.sizes.append(len(data))
        self.data += data
        return len(data)


def test_tls_writes_are_joined_and_retried_unchanged():
    buffers = [b"%d," % i for i in range(5000)] + [b"L" * (3 * TLS_WRITE + 5)] + [b"tail"]
    queue = OutputQueue(tls=True)
    queue.push(buffers)
    sock = FussyTLSSocket()
    flush_all(queue, sock)
    assert bytes(sock.data) == b"".join(buffers)
    assert len(sock.sizes) < 20  # thousands of small buffers, a few writes
    assert max(sock.sizes) <= TLS_WRITE


def test_joined_writes_where_there_is_no_sendmsg(monkeypatch):
    monkeypatch.setattr(transport, "HAS_SENDMSG", False)  # as on Windows
    queue = OutputQueue()
    buffers = [b"%d;" % i for i in range(3000)]
    queue.push(buffers)
    sock = FussyTLSSocket()  # has send() only
    flush_all(queue, sock)
    assert bytes(sock.data) == b"".join(buffers)


def test_copy_mutable_buffers():
    payload = bytearray(b"mutable")
    copying, sharing = OutputQueue(copy_mutable=True), OutputQueue()
    copying.push([payload])
    sharing.push([payload])
    payload[:] = b"changed"
    a, b = socket.socketpair()
    with a, b:
        copying.flush(a)
        sharing.flush(a)
        assert b.recv(100) == b"mutablechanged"


def test_frame_protocol_encodes_for_vectored_writes():
    protocol = FrameProtocol("uint16")
    small, large = b"s" * 10, b"L" * 5000
    assert protocol.encode(small) == [b"\0\x0a" + small]  # joined: one buffer
    _, payload = protocol.encode(large)
    assert payload is large  # never copied
    many = protocol.encode_many([small] * 100)
    assert len(many) == 1
    huge = b"H" * 65536
    mixed = FrameProtocol(max_frame_size=1 << 20).encode_many([small, huge, small, small])
    assert mixed[2] is huge and len(mixed) == 4
    assert FrameDecoder().feed(b"".join(mixed)) == [small, huge, small, small]
    assert protocol.encode_many([]) == []


def test_message_protocol_keeps_content_type_and_extra_headers():
    protocol = MessageProtocol()
    original = MessageDecoder().feed(
        b"".join(protocol.encode(b"\x01", content_type="binary/x", headers={"trace": 1}))
    )[0]
    again = MessageDecoder().feed(b"".join(protocol.encode(original)))[0]
    assert again == original
    assert again.header["trace"] == 1
    partial = Message({"content-type": "binary/y"}, b"data")  # a hand-made reply
    decoded = MessageDecoder().feed(protocol.encode(partial)[0])[0]
    assert (decoded.content_type, decoded.content) == ("binary/y", b"data")


def test_make_protocol_validates():
    ready = FrameProtocol()
    assert make_protocol(ready) is ready
    with pytest.raises(TypeError):
        make_protocol(ready, max_frame_size=10)
    with pytest.raises(ValueError):
        make_protocol("messages", max_content_size=-1)
    with pytest.raises(ValueError, match="'frames' or 'messages'"):
        make_protocol("lines")


def test_format_options_reach_every_decoder_a_protocol_makes():
    protocol = make_protocol("frames", "http2", strip=9, max_frame_length=100, on_oversized="raise")
    decoder = protocol.new_decoder()
    wire = b"\x00\x00\x02\x00\x00\x00\x00\x00\x01hi" + b"\x00\x01\x00" + bytes(6)
    with pytest.raises(ProtocolError, match="max_frame_length") as info:
        decoder.feed(wire)
    assert info.value.frames == [b"hi"]
    assert decoder.discarded == 1
    messages = make_protocol("messages", max_content_size=1, on_oversized="discard").new_decoder()
    assert messages.feed(MessageEncoder().encode(b"too long")) == []
    assert messages.discarded == 1
