"""What users would pick instead of framecodec, each used as its documentation shows.

- multiprocessing.connection: ``send_bytes``/``recv_bytes`` on a Listener's
  connection (no authkey: the bare framing, the same 4-byte length format);
- asyncio streams: ``readexactly`` the header, then the payload; one
  ``write`` and ``drain`` per message;
- pyzmq, where installed: PUSH/PULL for streams, REQ/REP for requests
  (zmq frames messages itself).  Large messages are received without a
  copy (``copy=False``), as pyzmq advises.

The framecodec.aio slot: once framecodec.aio offers an asyncio server and
client, its contender goes here beside asyncio streams (see AIO below).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import struct
from multiprocessing import connection as mpc
from typing import Any, List, Tuple

from .base import (
    BIG_FRAME,
    STEP_TIMEOUT,
    Contender,
    EchoClient,
    Endpoint,
    Receiver,
    Sender,
    ThreadedEchoServer,
    perf_counter,
    unix_path,
    went_on,
)

# -- multiprocessing.connection -------------------------------------------------------


def _mp_listener(endpoint: Endpoint) -> Tuple[mpc.Listener, str]:
    """A Listener and its address in framecodec's syntax (for the runner)."""
    if endpoint.transport == "unix":
        path = unix_path()
        return mpc.Listener(path, "AF_UNIX", backlog=128), "unix:" + path
    listener = mpc.Listener(("127.0.0.1", 0), "AF_INET", backlog=128)
    host, port = listener.address
    return listener, f"{host}:{port}"


def _mp_client(address: str) -> Any:
    if address.startswith("unix:"):
        return mpc.Client(address[5:], "AF_UNIX")
    host, _, port = address.rpartition(":")
    return mpc.Client((host, int(port)), "AF_INET")


class MpReceiver(Receiver):
    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self._listener, self.address = _mp_listener(endpoint)

    def receive(self, count: int) -> Tuple[int, float]:
        with self._listener.accept() as conn:
            recv_bytes = conn.recv_bytes
            for _ in range(count):
                recv_bytes()
            end = perf_counter()
            try:
                conn.recv_bytes()
            except EOFError:
                return count, end
        raise went_on()

    def close(self) -> None:
        self._listener.close()


class MpSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.conn = _mp_client(address)

    def send(self, count: int) -> None:
        send_bytes = self.conn.send_bytes
        payload = self.payload
        for _ in range(count):
            send_bytes(payload)

    def close(self) -> None:
        self.conn.close()


class MpEchoServer(ThreadedEchoServer):
    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self._listener, self.address = _mp_listener(endpoint)

    def accept_one(self) -> Any:
        return self._listener.accept()

    def close_listener(self) -> None:
        self._listener.close()

    def handle(self, conn: Any) -> None:
        with conn:
            while True:
                try:
                    request = conn.recv_bytes()
                except EOFError:
                    return
                conn.send_bytes(request)


class MpEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.conn = _mp_client(address)

    def roundtrip(self) -> None:
        self.conn.send_bytes(self.payload)
        if len(self.conn.recv_bytes()) != len(self.payload):
            raise ValueError("the reply is not the request")

    def close(self) -> None:
        self.conn.close()


# -- asyncio streams ------------------------------------------------------------------


async def _start_server(endpoint: Endpoint, sock: socket.socket, handler: Any) -> Any:
    if endpoint.transport == "unix":
        return await asyncio.start_unix_server(handler, sock=sock)
    return await asyncio.start_server(handler, sock=sock)


