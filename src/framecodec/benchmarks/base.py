"""What every contender is made of: the roles it plays and the sockets it plays them on.

A contender provides some of four roles, each run in a worker process of
its own (workers.py):

- Receiver: binds, then receives one stream of ``count`` frames, counting
  every one, notes the moment the last arrived, and checks that the stream
  ends there (the count is checked, never assumed);
- Sender: connects and sends ``count`` copies of one payload;
- EchoServer: answers each request with the same bytes, for ``clients``
  connections at once;
- EchoClient: one request/response round trip at a time, timed, each
  reply's length checked.

Nothing here reads a clock except to note those moments: the runner turns
them into rates, medians and ratios.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

from ..net.addresses import BoundSocket, bind_socket, parse_address, tune

# Everything but pyzmq speaks this format: a 4-byte big-endian length, then
# the payload (framecodec's default, and multiprocessing.connection's).
HEADER = struct.Struct(">I")
# Every receiver that chooses its read size uses this one (framecodec's
# default read_size), so that no contender wins by reading more per call.
READ_SIZE = 64 * 1024
# Senders that batch small frames send about this much per call.
BATCH_BYTES = 64 * 1024
# From this size on, frames are sent as header + payload, uncopied.
BIG_FRAME = 64 * 1024
# Bound on every blocking step that waits for the other process.
STEP_TIMEOUT = 30.0

perf_counter = time.perf_counter


def payload_of(size: int) -> bytes:
    """A payload of ``size`` bytes: a repeating pattern, since only counts are checked."""
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def unix_path(suffix: str = ".sock") -> str:
    # Short: sun_path holds about 100 bytes, and macOS temp directories are long.
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return os.path.join(base, f"fcbench-{uuid.uuid4().hex[:12]}{suffix}")


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate (chain and key in one PEM file) and the CA that signed it."""

    cert: str
    ca: str


@dataclass(frozen=True)
class Endpoint:
    """Where and how a contender talks: "tcp" (IPv4 loopback) or "unix", plain or TLS."""

    transport: str = "tcp"
    tls: Optional[TlsFiles] = None

    def bind_address(self) -> str:
        return "unix:" + unix_path() if self.transport == "unix" else "127.0.0.1:0"

    def server_context(self) -> Optional[ssl.SSLContext]:
        if self.tls is None:
            return None
        from ..net.tls import server_context

        return server_context(self.tls.cert)

    def client_context(self) -> Optional[ssl.SSLContext]:
        if self.tls is None:
            return None
        from ..net.tls import client_context

        return client_context(self.tls.ca)

    def listen(self) -> BoundSocket:
        bound = bind_socket(self.bind_address(), backlog=128)
        bound.sock.settimeout(STEP_TIMEOUT)  # accept() only; accepted sockets block
        return bound

    def accept(self, bound: BoundSocket, nodelay: bool = True) -> socket.socket:
        sock, _ = bound.sock.accept()
        sock.setblocking(True)
        if nodelay:
            tune(sock)
        context = self.server_context()
        if context is not None:
            sock = context.wrap_socket(sock, server_side=True)
        return sock

    def connect(self, address: str, nodelay: bool = True) -> socket.socket:
        """A blocking socket connected to ``address``, with TCP_NODELAY unless
        ``nodelay`` is False (the naive loop keeps the system's default)."""
        target = parse_address(address)
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(STEP_TIMEOUT)
            sock.connect(target.sockaddr)
            sock.settimeout(None)  # no per-call poll(): what a speed-minded user runs
            if nodelay:
                tune(sock)
            context = self.client_context()
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise
        return sock


def expect_eof(sock: socket.socket) -> None:
    """The stream must end here: anything more means the count was wrong."""
    if sock.recv(1):
        raise went_on()


def went_on() -> ValueError:
    return ValueError("the stream went on after the expected frames")


def ended(frames: int, count: int) -> EOFError:
    return EOFError(f"the stream ended after {frames} of {count} frames")


def check_count(received: int, count: int) -> None:
    """A receiver that counted frames must have counted exactly ``count``."""
    if received > count:
        raise ValueError(f"the stream went on after the expected frames ({received} > {count})")
    if received < count:
        raise ended(received, count)


def batches(payload: bytes, count: int, per_batch: int) -> Iterator[List[bytes]]:
    """``count`` frames of ``payload`` as lists of ``per_batch`` (the last shorter)."""
    batch = [payload] * per_batch
    full, rest = divmod(count, per_batch)
    for _ in range(full):
        yield batch
    if rest:
        yield batch[:rest]


def finish_sending(sock: socket.socket) -> None:
    """End a stream and wait until the receiver has closed.  Closing at once
    could reset the connection (a TLS peer's session tickets lie unread) and
    drop what is still in flight."""
    sock.settimeout(STEP_TIMEOUT)
    try:
        sock.shutdown(socket.SHUT_WR)  # on TLS, the socket's own: no close_notify to wait for
        while sock.recv(65536):
            pass
    except OSError:
        pass  # the receiver is gone already: it says what it got
    finally:
        sock.close()


def sendmsg_all(sock: socket.socket, buffers: List[bytes]) -> None:
    """One vectored write of all ``buffers``, finishing a partial one."""
    sent = sock.sendmsg(buffers)
    total = sum(map(len, buffers))
    if sent < total:  # rare on a blocking socket: only a signal cuts it short
        sock.sendall(memoryview(b"".join(buffers))[sent:])


