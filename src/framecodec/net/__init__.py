"""The blocking network layer: sockets around the sans-IO codec.

addresses (parsing and binding), tls (contexts), protocols (frames or
messages over a decoder and encoder), transport (the receive pump and the
output queue), service (a loop in a thread), client (reconnecting with
backoff), multiclient, datagram,
and server/ (``serve()`` and its backends).  Nothing here parses a byte:
the codec does.
"""

from __future__ import annotations

from .addresses import Address, parse_address
from .backoff import Backoff, Reconnected
from .client import Client, connect
from .datagram import DatagramClient, DatagramServer, serve_datagrams
from .multiclient import ClientConnection, MultiClient
from .server import Connection, ConnectionHandler, Server, StartTLS, serve
from .tls import client_context, server_context

__all__ = [
    "Address",
    "Backoff",
    "Client",
    "ClientConnection",
    "Connection",
    "ConnectionHandler",
    "DatagramClient",
    "DatagramServer",
    "MultiClient",
    "Reconnected",
    "Server",
    "StartTLS",
    "client_context",
    "connect",
    "parse_address",
    "serve",
    "serve_datagrams",
    "server_context",
]
