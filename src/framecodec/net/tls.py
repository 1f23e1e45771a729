"""TLS contexts that follow the standard advice: defaults from
``ssl.create_default_context`` for the right Purpose, TLS 1.2 at least,
certificates and host names checked.

Servers wrap each accepted socket, never the listening one, so a failed
handshake costs one connection, not the server.

Every blocking TLS endpoint (servers, connect(), MultiClient) sets
OP_IGNORE_UNEXPECTED_EOF on its context (see tolerate_bare_eof) and ends
its connections with close_notify (transport.close_socket).

STARTTLS (a plain connection upgraded after an exchange of frames) is
checked here for every layer: see check_starttls_input.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Callable, Dict, Optional, Sequence, Type

from ..errors import StartTLSError, TLSHandshakeError
from .addresses import Address, connect_socket

__all__ = [
    "check_starttls_input",
    "clear_openssl_errors",
    "client_context",
    "handshake_failed",
    "refused_after_handshake",
    "server_context",
    "tolerate_bare_eof",
    "wrap_accepted",
]


def server_context(
    certfile: str,
    keyfile: Optional[str] = None,
    cafile: Optional[str] = None,
    *,
    password: Optional[str] = None,
) -> ssl.SSLContext:
    """A server's context; a ``cafile`` requires clients to present a
    certificate it signed (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile, password)
    if cafile is not None:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    cafile: Optional[str] = None,
    *,
    certfile: Optional[str] = None,
    keyfile: Optional[str] = None,
    password: Optional[str] = None,
) -> ssl.SSLContext:
    """A client's context trusting ``cafile`` (else the system's CAs), with
    host name checking on; ``certfile`` is the client's own certificate for
    servers that require one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Already the defaults for SERVER_AUTH; stated because they are the point.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile, password)
    return context


def tolerate_bare_eof(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``context`` take a peer's close without close_notify as the end
    of the stream, which is how Python's reads report it anyway
    (suppress_ragged_eofs); the framing still catches a cut inside a frame.
    Without it, OpenSSL 3 answers such an end by writing an alert, and over
    a Unix socket whose peer is gone that write fails with EPIPE (seen with
    OpenSSL 3.6): the read raises BrokenPipeError instead of ending cleanly,
    and a threads server could not wake a worker by ending its input."""
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return context


def check_starttls_input(decoder: Any, undelivered: Sequence[Any] = ()) -> None:
    """Raise StartTLSError if bytes arrived in the clear past the frame that
    asked for TLS: frames completed but not delivered (``undelivered``), or
    bytes the decoder holds.  A correct peer sends nothing between that
    exchange and the handshake, so such bytes are neither dropped nor fed
    to TLS.  When this passes, the decoder sits between two frames with
    nothing buffered and carries on, unchanged, over TLS."""
    buffered: int = decoder.buffered
    if undelivered or buffered or decoder.mid_frame:
        raise StartTLSError(
            f"{len(undelivered)} frame(s) and {buffered} byte(s) arrived in the clear "
            "after the STARTTLS exchange, before the TLS handshake",
            undelivered,
            buffered=buffered,
        )