# -- roles ---------------------------------------------------------------------------


class Receiver:
    """Receives one stream; ``address`` is where its sender connects."""

    address: str

    def receive(self, count: int) -> Tuple[int, float]:
        """Block until the stream ends; return the frames received and
        perf_counter() when the ``count``-th one was complete."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SocketReceiver(Receiver):
    """A receiver that accepts its one connection from a listening socket,
    reads exactly ``count`` frames from it (read()), and checks that the
    stream ends there."""

    nodelay = True

    def __init__(self, endpoint: Endpoint, size: int) -> None:
        self.endpoint = endpoint
        self.size = size
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def receive(self, count: int) -> Tuple[int, float]:
        with self.endpoint.accept(self._bound, self.nodelay) as sock:
            end = self.read(sock, count)
            expect_eof(sock)
        return count, end

    def read(self, sock: socket.socket, count: int) -> float:
        """Read ``count`` frames and no byte more; return when the last was complete.
        Raise EOFError if the stream ends first."""
        raise NotImplementedError

    def close(self) -> None:
        self._bound.close()


class Sender:
    """Connects in the constructor (not timed); send() is what is timed."""

    def send(self, count: int) -> Optional[float]:
        """Send ``count`` frames.  A sender that connects inside returns
        perf_counter() from when sending began; the others None."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SocketSender(Sender):
    nodelay = True

    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        self.payload = payload
        self.sock = endpoint.connect(address, self.nodelay)

    def close(self) -> None:
        finish_sending(self.sock)


class EchoServer:
    """Serves ``clients`` connections from start() until stop()."""

    address: str

    def start(self, clients: int) -> None:
        raise NotImplementedError

    def stop(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the clients to leave, then close;
        raise if any connection failed."""
        raise NotImplementedError


class EchoClient:
    """One connection making round trips."""

    def roundtrip(self) -> None:
        raise NotImplementedError

    def latencies(self, rounds: int, warmup: int, budget: float) -> List[float]:
        return time_calls(self.roundtrip, rounds, warmup, budget)

    def close(self) -> None:
        pass


def time_calls(call: Callable[[], None], rounds: int, warmup: int, budget: float) -> List[float]:
    """Seconds each of ``rounds`` calls took, after ``warmup`` untimed ones;
    fewer if ``budget`` seconds run out."""
    for _ in range(warmup):
        call()
    clock = perf_counter
    samples: List[float] = []
    append = samples.append
    stop = clock() + budget
    for _ in range(rounds):
        start = clock()
        call()
        end = clock()
        append(end - start)
        if end > stop:
            break
    return samples


class ThreadedEchoServer(EchoServer):
    """Serves from threads of its own: by default one accepting ``clients``
    connections and one per connection (``handle``), as tutorials write
    servers; subclasses may start other threads with _spawn().  stop()
    joins them all and raises the first error any of them met."""

    def __init__(self) -> None:
        self._threads: List[threading.Thread] = []
        self._errors: List[BaseException] = []

    def accept_one(self) -> Any:
        raise NotImplementedError

    def handle(self, conn: Any) -> None:
        raise NotImplementedError

    def close_listener(self) -> None:
        pass

    def start(self, clients: int) -> None:
        self._spawn(self._accept_all, clients)

    def _spawn(self, target: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                self._errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_all(self, clients: int) -> None:
        for _ in range(clients):
            self._spawn(self.handle, self.accept_one())

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        joined = 0
        while joined < len(self._threads):  # the first may start the others
            self._threads[joined].join(max(0.0, deadline - time.monotonic()))
            joined += 1
        self.close_listener()
        if any(thread.is_alive() for thread in self._threads):
            raise TimeoutError(f"connections still open {timeout} s after the clients finished")
        if self._errors:
            raise self._errors[0]


class SocketEchoServer(ThreadedEchoServer):
    """A thread per connection accepted from a listening socket."""

    nodelay = True

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._bound = endpoint.listen()
        self.address = str(self._bound.address)

    def accept_one(self) -> socket.socket:
        return self.endpoint.accept(self._bound, self.nodelay)

    def close_listener(self) -> None:
        self._bound.close()


@dataclass(frozen=True)
class Contender:
    """One row of the tables: how it receives, sends, serves and asks.

    A role left None is not measured for this contender.  ``loadgen`` says
    which driver the 64-client measurement uses ("frames": raw sockets
    speaking the 4-byte length format; "zmq": REQ sockets).  ``pure`` runs
    both sides in processes started with FRAMECODEC_PURE_PYTHON=1; ``tls``
    needs a certificate; ``needs`` names a module that must be importable.
    """

    key: str
    label: str
    receiver: Optional[Callable[[Endpoint, int], Receiver]] = None
    sender: Optional[Callable[[Endpoint, str, bytes], Sender]] = None
    echo_server: Optional[Callable[[Endpoint], EchoServer]] = None
    echo_client: Optional[Callable[[Endpoint, str, bytes], EchoClient]] = None
    loadgen: str = "frames"
    transports: Tuple[str, ...] = ("tcp", "unix")
    tls: bool = False
    pure: bool = False
    needs: Optional[str] = None
    many_clients: bool = True  # its echo server takes the 64-client load
    echo_label: Optional[str] = None  # its label in the request/response tables, if other

    def available(self) -> Optional[str]:
        """None if it can run here, else why not."""
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} is not installed (pip install 'framecodec[bench]')"
        return None
