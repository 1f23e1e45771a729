"""STARTTLS for framecodec.aio: a plain connection upgraded to TLS in place,
with ``loop.start_tls``, for clients (Connection.start_tls) and servers
(a handler's StartTLS reply, or a per-connection handler's
``await conn.start_tls()``).

The Connection stays the protocol: loop.start_tls puts a TLS layer between
it and the socket's transport and hands back the TLS transport, which the
Connection then writes to.  Reading is paused before that (by start_tls,
and by a server at once after the reply that asked for it), so no byte
that follows the exchange reaches the decoder in the clear; bytes already
there are a StartTLSError (net.tls.check_starttls_input).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from ..errors import ConnectionClosed, ProtocolError, StartTLSRefused
from ..net.server.handlers import StartTLS
from ..net.tls import check_starttls_input

if TYPE_CHECKING:
    from .connection import Connection
    from .server import _ServerConnection

__all__ = [
    "UPGRADE_ENDINGS",
    "answer_frames",
    "as_list",
    "check_upgrade",
    "reply_then_start_tls",
    "server_handshake",
    "start_tls_after",
    "start_tls_here",
    "upgrade",
]

# How a start_tls() ends a connection under a per-connection handler: the
# ending is logged as the connection's (refused, or a failed handshake, or
# its timeout), never as the handler's failure.
UPGRADE_ENDINGS = (StartTLSRefused, ssl.SSLError, ConnectionAbortedError)


def check_upgrade(conn: Connection[Any], unhandled: Sequence[Any] = ()) -> None:
    """Raise unless ``conn`` can be upgraded now: open, plain, and nothing
    received in the clear past the exchange (frames ``unhandled`` by a
    server's handler, frames not yet taken by recv(), buffered bytes: a
    StartTLSError, which also closes the connection).  A send() during the
    handshake raises ConnectionClosed."""
    transport = conn._transport
    if transport is None or transport.is_closing() or conn._upgrading:
        raise ConnectionClosed("the connection is closed or already upgrading")
    if conn._tls:
        raise ValueError("the connection is already TLS")
    try:
        check_starttls_input(conn._decoder, [*unhandled, *conn._frames])
    except ProtocolError as exc:
        conn._frames.clear()  # they are the error's now (exc.frames)
        conn._queued = 0
        conn._protocol_error(exc)  # closes it, as a bad frame would
        raise


async def upgrade(
    conn: Connection[Any],
    ssl_context: ssl.SSLContext,
    server_side: bool,
    server_hostname: Optional[str],
    handshake_timeout: Optional[float],
) -> None:
    """The handshake, once check_upgrade() passed: what is queued goes out
    in the clear first.  A failure (ssl.SSLError, a timeout) ends the
    connection, whose recv() then raises it, and is raised here."""
    transport = conn._transport
    assert transport is not None
    if not server_side and server_hostname is None and ssl_context.check_hostname:
        raise ValueError("start_tls() needs server_hostname here (a Unix socket has no host)")
    conn._flush()
    conn._upgrading = True  # no write, and no resumed reading, until it is done
    conn._receive_mark = None  # the kernel will count ciphertext (net/lowwater.py)
    try:
        tls_transport = await conn._loop.start_tls(
            transport,
            conn,
            ssl_context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=handshake_timeout,
        )
    except BaseException as exc:
        transport.abort()  # closed by start_tls, but not on every loop
        # asyncio reports the loss to the protocol later (3.11+) or never
        # (3.10, whose TLS layer only does once established): now, once.
        conn.connection_lost(exc if isinstance(exc, Exception) else None)
        conn._upgrading = False
        raise
    conn._upgrading = False
    if tls_transport is None:  # the peer closed as the handshake ended
        raise ConnectionClosed("the connection was closed during the TLS handshake")
    conn._transport = tls_transport
    conn._tls = True
    tls_transport.set_write_buffer_limits(high=conn.high_water)
    if conn._reading_paused:  # flow control's pause, on the new transport too
        tls_transport.pause_reading()
    # Frames that came with the handshake's end (read in the same pass as the
    # peer's Finished) were held: handled now, their replies over TLS.
    held, conn._held = conn._held, []
    if held:
        conn._deliver(held)


# -- the server side ---------------------------------------------------------------


def _refuse(conn: _ServerConnection, why: str) -> StartTLSRefused:
    """Close ``conn`` (what is queued still goes out) as a refused STARTTLS."""
    error = conn._ending = StartTLSRefused(why)
    conn._set_error(error)
    if not conn._input_over:
        conn._end_input()
    conn._close_transport()
    return error


def reply_then_start_tls(conn: _ServerConnection, replies: List[Any], unhandled: Any) -> bool:
    """A handler's replies end with StartTLS(reply): unless refused, send
    them and stop reading at once, so no byte after the request reaches the
    decoder in the clear.  True when the handshake is to follow: in the
    handler's task (server_handshake), or in one started here for a plain
    handler, called from buffer_updated.  A StartTLS not last (a batch's
    replies) is the handler's mistake: ValueError."""
    marker = replies[-1]
    if type(marker) is not StartTLS or StartTLS in map(type, replies[:-1]):
        raise ValueError("StartTLS must be the last reply of a batch")
    if conn.server.starttls_context is None:
        _refuse(conn, "the handler asked for STARTTLS; the server has no starttls_context")
        return False
    try:
        check_upgrade(conn, unhandled)
    except (ProtocolError, ConnectionClosed):
        return False  # closed (or closing), and logged as it ends
    except ValueError as exc:
        _refuse(conn, str(exc))
        return False
    sent = [reply for reply in replies[:-1] if reply is not None]
    if marker.reply is not None:
        sent.append(marker.reply)
    if sent:
        conn._queue(conn.protocol.encode_many(sent))
    conn._flush()
    assert conn._transport is not None
    conn._transport.pause_reading()
    conn._upgrading = True  # until upgrade() takes over: no resumed reading meanwhile
    if conn._task is None:
        conn._start(server_handshake(conn))
    return True


