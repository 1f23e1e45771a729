"""TLS contexts that follow the standard advice: defaults from
``ssl.create_default_context`` for the right Purpose, TLS 1.2 at least,
certificates and host names checked.

Servers wrap each accepted socket, never the listening one, so a failed
handshake costs one connection, not the server.
"""

from __future__ import annotations

import ssl
from typing import Optional

__all__ = ["client_context", "server_context"]


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