def wrap_accepted(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """``sock``, accepted by a server, wrapped for a handshake still to be done.

    A peer that resets the connection while it is being wrapped makes
    ssl.py raise from inside wrap_socket() after the new SSLSocket has
    taken over the descriptor (its probe of an unconnected socket, recv(1),
    fails with ECONNRESET).  Nothing closes that SSLSocket: it lives as long
    as the exception's traceback, which a log record may keep.  The common
    case, a reset before the wrap, is caught first while ``sock`` is still
    the caller's to close; the race after it by closing the orphan here.
    """
    sock.getpeername()  # OSError (ENOTCONN) once the peer has reset
    try:
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except OSError as exc:
        _close_orphaned_sslsocket(exc)
        raise


def _close_orphaned_sslsocket(exc: BaseException) -> None:
    """Close the SSLSocket that a failed ``SSLSocket._create`` made, found
    in the frames of ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None:
        orphan = tb.tb_frame.f_locals.get("self")
        if isinstance(orphan, ssl.SSLSocket):
            orphan.close()
            return
        tb = tb.tb_next


def _find_err_clear_error() -> Optional[Callable[[], Any]]:
    """libcrypto's ERR_clear_error, as loaded by the ssl module, if reachable."""
    try:
        import _ssl
        import ctypes
    except ImportError:  # pragma: no cover - a Python without ctypes
        return None
    for library in (getattr(_ssl, "__file__", None), None):  # the module, else the process
        try:
            function = ctypes.CDLL(library).ERR_clear_error
        except (OSError, AttributeError):
            continue
        function.restype = None
        function.argtypes = []
        return function
    return None


_err_clear_error: Any = None  # found on first use: ctypes costs an import


def clear_openssl_errors() -> None:
    """Empty this thread's OpenSSL error queue.

    CPython's ssl module leaves an entry there after some failed calls (a
    close_notify written to a vanished peer, say) and does not clear the
    queue before the next SSL_read or SSL_write (CPython gh-148594): the
    next read on any other TLS connection in this thread then fails with
    that stale error.  Called after every TLS connection is closed, so one
    connection's failure never spreads to the others a thread serves.
    """
    global _err_clear_error
    if _err_clear_error is None:
        _err_clear_error = _find_err_clear_error() or (lambda: None)
    _err_clear_error()


def connect_stream(
    target: Address, timeout: Optional[float], context: Optional[ssl.SSLContext],
    hostname: Optional[str],
) -> socket.socket:  # fmt: skip
    """A stream socket connected to ``target`` (an Address), TLS-wrapped when
    ``context`` is given: connect()'s steps, and a reconnecting client's."""
    try:
        sock = connect_socket(target, socket.SOCK_STREAM, timeout)
    except TimeoutError:
        raise TimeoutError(f"connecting to {target} timed out after {timeout} s") from None
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=hostname)
        return sock
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"TLS handshake with {target} timed out after {timeout} s") from None
    except OSError as exc:
        sock.close()
        raise handshake_failed(target, exc) from exc  # only wrap_socket does I/O here
    except BaseException:
        sock.close()
        raise


# -- a client's failed handshake: TLSHandshakeError ------------------------------

_HANDSHAKE_ERROR_TYPES: Dict[type, Type[TLSHandshakeError]] = {}


def _handshake_error_type(cause_type: type) -> Type[TLSHandshakeError]:
    """TLSHandshakeError, also of ``cause_type`` (an OSError subclass)."""
    if issubclass(cause_type, TLSHandshakeError):
        return cause_type
    kind = _HANDSHAKE_ERROR_TYPES.get(cause_type)
    if kind is None:
        kind = type(
            "TLSHandshakeError",
            (TLSHandshakeError, cause_type),
            {"__module__": TLSHandshakeError.__module__, "__doc__": TLSHandshakeError.__doc__},
        )
        _HANDSHAKE_ERROR_TYPES[cause_type] = kind
    return kind


def _why(exc: OSError) -> str:
    """What a handshake failure means, in a sentence, then ssl's own words."""
    reason = getattr(exc, "reason", None) or ""
    own = str(exc) or "no details"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate was refused: {own}"
    if isinstance(exc, (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionError, EOFError)):
        return (
            "the server closed the connection during the handshake (it may require a client"
            f" certificate, or not serve TLS here): {type(exc).__name__}: {own}"
        )
    if "CERTIFICATE_REQUIRED" in reason or "PEER_DID_NOT_RETURN" in reason:
        return f"the server requires a client certificate, and none was given ({own})"
    if "ALERT" in reason:
        return f"the server refused the handshake with an alert ({own})"
    if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return f"the server did not answer in TLS ({own})"
    return f"{type(exc).__name__}: {own}"


def handshake_failed(address: Any, exc: BaseException) -> BaseException:
    """The TLSHandshakeError to raise ``from exc`` for a client's handshake
    with ``address`` that failed with ``exc``; ``exc`` itself if it is no
    OSError (a TimeoutError keeps its own message, from the caller)."""
    if not isinstance(exc, OSError) or isinstance(exc, (TimeoutError, TLSHandshakeError)):
        return exc
    kind = _handshake_error_type(type(exc))
    error: TLSHandshakeError = (
        kind(exc.errno, exc.strerror) if exc.errno is not None else kind(str(exc))
    )
    for name in ("library", "reason", "verify_code", "verify_message"):
        if hasattr(exc, name):
            setattr(error, name, getattr(exc, name))
    error.address = address
    error.why = _why(exc)
    return error


def refused_after_handshake(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a client's first read over TLS, is the
    server's alert refusing the handshake: under TLS 1.3 the client's side
    completes first, and the server's verdict on its certificate (required,
    unknown CA...) arrives as an alert at the next read."""
    return isinstance(exc, ssl.SSLError) and "ALERT" in (getattr(exc, "reason", None) or "")
