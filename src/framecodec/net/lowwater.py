"""One wake-up per large frame: the socket's receive low-water mark follows the decoder.

A large frame reaches a TCP receiver as many segments, and a reader that
waits for readiness is woken for each one.  On loopback the sender pays for
those wake-ups inside its send() calls, so a fast reader slows down its
own sender: a blocking sendmsg() of 64 KiB frames ran at 1.3 GB/s against
a reader woken for every segment, and at 2.1 GB/s once the reader had set
SO_RCVLOWAT to the frame's size.

The decoder knows how many bytes its frame in progress still lacks
(``decoder.needed``).  LowWater sets the socket's SO_RCVLOWAT to that
number, capped at MARK_CAP, once it is MARK_FROM or more, and back to 1
when the frame is in.  The kernel then reports the socket readable only
when that many bytes are in.  This is safe because ``needed`` never counts a
byte the peer does not owe for the frame it has begun.  Linux also still
reports the socket readable at end of stream, on an error, and when the
receive buffer is under pressure, and it grows the buffer to fit the mark
(tcp_set_rcvlowat).

Only plain TCP on Linux gets a mark.  A Unix socket's poll ignores the
mark while its non-blocking recv() honours it, so the reader would spin.
Under TLS the kernel counts ciphertext, and plaintext may already wait,
decrypted, in the TLS layer.
"""

from __future__ import annotations

import socket
import ssl
import sys
from typing import Any, Optional

__all__ = ["MARK_CAP", "MARK_FROM", "LowWater", "low_water"]

# Frames lacking less than this are left alone: two setsockopt() calls a
# frame cost more than the wake-ups they spare.  Receiving 64 KiB frames
# from a blocking sender on another core, a mark from 32 KiB cost aio 8%
# and anyio 20% of their throughput; from 128 KiB those frames get none,
# while 1 MiB frames still gain (aio 3.4 -> 4.0 GB/s).
MARK_FROM = 128 * 1024
# At most a wake-up per this much of a frame: the kernel holds twice the
# mark in its receive buffer.
MARK_CAP = 256 * 1024


class LowWater:
    """The SO_RCVLOWAT of one socket, set from its decoder after each read."""

    __slots__ = ("_mark", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock: Optional[socket.socket] = sock
        self._mark = 1  # the kernel's default

    @property
    def mark(self) -> int:
        """The mark set now (1: every byte wakes the reader)."""
        return self._mark

    def follow(self, decoder: Any) -> None:
        """Set the mark to what the decoder's frame still lacks (or 1)."""
        needed = decoder.needed
        mark = min(needed, MARK_CAP) if needed >= MARK_FROM else 1
        if mark != self._mark and self._sock is not None:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
            except OSError:
                self._sock = None  # closed under us, or refused: leave the mark alone
                return
            self._mark = mark


def low_water(sock: Optional[socket.socket], tls: bool = False) -> Optional[LowWater]:
    """A LowWater for ``sock``, or None where a mark is unsafe or has no effect."""
    if (
        sock is None
        or tls
        or isinstance(sock, ssl.SSLSocket)
        or not sys.platform.startswith("linux")
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or sock.type != socket.SOCK_STREAM
        or not hasattr(socket, "SO_RCVLOWAT")
    ):
        return None
    return LowWater(sock)
