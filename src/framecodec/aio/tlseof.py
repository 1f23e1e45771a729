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

from ..net.server.endings import peer_label
from ..net.service import logger
from .connection import OPEN, Connection

if TYPE_CHECKING:
    from .server import _ServerConnection

__all__ = ["EOFHold", "HeldFIN", "hold_peer_eof", "raw_transport_of"]


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


class HeldFIN(Connection[Any]):
    """A server connection's side of the hold: when to let the FIN go, and
    the replies a close_notify left unsendable (the attributes are set by
    _ServerConnection.__init__)."""

    server: Any
    _eof_hold: Optional[EOFHold]
    _fin_check: Optional[asyncio.Handle]
    _read_since_check: bool
    _dropped_logged: bool

    def _peer_fin_held(self) -> bool:
        """The peer's FIN came under TLS: whether to hold it (False once
        closing here: the TLS layer then takes it at once)."""
        if self._state is not OPEN or self._input_over:
            return False
        self._schedule_fin_check()
        return True

    def _schedule_fin_check(self) -> None:
        if self._fin_check is None:
            self._read_since_check = False
            self._fin_check = self._loop.call_soon(self._check_fin)

    def _check_fin(self) -> None:
        """The TLS layer hands over what it still holds one loop pass at a
        time (its next chunk is queued before this check, which runs after
        it): a pass with no read, while reading is not paused, means every
        frame is in.  Then the end of input is handled as a plain FIN is."""
        self._fin_check = None
        if self._input_over or self._state is not OPEN or self._reading_paused:
            return  # ended otherwise (the close releases the FIN), or resuming reschedules
        if self._read_since_check:
            self._schedule_fin_check()
            return
        if not self.eof_received():
            self._close_transport()

    def _update_reading(self) -> None:
        super()._update_reading()
        hold = self._eof_hold
        if hold is not None and hold.held and not self._reading_paused:
            self._schedule_fin_check()  # resumed: what the TLS layer holds comes now

    def _close_transport(self) -> None:
        super()._close_transport()
        if self._eof_hold is not None:
            self._eof_hold.release()  # the FIN reaches TLS: no wait for a close_notify

    def _reply_lost_to_close_notify(self) -> None:
        """The peer ended TLS cleanly (its close_notify) while a coroutine
        handler was still working: asyncio's TLS layer shuts the session
        down at once, with no half-close, so its reply cannot be sent.
        Counted and logged (once per connection), never dropped unseen."""
        self.server.count("replies_dropped")
        if not self._dropped_logged:
            self._dropped_logged = True
            logger.warning(
                "%s: reply to %s not sent: its close_notify ended TLS before the handler"
                " answered (asyncio's TLS has no half-close)",
                self.server.address,
                peer_label(self.peer, self.server.address),
            )
