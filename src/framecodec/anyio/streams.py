"""What framecodec.anyio knows of anyio's own streams: which sockets it may
receive into and send from directly, and, on asyncio, TCP sockets opened and
accepted without an asyncio transport; serve()'s listeners (listen).

A FramedStream moves bytes straight between a socket and the codec only
when nothing else reads or writes that socket: anyio's socket streams on
trio, and its Unix socket streams on asyncio, do neither between calls.
Its asyncio TCP streams are another matter: an asyncio transport reads the
socket on its own, into a queue of its own, from the moment it is made.
Reading beside it would reorder bytes, and stopping it is a race (a
receive cancelled before it starts may still complete, and its chunk was
lost that way: the flaky hang of the anyio-asyncio benchmark rows).  So on
asyncio, connect() and serve() connect and accept TCP sockets themselves
and wrap them in SocketStream below, which reads only when asked, waiting
with the loop's add_reader as anyio's Unix streams do, but registered once
for many waits (sockio.AsyncioSocketIO); Unix sockets too, for those waits.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import Any, List, Optional, Tuple, Union, cast

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from ..net.addresses import (
    AddressLike,
    BoundSocket,
    _remove_stale_socket_file,
    parse_address,
    tune,
)
from .sockio import AsyncioSocketIO, SocketIO

__all__ = [
    "SocketStream",
    "accept",
    "connect_tcp",
    "connect_unix",
    "listen",
    "network_error",
    "raw_socket_of",
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
    reads and writes only when asked: recv or send first, and a wait only
    when the socket is not ready.  What connect() and serve() use on
    asyncio.  Its ``socket_io`` (sockio.AsyncioSocketIO) keeps the socket
    registered with the loop between waits, for this stream's receive() and
    send() and for a FramedStream over it alike; aclose() unregisters it."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False
        self.socket_io: SocketIO
        if sys.platform == "win32":  # the proactor loop has no add_reader
            self.socket_io = SocketIO(sock)
        else:
            self.socket_io = AsyncioSocketIO(sock, asyncio.get_running_loop())

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
                await self._wait(self.socket_io._wait_readable, float("inf"), False)
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
                    await self._wait(self.socket_io._wait_writable)
                except OSError as exc:
                    raise self._error(exc) from exc

    async def _wait(self, wait: Any, *args: Any) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            await wait(*args)
        except (anyio.ClosedResourceError, OSError):
            # aclose() woke us (or the socket is gone): we closed it.
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
                self.socket_io.notify_closing()  # unregister it, wake its waiters
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


async def connect_unix(path: str) -> anyio.abc.SocketStream:
    """A Unix socket connection: anyio's own on trio, a SocketStream on
    asyncio (whose waits are cheaper than anyio's there: see sockio.py)."""
    if not _on_asyncio():
        return await anyio.connect_unix(path)
    return SocketStream(await _connect_socket(socket.AF_UNIX, 0, path))


async def accept(listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream:
    """The next connection of ``listener``: anyio's accept on trio; on
    asyncio, the socket accepted here, into a SocketStream (anyio's accepted
    TCP streams come with a transport that reads at once)."""
    sock = listener.extra(SocketAttribute.raw_socket)
    if not _on_asyncio():
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


async def listen(
    address: Union[AddressLike, socket.socket], backlog: int, reuse_port: bool
) -> Tuple[List[anyio.abc.SocketListener], BoundSocket]:
    """The listeners (one per address a host name resolves to), and the
    first one's socket as the blocking servers own theirs: the real
    address, and a Unix socket file removed at the end only if still ours."""
    if isinstance(address, socket.socket):  # bound already, by the caller
        address.listen(backlog)
        bound = BoundSocket(address)
        return [await anyio.abc.SocketListener.from_socket(address)], bound
    target = parse_address(address)
    listeners: List[anyio.abc.SocketListener]
    if target.is_unix:
        path = target.sockaddr
        if not path.startswith("\0"):
            _remove_stale_socket_file(path, socket.SOCK_STREAM)
        listeners = [await anyio.create_unix_listener(path, backlog=backlog)]
    else:
        host, port = target.sockaddr[:2]
        multi = await anyio.create_tcp_listener(
            local_host=host, local_port=port, backlog=backlog, reuse_port=reuse_port
        )
        listeners = [cast(anyio.abc.SocketListener, one) for one in multi.listeners]
    try:
        return listeners, BoundSocket(listeners[0].extra(SocketAttribute.raw_socket))
    except BaseException:
        for listener in listeners:
            await anyio.aclose_forcefully(listener)
        raise


# accept() errors that concern one client, not the listener (as asyncio's
# own accept loop treats them).
_TRANSIENT_ACCEPT_ERRORS = frozenset(
    code for code in (errno.ECONNABORTED, getattr(errno, "EPROTO", None)) if code is not None
)


def network_error(exc: BaseException) -> BaseException:
    """What anyio wraps (BrokenResourceError from an OSError, say), unwrapped."""
    cause = exc.__cause__
    return cause if isinstance(cause, OSError) else exc
