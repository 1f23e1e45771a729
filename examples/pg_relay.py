"""A PostgreSQL relay that frames both directions with framecodec.

    python examples/pg_relay.py LISTEN UPSTREAM
    python examples/pg_relay.py 127.0.0.1:6432 127.0.0.1:5432

Every client connection gets its own upstream connection. The client's
opening packets are untyped (a 4-byte length counting itself, no type byte):
an SSLRequest or GSSENCRequest (8 bytes) that the server answers with one
byte (``S`` for TLS, ``G`` for GSSAPI encryption, ``N`` for neither), then
the startup packet (or a CancelRequest). The relay decodes them one at a
time with a decoder stopped after each packet, then detaches it and hands
whatever came after the startup packet (a query sent in the same write) to
``FrameDecoder("postgres")``: typed messages from there on, both ways, each
checked and forwarded whole.

An ``S`` or ``G`` answer means encryption follows: the relay cannot read TLS
records or GSSAPI tokens as PostgreSQL messages, so it forwards the rest of
that connection's bytes unparsed both ways (counted as ``opaque``). With
``N`` the client goes on in plain text, framed as above.

Counts per direction: packets and messages decoded, bytes received and
bytes sent (equal when every byte was framed and forwarded).  With
``capture=True`` each connection's bytes are kept per direction, as read,
for tests to re-decode.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from framecodec import FrameDecoder, FrameEncoder

# Codes of the untyped 8-byte requests answered by one byte, and of a cancel.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# The opening packets are small (a startup packet is names and values; the
# server's own limit is 10,000 bytes).  The typed messages take the postgres
# preset's limit: 1 GiB, PostgreSQL's own (MaxAllocSize).
MAX_STARTUP_PACKET = 10_000
UNTYPED = {"length_adjustment": -4, "max_frame_size": MAX_STARTUP_PACKET}
CHUNK = 1 << 16


@dataclass
class Direction:
    """What the relay saw going one way (client to server or back)."""

    packets: int = 0  # untyped opening packets (client) or one-byte answers (server)
    messages: int = 0  # typed messages, decoded and forwarded whole
    bytes_in: int = 0
    bytes_out: int = 0
    opaque: int = 0  # bytes forwarded unparsed after an 'S' (TLS) or 'G' (GSSAPI)
    types: dict = field(default_factory=dict)  # message type byte -> count

    def add(self, other: Direction) -> None:
        self.packets += other.packets
        self.messages += other.messages
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.opaque += other.opaque
        for kind, n in other.types.items():
            self.types[kind] = self.types.get(kind, 0) + n


@dataclass
class Connection:
    """One client connection's counts, and its bytes when captured."""

    to_server: Direction = field(default_factory=Direction)
    to_client: Direction = field(default_factory=Direction)
    answers: bytes = b""  # the one-byte answers to SSLRequest/GSSENCRequest
    encrypted: bool = False  # an S or G answer not terminated: forwarded unparsed
    tls: bool = False  # upgraded to TLS both ways by the relay (STARTTLS)
    captured: Optional[Tuple[bytearray, bytearray]] = None  # (to server, to client)
    error: Optional[BaseException] = None  # what ended it, if not a clean close


