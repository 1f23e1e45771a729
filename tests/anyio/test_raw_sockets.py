"""FramedStream straight on a socket (recv_into the decoder, sock.send): the
path of every plain TCP and Unix stream connect() and serve() make, on both
backends.  Cancelled receives and sends, and closing under a waiting task."""

from __future__ import annotations

import contextlib
import socket
from typing import AsyncIterator, Tuple

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from framecodec import ConnectionClosed, FrameEncoder
from framecodec import anyio as fa

from .support import TIMEOUT

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaks")]

ENCODER = FrameEncoder()


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[Tuple[fa.FramedStream[bytes], socket.socket]]:
    """A FramedStream from connect(), and the plain socket at the other end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        stream = await fa.connect(f"{host}:{port}", timeout=TIMEOUT)
        async with stream:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(TIMEOUT)
                assert stream.receives_into_buffer
                yield stream, peer


async def test_a_receive_cancelled_while_waiting_loses_no_byte():
    frame = ENCODER.encode(b"a frame in two halves")
    async with connected() as (stream, peer):
        with anyio.fail_after(TIMEOUT):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.receive)
                    await wait_all_tasks_blocked()  # waiting for readability
                    peer.sendall(frame[:7])
                    while not stream.mid_frame:  # read: the half is the decoder's
                        await anyio.sleep(0)
                    await wait_all_tasks_blocked()  # waiting again, for the rest
                    scope.cancel()
            assert stream.mid_frame
            peer.sendall(frame[7:])
            assert await stream.receive() == b"a frame in two halves"


async def test_a_receive_cancelled_before_it_reads_takes_nothing():
    async with connected() as (stream, peer):
        peer.sendall(ENCODER.encode(b"one") + ENCODER.encode(b"two"))
        with anyio.fail_after(TIMEOUT):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await stream.receive()
            assert scope.cancelled_caught
            assert [await stream.receive(), await stream.receive()] == [b"one", b"two"]


async def test_a_send_cancelled_mid_frame_cuts_it_and_ends_sending():
    big = b"s" * (16 << 20)  # the largest frame: more than the socket buffers hold
    async with connected() as (stream, peer):
        with anyio.fail_after(TIMEOUT):
            with anyio.move_on_after(0.2) as scope:
                await stream.send(big)  # the peer reads nothing: it waits
            assert scope.cancelled_caught
            with pytest.raises(ConnectionClosed):
                await stream.send(b"after half a frame")

            def drain() -> int:
                total = 0
                while chunk := peer.recv(1 << 20):
                    total += len(chunk)
                return total

            # The sending side was shut: the peer sees an end inside the frame.
            received = await anyio.to_thread.run_sync(drain)
            assert 0 < received < len(big) + 4
            # Receiving goes on: the peer can still answer.
            peer.sendall(ENCODER.encode(b"still heard"))
            assert await stream.receive() == b"still heard"


async def test_closing_wakes_a_receiver_waiting_on_the_socket():
    async with connected() as (stream, _):
        outcome = []

        async def receive() -> None:
            try:
                await stream.receive()
            except ConnectionClosed as exc:
                outcome.append(exc)

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                await wait_all_tasks_blocked()
                await stream.aclose()
        assert len(outcome) == 1
