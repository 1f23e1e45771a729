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

import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from framecodec import FrameDecoder, FrameEncoder

# Codes of the untyped 8-byte requests answered by one byte, and of a cancel.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# The opening packets are small (a startup packet is names and values); the
# typed messages may be as large as PostgreSQL allows a row or a value (1 GB).
MAX_STARTUP_PACKET = 10_000
MAX_MESSAGE = 1 << 30
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
    encrypted: bool = False  # an S or G answer: the rest was forwarded unparsed
    captured: Optional[Tuple[bytearray, bytearray]] = None  # (to server, to client)
    error: Optional[BaseException] = None  # what ended it, if not a clean close


class PgRelay:
    """Listen on ``listen`` (host, port) and relay each connection to ``upstream``."""

    def __init__(
        self,
        upstream: Tuple[str, int],
        listen: Tuple[str, int] = ("127.0.0.1", 0),
        capture: bool = False,
    ) -> None:
        self.upstream = upstream
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
        try:
            server = socket.create_connection(self.upstream)
        except OSError as exc:
            conn.error = exc
            client.close()
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back: Optional[threading.Thread] = None
        try:
            rests = self._opening(client, server, conn)
            if rests is None:  # TLS or GSSAPI follows: forward unparsed
                conn.encrypted = True
                back = self._start(self._pipe, server, client, conn.to_client, 1, conn)
                self._pipe(client, server, conn.to_server, 0, conn)
            else:
                rest_up, rest_down = rests
                back = self._start(
                    self._messages, server, client, conn.to_client, 1, conn, rest_down
                )
                self._messages(client, server, conn.to_server, 0, conn, rest_up)
        except Exception as exc:  # a bad peer ends its own connection only
            conn.error = exc
            _shutdown(server)
            _shutdown(client)
        finally:
            if back is not None:
                back.join()
            client.close()
            server.close()

    def _start(self, target, src, dst, count, side, conn, *rest) -> threading.Thread:  # type: ignore[no-untyped-def]
        """The server-to-client direction, on its own thread."""

        def run() -> None:
            try:
                target(src, dst, count, side, conn, *rest)
            except Exception as exc:  # this connection only: wake the other direction
                conn.error = exc
                _shutdown(src)
                _shutdown(dst)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def _recv(self, sock: socket.socket, count: Direction, side: int, conn: Connection) -> bytes:
        data = sock.recv(CHUNK)
        count.bytes_in += len(data)
        if conn.captured is not None:
            conn.captured[side].extend(data)
        return data

    def _opening(
        self, client: socket.socket, server: socket.socket, conn: Connection
    ) -> Optional[Tuple[bytes, bytes]]:
        """Relay the untyped packets; return the bytes after the startup packet
        and any the server sent after its last answer, or None when the server
        accepted TLS or GSSAPI encryption."""
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
                return opening.detach(), b""
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
                return opening.detach(), answer
            if len(answer) != 1 or answer not in b"SNG":
                raise ConnectionError(f"unexpected answer {answer[:16]!r} to request {code}")
            conn.answers += answer
            conn.to_client.packets += 1
            client.sendall(answer)
            conn.to_client.bytes_out += 1
            if answer != b"N":  # S: TLS follows; G: GSSAPI encryption
                return None

    def _messages(
        self,
        src: socket.socket,
        dst: socket.socket,
        count: Direction,
        side: int,
        conn: Connection,
        rest: bytes,
    ) -> None:
        """Typed messages from src to dst until src closes."""
        decoder = FrameDecoder("postgres", max_frame_size=MAX_MESSAGE)
        encoder = FrameEncoder("postgres", max_frame_size=MAX_MESSAGE)
        frames = decoder.feed(rest) if rest else []
        try:
            while True:
                if frames:
                    self._forward(dst, encoder, frames, count)
                view = decoder.get_buffer(CHUNK)
                n = src.recv_into(view)
                if conn.captured is not None:
                    conn.captured[side].extend(view[:n])
                count.bytes_in += n
                if n == 0:
                    decoder.eof()  # a message cut short raises
                    break
                frames = decoder.buffer_updated(n)
        finally:
            # The other direction's reader wakes up when its peer sees this.
            _shutdown(dst, socket.SHUT_WR)

    def _forward(
        self, dst: socket.socket, encoder: FrameEncoder, frames: List[bytes], count: Direction
    ) -> None:
        for frame in frames:
            kind = chr(frame[0])
            count.types[kind] = count.types.get(kind, 0) + 1
        count.messages += len(frames)
        # encode_frame checks each length field and returns the frame as it came.
        out = [encoder.encode_frame(frame) for frame in frames]
        wire = out[0] if len(out) == 1 else b"".join(out)
        dst.sendall(wire)
        count.bytes_out += len(wire)

    def _pipe(
        self, src: socket.socket, dst: socket.socket, count: Direction, side: int, conn: Connection
    ) -> None:
        try:
            while True:
                data = self._recv(src, count, side, conn)
                if not data:
                    break
                dst.sendall(data)
                count.opaque += len(data)
                count.bytes_out += len(data)
        finally:
            _shutdown(dst, socket.SHUT_WR)


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
