"""Moving bytes between sockets and the codec, for clients and servers alike.

Receiving is always receive(): ``n = sock.recv_into(decoder.get_buffer())``
then ``decoder.buffer_updated(n)`` (or ``eof()``): bytes land in the
decoder's memory and the compiled core does the per-byte work.  Every
stream reader (the selector server's and multi-client's Stream, the
threads server's worker, the blocking Client) goes through it.  Sending goes through an OutputQueue
flushed with vectored ``sendmsg`` (a joined write under TLS, whose sockets
have no sendmsg).  Nothing here parses a byte.
"""

from __future__ import annotations

import contextlib
import enum
import os
import selectors
import socket
import ssl
import sys
from collections import deque
from itertools import islice
from typing import Any, Callable, Deque, Iterable, List, Optional

from ..errors import ConnectionClosed, ProtocolError
from .tls import clear_openssl_errors

__all__ = [
    "ConnectionClosed",
    "ConnectionState",
    "OutputQueue",
    "Stream",
    "close_socket",
    "keep_stream_start",
    "receive",
    "receive_first",
    "stream_start",
]

try:
    IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    IOV_MAX = 16
if IOV_MAX <= 0:  # pragma: no cover - "no limit" reported as -1
    IOV_MAX = 1024
# TLS writes are joined up to this size; larger buffers go in slices of it.
TLS_WRITE = 256 * 1024
# Windows sockets have no sendmsg: write joined chunks there, as under TLS.
# Nor does PyPy get it: its sendmsg on a socket with a timeout can send part
# of the buffers and then raise TimeoutError, losing the count (seen with
# PyPy 3.11), after which the stream would be out of step; its send() does
# report a partial write.
HAS_SENDMSG = hasattr(socket.socket, "sendmsg") and sys.implementation.name != "pypy"


class ConnectionState(enum.Enum):
    """A connection's life, on every layer (server connections, MultiClient's,
    framecodec.aio's): OPEN, CLOSING (closing was asked for: it stops
    reading, sends what is queued, then closes), CLOSED.  A client's
    connection that is still being established is OPEN (its ``ready`` says
    whether it is established)."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def receive(sock: socket.socket, decoder: Any) -> Optional[List[Any]]:
    """One read from ``sock`` into ``decoder``: the frames it completed, or
    None at the end of the stream.

    A stream that ended inside a frame raises IncompleteFrameError; bytes
    that break the format raise their ProtocolError, whose ``frames`` holds
    the frames completed before them.  The socket's own exceptions (a
    timeout, BlockingIOError, SSLWant*Error, a reset) propagate untouched.
    """
    n = sock.recv_into(decoder.get_buffer())
    if n:
        frames: List[Any] = decoder.buffer_updated(n)
        return frames
    decoder.eof()
    return None


# Limits up to this are passed to get_buffer() as its hint (see receive_at_most).
HINTED_READ = 64 * 1024


def receive_at_most(sock: socket.socket, decoder: Any, limit: int) -> Optional[List[Any]]:
    """receive(), reading ``limit`` bytes at most: a server with a memory
    budget (server/budget.py) so bounds what one read adds, where the
    decoder's view may span the rest of a large frame.  A limit below one
    default read is also the decoder's size hint, so that a large frame's
    storage grows by no more than is read."""
    view = decoder.get_buffer(limit if limit <= HINTED_READ else -1)
    n = sock.recv_into(view, min(limit, len(view)))
    if n:
        frames: List[Any] = decoder.buffer_updated(n)
        return frames
    decoder.eof()
    return None


# How many of a stream's first bytes a protocol error keeps, as its
# ``stream_start``: enough for the servers' log to tell a peer that speaks
# another protocol (TLS, HTTP, frames at a messages server: see
# server.endings.peer_hint); nothing here reads them.
STREAM_START_SIZE = 4


def stream_start(view: memoryview, nbytes: int) -> bytes:
    """The first bytes of the ``nbytes`` just read into ``view``, copied
    through a slice released at once (PyPy would keep it until its garbage
    collector runs, and the decoder could not resize its buffer meanwhile)."""
    with view[: min(nbytes, STREAM_START_SIZE)] as head:
        return head.tobytes()


def keep_stream_start(exc: ProtocolError, start: bytes) -> None:
    """Note on ``exc`` that the stream it broke began with ``start``."""
    exc.stream_start = start  # type: ignore[attr-defined]


def receive_first(sock: socket.socket, decoder: Any, limit: int = 0) -> Optional[List[Any]]:
    """receive() for a connection's first read: a protocol error it raises
    keeps the stream's first bytes (keep_stream_start).  A copy of four bytes
    once per connection; every later read is receive()'s (or, with a
    ``limit``, receive_at_most()'s, whose limit this one also applies)."""
    buffer = decoder.get_buffer(limit if 0 < limit <= HINTED_READ else -1)
    n = sock.recv_into(buffer, min(limit, len(buffer)) if limit else 0)
    if not n:
        decoder.eof()
        return None
    start = stream_start(buffer, n)
    try:
        frames: List[Any] = decoder.buffer_updated(n)
    except ProtocolError as exc:
        keep_stream_start(exc, start)
        raise
    return frames


