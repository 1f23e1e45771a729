"""Mistakes that ``mypy --strict`` must catch in code using framecodec.

Each wrong line carries ``# type: ignore[<code>]`` with the error it must
raise; mypy checks this file with ``warn_unused_ignores`` (part of strict,
see pyproject.toml), so an ignore that is no longer needed, because mypy
stopped seeing the mistake, fails the check, and so does a mistake reported
with another code.  Nothing here runs at import; test_typing_example.py calls
the functions of RAISE_TYPE_ERROR, the mistakes that are also a TypeError at
run time (raised before any connection is made).
"""

from __future__ import annotations

from typing import Any, Callable, List

import framecodec
from framecodec import Client, ConnectionHandler, Message, MultiClient, aio
from framecodec import anyio as framed

ADDRESS = "127.0.0.1:0"


def upper(frame: bytes) -> bytes:
    return frame.upper()


def describe(message: Message) -> str:
    return message.content_type


class Echo(ConnectionHandler[bytes]):
    def frame_received(self, frame: bytes) -> bytes:
        return frame


# -- also a TypeError at run time ---------------------------------------------------------


def serve_a_number() -> None:
    framecodec.serve(ADDRESS, 42)  # type: ignore[call-overload]


def connect_with_a_misspelt_protocol() -> None:
    framecodec.connect(ADDRESS, protocl="messages")  # type: ignore[call-overload]


def connect_with_a_misspelt_option() -> None:
    framecodec.connect(ADDRESS, max_frame_sise=1024)  # type: ignore[call-overload]


def frame_option_for_messages() -> None:
    framecodec.connect(ADDRESS, protocol="messages", max_frame_size=1024)  # type: ignore[call-overload]


def message_option_for_frames() -> None:
    framecodec.connect(ADDRESS, protocol="frames", max_header_size=1024)  # type: ignore[call-overload]


def format_for_messages() -> None:
    framecodec.connect(ADDRESS, protocol="messages", format="uint16")  # type: ignore[call-overload]


def reconnect_with_a_number() -> None:
    framecodec.connect(ADDRESS, reconnect=3)  # type: ignore[call-overload]


def serve_with_a_misspelt_option() -> None:
    framecodec.serve(ADDRESS, upper, max_frame_sise=1024)  # type: ignore[call-overload]


def multiclient_with_a_misspelt_protocol() -> None:
    MultiClient(protocl="messages")  # type: ignore[call-overload]


async def aio_server_of_a_number() -> None:
    await aio.start_server(ADDRESS, 42)  # type: ignore[call-overload]


async def aio_connect_with_a_misspelt_protocol() -> None:
    await aio.open_connection(ADDRESS, protocl="messages")  # type: ignore[call-overload]


async def aio_reconnect_with_a_number() -> None:
    await aio.open_connection(ADDRESS, reconnect=3)  # type: ignore[call-overload]


async def anyio_connect_with_a_misspelt_option() -> None:
    await framed.connect(ADDRESS, max_frame_sise=1024)  # type: ignore[call-overload]


async def anyio_server_of_a_number() -> None:
    await framed.serve(ADDRESS, 42)  # type: ignore[call-overload]


RAISE_TYPE_ERROR: List[Callable[[], Any]] = [
    serve_a_number,
    connect_with_a_misspelt_protocol,
    connect_with_a_misspelt_option,
    frame_option_for_messages,
    message_option_for_frames,
    format_for_messages,
    reconnect_with_a_number,
    serve_with_a_misspelt_option,
    multiclient_with_a_misspelt_protocol,
    aio_server_of_a_number,
    aio_connect_with_a_misspelt_protocol,
    aio_reconnect_with_a_number,
    anyio_connect_with_a_misspelt_option,
    anyio_server_of_a_number,
]


# -- type errors only (they would fail later, or quietly misbehave) ------------------------


def a_reconnect_hook_of_the_wrong_shape() -> None:
    # The hook takes (client, Reconnected): one that takes nothing would
    # fail only at the first reconnect.
    def log_it() -> None:
        print("reconnected")

    framecodec.connect(ADDRESS, reconnect=framecodec.Backoff(), on_reconnect=log_it)  # type: ignore[arg-type]


async def an_aio_reconnect_hook_of_the_wrong_shape() -> None:
    # aio's hook takes (connection, Reconnected) too, plain or coroutine.
    async def log_it() -> None:
        print("reconnected")

    await aio.open_connection(ADDRESS, reconnect=framecodec.Backoff(), on_reconnect=log_it)  # type: ignore[arg-type]


def frames_taken_for_messages(client: Client[bytes]) -> str:
    message: Message = client.recv()  # type: ignore[assignment]
    return message.content_type


def messages_taken_for_frames(client: Client[Message]) -> bytes:
    return client.request({"k": 1})  # type: ignore[return-value]


def iterating_frames_as_messages(client: Client[bytes]) -> List[str]:
    return [frame.content_type for frame in client]  # type: ignore[attr-defined]


def sending_text_as_a_frame(client: Client[bytes]) -> None:
    client.send("text")  # type: ignore[arg-type]


def message_option_on_a_frame(client: Client[bytes]) -> None:
    client.send(b"x", content_type="text/plain")  # type: ignore[call-arg]


def recv_into_on_messages(client: Client[Message]) -> int:
    return client.recv_into(bytearray(16))  # type: ignore[misc]


def serving_frames_to_a_message_handler() -> None:
    framecodec.serve(ADDRESS, describe)  # type: ignore[arg-type]


def replying_with_text_to_frames() -> None:
    def greet(frame: bytes) -> str:
        return "hello"

    framecodec.serve(ADDRESS, greet)  # type: ignore[arg-type]


def a_frames_handler_class_for_messages() -> None:
    framecodec.serve(ADDRESS, Echo, protocol="messages")  # type: ignore[call-overload]


def a_handler_sending_text(connection: framecodec.Connection[bytes]) -> None:
    connection.send("text")  # type: ignore[arg-type]


async def aio_frames_taken_for_messages(conn: aio.Connection[bytes]) -> str:
    reply: Message = await conn.request(b"x")  # type: ignore[assignment]
    return reply.content_type


async def aio_handler_of_frames_for_messages() -> None:
    async def shout(frame: bytes) -> bytes:
        return frame.upper()

    await aio.start_server(ADDRESS, shout, protocol="messages")  # type: ignore[call-overload]


async def aio_sending_text_as_a_frame(conn: aio.Connection[bytes]) -> None:
    await conn.send("text")  # type: ignore[arg-type]


async def anyio_messages_taken_for_frames(stream: framed.FramedStream[Message]) -> bytes:
    return await stream.receive()  # type: ignore[return-value]


async def anyio_message_option_for_frames() -> None:
    await framed.connect(ADDRESS, max_content_size=1024)  # type: ignore[call-overload]


async def anyio_sending_text_as_a_frame(stream: framed.FramedStream[bytes]) -> None:
    await stream.send("text")  # type: ignore[arg-type]


async def anyio_frames_taken_for_messages(stream: framed.FramedStream[bytes]) -> str:
    reply: Message = await stream.request(b"x")  # type: ignore[assignment]
    return reply.content_type
