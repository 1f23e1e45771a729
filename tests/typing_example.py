"""A typed use of the public API: ``mypy --strict`` checks it (see pyproject.toml),
and test_typing_example.py runs it, so the stubs and the code agree."""

from __future__ import annotations

from typing import Any, Dict, List

import framecodec
from framecodec import (
    Client,
    Connection,
    ConnectionHandler,
    FrameDecoder,
    FrameEncoder,
    Message,
    MessageDecoder,
    MessageEncoder,
    aio,
)


def round_trip(payloads: List[bytes]) -> List[bytes]:
    encoder = FrameEncoder("uint16", max_frame_size=1000)
    decoder = FrameDecoder("uint16", max_frame_size=1000)
    wire: bytes = encoder.encode_many(payloads)
    frames: List[bytes] = []
    view: memoryview = decoder.get_buffer(len(wire))
    view[: len(wire)] = wire
    frames += decoder.buffer_updated(len(wire))
    decoder.eof()
    return frames


def messages(values: List[object]) -> List[object]:
    encoder = MessageEncoder()
    decoder = MessageDecoder(max_content_size=1 << 20)
    received: List[Message] = decoder.feed(b"".join(encoder.encode(v) for v in values))
    return [message.value for message in received]


def header_of(length: int) -> int:
    packed: bytes = framecodec.pack_uint(length, 4)
    return framecodec.unpack_uint(packed, 4)


def implementation() -> str:
    return framecodec.IMPLEMENTATION


# -- the network layers: what recv() returns follows the protocol ------------------------


def upper(frame: bytes) -> bytes:
    return frame.upper()


def frames_client(address: str) -> List[bytes]:
    """A blocking server and client of frames, options as keyword arguments."""
    with (
        framecodec.serve(address, upper, max_frame_size=1 << 16).start() as server,
        framecodec.connect(server.address, timeout=10, max_frame_size=1 << 16) as client,
    ):
        reply: bytes = client.request(b"ping")
        client.send(bytearray(b"pong"))
        client.send_many([b"a", memoryview(b"b")])
        return [reply, client.recv(), *(client.recv() for _ in range(2))]


class Counter(ConnectionHandler[Message]):
    """A handler of messages that keeps state per connection."""

    def connection_made(self, connection: Connection[Message]) -> None:
        super().connection_made(connection)
        self.seen = 0

    def frame_received(self, frame: Message) -> Dict[str, Any]:
        self.seen += 1
        return {"seen": self.seen, "echo": frame.value}


def messages_client(address: str) -> List[object]:
    """Messages: a ConnectionHandler class and a Client[Message]."""
    with framecodec.serve(address, Counter, protocol="messages").start() as server:
        client: Client[Message] = framecodec.connect(
            server.address, protocol="messages", timeout=10, max_content_size=1 << 20
        )
        with client:
            first: Message = client.request({"n": 1})
            client.send("text", content_type="text/plain")
            return [first.value, client.recv().value]


def reconnecting_client(address: str) -> List[object]:
    """A client that reconnects, with a hook typed as connect() expects."""
    seen: List[float] = []

    def note(client: Client[Any], event: framecodec.Reconnected) -> None:
        seen.append(event.elapsed)

    policy = framecodec.Backoff(initial=0.01, maximum=1.0, attempts=5, total=10.0)
    with (
        framecodec.serve(address, upper).start() as server,
        framecodec.connect(
            server.address, timeout=10, reconnect=policy, on_reconnect=note
        ) as client,
    ):
        reply: bytes = client.request(b"again")
        return [reply, client.reconnects, seen]


def batch_server(address: str) -> List[bytes]:
    """A batch handler (batch=True): the frames of one read, the replies as a list."""

    def lengths(frames: List[bytes]) -> List[bytes]:
        return [b"%d" % len(frame) for frame in frames]

    with (
        framecodec.serve(address, lengths, batch=True).start() as server,
        framecodec.connect(server.address, timeout=10) as client,
    ):
        return [client.request(b"abc")]


async def aio_round_trip(address: str) -> List[object]:
    """asyncio: a coroutine handler of frames, a per-connection handler of messages."""

    async def shout(frame: bytes) -> bytes:
        return frame.upper() + b"!"

    async def converse(conn: aio.Connection[Message]) -> None:
        async for message in conn:
            await conn.send(message)  # a Message echoed keeps its content type

    async with await aio.start_server(address, shout, high_water=1 << 20) as frames_server:
        conn: aio.Connection[bytes] = await aio.open_connection(
            frames_server.address, timeout=10, read_size=1 << 16
        )
        async with conn:
            reply: bytes = await conn.request(b"hi")
    async with (
        await aio.start_server(
            address, converse, protocol="messages", per_connection=True
        ) as messages_server,
        await aio.open_connection(
            messages_server.address, protocol="messages", timeout=10
        ) as mconn,
    ):
        echoed: Message = await mconn.request({"k": [1, 2]})
    return [reply, echoed.value]


async def aio_reconnecting(address: str) -> List[object]:
    """asyncio with reconnect: the hooks may be coroutine functions or plain ones."""
    seen: List[int] = []

    async def log_in(conn: aio.Connection[Any], event: framecodec.Reconnected) -> None:
        seen.append(event.attempts)
        await conn.request(b"login")

    def note(conn: aio.Connection[Any], event: framecodec.Reconnected) -> None:
        seen.append(event.attempts)

    policy = framecodec.Backoff(initial=0.01, maximum=1.0, attempts=5, total=10.0)
    async with await aio.start_server(address, upper) as server:
        conn: aio.Connection[bytes] = await aio.open_connection(
            server.address, timeout=10, reconnect=policy, on_reconnect=log_in
        )
        async with conn:
            reply: bytes = await conn.request(b"again")
        mconn: aio.Connection[Message] = await aio.open_connection(
            server.address, protocol="messages", reconnect=policy, on_reconnect=note
        )
        await mconn.close()
    return [reply, seen]


async def anyio_round_trip(address: str) -> List[object]:
    """anyio (asyncio or trio): serve in a task group, connect, request."""
    import anyio

    from framecodec import anyio as framed

    def reverse(frame: bytes) -> bytes:
        return frame[::-1]

    async with anyio.create_task_group() as group:
        server: framed.Server = await group.start(framed.serve, address, reverse)
        async with await framed.connect(server.address, timeout=10) as stream:
            reply: bytes = await stream.request(b"abc")
            await stream.send_many([b"x", bytearray(b"yz")])
            replies = [await stream.receive(), await stream.receive()]
            stream_type: framed.FramedStream[bytes] = stream
        group.cancel_scope.cancel()
    del stream_type
    return [reply, *replies]
