"""Address syntax and resolution, one syntax for the API and the command line.

==========================  =================================================
``host:port``               IPv4 address or a name (resolved with getaddrinfo)
``(host, port)``            the same as a tuple; ``host`` may be bare IPv6
``[::1]:port``              IPv6 literal, bracketed as in URLs
``unix:/path/to.sock``      Unix socket on the file system
``unix:@name``              Linux abstract namespace (``unix:@`` alone lets a
                            server's kernel pick a free name)
==========================  =================================================

Port 0 binds a free port; a bound socket's real address comes back through
``Address.from_sockaddr(sock.getsockname())``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

__all__ = ["Address", "BoundSocket", "bind_socket", "connect_socket", "parse_address"]

AddressLike = Union["Address", str, Tuple[str, int]]

FORMS = "host:port, [ipv6]:port, unix:/path or unix:@name"


@dataclass(frozen=True)
class Address:
    """A parsed address: ``host`` and ``port``, or a Unix ``path``.

    ``str(address)`` gives it back in the address syntax, so it round-trips
    through the command line and logs.
    """

    host: Optional[str] = None
    port: Optional[int] = None
    path: Optional[str] = None  # "@name" for the abstract namespace

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def family(self) -> int:
        if self.is_unix:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in (self.host or "") else socket.AF_INET

    @property
    def sockaddr(self) -> Any:
        """The address as the socket module takes it (what multiprocessing takes, too)."""
        if self.path is not None:
            return "\0" + self.path[1:] if self.path.startswith("@") else self.path
        return (self.host, self.port)

    @classmethod
    def from_sockaddr(cls, sockaddr: Any) -> Address:
        """The Address of a getsockname()/getpeername() result."""
        if isinstance(sockaddr, tuple):
            return cls(host=sockaddr[0], port=sockaddr[1])
        if isinstance(sockaddr, bytes):  # Linux gives abstract names as bytes
            sockaddr = os.fsdecode(sockaddr)
        if sockaddr.startswith("\0"):
            return cls(path="@" + sockaddr[1:])
        return cls(path=sockaddr)

    def __str__(self) -> str:
        if self.path is not None:
            return "unix:" + self.path
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _port(text: Any, original: object) -> int:
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if not isinstance(text, int) or isinstance(text, bool) or not 0 <= text <= 65535:
        raise ValueError(f"bad port in address {original!r}: ports are integers 0-65535")
    return text


def parse_address(address: AddressLike) -> Address:
    """An Address from any form of the syntax; ValueError says what is wrong."""
    if isinstance(address, Address):
        return address
    if isinstance(address, (tuple, list)):
        if len(address) != 2 or not isinstance(address[0], str):
            raise ValueError(f"an address tuple is (host, port), not {address!r}")
        return Address(host=address[0].strip("[]"), port=_port(address[1], address))
    if not isinstance(address, str):
        raise TypeError(
            f"an address is a string or a (host, port) tuple, not {type(address).__name__}"
        )
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(
                "unix: needs a path (unix:/path/to.sock) or an abstract name (unix:@name)"
            )
        return Address(path=path)
    scheme, sep, rest = address.partition("://")
    if sep and scheme.isalnum():
        where = rest.partition("/")[0]
        hint = f"; here, {where}" if where.rpartition(":")[2].isdigit() else ""
        raise ValueError(
            f"{address!r} is a URL, not an address: an address has no scheme; "
            f"its forms are {FORMS}{hint}"
        )
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"bad IPv6 address {address!r}: the syntax is [::1]:port")
        return Address(host=host, port=_port(port, address))
    host, sep, port = address.rpartition(":")
    if not sep:
        hint = f"; for a Unix socket write unix:{address}" if "/" in address else ""
        raise ValueError(f"address {address!r} lacks a port: the syntax is host:port{hint}")
    if ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: [{host}]:{port}")
    return Address(host=host, port=_port(port, address))


def _candidates(address: Address, socktype: int, passive: bool) -> List[Tuple[int, int, int, Any]]:
    """(family, type, proto, sockaddr) to try in order, as getaddrinfo ranks them."""
    if address.is_unix:
        return [(socket.AF_UNIX, socktype, 0, address.sockaddr)]
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(address.host or None, address.port, 0, socktype, 0, flags)
    return [(family, type_, proto, sockaddr) for family, type_, proto, _, sockaddr in infos]


def candidates(
    address: AddressLike, socktype: int = socket.SOCK_STREAM
) -> List[Tuple[int, int, int, Any]]:
    """Where a client should try to connect, in order (for non-blocking connects)."""
    return _candidates(parse_address(address), socktype, passive=False)


def tune(sock: socket.socket) -> None:
    """Per-connection options: no Nagle delay, since every write is a whole frame."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_socket(
    address: AddressLike, socktype: int = socket.SOCK_STREAM, timeout: Optional[float] = None
) -> socket.socket:
    """A socket connected to the first resolved address that accepts.

    Each address is tried with ``timeout`` as socket.create_connection does;
    if none connects, the first error is raised.
    """
    errors: List[OSError] = []
    for family, type_, proto, sockaddr in candidates(address, socktype):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            tune(sock)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(exc)
    try:
        raise errors[0]
    finally:
        errors.clear()  # break the traceback reference cycle