def close_socket(sock: socket.socket) -> None:
    """Close a connection's socket; a TLS one sends close_notify first.

    Without close_notify the peer sees its input cut, and OpenSSL 3.6 then
    writes an alert back: over a Unix socket whose other end is gone that
    write fails, and the peer's read raises BrokenPipeError instead of
    seeing the end of the stream.  close_notify is sent without waiting for
    the peer's (the socket is made non-blocking), and a peer already gone or
    a handshake never finished just means a plain close.  Then this thread's
    OpenSSL error queue is emptied (see tls.clear_openssl_errors).
    """
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock.setblocking(False)
            sock.unwrap()  # sends close_notify, then wants the peer's: WantRead
        except (OSError, ValueError):  # SSLError is an OSError; ValueError: not wrapped
            pass
        sock.close()
        clear_openssl_errors()  # what this or an earlier failure left behind
    else:
        sock.close()


class OutputQueue:
    """Buffers waiting to be sent, flushed with as few system calls as possible.

    ``flush`` sends up to IOV_MAX buffers per ``sendmsg`` and resumes exactly
    where a partial send stopped.  On a TLS socket (or without sendmsg) it
    sends joined chunks, and a chunk offered to OpenSSL is retried unchanged
    after SSLWantWriteError, as OpenSSL requires.  With ``copy_mutable``,
    buffers other than bytes are copied when queued, so a caller may reuse
    its bytearray at once.
    """

    __slots__ = ("_chunks", "_copy", "_joined", "_offered", "size")

    def __init__(self, tls: bool = False, copy_mutable: bool = False) -> None:
        self._chunks: Deque[Any] = deque()
        self.size = 0  # bytes queued
        self._joined = tls or not HAS_SENDMSG
        self._copy = copy_mutable
        self._offered = False

    def __bool__(self) -> bool:
        return self.size > 0

    def push(self, buffers: Iterable[Any]) -> None:
        for buffer in buffers:
            if self._copy and type(buffer) is not bytes:
                buffer = bytes(buffer)
            if len(buffer):
                self._chunks.append(buffer)
                self.size += len(buffer)

    @property
    def held(self) -> int:
        """Bytes the queue keeps in memory: ``size``, plus the part already
        sent of a buffer partly sent (freed only once all of it is)."""
        chunks = self._chunks
        if not chunks or type(chunks[0]) is not memoryview:
            return self.size
        head: memoryview = chunks[0]
        whole: int = head.obj.__len__()  # type: ignore[attr-defined]
        return self.size + whole - len(head)

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0
        self._offered = False

    def flush(self, sock: socket.socket) -> None:
        """Send until empty; a non-blocking socket raises BlockingIOError or
        SSLWant*Error when it can take no more (what was sent is consumed)."""
        chunks = self._chunks
        if len(chunks) == 1 and not self._joined:
            # A lone buffer (a reply, a batch) usually goes out whole: one
            # send(), which costs a third less than sendmsg's list and vector,
            # and none of _consume's bookkeeping.
            head = chunks[0]
            sent = sock.send(head)
            if sent == len(head):
                chunks.clear()
                self.size = 0
                return
            self._consume(sent)
        while chunks:
            if self._joined:
                data = self._joined_chunk()
                self._offered = True  # stays set if send() raises: retry the same bytes
                sent = sock.send(data)
                self._offered = False
            elif len(chunks) == 1:
                sent = sock.send(chunks[0])
            else:
                sent = sock.sendmsg(list(islice(chunks, IOV_MAX)))
            self._consume(sent)

    def _joined_chunk(self) -> Any:
        chunks = self._chunks
        head = chunks[0]
        if not self._offered and len(head) < TLS_WRITE and len(chunks) > 1:
            # Join small buffers: one write of full-size TLS records, not many tiny ones.
            parts = []
            total = 0
            while chunks and total + len(chunks[0]) <= TLS_WRITE:
                part = chunks.popleft()
                parts.append(part)
                total += len(part)
            head = b"".join(parts)
            chunks.appendleft(head)
        return memoryview(head)[:TLS_WRITE] if len(head) > TLS_WRITE else head

    def _consume(self, sent: int) -> None:
        self.size -= sent
        chunks = self._chunks
        while sent:
            head = chunks[0]
            size = len(head)
            if sent < size:
                chunks[0] = memoryview(head)[sent:]
                return
            chunks.popleft()
            sent -= size


