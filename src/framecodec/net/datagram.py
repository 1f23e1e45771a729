"""Connectionless service: one JSON-header message per datagram, over UDP or
Unix datagram sockets.

Each datagram is received straight into a MessageDecoder's buffer and must
hold exactly one whole message.  The server drops (and counts, in
``stats``) datagrams that are oversized or malformed and handler failures;
none of them ever leaves its loop.  The client retries a request a bounded
number of times; replies carry the request's "request-id" header, so a late
reply to an earlier attempt or request is never taken for the current one.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
import selectors
import socket
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Optional, Tuple

from ..codec.messages import Message
from ..errors import FrameTooLargeError, ProtocolError
from .addresses import AddressLike, bind_socket, connect_socket, parse_address
from .protocols import MessageProtocol
from .service import Service, logger

__all__ = ["MAX_UDP_PAYLOAD", "DatagramClient", "DatagramServer", "serve_datagrams"]

MAX_UDP_PAYLOAD = 65507  # the largest UDP payload over IPv4
# Datagrams handled per wake-up before the loop checks for shutdown again.
RECEIVE_BATCH = 256


class _OnePerDatagram:
    """Decodes exactly one message from each datagram."""

    def __init__(self, protocol: MessageProtocol, max_size: int) -> None:
        self._protocol = protocol
        self._max = max_size
        self._decoder = protocol.new_decoder()

    def receive(self, sock: socket.socket) -> Tuple[Optional[Message], Any, Optional[str]]:
        """One datagram: (message, sender, None), or (None, sender, why it was dropped)."""
        decoder = self._decoder
        # Not transport.receive(): a datagram is one whole message, read
        # with recvfrom, and never joined to the next.
        # One byte of room beyond the limit tells an oversized datagram
        # (truncated by the kernel) from one exactly at the limit.
        n, sender = sock.recvfrom_into(decoder.get_buffer(self._max + 1), self._max + 1)
        if n > self._max:
            return None, sender, "oversized"  # not committed: the decoder is untouched
        try:
            messages = decoder.buffer_updated(n)
        except ProtocolError:
            messages = []
        if len(messages) != 1 or decoder.buffered:
            # A failed decoder stays failed, and a half-filled one would join
            # this datagram to the next: start afresh.
            self._decoder = self._protocol.new_decoder()
            return None, sender, "malformed"
        return messages[0], sender, None


class DatagramServer(Service):
    """Answers each datagram's message with the handler's reply (None: no reply).

    ``stats`` counts received, replied, oversized, malformed, handler_errors,
    unanswerable (a reply too large, or a Unix peer without an address) and
    send_errors.
    """

    kind = "datagram server"

    def __init__(
        self,
        bound: Any,
        handler: Callable[[Message], Any],
        protocol: MessageProtocol,
        max_datagram_size: int,
    ) -> None:
        super().__init__(bound)
        self._handler = handler
        self.protocol = protocol
        self.max_datagram_size = max_datagram_size
        self._reader = _OnePerDatagram(protocol, max_datagram_size)

    def _serve(self) -> None:
        sock = self._bound.sock
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ, sock)
            selector.register(self._waker, selectors.EVENT_READ, None)
            while not self.stopping:
                for key, _ in selector.select():
                    if key.data is None:
                        self._waker.drain()
                    else:
                        self._receive_batch(sock)

    def _receive_batch(self, sock: socket.socket) -> None:
        for _ in range(RECEIVE_BATCH):
            try:
                message, sender, dropped = self._reader.receive(sock)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. an ICMP error reported late: not fatal
                self.count("receive_errors")
                logger.info("%s: receive failed: %s", self.address, exc)
                return
            self.count("received")
            if message is None:
                self.count(dropped)  # type: ignore[arg-type]
                logger.info("%s: dropped a datagram from %s: %s", self.address, sender, dropped)
                continue
            try:
                reply = self._handler(message)
                if reply is None:
                    continue
                request_id = message.header.get("request-id")
                headers = None if request_id is None else {"request-id": request_id}
                data = self.protocol.encode(reply, headers=headers)[0]
            except Exception:
                self.count("handler_errors")
                logger.exception("%s: handler failed on a datagram from %s", self.address, sender)
                continue
            if not sender or len(data) > self.max_datagram_size:
                self.count("unanswerable")
                logger.warning(
                    "%s: cannot answer %s (%d-byte reply, limit %d)",
                    self.address,
                    sender or "an unnamed Unix peer",
                    len(data),
                    self.max_datagram_size,
                )
                continue
            try:
                sock.sendto(data, sender)
                self.count("replied")
            except OSError as exc:
                self.count("send_errors")
                logger.info("%s: reply to %s failed: %s", self.address, sender, exc)


def serve_datagrams(
    address: AddressLike,
    handler: Callable[[Message], Any],
    *,
    max_datagram_size: int = MAX_UDP_PAYLOAD,
    **options: Any,
) -> DatagramServer:
    """Bind a UDP (``host:port``) or Unix datagram (``unix:...``) socket and
    return a DatagramServer ready to run.  ``options`` are MessageDecoder's
    (max_header_size, max_content_size)."""
    protocol = MessageProtocol(**options)
    # No SO_REUSEADDR: UDP has no TIME_WAIT to skip, and with it a second
    # server could bind the same port and silently take the datagrams.
    bound = bind_socket(address, socket.SOCK_DGRAM, reuse_address=False)
    try:
        return DatagramServer(bound, handler, protocol, max_datagram_size)
    except BaseException:
        bound.close()
        raise


class DatagramClient:
    """Sends messages to one datagram server; ``request`` waits for the reply.

    ``timeout`` is per attempt; a request is sent at most ``1 + retries``
    times, then raises TimeoutError.  A refused datagram (no server there)
    raises ConnectionRefusedError.
    """

    def __init__(
        self,
        address: AddressLike,
        *,
        timeout: float = 1.0,
        retries: int = 2,
        max_datagram_size: int = MAX_UDP_PAYLOAD,
        **options: Any,
    ) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries not negative")
        self.address = parse_address(address)
        self.timeout = timeout
        self.retries = retries
        self.max_datagram_size = max_datagram_size
        self.protocol = MessageProtocol(**options)
        self.stats: collections.Counter[str] = collections.Counter()
        self._reader = _OnePerDatagram(self.protocol, max_datagram_size)
        self._ids = itertools.count(random.getrandbits(32))
        self._own_path: Optional[str] = None
        self._sock = self._open()

    def _open(self) -> socket.socket:
        if not self.address.is_unix:
            return connect_socket(self.address, socket.SOCK_DGRAM)
        # A Unix datagram client needs an address of its own to get replies.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if sys.platform.startswith("linux"):
                sock.bind("")  # a free abstract name
            else:  # pragma: no cover - no abstract namespace
                self._own_path = tempfile.mktemp(prefix="fc-", suffix=".sock")
                sock.bind(self._own_path)
            sock.connect(self.address.sockaddr)
        except BaseException:
            self._close_socket(sock)
            raise
        return sock

    def send(
        self,
        content: Any,
        *,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        headers: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Send one message, expecting no reply."""
        self._sock.send(self._encode(content, content_type, content_encoding, headers))

    def request(
        self,
        content: Any,
        *,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        headers: Optional[Mapping[str, Any]] = None,
    ) -> Message:
        """Send a message and return the server's reply to it."""
        request_id = next(self._ids)
        all_headers = dict(headers or {}, **{"request-id": request_id})
        data = self._encode(content, content_type, content_encoding, all_headers)
        attempts = 1 + self.retries
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
            self._sock.send(data)
            reply = self._await_reply(request_id, time.monotonic() + self.timeout)
            if reply is not None:
                return reply
        raise TimeoutError(
            f"no reply from {self.address} after {attempts} attempt(s) of {self.timeout} s"
        )

    def _encode(self, content: Any, *header_fields: Any) -> bytes:
        data = self.protocol.encode(content, *header_fields)[0]
        if len(data) > self.max_datagram_size:
            raise FrameTooLargeError(
                f"message of {len(data)} bytes exceeds max_datagram_size ({self.max_datagram_size})"
            )
        return data

    def _await_reply(self, request_id: int, deadline: float) -> Optional[Message]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                message, _, dropped = self._reader.receive(self._sock)
            except TimeoutError:
                return None
            if message is None:
                self.stats[dropped] += 1  # type: ignore[index]
            elif message.header.get("request-id") == request_id:
                return message
            else:
                self.stats["stale"] += 1  # a late reply to an earlier attempt

    def close(self) -> None:
        self._close_socket(self._sock)

    def _close_socket(self, sock: socket.socket) -> None:
        sock.close()
        if self._own_path is not None:
            try:
                os.unlink(self._own_path)
            except FileNotFoundError:
                pass
            self._own_path = None

    def __enter__(self) -> DatagramClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
