"""Every public exception of framecodec, in one place.

The codec's (ProtocolError and its kinds) are shared by the compiled core
and its twin: both import this module, so an ``except FrameTooLargeError``
catches the same class whichever one is loaded.  The network layers' follow.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence


class ProtocolError(ValueError):
    """The byte stream breaks the wire format.

    ``frames`` holds the frames (or messages) that the failing call completed
    before it met the bad bytes: they are never lost to the exception.  A
    decoder that raised stays broken; every later call raises again (with an
    empty ``frames``), instead of parsing garbage.
    """

    def __init__(self, message: str, frames: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.frames: list[Any] = list(frames)

    def again(self) -> ProtocolError:
        """What a decoder broken by this error raises at every later call:
        the same type and fields, no frames; raise it ``from`` this one."""
        repeated = copy.copy(self)  # the class and every field (missing, buffered...)
        repeated.args = (f"decoder failed earlier: {self.args[0]}",)
        repeated.frames = []
        return repeated


class FrameTooLargeError(ProtocolError):
    """A header announced more bytes than the configured limit allows."""


class MalformedHeaderError(ProtocolError):
    """A header cannot be interpreted: negative length, bad JSON, missing key..."""


class ChecksumError(ProtocolError):
    """A frame's checksum (the ``checksum`` format option) does not match its
    bytes: they were changed on the way.  The frame is never delivered.

    ``expected`` is the checksum the frame carried, ``actual`` the one its
    bytes give.
    """

    def __init__(
        self, message: str, frames: Sequence[Any] = (), expected: int = 0, actual: int = 0
    ) -> None:
        super().__init__(message, frames)
        self.expected = expected
        self.actual = actual


class IncompleteFrameError(ProtocolError):
    """The stream ended part-way through a frame.

    ``missing`` is how many more bytes the frame needed (a lower bound while
    its header was still incomplete), ``buffered`` how many had arrived.
    """

    def __init__(
        self, message: str, frames: Sequence[Any] = (), missing: int = 0, buffered: int = 0
    ) -> None:
        super().__init__(message, frames)
        self.missing = missing
        self.buffered = buffered


class DecoderDetachedError(RuntimeError):
    """A decoder was called after detach() handed its stream over.

    Not a ProtocolError: no byte was wrong; the bytes belong to whichever
    decoder took over (see docs/switching.md).
    """


# -- the network layers ------------------------------------------------------


class ConnectionClosed(ConnectionError):
    """The connection ended cleanly, between two frames (or was closed here)."""


class BufferTooSmallError(ValueError):
    """recv_into()'s buffer cannot hold the next frame, which stays queued.

    ``needed`` is the frame's size, ``available`` the room the buffer had.
    """

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(
            f"the next frame is {needed} bytes but the buffer has room for {available}; "
            "the frame is kept for the next call"
        )
        self.needed = needed
        self.available = available


class HandlerError(Exception):
    """Wraps an exception raised by a handler (its ``__cause__``), so that it
    is never mistaken for a network error of the connection."""


class PeerStalled(ConnectionError):
    """A server closed a connection whose peer took none of its replies for
    ``write_timeout`` seconds: a network ending (counted in network_errors),
    never a handler's failure."""


class OverMemoryBudget(ConnectionError):
    """A server closed a connection that held its input or replies while the
    server was near its ``memory_budget``: the connections holding the most
    stop reading, and those held longest are closed.  A network ending
    (counted in network_errors, and in over_budget), never a handler's
    failure."""


class StartTLSError(ProtocolError):
    """Bytes arrived in the clear after the exchange that asked for TLS and
    before the handshake began.

    A correct peer sends nothing between its request (or the "go ahead"
    reply) and its first TLS record, so those bytes are a protocol error:
    never dropped, never fed to TLS.  ``buffered`` is how many undelivered
    bytes the decoder held, ``frames`` the frames completed but not
    delivered (received after the one that asked for TLS).  The connection
    is closed.
    """

    def __init__(self, message: str, frames: Sequence[Any] = (), buffered: int = 0) -> None:
        super().__init__(message, frames)
        self.buffered = buffered


class StartTLSRefused(ConnectionError):
    """A handler asked to upgrade a connection to TLS on a server that has
    no ``starttls_context`` (or a connection already TLS): that connection
    is closed, counted in ``tls_failures``."""


class TLSHandshakeError(ConnectionError):
    """A client's TLS handshake failed: the server closed or reset the
    connection during it, refused it with an alert (a client certificate it
    requires and did not get, no shared protocol version...), or sent
    something that is not TLS; or the server's certificate was refused.

    ``address`` is the server's address, ``why`` a sentence saying what
    happened; the exception from ssl or the socket is ``__cause__``.  What
    is raised is also an instance of that exception's type (built for it:
    ``ssl.SSLZeroReturnError``, ``ssl.SSLCertVerificationError``,
    ``ConnectionResetError``...), with its ``errno`` and, for ssl's, its
    ``library``, ``reason`` and ``verify_message``, so ``except`` clauses
    written for those still catch it.
    """

    address: Any = None
    why: str = ""

    def __str__(self) -> str:
        return f"TLS handshake with {self.address} failed: {self.why}"