class PgRelay:
    """Listen on ``listen`` (host, port) and relay each connection to ``upstream``."""

    def __init__(
        self,
        upstream: Tuple[str, int],
        listen: Tuple[str, int] = ("127.0.0.1", 0),
        capture: bool = False,
        tls: Optional[Tuple[ssl.SSLContext, ssl.SSLContext]] = None,
    ) -> None:
        self.upstream = upstream
        # (context for clients, context to the server): with them, an S answer
        # to an SSLRequest upgrades both sides to TLS and the relay goes on
        # framing the decrypted messages (STARTTLS).
        self.tls = tls
        self.capture = capture
        self.connections: List[Connection] = []
        self._listener = socket.create_server(listen)
        self.address: Tuple[str, int] = self._listener.getsockname()[:2]
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="pg-relay", daemon=True)

    def __enter__(self) -> PgRelay:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting and wait for the connections in progress to end."""
        self._closed = True
        try:
            # Wake the blocked accept(): shutdown alone does not on every platform.
            socket.create_connection(self.address, timeout=1).close()
        except OSError:
            pass
        self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def totals(self) -> Tuple[Direction, Direction]:
        """(to server, to client) summed over every connection so far."""
        up, down = Direction(), Direction()
        with self._lock:
            for conn in self.connections:
                up.add(conn.to_server)
                down.add(conn.to_client)
        return up, down

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closed:
                client.close()
                return
            conn = Connection(captured=(bytearray(), bytearray()) if self.capture else None)
            thread = threading.Thread(target=self._serve, args=(client, conn), daemon=True)
            with self._lock:
                self.connections.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, conn: Connection) -> None:
        server: Optional[socket.socket] = None
        try:
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client, server, rests = self._opening(client, server, conn)
            if rests is None:  # TLS or GSSAPI we do not terminate: forward unparsed
                conn.encrypted = True
                rests = (b"", b"")
            up = _Way(client, server, conn.to_server, 0, conn, rests[0])
            down = _Way(server, client, conn.to_client, 1, conn, rests[1])
            _duplex(up, down)
        except Exception as exc:  # a bad peer ends its own connection only
            conn.error = exc
        finally:
            client.close()
            if server is not None:
                server.close()

    def _recv(self, sock: socket.socket, count: Direction, side: int, conn: Connection) -> bytes:
        data = sock.recv(CHUNK)
        count.bytes_in += len(data)
        if conn.captured is not None:
            conn.captured[side].extend(data)
        return data

    def _opening(
        self, client: socket.socket, server: socket.socket, conn: Connection
    ) -> Tuple[socket.socket, socket.socket, Optional[Tuple[bytes, bytes]]]:
        """Relay the untyped packets (blocking).  Return the sockets (TLS ones
        after an upgrade) and the bytes after the startup packet each way, or
        None for those when the rest is encrypted end to end."""
        up = conn.to_server
        opening = FrameDecoder(**UNTYPED)
        repack = FrameEncoder(**UNTYPED)
        while True:
            opening.stop_after(1)
            packets: List[bytes] = []
            while not opening.stopped:
                data = self._recv(client, up, 0, conn)
                if not data:
                    opening.eof()  # raises if a packet was cut short
                    raise ConnectionError("client closed before its startup packet")
                packets += opening.feed(data)
            (body,) = packets
            up.packets += 1
            wire = repack.encode(body)
            server.sendall(wire)
            up.bytes_out += len(wire)
            code = int.from_bytes(body[:4], "big")
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                # The startup packet (or a CancelRequest): typed messages follow.
                return client, server, (opening.detach(), b"")
            if opening.buffered:
                raise ConnectionError("client sent bytes before the server answered its request")
            answer = b""
            while not answer:
                answer = self._recv(server, conn.to_client, 1, conn)
                if not answer:
                    raise ConnectionError("server closed instead of answering")
            if answer[:1] == b"E":
                # A refusal (an ErrorResponse, e.g. to a second SSLRequest):
                # typed messages from here on, the server then closes.
                return client, server, (opening.detach(), answer)
            if len(answer) != 1 or answer not in b"SNG":
                raise ConnectionError(f"unexpected answer {answer[:16]!r} to request {code}")
            conn.answers += answer
            conn.to_client.packets += 1
            if answer == b"S" and self.tls is not None:
                # STARTTLS both ways: TLS to the server first, then 'S' to the
                # client and the handshake it starts; its startup packet and
                # every message after it come decrypted, framed as before.
                for_clients, to_server = self.tls
                server = to_server.wrap_socket(server, server_hostname=self.upstream[0])
                client.sendall(answer)
                conn.to_client.bytes_out += 1
                client = for_clients.wrap_socket(client, server_side=True)
                conn.tls = True
                continue
            client.sendall(answer)
            conn.to_client.bytes_out += 1
            if answer != b"N":  # S (not terminated here) or G: encrypted from here
                return client, server, None


class _Way:
    """One direction of a connection: what is read from src, framed, and
    waits to be written to dst."""

    def __init__(
        self,
        src: socket.socket,
        dst: socket.socket,
        count: Direction,
        side: int,
        conn: Connection,
        rest: bytes,
    ) -> None:
        self.src, self.dst, self.count, self.side, self.conn = src, dst, count, side, conn
        # After an S or G the relay does not terminate: bytes are forwarded unparsed.
        self.decoder = None if conn.encrypted else FrameDecoder("postgres")
        self.encoder = FrameEncoder("postgres")
        self.out: List[memoryview] = []
        self.eof = False
        if rest:
            self._deliver(rest)

    def _deliver(self, data: bytes) -> None:
        if self.decoder is None:
            self.count.opaque += len(data)
            self.out.append(memoryview(data))
        else:
            self._frames(self.decoder.feed(data))

    def _frames(self, frames: List[bytes]) -> None:
        if not frames:
            return
        for frame in frames:
            kind = chr(frame[0])
            self.count.types[kind] = self.count.types.get(kind, 0) + 1
        self.count.messages += len(frames)
        # encode_frame checks each length field and returns the frame as it came.
        out = [self.encoder.encode_frame(frame) for frame in frames]
        self.out.append(memoryview(out[0] if len(out) == 1 else b"".join(out)))

    def wants_read(self) -> bool:
        return not self.eof and not self.out  # back-pressure: one batch in flight

    def read(self) -> None:
        try:
            if self.decoder is None:
                data = self.src.recv(CHUNK)
                n = len(data)
            else:
                view = self.decoder.get_buffer(CHUNK)
                n = self.src.recv_into(view)
                data = view[:n]
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        self.count.bytes_in += n
        if self.conn.captured is not None:
            self.conn.captured[self.side].extend(data)
        if n == 0:
            self.eof = True
            if self.decoder is not None:
                self.decoder.eof()  # a message cut short raises
        elif self.decoder is None:
            self._deliver(bytes(data))
        else:
            self._frames(self.decoder.buffer_updated(n))

    def write(self) -> None:
        while self.out:
            try:
                sent = self.dst.send(self.out[0])
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            self.count.bytes_out += sent
            if sent == len(self.out[0]):
                self.out.pop(0)
            else:
                self.out[0] = self.out[0][sent:]

    def finished(self) -> bool:
        return self.eof and not self.out


def _duplex(up: _Way, down: _Way, timeout: float = 300.0) -> None:
    """Both directions on one thread (a TLS socket must not be read and
    written by two threads at once), until both ends have closed."""
    client, server = up.src, down.src
    for sock in (client, server):
        sock.setblocking(False)
    selector = selectors.DefaultSelector()
    try:
        half_closed = set()
        while not (up.finished() and down.finished()):
            for way in (up, down):
                if way.finished() and isinstance(way.dst, ssl.SSLSocket):
                    # A TLS socket cannot be half-closed (shutdown() would end
                    # its reads too): once either end is gone, PostgreSQL has
                    # nothing more to say, so both are closed.
                    return
                if way.finished() and way.dst not in half_closed:
                    half_closed.add(way.dst)
                    _shutdown(way.dst, socket.SHUT_WR)  # the peer learns it is over
            ready = [w for w in (up, down) if w.wants_read() and _pending(w.src)]
            if not ready:
                for sock, reader, writer in ((client, up, down), (server, down, up)):
                    events = (selectors.EVENT_READ if reader.wants_read() else 0) | (
                        selectors.EVENT_WRITE if writer.out else 0
                    )
                    registered = sock in selector.get_map()
                    if events:
                        if registered:
                            selector.modify(sock, events)
                        else:
                            selector.register(sock, events)
                    elif registered:  # read to its end, nothing to write: not polled
                        selector.unregister(sock)
                if not selector.select(timeout):
                    raise TimeoutError(f"no traffic for {timeout} s")
            for way in (up, down):
                if way.wants_read():
                    way.read()
                way.write()
    finally:
        selector.close()


def _pending(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _address(text: str) -> Tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: pg_relay.py LISTEN UPSTREAM", file=sys.stderr)
        return 2
    with PgRelay(_address(args[1]), _address(args[0])) as relay:
        print(f"relaying {relay.address[0]}:{relay.address[1]} to {args[1]}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    up, down = relay.totals()
    print(f"to server: {up}\nto client: {down}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
