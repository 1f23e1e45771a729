"""The contenders: framecodec, the references, and the registry of all of them.

- raw: the physical reference, the same bytes through ``sendall`` of
  pre-built buffers and ``recv_into`` a preallocated one, with no framing;
- naive: the tutorial's loop, ``recv`` the header, ``recv`` the payload,
  ``buf += data``; one ``sendall(header + payload)`` per frame;
- framecodec: the codec driven as a demanding user drives it, ``recv_into(
  decoder.get_buffer(...))`` then ``buffer_updated``, batches sent with
  ``encode_many``, large frames with ``sendmsg([header, payload])``;
- framecodec's blocking client with each server backend (``batch=True``:
  one handler call per read), also over TLS and as the pure-Python twin.

The alternatives users would pick instead (multiprocessing.connection,
asyncio streams, pyzmq) are in alternatives.py.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple, cast

import framecodec

from . import alternatives, anyio_contenders
from .base import (
    BATCH_BYTES,
    HEADER,
    READ_SIZE,
    Contender,
    EchoClient,
    EchoServer,
    Endpoint,
    Receiver,
    Sender,
    SocketEchoServer,
    SocketReceiver,
    SocketSender,
    ThreadedEchoServer,
    ended,
    finish_sending,
    perf_counter,
    went_on,
)
from .capi_contender import READER as CAPI_READER
from .capi_contender import CapiReceiver
from .codec_roles import ChecksumReceiver, ChecksumSender, CodecReceiver, CodecSender, send_frames

# -- raw sockets: the physical reference ---------------------------------------------

# The raw reference moves the same bytes in the same writes as framecodec's
# sender (batches of about BATCH_BYTES, large frames one per write) and
# reads as much per call as framecodec's receiver may (a large frame is
# received in place, in reads up to its size): what is left between the two
# is the cost of framing.


class RawReceiver(SocketReceiver):
    """Counts bytes; the stream is ``count`` frames' worth of them exactly."""

    def read(self, sock: socket.socket, count: int) -> float:
        frame = self.size + HEADER.size
        expected = count * frame
        room = max(READ_SIZE, frame)
        buf = bytearray(room)
        recv_into = sock.recv_into
        got = 0
        while got < expected:
            n = recv_into(buf, min(room, expected - got))  # never past the stream
            if not n:
                raise ended(got // frame, count)
            got += n
        return perf_counter()


class RawSender(SocketSender):
    """Sends a pre-built buffer over and over.  The buffer holds whole frames,
    so the stream is the very bytes the framed senders send, and any
    receiver can check it."""

    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        super().__init__(endpoint, address, payload)
        frame = HEADER.pack(len(payload)) + payload
        self.frame = len(frame)
        self.chunk = frame * max(1, BATCH_BYTES // len(payload))

    def send(self, count: int) -> None:
        left = count * self.frame
        chunk = self.chunk
        size = len(chunk)
        sendall = self.sock.sendall
        while left >= size:
            sendall(chunk)
            left -= size
        if left:
            sendall(memoryview(chunk)[:left])


class RawEchoServer(SocketEchoServer):
    """Sends back whatever arrives.  One client gets the minimal blocking
    ping-pong loop; many get a selector loop, the least a Python server
    can do per request."""

    def start(self, clients: int) -> None:
        if clients == 1:
            super().start(1)
        elif self.endpoint.tls is not None:
            raise ValueError("the raw selector echo serves plain sockets only")
        else:
            self._spawn(self._select_loop, clients)

    def handle(self, sock: socket.socket) -> None:
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        recv_into = sock.recv_into
        sendall = sock.sendall
        with sock:
            while True:
                n = recv_into(buf)
                if not n:
                    return
                sendall(view[:n])

    def _select_loop(self, clients: int) -> None:
        socks = [self.accept_one() for _ in range(clients)]
        selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        open_count = clients
        while open_count:
            for key, _ in selector.select():
                sock = cast(socket.socket, key.fileobj)
                n = sock.recv_into(buf)
                if not n:
                    selector.unregister(sock)
                    sock.close()
                    open_count -= 1
                elif sock.send(view[:n]) != n:
                    raise RuntimeError("a small reply did not fit the socket buffer")
        selector.close()


class RawEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.sock = endpoint.connect(address)
        self.message = HEADER.pack(len(payload)) + payload  # the same bytes as a frame
        self.buf = bytearray(READ_SIZE)

    def roundtrip(self) -> None:
        sock = self.sock
        sock.sendall(self.message)
        want = len(self.message)
        got = 0
        while got < want:
            n = sock.recv_into(self.buf)
            if not n:
                raise EOFError("the server closed the connection")
            got += n

    def close(self) -> None:
        self.sock.close()


# -- the naive loop ----------------------------------------------------------------


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """The tutorial's helper: recv until ``n`` bytes have come, concatenating."""
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(f"the stream ended {len(buf)} bytes into a {n}-byte read")
        buf += data
    return buf


class NaiveReceiver(SocketReceiver):
    nodelay = False  # tutorials leave the socket as the system makes it

    def read(self, sock: socket.socket, count: int) -> float:
        for _ in range(count):
            header = recv_exactly(sock, 4)
            (length,) = struct.unpack(">I", header)
            recv_exactly(sock, length)
        return perf_counter()


class NaiveSender(SocketSender):
    nodelay = False

    def send(self, count: int) -> None:
        sock = self.sock
        payload = self.payload
        for _ in range(count):
            sock.sendall(struct.pack(">I", len(payload)) + payload)


class NaiveEchoServer(SocketEchoServer):
    nodelay = False

    def handle(self, sock: socket.socket) -> None:
        with sock:
            while True:
                try:
                    header = recv_exactly(sock, 4)
                except EOFError:  # the client is done
                    return
                (length,) = struct.unpack(">I", header)
                payload = recv_exactly(sock, length)
                sock.sendall(struct.pack(">I", len(payload)) + payload)


class NaiveEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.sock = endpoint.connect(address, nodelay=False)
        self.payload = payload

    def roundtrip(self) -> None:
        sock = self.sock
        payload = self.payload
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", recv_exactly(sock, 4))
        if len(recv_exactly(sock, length)) != len(payload):
            raise ValueError("the reply is not the request")

    def close(self) -> None:
        self.sock.close()


# -- framecodec: the codec on a socket ----------------------------------------------


class CodecEchoServer(SocketEchoServer):
    """The codec's loop on blocking sockets, a thread per connection."""

    def handle(self, sock: socket.socket) -> None:
        decoder = framecodec.FrameDecoder()
        encode_many = framecodec.FrameEncoder().encode_many
        with sock:
            while True:
                n = sock.recv_into(decoder.get_buffer())
                if not n:
                    decoder.eof()
                    return
                frames = decoder.buffer_updated(n)
                if frames:
                    sock.sendall(encode_many(frames))


class CodecEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.sock = endpoint.connect(address)
        self.payload = payload
        self.encoder = framecodec.FrameEncoder()
        self.decoder = framecodec.FrameDecoder()

    def roundtrip(self) -> None:
        sock = self.sock
        decoder = self.decoder
        sock.sendall(self.encoder.encode(self.payload))
        frames: List[bytes] = []
        while not frames:
            n = sock.recv_into(decoder.get_buffer())
            if not n:
                raise EOFError("the server closed the connection")
            frames = decoder.buffer_updated(n)
        if len(frames) != 1 or len(frames[0]) != len(self.payload):
            raise ValueError("the reply is not the request")

    def close(self) -> None:
        self.sock.close()


# -- framecodec: the blocking client and the server backends ---------------------------

STEP_WAIT = 10.0  # seconds a finished connection may take to be seen closed


def _serve(endpoint: Endpoint, handler: Any, backend: str, clients: int = 64) -> framecodec.Server:
    return framecodec.serve(
        endpoint.bind_address(),
        handler,
        backend=backend,
        batch=True,
        ssl_context=endpoint.server_context(),
        max_connections=max(64, clients),
        read_size=READ_SIZE,
    )


def _wait_closed(server: framecodec.Server, connections: int, timeout: float) -> None:
    """Wait until ``connections`` have ended (the clients are done by now, so
    this is short and untimed); then stop, and fail if any ended badly."""
    deadline = time.monotonic() + timeout
    while server.stats["closed"] < connections:
        if time.monotonic() > deadline:
            server.shutdown(0)
            raise TimeoutError(f"connections still open {timeout} s after the clients finished")
        time.sleep(0.001)
    server.shutdown()
    stats = server.stats
    if stats["clean_closes"] != stats["closed"]:
        bad = {k: v for k, v in stats.items() if k.endswith("errors") or k.endswith("failures")}
        raise RuntimeError(f"the server saw connections fail: {bad}")


class ServerReceiver(Receiver):
    """serve(..., batch=True) with a handler that counts the frames of each read."""

    def __init__(self, endpoint: Endpoint, size: int, backend: str) -> None:
        self.frames = 0
        self.count = 0
        self.end = 0.0
        self.done = threading.Event()
        self.server = _serve(endpoint, self.on_frames, backend)
        self.address = str(self.server.address)

    def on_frames(self, frames: List[bytes]) -> None:
        self.frames += len(frames)
        if self.frames >= self.count and not self.done.is_set():
            self.end = perf_counter()
            self.done.set()

    def receive(self, count: int) -> Tuple[int, float]:
        self.count = count
        server = self.server
        server.start()
        # Waiting in steps lets a stream that ends short be noticed; a wake-up
        # a tenth of a second costs the server nothing measurable.
        while not self.done.wait(0.1) and not server.stats["closed"]:
            pass
        _wait_closed(server, 1, STEP_WAIT)
        if self.frames < count:
            raise ended(self.frames, count)
        if self.frames > count:
            raise went_on()
        return self.frames, self.end

    def close(self) -> None:
        self.server.close()


class ClientSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.client = framecodec.connect(
            address,
            ssl_context=endpoint.client_context(),
            server_hostname="localhost" if endpoint.tls else None,
        )

    def send(self, count: int) -> None:
        client = self.client
        payload = self.payload
        send_frames(payload, count, client.send_many, lambda: client.send(payload))

    def close(self) -> None:
        finish_sending(self.client.socket)
        self.client.close()


class BackendEchoServer(EchoServer):
    def __init__(self, endpoint: Endpoint, backend: str) -> None:
        self.server = _serve(endpoint, self.echo, backend)
        self.address = str(self.server.address)
        self.clients = 0

    @staticmethod
    def echo(frames: List[bytes]) -> List[bytes]:
        return frames

    def start(self, clients: int) -> None:
        self.clients = clients
        self.server.start()

    def stop(self, timeout: float) -> None:
        _wait_closed(self.server, self.clients, timeout)


class ClientEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.client = framecodec.connect(
            address,
            ssl_context=endpoint.client_context(),
            server_hostname="localhost" if endpoint.tls else None,
        )

    def roundtrip(self) -> None:
        if len(self.client.request(self.payload)) != len(self.payload):
            raise ValueError("the reply is not the request")

    def close(self) -> None:
        self.client.close()


# -- framecodec.aio: asyncio on the codec ------------------------------------------------
# The roles are framecodec.benchmarks.aio_roles' coroutines, written by framecodec.aio's
# authors as an asyncio user would; each runs on its own event loop.


class AioReceiver(Receiver):
    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def receive(self, count: int) -> Tuple[int, float]:
        from . import aio_roles

        # batch=True: one handler call per read, as the server backends get.
        received: Tuple[int, float] = asyncio.run(
            aio_roles.receive_frames(self._bound.sock, count, batch=True)
        )
        return received

    def close(self) -> None:
        self._bound.close()


class AioSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.address = address
        self.payload = payload

    def send(self, count: int) -> Optional[float]:
        from . import aio_roles

        # It connects, then notes when sending began: that is the start.
        start: float = asyncio.run(
            aio_roles.send_frames(self.address, self.payload, count, batch_bytes=BATCH_BYTES)
        )
        return start


class AioEchoServer(ThreadedEchoServer):
    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def start(self, clients: int) -> None:
        from . import aio_roles

        self._spawn(asyncio.run, aio_roles.serve_echo(self._bound.sock, clients))

    def close_listener(self) -> None:
        self._bound.close()


class AioEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.address = address
        self.payload = payload

    def latencies(self, rounds: int, warmup: int, budget: float) -> List[float]:
        from . import aio_roles

        samples: List[float] = asyncio.run(
            aio_roles.request_latencies(self.address, self.payload, rounds, warmup, budget)
        )
        return samples


# -- the registry ------------------------------------------------------------------


def _backend(backend: str) -> Dict[str, Any]:
    return {
        "receiver": lambda e, size: ServerReceiver(e, size, backend),
        "sender": ClientSender,
        "echo_server": lambda e: BackendEchoServer(e, backend),
        "echo_client": ClientEchoClient,
    }


CONTENDERS: List[Contender] = [
    Contender(
        "raw",
        "raw sockets, no framing",
        RawReceiver,
        RawSender,
        RawEchoServer,
        RawEchoClient,
    ),
    Contender("naive", "naive loop", NaiveReceiver, NaiveSender, NaiveEchoServer, NaiveEchoClient),
    Contender(
        "framecodec",
        "framecodec codec loop",
        CodecReceiver,
        CodecSender,
        CodecEchoServer,
        CodecEchoClient,
        many_clients=False,  # its server is a thread per connection: the backends are the servers
    ),
    Contender(
        "framecodec+crc",
        "framecodec codec loop, crc32c",
        ChecksumReceiver,
        ChecksumSender,
        transports=("tcp",),
        many_clients=False,
    ),
    Contender(
        "capi",
        "framecodec C API (Cython)",
        CapiReceiver,
        RawSender,  # the same bytes as raw's: the receiving end is what is measured
        transports=("tcp",),
        needs=CAPI_READER,
    ),
    Contender("selector", "framecodec selector server", **_backend("selector")),
    Contender("threads", "framecodec threads server", **_backend("threads")),
    Contender("pure", "framecodec pure Python", pure=True, **_backend("selector")),
    Contender(
        "raw-tls",
        "raw sockets over TLS",
        RawReceiver,
        RawSender,
        RawEchoServer,
        RawEchoClient,
        transports=("tcp",),
        tls=True,
        many_clients=False,
    ),
    Contender("tls", "framecodec over TLS", transports=("tcp",), tls=True, **_backend("selector")),
    Contender(
        "aio",
        "framecodec.aio (asyncio)",
        AioReceiver,
        AioSender,
        AioEchoServer,
        AioEchoClient,
        needs="framecodec.benchmarks.aio_roles",
    ),
    *anyio_contenders.CONTENDERS,
    *alternatives.CONTENDERS,
]

BY_KEY: Dict[str, Contender] = {c.key: c for c in CONTENDERS}
