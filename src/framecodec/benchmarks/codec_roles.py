"""The codec on a blocking socket, as a demanding user drives it: the
framecodec rows' receiver and sender, and the same with
``checksum="crc32c"`` (the framecodec+crc rows: what checking each frame
costs)."""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, List

import framecodec

from .base import (
    BATCH_BYTES,
    BIG_FRAME,
    READ_SIZE,
    Endpoint,
    SocketReceiver,
    SocketSender,
    batches,
    ended,
    perf_counter,
    sendmsg_all,
    went_on,
)

__all__ = ["ChecksumReceiver", "ChecksumSender", "CodecReceiver", "CodecSender", "send_frames"]


def send_frames(
    payload: bytes,
    count: int,
    send_batch: Callable[[List[bytes]], None],
    send_one: Callable[[], None],
) -> None:
    """``count`` frames: small ones in batches of about BATCH_BYTES, large
    ones one at a time."""
    if len(payload) >= BIG_FRAME:
        for _ in range(count):
            send_one()
        return
    for batch in batches(payload, count, max(1, BATCH_BYTES // max(1, len(payload)))):
        send_batch(batch)


class CodecReceiver(SocketReceiver):
    options: Dict[str, Any] = {}  # format options: the checksum rows set one

    def read(self, sock: socket.socket, count: int) -> float:
        decoder = framecodec.FrameDecoder(**self.options)
        recv_into = sock.recv_into
        get_buffer = decoder.get_buffer
        buffer_updated = decoder.buffer_updated
        frames = 0
        while frames < count:
            n = recv_into(get_buffer(READ_SIZE))
            if not n:
                decoder.eof()
                raise ended(frames, count)
            frames += len(buffer_updated(n))
        end = perf_counter()
        if frames > count or decoder.buffered:
            raise went_on()
        return end


class CodecSender(SocketSender):
    options: Dict[str, Any] = {}

    def __init__(self, endpoint: Endpoint, address: str, payload: bytes) -> None:
        super().__init__(endpoint, address, payload)
        self.encoder = framecodec.FrameEncoder(**self.options)

    def send(self, count: int) -> None:
        sock = self.sock
        payload = self.payload
        encode_many = self.encoder.encode_many
        header = self.encoder.header(len(payload))
        trailer = self.encoder.trailer
        sendall = sock.sendall

        def send_batch(batch: List[bytes]) -> None:
            sendall(encode_many(batch))

        def send_one() -> None:
            buffers = [header, payload]
            if self.options:
                buffers.append(trailer(header, payload))
            sendmsg_all(sock, buffers)

        send_frames(payload, count, send_batch, send_one)


class ChecksumReceiver(CodecReceiver):
    """CodecReceiver with checksum="crc32c": what checking each frame costs."""

    options = {"checksum": "crc32c"}


class ChecksumSender(CodecSender):
    options = {"checksum": "crc32c"}
