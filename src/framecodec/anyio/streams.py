"""What framecodec.anyio knows of anyio's own streams: which sockets it may
receive into or send from directly, and how asyncio's stop reading ahead."""

from __future__ import annotations

import asyncio
import socket
from typing import Optional

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

__all__ = ["network_error", "raw_socket_of", "reads_on_demand", "stop_read_ahead"]


def raw_socket_of(stream: anyio.abc.AnyByteStream) -> Optional[socket.socket]:
    """A plain anyio socket stream's socket (TCP or Unix; a TLS stream is
    another class), to send from directly: anyio sends nothing of its own
    there, and on asyncio it keeps no bytes in its transport between sends
    (its write buffer limit is 0), so no byte can overtake another."""
    if not isinstance(stream, anyio.abc.SocketStream):
        return None
    sock = stream.extra(SocketAttribute.raw_socket, None)
    return sock if isinstance(sock, socket.socket) else None


def reads_on_demand() -> bool:
    """Whether this backend's socket streams read only when asked (trio),
    so that receiving from their socket directly is safe.  On asyncio the
    stream's transport reads the socket into a queue of its own, and
    reading beside it would reorder bytes."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


async def stop_read_ahead(stream: anyio.abc.AnyByteStream) -> None:
    """Make an asyncio-backed anyio stream stop reading until asked.

    anyio's asyncio socket streams leave their transport reading from the
    start, into a queue without bound, and pause it only once a receive()
    has run.  A receive cancelled before it begins takes no byte (anyio's
    rule) and leaves the transport paused: a connection whose handler does
    not read then meets TCP's flow control instead of filling memory.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # trio reads nothing unasked
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # ended already: the first read will say so


def network_error(exc: BaseException) -> BaseException:
    """What anyio wraps (BrokenResourceError from an OSError, say), unwrapped."""
    cause = exc.__cause__
    return cause if isinstance(cause, OSError) else exc
