"""Formats that deliver whole frames send whole frames: a handler (a plain
function included) returns a frame as received and it goes out as it is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import framecodec
from framecodec import FrameEncoder, MalformedHeaderError, aio
from framecodec.net.protocols import FrameProtocol

from ..net_support import TIMEOUT

pytestmark = pytest.mark.usefixtures("no_leaks")

GRPC = FrameEncoder("grpc")


def flagged(body: bytes, flag: bytes = b"\x01") -> bytes:
    return GRPC.encode(body, prefix=flag)


def test_the_protocol_knows_which_formats_deliver_whole_frames() -> None:
    assert FrameProtocol("grpc").whole_frames and FrameProtocol("postgres").whole_frames
    assert not FrameProtocol("uint32").whole_frames
    assert not FrameProtocol("postgres", strip=5).whole_frames


@pytest.mark.parametrize("batch", [False, True])
def test_a_function_handler_echoes_whole_frames(tcp: Any, backend: str, batch: bool) -> None:
    handler = (lambda frames: frames) if batch else (lambda frame: frame)
    server = tcp.serve(handler, backend=backend, batch=batch, format="grpc")
    client = tcp.connect(server, format="grpc")
    frames = [flagged(b"a"), flagged(b"", b"\x00"), flagged(bytes(70_000))]
    client.send_many(frames)
    assert [client.recv() for _ in frames] == frames
    # A body and its prefix still build a frame.
    client.send(b"body", prefix=b"\x01")
    assert client.recv() == flagged(b"body")


def test_a_frame_whose_length_disagrees_is_refused_before_sending(tcp: Any) -> None:
    server = tcp.serve(lambda frame: frame, format="grpc")
    client = tcp.connect(server, format="grpc")
    with pytest.raises(MalformedHeaderError, match="length field must match"):
        client.send(flagged(b"abc") + b"extra")
    with pytest.raises(MalformedHeaderError):
        client.send(b"abc")  # a body alone is no whole frame: send(body, prefix=...)
    assert client.request(flagged(b"still fine")) == flagged(b"still fine")


def test_a_handler_returning_a_bad_frame_closes_only_its_connection(tcp: Any) -> None:
    server = tcp.serve(lambda frame: frame + b"x" if frame[0] else frame, format="grpc")
    good = tcp.connect(server, format="grpc")
    bad = tcp.connect(server, format="grpc")
    bad.send(flagged(b"breaks"))
    with pytest.raises((ConnectionError, framecodec.ProtocolError)):
        bad.recv()
    assert good.request(flagged(b"ok", b"\x00")) == flagged(b"ok", b"\x00")


def test_aio_handlers_echo_whole_frames() -> None:
    async def handler(frame: bytes) -> bytes:
        return frame

    async def main() -> None:
        async with await aio.start_server("127.0.0.1:0", handler, format="postgres") as server:
            conn = await aio.open_connection(server.address, format="postgres")
            async with conn:
                query = FrameEncoder("postgres").encode(b"SELECT 1\x00", prefix=b"Q")
                assert await conn.request(query) == query
                assert await conn.request(b"SELECT 2\x00", prefix=b"Q") == query[:-2] + b"2\x00"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
