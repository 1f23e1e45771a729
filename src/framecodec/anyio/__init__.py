"""anyio integration: framed streams and servers on asyncio and trio alike.

``pip install 'framecodec[anyio]'``.  A FramedStream wraps any anyio byte
stream (TCP, Unix, TLS, in memory) with the codec: the same protocols
("frames" with a format, or "messages"), options, limits and errors as the
blocking and asyncio layers.

Client::

    async with await connect("127.0.0.1:9000") as stream:
        reply = await stream.request(b"ping")   # send, then the next frame
        await stream.send(b"one-way")            # waits while the peer is slow
        async for frame in stream: ...           # until the peer closes

Server::

    async def handler(frame):                    # or a plain function
        return frame.upper()                     # the reply, or None for none

    async with anyio.create_task_group() as tg:
        server = await tg.start(serve, "127.0.0.1:9000", handler)
        ...
        tg.cancel_scope.cancel()                 # a graceful shutdown

Handler shapes are those of framecodec.aio.start_server: a plain or
coroutine function of one frame returning the reply (or None); with
``batch=True``, of the list of frames one read completed; with
``per_connection=True``, a coroutine function given each connection's
FramedStream.  A handler exception or a protocol error closes that
connection only, counted in ``Server.stats`` and logged on the
"framecodec.server" logger in the words of every framecodec server.

Flow control: nothing is read ahead of the receivers (see stream.py), and
a send waits while the stream does (the peer is not reading).

Reads and writes: on a plain socket that reads only when asked (every TCP
and Unix stream of connect() and serve(), on both backends: on asyncio,
sockets without an asyncio transport, see streams.py) with recv_into
straight into the decoder's buffer (get_buffer, buffer_updated) and
sock.send or sendmsg, waiting only when the socket is not ready, with each
backend's cheapest wait (sockio.py); other streams (TLS, in-memory, anyio's asyncio TCP streams made
elsewhere) through the stream and feed(), ``read_size`` bytes at most per
read, one copy per byte either way.

Cancellation: a receive() cancelled by a cancel scope loses no frame and
leaves the stream usable; a cancelled request() drops its own reply when it
comes, so later replies stay matched.
"""

from __future__ import annotations

from .connect import connect, open_byte_stream
from .server import Server, serve
from .stream import READ_SIZE, FramedStream

__all__ = [
    "READ_SIZE",
    "FramedStream",
    "Server",
    "connect",
    "open_byte_stream",
    "serve",
]