class Stream:
    """A non-blocking socket with its decoder and output queue: the shared
    engine of the selector server and the multi-connection client.

    The owner calls handshake() until it returns True (TLS only), read() when
    the socket is readable, flush() when it is writable, and registers
    ``events()`` with its selector.
    """

    __slots__ = (
        "_read_wants_write",
        "_write_wants_read",
        "at_eof",
        "decoder",
        "error",
        "fresh",
        "handshaking",
        "output",
        "sock",
        "tls",
        "watched",
    )

    def __init__(self, sock: socket.socket, decoder: Any) -> None:
        self.sock = sock
        self.decoder = decoder
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.output = OutputQueue(self.tls, copy_mutable=True)
        self.handshaking = self.tls
        self.at_eof = False  # no more input: end of stream or a protocol error
        self.error: Optional[ProtocolError] = None
        self.fresh = True  # no byte read yet: the next read is receive_first()'s
        self.watched = 0  # the events registered with the selector; 0 = none
        # TLS can need the other direction to progress (handshake, renegotiation).
        self._read_wants_write = False
        self._write_wants_read = False

    def start_tls(
        self, selector: selectors.BaseSelector, wrap: Callable[[], socket.socket]
    ) -> None:
        """STARTTLS: take the socket that ``wrap()`` makes of this one (a TLS
        socket whose handshake is still to be done, on the same descriptor),
        unregistered first: the old socket object loses its descriptor."""
        if self.watched:
            selector.unregister(self.sock)
            self.watched = 0
        self.sock = wrap()
        self.tls = self.handshaking = True
        self.output = OutputQueue(True, copy_mutable=True)
        self._read_wants_write = self._write_wants_read = False

    def handshake(self) -> bool:
        """One step of the TLS handshake; True once it is complete.

        ssl.SSLError (a bad certificate, a peer that is not speaking TLS) and
        OSError propagate.
        """
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._read_wants_write = False
            return False
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
            return False
        self.handshaking = self._read_wants_write = False
        return True

    def read(self, limit: int = 0) -> List[Any]:
        """Read what the socket has; return the frames completed.  ``limit``:
        at most that many bytes per read (0: as many as the decoder takes).

        Sets ``at_eof`` at end of stream, and also ``error`` on a protocol
        error (IncompleteFrameError when the stream stopped inside a frame);
        the frames completed before the bad bytes are still returned.
        """
        sock = self.sock
        decoder = self.decoder
        frames: List[Any] = []
        self._read_wants_write = False
        try:
            while True:
                try:
                    if self.fresh:
                        completed = receive_first(sock, decoder, limit)
                        self.fresh = False
                    elif limit:
                        completed = receive_at_most(sock, decoder, limit)
                    else:
                        completed = receive(sock, decoder)
                except (BlockingIOError, ssl.SSLWantReadError):
                    break
                except ssl.SSLWantWriteError:
                    self._read_wants_write = True
                    break
                if completed is None:
                    self.at_eof = True
                    break
                frames += completed
                # Decrypted bytes that OpenSSL holds are invisible to select():
                # take them now.  A plain socket gets one read per event, which
                # keeps one busy peer from starving the others.
                if not (self.tls and sock.pending()):  # type: ignore[attr-defined]
                    break
        except ProtocolError as exc:
            frames += exc.frames
            self.at_eof = True
            self.error = exc
        return frames

    def flush(self) -> None:
        """Send what the socket takes now; the rest stays queued."""
        self._write_wants_read = False
        try:
            self.output.flush(self.sock)
        except (BlockingIOError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLWantReadError:
            self._write_wants_read = True

    def events(self, reading: bool) -> int:
        """The selector events to wait for; ``reading`` False pauses input."""
        if self.handshaking:
            return selectors.EVENT_WRITE if self._read_wants_write else selectors.EVENT_READ
        events = 0
        if (reading and not self.at_eof) or self._write_wants_read:
            events |= selectors.EVENT_READ
        if self.output or self._read_wants_write:
            events |= selectors.EVENT_WRITE
        return events

    def watch(self, selector: selectors.BaseSelector, reading: bool, data: Any) -> None:
        """Register (or update, or drop) this socket's events with ``selector``."""
        events = self.events(reading)
        if events == self.watched:
            return
        if not self.watched:
            selector.register(self.sock, events, data)
        elif not events:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, data)
        self.watched = events

    def close(self, selector: selectors.BaseSelector) -> None:
        watched, self.watched = self.watched, 0
        if watched:
            # A close that a KeyboardInterrupt cut short is done again by
            # the server's final sweep: the socket may be unregistered already.
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.sock)
        close_socket(self.sock)

    @property
    def read_wants_write(self) -> bool:
        return self._read_wants_write
