"""asyncio integration: ``open_connection`` and ``start_server`` on the codec.

Each connection is an ``asyncio.BufferedProtocol`` whose ``get_buffer`` is
the decoder's own ``get_buffer`` and whose ``buffer_updated`` hands the
received byte count straight to the decoder's: the event loop reads into
the decoder's memory and no intermediate ``bytes`` object is made.  The same
addresses, protocols ("frames" with a format, or "messages") and TLS
contexts as the blocking layer apply; it runs on the default event loop and
on uvloop alike.

Client::

    conn = await open_connection("127.0.0.1:9000")
    reply = await conn.request(b"ping")      # send, then the next frame
    await conn.send(b"one-way")               # waits while the peer is slow
    async for frame in conn: ...              # until the peer closes
    await conn.close()

Server::

    async def handler(frame):                 # or a plain function
        return frame.upper()                  # the reply, or None for none

    server = await start_server("127.0.0.1:9000", handler)
    print(server.address)
    await server.serve_forever()

Handler shapes: a plain or coroutine function of one frame returning the
reply (or None); with ``batch=True``, of the list of frames one read
completed, returning a list of replies; with ``per_connection=True``, a
coroutine function called once per connection with its Connection (the
same object open_connection returns), for conversations of any shape.  A
plain function runs inside the read callback (the fastest path); coroutine
handlers run one frame (or batch) at a time per connection, in order.  A
handler exception or a protocol error closes that connection only, and is
logged on the "framecodec.server" logger.

Flow control: frames waiting for ``recv()`` or for a coroutine handler
count against ``high_water`` bytes; above it the connection stops reading
(pause_reading) until the backlog falls to half.  A server connection also
stops reading while its replies wait in the transport above ``high_water``
(the peer is not reading them).  ``send`` returns once the frame is handed
to the transport, or, when the transport holds more than ``high_water``
unsent bytes, once it has drained below its low-water mark.  Those bytes
are measured after each write, so the bound holds on transports that never
call pause_writing() from writelines() (CPython 3.12.0-3.12.8 and
3.13.0-3.13.1).

Reads and writes: the loop reads up to ``read_size`` bytes per call (256
KiB unless the options say otherwise, as asyncio's own transports read)
straight into the decoder.  Frames sent in one pass of the event loop are
joined into one write at its end (at once from 64 KiB on), so a loop of
small sends costs a system call per batch, not per frame; a small mutable
buffer is copied when sent, so the caller may reuse it at once.

uvloop keeps the read buffer exported until buffer_updated returns, and the
decoder never hands over memory still viewed: there, a frame of 64 KiB or
more is delivered as a copy, which the default loop avoids.

Reconnecting: ``open_connection(address, reconnect=Backoff(...),
on_reconnect=hook)`` reconnects as framecodec.connect's client does (see
reconnecting.py): the calls in flight when the connection is lost raise
ConnectionClosed and are never sent again, the next call reconnects after
waits of asyncio.sleep, and ``hook(conn, Reconnected)`` (a plain or a
coroutine function) runs before any other call uses the new connection.

TLS: asyncio gives TLS no half-close, so a TLS peer's close_notify ends the
connection; replies to its last frames still pending in a coroutine handler
are dropped.  Plain connections stay open for those replies.  A plain
connection upgrades to TLS in place with ``await conn.start_tls(context,
server_hostname=...)``, and a server's handler by answering
``StartTLS(reply)`` (``start_server(..., starttls_context=...)``; see
starttls.py and docs/starttls.md).
"""

from __future__ import annotations

from ..net.server.endings import DEFAULT_HIGH_WATER
from .connect import open_connection
from .connection import CORK_BYTES, READ_SIZE, Connection
from .server import Server
from .start import start_server

__all__ = [
    "CORK_BYTES",
    "DEFAULT_HIGH_WATER",
    "READ_SIZE",
    "Connection",
    "Server",
    "open_connection",
    "start_server",
]