class BoundSocket:
    """A bound socket, its real address, and ownership of a Unix socket file.

    Closing removes the file, but only if it is still the one we created
    (another server may have replaced it since).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address = Address.from_sockaddr(sock.getsockname())
        self._inode: Optional[int] = None
        if self.address.is_unix and not self.address.path.startswith("@"):  # type: ignore[union-attr]
            self._inode = os.stat(self.address.path).st_ino  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()
        if self._inode is not None:
            path, self._inode, inode = self.address.path, None, self._inode
            try:
                if os.stat(path).st_ino == inode:  # type: ignore[arg-type]
                    os.unlink(path)  # type: ignore[arg-type]
            except FileNotFoundError:
                pass


# The option that balances connections over the sockets sharing a port:
# Linux's SO_REUSEPORT does; FreeBSD's needs its _LB variant, and elsewhere
# (macOS, the other BSDs) one socket takes them all, so None.
REUSE_PORT_OPTION: Optional[int] = getattr(socket, "SO_REUSEPORT_LB", None)
if REUSE_PORT_OPTION is None and sys.platform.startswith("linux"):
    REUSE_PORT_OPTION = getattr(socket, "SO_REUSEPORT", None)


def _remove_stale_socket_file(path: str, socktype: int) -> None:
    """Unlink a socket file left by a dead server, never a live server's."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not ours to remove: bind() will say the address is in use
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socktype)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def bind_socket(
    address: AddressLike,
    socktype: int = socket.SOCK_STREAM,
    *,
    backlog: Optional[int] = None,
    reuse_address: bool = True,
    reuse_port: bool = False,
) -> BoundSocket:
    """Bind (and for streams, listen on) the first resolved address that works.

    ``reuse_port`` sets SO_REUSEPORT (SO_REUSEPORT_LB on FreeBSD), so that
    several sockets of this user share the port and the kernel spreads
    connections over those listening (framecodec.net.server.workers); TCP only.
    """
    address = parse_address(address)
    port_option = REUSE_PORT_OPTION if reuse_port else None
    if reuse_port and (port_option is None or address.is_unix):
        raise ValueError(f"reuse_port: no port sharing that balances connections for {address}")
    if address.is_unix and not address.path.startswith("@"):  # type: ignore[union-attr]
        _remove_stale_socket_file(address.path, socktype)  # type: ignore[arg-type]
    errors: List[OSError] = []
    for family, type_, proto, sockaddr in _candidates(address, socktype, passive=True):
        sock = socket.socket(family, type_, proto)
        try:
            if reuse_address and family != socket.AF_UNIX:
                # A restarted server can bind at once although old
                # connections of its predecessor linger in TIME_WAIT.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if port_option is not None:
                sock.setsockopt(socket.SOL_SOCKET, port_option, 1)
            sock.bind(sockaddr if sockaddr != "\0" else "")  # unix:@ autobinds
            if backlog is not None:
                sock.listen(backlog)
            return BoundSocket(sock)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                exc.strerror = f"{exc.strerror}: {address}"
            errors.append(exc)
    try:
        raise errors[0]
    finally:
        errors.clear()
