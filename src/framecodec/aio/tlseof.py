"""A TLS server connection's half-close: the peer's FIN is held back from
asyncio's TLS layer until the replies to what it sent are written.

asyncio's TLS transport has no half-close.  On the raw socket's end of
stream it shuts the TLS session down at once: plaintext it had not yet
handed to the protocol (3.11+ hands it over in chunks, one loop pass
apart, and not at all while reading is paused) is delivered during that
shutdown, when every write is dropped without a word, and a coroutine
handler's later replies are dropped too.  A client that sends its requests
and then shuts down its sending side lost its last replies.

So the raw transport's protocol becomes a relay (``EOFHold``) that passes
everything on to the TLS layer except the end of stream: that waits until
the connection has taken every frame the TLS layer still held and its
handler is done, then reaches the TLS layer (see _ServerConnection.
_peer_fin_held).  The TLS layer is reached through the raw transport, which
asyncio exposes only through private attributes for servers made with
``ssl=``; where they are missing (uvloop) nothing is held and asyncio's own
behaviour stays.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .server import _ServerConnection

__all__ = ["EOFHold", "hold_peer_eof", "raw_transport_of"]


def raw_transport_of(tls_transport: asyncio.BaseTransport) -> Optional[asyncio.Transport]:
    """The socket's transport under asyncio's TLS transport (CPython's own
    TLS layer, 3.10 to 3.13), or None where it cannot be reached."""
    tls_layer = getattr(tls_transport, "_ssl_protocol", None)
    raw = getattr(tls_layer, "_transport", None)
    get_protocol = getattr(raw, "get_protocol", None)
    if get_protocol is None or get_protocol() is not tls_layer:
        return None
    return raw


class EOFHold:
    """The raw transport's protocol: relays to the TLS layer, holding the
    end of stream until release()."""

    def __init__(self, raw: asyncio.Transport, tls_layer: Any, conn: _ServerConnection) -> None:
        self.raw = raw
        self.tls_layer = tls_layer
        self.conn = conn
        self.held = False  # the peer's FIN arrived and is held
        self.released = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # made long ago: the relay arrives after the handshake

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.tls_layer.connection_lost(exc)

    def pause_writing(self) -> None:
        self.tls_layer.pause_writing()

    def resume_writing(self) -> None:
        self.tls_layer.resume_writing()

    def data_received(self, data: bytes) -> None:
        self.tls_layer.data_received(data)

    def eof_received(self) -> Optional[bool]:
        if self.released or not self.conn._peer_fin_held():
            self.released = True
            return self.tls_layer.eof_received()  # type: ignore[no-any-return]
        self.held = True
        return True  # the raw transport stays open; release() decides

    def release(self) -> None:
        """Let the held end of stream reach the TLS layer, which then
        finishes closing without waiting for a close_notify that will not
        come.  Nothing if none is held, or once done."""
        if not self.held or self.released:
            return
        self.released = True
        if self.raw.is_closing():
            return
        if not self.tls_layer.eof_received():
            self.raw.close()  # what the raw transport does when not kept open


class BufferedEOFHold(EOFHold, asyncio.BufferedProtocol):
    """The relay for a TLS layer that reads into its own buffer (3.11+)."""

    def get_buffer(self, sizehint: int) -> Any:
        return self.tls_layer.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.tls_layer.buffer_updated(nbytes)


class PlainEOFHold(EOFHold, asyncio.Protocol):
    """The relay for a TLS layer that takes bytes objects (3.10)."""


def hold_peer_eof(raw: Optional[asyncio.Transport], conn: _ServerConnection) -> Optional[EOFHold]:
    """Put a relay between ``raw`` and the TLS layer that is its protocol
    now; None (nothing changed) if ``raw`` is None."""
    if raw is None:
        return None
    tls_layer = raw.get_protocol()
    kind = BufferedEOFHold if isinstance(tls_layer, asyncio.BufferedProtocol) else PlainEOFHold
    hold = kind(raw, tls_layer, conn)
    raw.set_protocol(hold)
    return hold