async def server_handshake(conn: _ServerConnection) -> None:
    """The server side's handshake after reply_then_start_tls; a failure
    ends the connection, logged as it ends, and is not raised."""
    context = conn.server.starttls_context
    assert context is not None
    try:
        await upgrade(conn, context, True, None, conn.server.ssl_handshake_timeout)
    except Exception:
        pass


def answer_frames(
    conn: _ServerConnection, handler: Callable[[Any], Any], frames: List[Any]
) -> List[Any]:
    """A plain handler's replies to ``frames``, in one pass.  A StartTLS
    reply ends it: no frame after it is handled (they came in the clear);
    the replies go out there and then, and none are returned."""
    replies: List[Any] = []
    for index, frame in enumerate(frames):
        reply = handler(frame)
        if reply is not None:
            if type(reply) is StartTLS:
                reply_then_start_tls(conn, [*replies, reply], frames[index + 1 :])
                return []
            replies.append(reply)
    return replies


def as_list(replies: Any) -> Any:
    """A batch handler's replies as a list (a generator, say, is read once),
    so that they can be looked at for a StartTLS and then sent."""
    return replies if replies is None or type(replies) is list else list(replies)


async def start_tls_after(conn: _ServerConnection, replies: List[Any]) -> None:
    """A coroutine handler's replies end with StartTLS: the frames still
    pending came in the clear after the request (see reply_then_start_tls)."""
    unhandled = list(conn._pending)
    conn._pending.clear()
    conn._backlog_extra = 0
    if reply_then_start_tls(conn, replies, unhandled):
        await server_handshake(conn)


async def start_tls_here(
    conn: _ServerConnection,
    ssl_context: Optional[ssl.SSLContext] = None,
    *,
    server_hostname: Optional[str] = None,
    ssl_handshake_timeout: Optional[float] = None,
) -> None:
    """``await conn.start_tls()`` in a per_connection handler, once the "go
    ahead" is sent: the client's start_tls, server side, with the server's
    starttls_context and ssl_handshake_timeout by default.  Raises what the
    client's does, or StartTLSRefused without a context (closing it)."""
    context = ssl_context if ssl_context is not None else conn.server.starttls_context
    if context is None:
        raise _refuse(conn, "start_tls() without a context, and the server has no starttls_context")
    check_upgrade(conn)
    timeout = ssl_handshake_timeout
    if timeout is None:
        timeout = conn.server.ssl_handshake_timeout
    await upgrade(conn, context, True, server_hostname, timeout)
