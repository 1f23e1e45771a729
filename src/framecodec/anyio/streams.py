"""What framecodec.anyio knows of anyio's own streams: which sockets it may
receive into and send from directly, and, on asyncio, TCP sockets opened and
accepted without an asyncio transport.

A FramedStream moves bytes straight between a socket and the codec only
when nothing else reads or writes that socket: anyio's socket streams on
trio, and its Unix socket streams on asyncio, do neither between calls.
Its asyncio TCP streams are another matter: an asyncio transport reads the
socket on its own, into a queue of its own, from the moment it is made.
Reading beside it would reorder bytes, and stopping it is a race (a
receive cancelled before it starts may still complete, and its chunk was
lost that way: the flaky hang of the anyio-asyncio benchmark rows).  So on
asyncio, connect() and serve() connect and accept TCP sockets themselves
and wrap them in SocketStream below, which reads only when asked, with
``anyio.wait_readable`` (the loop's add_reader) as anyio's Unix streams do.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any, List, Optional, Tuple

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from ..net.addresses import tune

__all__ = [
    "SendBroken",
    "SocketStream",
    "accept",
    "connect_tcp",
    "network_error",
    "raw_socket_of",
    "receive_into",
    "send_on",
]


def raw_socket_of(stream: anyio.abc.AnyByteStream) -> Optional[socket.socket]:
    """The socket of a plain socket stream (TCP or Unix; a TLS stream is
    another class) that reads and writes only when asked, to receive into
    and send from directly; None for any other stream.

    anyio's asyncio TCP streams give an asyncio TransportSocket here, not a
    socket: their transport reads on its own, so they are not ours to read.
    The streams that give a real socket keep no bytes of their own between
    calls (none read ahead, none buffer a write), so no byte can overtake
    another."""
    if not isinstance(stream, anyio.abc.SocketStream):
        return None
    sock = stream.extra(SocketAttribute.raw_socket, None)
    return sock if type(sock) is socket.socket else None


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SocketStream(anyio.abc.SocketStream):
    """A connected TCP (or Unix) socket as an anyio socket stream that
    reads and writes only when asked: recv or send first, and
    ``anyio.wait_readable``/``wait_writable`` only when the socket is not
    ready.  What connect() and serve() use for TCP on asyncio."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    def _error(self, exc: OSError) -> BaseException:
        if self._closed:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                await self._wait(anyio.wait_readable)
                continue
            except OSError as exc:
                raise self._error(exc) from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        with memoryview(item) as view:
            sent = 0
            while sent < len(view):
                try:
                    sent += self._sock.send(view[sent:])
                except BlockingIOError:
                    await self._wait(anyio.wait_writable)
                except OSError as exc:
                    raise self._error(exc) from exc

    async def _wait(self, wait: Any) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            await wait(self._sock)
        except (anyio.ClosedResourceError, OSError):
            # notify_closing() woke us (or the socket is gone): we closed it.
            raise anyio.ClosedResourceError from None

    async def send_eof(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already: nothing more can reach it anyway
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sock.fileno() >= 0:
                anyio.notify_closing(self._sock)  # wake any task waiting on it
            self._sock.close()
        await anyio.lowlevel.checkpoint()


async def _connect_socket(family: int, proto: int, sockaddr: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setblocking(False)
        try:
            sock.connect(sockaddr)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
        tune(sock)
        return sock
    except BaseException:
        sock.close()
        raise


async def connect_tcp(host: str, port: int) -> anyio.abc.SocketStream:
    """A TCP connection that reads only when asked: anyio's own on trio;
    on asyncio a SocketStream of the first resolved address that accepts,
    tried in getaddrinfo's order (the first error is raised if none does)."""
    if not _on_asyncio():
        return await anyio.connect_tcp(host, port)
    infos: List[Tuple[Any, ...]] = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: List[OSError] = []
    for family, _, proto, _, sockaddr in infos:
        try:
            return SocketStream(await _connect_socket(family, proto, sockaddr))
        except OSError as exc:
            errors.append(exc)
    if not errors:
        raise OSError(errno.EADDRNOTAVAIL, f"no address found for {host}")
    try:
        raise errors[0]
    finally:
        errors.clear()  # break the traceback reference cycle


async def accept(listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream:
    """The next connection of ``listener``: anyio's accept, except for TCP
    on asyncio, whose accepted streams come with a transport that reads at
    once; there the socket is accepted here, into a SocketStream."""
    sock = listener.extra(SocketAttribute.raw_socket)
    if sock.family == getattr(socket, "AF_UNIX", None) or not _on_asyncio():
        return await listener.accept()
    await anyio.lowlevel.checkpoint()
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except OSError as exc:
            if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                continue  # that client gave up; the next may not
            raise
        try:
            tune(conn)
            return SocketStream(conn)
        except BaseException:
            conn.close()
            raise


# accept() errors that concern one client, not the listener (as asyncio's
# own accept loop treats them).
_TRANSIENT_ACCEPT_ERRORS = frozenset(
    code for code in (errno.ECONNABORTED, getattr(errno, "EPROTO", None)) if code is not None
)


# -- framing straight on a socket (FramedStream's hot path) ---------------------

# Sends up to this size yield to the other tasks once done (see send_on).
_YIELD_BELOW = 64 * 1024


class SendBroken(Exception):
    """Raised by a send once a frame may have left in part (its cause chained)."""


async def send_on(sock: socket.socket, data: Any) -> None:
    """Send ``data`` on the socket itself: send() first, and wait for room
    only when the socket has none (the peer's backpressure), so a send that
    fits costs no wait.  Cancelled or failed after part of it left, the
    socket's sending side is shut, so that the peer sees the frame cut
    (IncompleteFrameError) instead of waiting for its end, and SendBroken
    is raised: nothing may be sent after half a frame."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    view = memoryview(data)
    sent = 0
    try:
        while sent < len(view):
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                await anyio.wait_writable(sock)
    except BaseException as exc:
        if sent:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # gone already: the peer sees the cut either way
            raise SendBroken() from exc
        raise
    finally:
        view.release()
    if sent <= _YIELD_BELOW:
        # One task sending small frames to a fast peer would otherwise never
        # let the others run; large sends wait once the socket buffer fills.
        await anyio.lowlevel.cancel_shielded_checkpoint()


async def receive_into(sock: socket.socket, decoder: Any, read_size: int) -> List[Any]:
    """One recv_into the decoder's buffer (get_buffer, buffer_updated): the
    frames it completed.  recv_into first, and wait for readability only
    when nothing is there, so a ready socket costs no wait.  A cancellation
    can only come before the recv_into or during the wait: the bytes stay in
    the kernel, or are the decoder's already."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        view = decoder.get_buffer(read_size)
        try:
            nbytes = sock.recv_into(view)
        except BlockingIOError:
            view.release()  # the decoder's buffer may move while we wait
            await anyio.wait_readable(sock)
            waited = True
            continue
        view.release()
        if nbytes == 0:
            raise anyio.EndOfStream
        frames: List[Any] = decoder.buffer_updated(nbytes)
        if not waited:
            # A peer that keeps us busy must not starve the other tasks (trio's
            # own socket reads yield so too); shielded, since the bytes are the
            # decoder's now and its frames ours.
            await anyio.lowlevel.cancel_shielded_checkpoint()
        return frames


def network_error(exc: BaseException) -> BaseException:
    """What anyio wraps (BrokenResourceError from an OSError, say), unwrapped."""
    cause = exc.__cause__
    return cause if isinstance(cause, OSError) else exc
