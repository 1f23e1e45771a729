"""FramedStream straight on a socket (recv_into the decoder, sock.send): the
path of every plain TCP and Unix stream connect() and serve() make, on both
backends.  Cancelled receives and sends, closing under a waiting task, how
often the operations yield, and asyncio's registration of the socket."""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import socket
import sys
from typing import Any, AsyncIterator, List, Tuple

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import SocketAttribute

from framecodec import ConnectionClosed, FrameDecoder, FrameEncoder
from framecodec import anyio as fa
from framecodec.anyio.sockio import YIELD_EVERY
from framecodec.net.lowwater import MARK_CAP, MARK_FROM

from .support import TIMEOUT

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaks")]

ENCODER = FrameEncoder()


@contextlib.asynccontextmanager
async def connected(
    **options: Any,
) -> AsyncIterator[Tuple[fa.FramedStream[bytes], socket.socket]]:
    """A FramedStream from connect(), and the plain socket at the other end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        stream = await fa.connect(f"{host}:{port}", timeout=TIMEOUT, **options)
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


async def test_one_buffer_frames_into_a_full_socket_arrive_whole_and_in_order():
    """Frames that leave as one buffer (a small frame, a whole frame: the
    path that tries the socket with those bytes alone): when the peer lags,
    sends are taken in part or wait, and every frame still arrives whole,
    in order."""
    count = 100
    # Whole frames (strip=0: header included) leave as one buffer at any size:
    # the socket takes some of these (10 MB in all) in part.
    frames = [ENCODER.encode(b"%06d" % index + b"f" * 100_000) for index in range(count)]
    async with connected(strip=0) as (stream, peer):

        def drain() -> List[bytes]:
            decoder = FrameDecoder(strip=0)
            got: List[bytes] = []
            while len(got) < count and (chunk := peer.recv(1 << 16)):
                got.extend(decoder.feed(chunk))
            return got

        sent = 0

        async def send_all() -> None:
            nonlocal sent
            for frame in frames:
                await stream.send(frame)
                sent += 1

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                await wait_all_tasks_blocked()  # the peer reads nothing yet
                assert 0 < sent < count  # the socket filled: a send waits
                received = await anyio.to_thread.run_sync(drain)
        assert received == frames


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


async def test_small_sends_let_the_other_tasks_run_now_and_then_not_each_time():
    """A task sending small frames as fast as the socket takes them yields
    once every YIELD_EVERY sends: the other tasks still run, and the sends
    do not pay a loop pass each."""
    sends = 10 * YIELD_EVERY
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with connected() as (stream, _):
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(other)
                await anyio.lowlevel.checkpoint()  # let it start
                before = turns
                for _ in range(sends):  # a few kB: the socket takes them all at once
                    await stream.send(b"small")
                during = turns - before
                tg.cancel_scope.cancel()
    assert 1 <= during <= sends // YIELD_EVERY + 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_asyncio_the_socket_leaves_the_loop_when_unread_and_at_close():
    """The socket stays registered with the loop between waits (sockio's
    AsyncioSocketIO); the first event nobody waits for unregisters it, and so
    does closing, waiters or not: a closed descriptor left registered would
    break the next socket given its number."""
    loop = asyncio.get_running_loop()
    big = b"b" * (16 << 20)  # more than the socket buffers hold: its send waits
    outcomes = []

    async def outcome(call: Any) -> None:
        try:
            outcomes.append(await call())
        except (ConnectionClosed, anyio.ClosedResourceError) as exc:
            outcomes.append(type(exc))

    async with connected() as (stream, peer):
        fd = stream.stream.extra(SocketAttribute.raw_socket).fileno()
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome, stream.receive)
                await wait_all_tasks_blocked()  # waiting: registered
                peer.sendall(ENCODER.encode(b"one"))
            peer.sendall(ENCODER.encode(b"two"))  # nobody reads it yet
            await anyio.sleep(0.05)  # loop passes: its event comes, nobody waits
            assert not loop.remove_reader(fd)  # so it was unregistered
            assert await stream.receive() == b"two"  # registered again to read it
            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome, stream.receive)
                tg.start_soon(outcome, functools.partial(stream.send, big))
                await wait_all_tasks_blocked()  # both wait on the socket
                await stream.aclose()
    assert outcomes[0] == b"one"
    assert sorted(map(str, outcomes[1:])) == [str(ConnectionClosed)] * 2
    assert not loop.remove_reader(fd)
    assert not loop.remove_writer(fd)


async def test_a_batch_of_large_frames_leaves_vectored_and_whole_in_order():
    """send_many of large payloads goes out with sendmsg, the payloads not
    copied: more buffers than one call takes (two a frame), partial sends
    resumed where they stopped, a payload of 8-byte items sent by bytes; the
    peer gets every frame whole and in order."""
    payloads: List[Any] = [bytes([i % 251]) * (64 * 1024 + i) for i in range(600)]
    payloads.append(array.array("d", range(70_000)))
    received: List[bytes] = []

    def receive_all(peer: socket.socket) -> None:
        decoder = FrameDecoder()
        while len(received) < len(payloads):
            chunk = peer.recv(1 << 20)
            assert chunk, f"the stream ended after {len(received)} frames"
            received.extend(decoder.feed(chunk))

    async with connected() as (stream, peer):
        with anyio.fail_after(TIMEOUT * 3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, receive_all, peer)
                await stream.send_many(payloads)
    assert len(received) == len(payloads)
    assert all(got == bytes(sent) for got, sent in zip(received, payloads))


def _mark(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RCVLOWAT is set on Linux only")
async def test_a_large_frame_sets_the_low_water_mark_to_its_rest_and_no_further():
    """The mark follows decoder.needed (net/lowwater.py): the rest of the
    frame, capped, then 1 again, so a peer that sends a large frame in slow
    pieces and then waits is never left waiting for bytes it does not owe."""
    frame = ENCODER.encode(bytes(range(256)) * 1200)  # 307,204 bytes
    async with connected() as (stream, peer):
        sock = stream.stream.extra(SocketAttribute.raw_socket)
        assert _mark(sock) == 1
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                received: List[bytes] = []

                async def receive() -> None:
                    received.append(await stream.receive())
                    received.append(await stream.receive())

                tg.start_soon(receive)
                sent = 0
                seen = []  # (mark, what the decoder still needs) after each piece
                for piece in (50_000, 70_000, 70_000, 70_000, 40_000):
                    peer.sendall(frame[sent : sent + piece])
                    sent += piece
                    await anyio.sleep(0.01)  # read what the mark lets through, wait again
                    seen.append((_mark(sock), stream._decoder.needed))
                peer.sendall(frame[sent:])  # the last 7,204 bytes
                peer.sendall(ENCODER.encode(b"next"))
        assert received == [frame[4:], b"next"]
        assert _mark(sock) == 1
    # Never more than the frame lacks; the cap while it lacks more.
    for mark, needed in seen:
        assert mark == (min(needed, MARK_CAP) if needed >= MARK_FROM else 1), seen
    assert seen[0][0] > MARK_FROM  # set, with 257,204 or more bytes to come
