"""How a server's connection is named, counted and logged as it ends: the
one vocabulary of the blocking servers and framecodec.aio's.

Every connection that ends adds 1 to ``closed`` and 1 to the kind of its
ending (clean_closes, handler_errors, protocol_errors, tls_failures (a
failed handshake, or a STARTTLS refused),
timeouts, network_errors: a reset, a peer that stalled, taking none of
its replies for write_timeout, or one closed over the server's memory
budget, see budget.py), and logs one line on the "framecodec.server"
logger, in the same words whichever server ran it.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, MutableMapping, Optional

from ...errors import (
    HandlerError,
    IncompleteFrameError,
    MalformedHeaderError,
    OverMemoryBudget,
    PeerStalled,
    ProtocolError,
    StartTLSRefused,
)
from ..addresses import Address
from ..service import logger

__all__ = [
    "DEFAULT_HIGH_WATER",
    "ENDING_KINDS",
    "count_ending",
    "ending_kind",
    "log_ending",
    "peer_hint",
    "peer_label",
]

# Each connection's budget in bytes, for every server (see their high_water).
DEFAULT_HIGH_WATER = 1024 * 1024

ENDING_KINDS = (
    "clean_closes",
    "handler_errors",
    "protocol_errors",
    "tls_failures",
    "timeouts",
    "network_errors",
)


def peer_label(peer: Optional[Address], server_address: Any) -> str:
    """How logs name a connection: its peer's address, when it has one."""
    return str(peer) if peer else f"unnamed peer of {server_address}"


def ending_kind(exc: Optional[BaseException]) -> str:
    """The stats key of a connection that ended with ``exc`` (None: cleanly)."""
    if exc is None:
        return "clean_closes"
    if isinstance(exc, HandlerError):
        return "handler_errors"
    if isinstance(exc, ProtocolError):
        return "protocol_errors"
    if isinstance(exc, (ssl.SSLError, StartTLSRefused)):
        return "tls_failures"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeouts"
    return "network_errors"


def count_ending(stats: MutableMapping[str, int], exc: Optional[BaseException]) -> None:
    stats["closed"] += 1
    stats[ending_kind(exc)] += 1


def log_ending(
    address: Any,
    label: str,
    exc: Optional[BaseException],
    *,
    stopping: bool = False,
    handshaking: bool = False,
) -> None:
    """The one log line of a connection's end.  A HandlerError's traceback
    is its cause's: the handler's own exception.  The record gets the
    exception as text, never the object: a handler that keeps records (a
    test's, a MemoryHandler) would keep its traceback's frames alive, and
    with them sockets (see tls.wrap_accepted)."""
    if exc is None:
        logger.info("%s: %s closed", address, label)
    elif isinstance(exc, HandlerError):
        logger.error("%s: handler failed on %s; closing it", address, label, exc_info=exc.__cause__)
    elif isinstance(exc, IncompleteFrameError) and stopping:
        logger.info("%s: %s closed at shutdown inside a frame", address, label)
    elif isinstance(exc, ProtocolError):
        logger.warning(
            "%s: protocol error from %s, closing it: %s%s", address, label, str(exc), peer_hint(exc)
        )
    elif isinstance(exc, StartTLSRefused):
        logger.warning("%s: STARTTLS refused for %s, closing it: %s", address, label, str(exc))
    elif isinstance(exc, ssl.SSLError) and handshaking:
        logger.warning(
            "%s: TLS handshake with %s failed: %s%s", address, label, str(exc), _tls_hint(exc)
        )
    elif isinstance(exc, (TimeoutError, socket.timeout)):
        logger.info("%s: %s timed out: %s", address, label, str(exc))
    elif isinstance(exc, PeerStalled):
        logger.info("%s: %s stalled: %s", address, label, str(exc))
    elif isinstance(exc, OverMemoryBudget):
        logger.info("%s: %s closed over the memory budget: %s", address, label, str(exc))
    else:
        logger.info("%s: %s lost: %s", address, label, repr(exc))


# What a TLS client sends first: a record of content type 22 (handshake)
# whose version's major byte is 3 (SSL 3.0 up to TLS 1.3 alike).
TLS_RECORD_START = b"\x16\x03"
# What HTTP/1 requests (and HTTP/2's preface, "PRI ") begin with.
HTTP_STARTS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"PRI ")


def peer_hint(exc: ProtocolError) -> str:
    """A hint for a protocol error at a stream's start, from the first bytes
    the network layer kept (transport.keep_stream_start): a TLS client
    talking to a plain server, an HTTP client, or a frames client talking
    to a messages server.  (A plain client at a TLS server fails the
    handshake instead: _tls_hint.)"""
    start = getattr(exc, "stream_start", None)
    if not start:
        return ""
    if start[:2] == TLS_RECORD_START:
        return (
            " (the peer seems to speak TLS: its first bytes, 0x16 0x03, begin a TLS "
            "record; is it a TLS client of this plain server?)"
        )
    if start.startswith(HTTP_STARTS):
        return f" (the peer seems to speak HTTP: its first bytes are {start!r})"
    if start[:2] == b"\x00\x00" and isinstance(exc, MalformedHeaderError):
        # A message never has an empty header, while a length-prefixed frame
        # under 64 KiB begins with two zero bytes.
        return (
            " (the peer seems to send length-prefixed frames: is it a "
            "protocol='frames' client of this messages server?)"
        )
    return ""


def _tls_hint(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", "") or ""
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST"):
        return " (is the client speaking plain TCP?)"
    if reason == "UNEXPECTED_EOF_WHILE_READING":
        return " (the client hung up during the handshake)"
    return ""
