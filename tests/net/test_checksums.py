"""The checksum option end to end: a userspace TCP relay on loopback flips
bytes inside payloads on their way to the server.  Without the option the
damaged frames reach the handler; with it none does, the connection ends
with a protocol error, logged and counted, and the server keeps serving
its other connections.  The option is only passed through to the codec by
every layer (blocking and asyncio here; anyio in
tests/anyio/test_network.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any, Iterator, List

import pytest

import framecodec
from framecodec import FrameEncoder, aio

from ..net_support import TIMEOUT, wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")

PAYLOAD = 1000
COUNT = 30
DAMAGED = range(1, COUNT, 3)  # every third frame, from the second on


def payloads() -> List[bytes]:
    return [b"%06d" % i + bytes([i % 251]) * (PAYLOAD - 6) for i in range(COUNT)]


class FlippingRelay:
    """Forwards one connection to ``target``; in the client's direction it
    flips one byte at each offset of ``offsets`` (stream positions: the
    relay counts bytes, it does not parse them).  Replies pass unchanged."""

    def __init__(self, target: Any, offsets: List[int]) -> None:
        self._target = target
        self._offsets = set(offsets)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.flipped = 0
        self._sockets: List[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._run, daemon=True)]

    def _run(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self._target.address.sockaddr, timeout=TIMEOUT)
        client.settimeout(TIMEOUT)
        self._sockets += [client, server]
        back = threading.Thread(target=self._pump, args=(server, client, False), daemon=True)
        self._threads.append(back)
        back.start()
        self._pump(client, server, True)

    def _pump(self, source: socket.socket, sink: socket.socket, damage: bool) -> None:
        position = 0
        with contextlib.suppress(OSError):  # either end may go first
            for _ in range(100_000):  # bounded: far more reads than the test's bytes need
                data = source.recv(65536)
                if not data:
                    break
                if damage:
                    chunk = bytearray(data)
                    for offset in self._offsets:
                        if position <= offset < position + len(chunk):
                            chunk[offset - position] ^= 0x5A
                            self.flipped += 1
                    data = bytes(chunk)
                position += len(data)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    @contextlib.contextmanager
    def running(self) -> Iterator[FlippingRelay]:
        self._threads[0].start()
        try:
            yield self
        finally:
            for thread in list(self._threads):
                thread.join(TIMEOUT)
            for sock in self._sockets:
                sock.close()
            assert not any(thread.is_alive() for thread in self._threads)


def offsets_inside_payloads(frame_size: int) -> List[int]:
    # The middle of each damaged frame's payload (its 4-byte header first).
    return [i * frame_size + 4 + PAYLOAD // 2 for i in DAMAGED]


def serve_recording(tcp: Any, backend: str, **options: Any) -> Any:
    received: List[bytes] = []
    lock = threading.Lock()

    def handler(frame: bytes) -> bytes:
        with lock:
            received.append(frame)
        return frame[:6]  # the frame's number: an answer per frame

    server = tcp.serve(handler, backend=backend, **options)
    return server, received


def test_without_the_option_damaged_frames_reach_the_handler(tcp: Any, backend: str) -> None:
    server, received = serve_recording(tcp, backend)
    sent = payloads()
    relay = FlippingRelay(server, offsets_inside_payloads(4 + PAYLOAD))
    with relay.running(), framecodec.connect(relay.address, timeout=TIMEOUT) as client:
        client.send_many(sent)
        assert [client.recv() for _ in sent] == [p[:6] for p in sent]
    assert relay.flipped == len(DAMAGED)
    wait_until(lambda: len(received) == COUNT)
    damaged = [i for i, frame in enumerate(received) if frame != sent[i]]
    assert damaged == list(DAMAGED)


def test_with_the_option_no_damaged_frame_is_delivered(tcp: Any, backend: str, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="framecodec.server")
    server, received = serve_recording(tcp, backend, checksum="crc32c")
    sent = payloads()
    relay = FlippingRelay(server, offsets_inside_payloads(4 + PAYLOAD + 4))
    with relay.running():
        with framecodec.connect(relay.address, timeout=TIMEOUT, checksum="crc32c") as client:
            client.send_many(sent)
            answers = []
            with pytest.raises(ConnectionError):
                for _ in sent:
                    answers.append(client.recv())
        # Frames before the first damaged one were answered, then the
        # connection was closed.
        assert answers == [p[:6] for p in sent[: DAMAGED[0]]]
        wait_until(lambda: server.stats["protocol_errors"] == 1)
    assert received == sent[: DAMAGED[0]]
    wait_until(lambda: "fails its checksum" in caplog.text, message="the error logged")
    assert "protocol error from" in caplog.text
    # The server goes on serving its other connections.
    other = tcp.connect(server, checksum="crc32c")
    assert other.request(b"000099 still served") == b"000099"


def test_with_discard_only_intact_frames_are_delivered(tcp: Any, backend: str) -> None:
    server, received = serve_recording(tcp, backend, checksum="crc32c", on_oversized="discard")
    sent = payloads()
    intact = [p for i, p in enumerate(sent) if i not in DAMAGED]
    relay = FlippingRelay(server, offsets_inside_payloads(4 + PAYLOAD + 4))
    connecting = framecodec.connect(relay.address, timeout=TIMEOUT, checksum="crc32c")
    with relay.running(), connecting as client:
        client.send_many(sent)
        assert [client.recv() for _ in intact] == [p[:6] for p in intact]
        assert client.request(b"000100") == b"000100"  # the same connection goes on
    assert received == [*intact, b"000100"]
    assert server.stats["protocol_errors"] == 0


def test_client_and_server_use_it_for_every_write_path(tcp: Any, backend: str, tmp_path) -> None:
    server = tcp.serve(lambda frame: frame, backend=backend, checksum="crc32c")
    client = tcp.connect(server, checksum="crc32c")
    small, large = b"s" * 10, bytes(range(256)) * 400  # one joined, one sent in place
    assert client.request(small) == small
    assert client.request(large) == large
    client.send_many([small, large, small])
    assert [client.recv() for _ in range(3)] == [small, large, small]
    path = tmp_path / "payload"
    path.write_bytes(large)
    with path.open("rb") as file:
        assert client.send_file(file) == len(large)
    assert client.recv() == large
    # A peer without the option reads the checksum as part of the stream.
    raw = tcp.raw(server)
    raw.sendall(FrameEncoder(checksum="crc32c").encode(b"raw"))
    reply = FrameEncoder(checksum="crc32c").encode(b"raw")
    got = b""
    while len(got) < len(reply):
        chunk = raw.recv(100)
        assert chunk
        got += chunk
    assert got == reply


def test_aio_passes_it_through() -> None:
    async def handler(frame: bytes) -> bytes:
        return frame

    async def main() -> None:
        async with await aio.start_server("127.0.0.1:0", handler, checksum="crc32c") as server:
            conn = await aio.open_connection(server.address, checksum="crc32c")
            async with conn:
                assert await conn.request(b"x" * 5000) == b"x" * 5000
            # A damaged frame closes its connection with a counted protocol error.
            reader, writer = await asyncio.open_connection(*server.address.sockaddr[:2])
            wire = bytearray(FrameEncoder(checksum="crc32c").encode(b"damaged"))
            wire[6] ^= 1
            writer.write(bytes(wire))
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            for _ in range(200):
                if server.stats["protocol_errors"] == 1:
                    break
                await asyncio.sleep(0.01)
            assert server.stats["protocol_errors"] == 1

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