async def _open_connection(
    address: str,
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("unix:"):
        return await asyncio.open_unix_connection(address[5:])
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    (length,) = struct.unpack(">I", header)
    return await reader.readexactly(length)


class AsyncioReceiver(Receiver):
    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self.endpoint = endpoint
        self._bound = endpoint.listen()
        self._bound.sock.setblocking(False)
        self.address = str(self._bound.address)

    def receive(self, count: int) -> Tuple[int, float]:
        return asyncio.run(self._receive(count))

    async def _receive(self, count: int) -> Tuple[int, float]:
        result: asyncio.Future[Tuple[int, float]] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for _ in range(count):
                    header = await reader.readexactly(4)
                    (length,) = struct.unpack(">I", header)
                    await reader.readexactly(length)
                end = perf_counter()
                if await reader.read(1):
                    raise went_on()
                result.set_result((count, end))
            except BaseException as exc:
                result.set_exception(exc)
            finally:
                writer.close()

        server = await _start_server(self.endpoint, self._bound.sock, handle)
        async with server:
            return await result

    def close(self) -> None:
        self._bound.close()


class AsyncioSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.loop = asyncio.new_event_loop()
        self.reader, self.writer = self.loop.run_until_complete(_open_connection(address))

    def send(self, count: int) -> None:
        self.loop.run_until_complete(self._send(count))

    async def _send(self, count: int) -> None:
        writer = self.writer
        payload = self.payload
        for _ in range(count):
            writer.write(struct.pack(">I", len(payload)) + payload)
            await writer.drain()

    def close(self) -> None:
        self.writer.close()
        self.loop.run_until_complete(self.writer.wait_closed())
        self.loop.close()


class AsyncioEchoServer(ThreadedEchoServer):
    """asyncio.start_server, on an event loop in a thread of its own."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._bound = endpoint.listen()
        self._bound.sock.setblocking(False)
        self.address = str(self._bound.address)

    def start(self, clients: int) -> None:
        self._spawn(asyncio.run, self._serve(clients))

    def close_listener(self) -> None:
        self._bound.close()

    async def _serve(self, clients: int) -> None:
        finished = asyncio.Semaphore(0)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    try:
                        header = await reader.readexactly(4)
                    except asyncio.IncompleteReadError as exc:
                        if exc.partial:
                            raise
                        return  # the client is done
                    (length,) = struct.unpack(">I", header)
                    payload = await reader.readexactly(length)
                    writer.write(struct.pack(">I", len(payload)) + payload)
                    await writer.drain()
            except BaseException as exc:
                self._errors.append(exc)
            finally:
                writer.close()
                finished.release()

        server = await _start_server(self.endpoint, self._bound.sock, handle)
        async with server:
            for _ in range(clients):
                await finished.acquire()


class AsyncioEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.loop = asyncio.new_event_loop()
        self.reader, self.writer = self.loop.run_until_complete(_open_connection(address))

    def latencies(self, rounds: int, warmup: int, budget: float) -> List[float]:
        # The whole loop runs inside one coroutine, as an asyncio client would.
        return self.loop.run_until_complete(self._latencies(rounds, warmup, budget))

    async def _latencies(self, rounds: int, warmup: int, budget: float) -> List[float]:
        reader = self.reader
        writer = self.writer
        payload = self.payload
        samples: List[float] = []
        stop = perf_counter() + budget
        for i in range(warmup + rounds):
            start = perf_counter()
            writer.write(struct.pack(">I", len(payload)) + payload)
            await writer.drain()
            reply = await _read_message(reader)
            end = perf_counter()
            if len(reply) != len(payload):
                raise ValueError("the reply is not the request")
            if i >= warmup:
                samples.append(end - start)
                if end > stop:
                    break
        return samples

    def close(self) -> None:
        self.writer.close()
        self.loop.run_until_complete(self.writer.wait_closed())
        self.loop.close()


# -- pyzmq ---------------------------------------------------------------------------


def _zmq() -> Any:
    return importlib.import_module("zmq")


def _zmq_bind(sock: Any, endpoint: Endpoint) -> str:
    if endpoint.transport == "unix":
        sock.bind("ipc://" + unix_path(".ipc"))
    else:
        sock.bind("tcp://127.0.0.1:*")
    return str(sock.getsockopt_string(_zmq().LAST_ENDPOINT))


class ZmqReceiver(Receiver):
    def __init__(self, endpoint: Endpoint, size: int) -> None:
        zmq = _zmq()
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PULL)
        self.sock.linger = 0
        self.address = _zmq_bind(self.sock, endpoint)
        self.copy = size < BIG_FRAME

    def receive(self, count: int) -> Tuple[int, float]:
        recv = self.sock.recv
        copy = self.copy
        for _ in range(count):
            recv(copy=copy)
        end = perf_counter()
        if self.sock.poll(0):
            raise went_on()
        return count, end

    def close(self) -> None:
        self.sock.close()
        self.context.term()


class ZmqSender(Sender):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        zmq = _zmq()
        self.payload = payload
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUSH)
        self.sock.connect(address)

    def send(self, count: int) -> None:
        send = self.sock.send
        payload = self.payload
        for _ in range(count):
            send(payload)

    def close(self) -> None:
        # Linger until the queued messages are out, bounded.
        self.sock.close(linger=int(STEP_TIMEOUT * 1000))
        self.context.term()


class ZmqEchoServer(ThreadedEchoServer):
    """A REP socket; an empty request (sent by stop()) ends it."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        zmq = _zmq()
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.REP)
        self.sock.linger = 0
        self.address = _zmq_bind(self.sock, endpoint)

    def start(self, clients: int) -> None:
        self._spawn(self._serve)

    def _serve(self) -> None:
        recv = self.sock.recv
        send = self.sock.send
        while True:
            request = recv()
            send(request)
            if not request:
                return

    def stop(self, timeout: float) -> None:
        stopper = self.context.socket(_zmq().REQ)
        stopper.linger = 0
        stopper.rcvtimeo = stopper.sndtimeo = int(timeout * 1000)
        try:
            stopper.connect(self.address)
            stopper.send(b"")
            stopper.recv()
        finally:
            stopper.close()
        super().stop(timeout)

    def close_listener(self) -> None:
        self.sock.close()
        self.context.term()


class ZmqEchoClient(EchoClient):
    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        zmq = _zmq()
        self.payload = payload
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.REQ)
        self.sock.linger = 0
        self.sock.connect(address)

    def roundtrip(self) -> None:
        self.sock.send(self.payload)
        if len(self.sock.recv()) != len(self.payload):
            raise ValueError("the reply is not the request")

    def close(self) -> None:
        self.sock.close()
        self.context.term()


CONTENDERS: List[Contender] = [
    Contender(
        "mp",
        "multiprocessing.connection",
        MpReceiver,
        MpSender,
        MpEchoServer,
        MpEchoClient,
    ),
    Contender(
        "asyncio",
        "asyncio streams",
        AsyncioReceiver,
        AsyncioSender,
        AsyncioEchoServer,
        AsyncioEchoClient,
    ),
    Contender(
        "zmq",
        "pyzmq PUSH/PULL",
        ZmqReceiver,
        ZmqSender,
        ZmqEchoServer,
        ZmqEchoClient,
        loadgen="zmq",
        needs="zmq",
        echo_label="pyzmq REQ/REP",
    ),
]
