"""FramedStream on in-memory streams: the protocol, errors, cancellation."""

from __future__ import annotations

import anyio
import pytest

from framecodec import (
    ConnectionClosed,
    FrameEncoder,
    FrameTooLargeError,
    IncompleteFrameError,
    Message,
)
from framecodec import anyio as fa

from .support import TIMEOUT, memory_pair

pytestmark = pytest.mark.anyio


async def test_frames_cross_a_memory_stream_in_order():
    left, right = memory_pair()
    async with fa.FramedStream(left) as a, fa.FramedStream(right) as b:
        assert not a.receives_into_buffer  # chunks of an object stream: feed()
        with anyio.fail_after(TIMEOUT):
            await a.send(b"one")
            await a.send_many([b"two", bytearray(b"three"), b"x" * 5000])
            assert [await b.receive() for _ in range(4)] == [b"one", b"two", b"three", b"x" * 5000]


async def test_one_chunk_cut_anywhere_gives_the_same_frames():
    left, right = memory_pair()
    encoder = FrameEncoder()
    wire = b"".join(encoder.encode(bytes([n]) * n) for n in range(40))
    async with fa.FramedStream(right) as b:
        with anyio.fail_after(TIMEOUT):
            for start in range(0, len(wire), 7):
                await left.send(wire[start : start + 7])  # frames cut at every 7th byte
            assert [await b.receive() for _ in range(40)] == [bytes([n]) * n for n in range(40)]


async def test_messages_keep_their_content_type():
    left, right = memory_pair()
    async with fa.FramedStream(left, protocol="messages") as a:
        b = fa.FramedStream(right, protocol="messages")
        with anyio.fail_after(TIMEOUT):
            await a.send({"action": "search", "value": 3})
            await a.send("text")
            await a.send(Message({"content-type": "binary/x"}, b"\x00\x01"))
            first, second, third = [await b.receive() for _ in range(3)]
        assert first.value == {"action": "search", "value": 3}
        assert second.value == "text"
        assert (third.content_type, third.content) == ("binary/x", b"\x00\x01")
        await b.aclose()


async def test_async_iteration_ends_at_a_clean_close():
    left, right = memory_pair()
    b = fa.FramedStream(right)
    async with fa.FramedStream(left) as a:
        await a.send_many([b"a", b"b"])
    with anyio.fail_after(TIMEOUT):
        assert [frame async for frame in b] == [b"a", b"b"]
        with pytest.raises(ConnectionClosed):
            await b.receive()  # and again: the stream stays ended
        with pytest.raises(ConnectionClosed):
            await b.receive()
    await b.aclose()


async def test_a_peer_gone_inside_a_frame_is_an_incomplete_frame():
    left, right = memory_pair()
    b = fa.FramedStream(right)
    await left.send(FrameEncoder().encode(b"whole") + FrameEncoder().encode(b"cut short")[:-3])
    await left.aclose()
    with anyio.fail_after(TIMEOUT):
        assert await b.receive() == b"whole"  # the frames before the cut are kept
        with pytest.raises(IncompleteFrameError) as caught:
            await b.receive()
    assert caught.value.missing == 3
    await b.aclose()


@pytest.mark.parametrize("size, fails", [(100, False), (101, True)])
async def test_max_frame_size_at_and_one_past_the_limit(size, fails):
    left, right = memory_pair()
    b = fa.FramedStream(right, max_frame_size=100)
    await left.send(FrameEncoder().encode(b"k" * size))
    with anyio.fail_after(TIMEOUT):
        if fails:
            with pytest.raises(FrameTooLargeError):
                await b.receive()
            with pytest.raises(FrameTooLargeError):  # the error state stays
                await b.receive()
        else:
            assert await b.receive() == b"k" * size
    await b.aclose()
    await left.aclose()


async def test_options_are_checked_at_once():
    left, _ = memory_pair()
    with pytest.raises(TypeError):
        fa.FramedStream(left, protocol="messages", format="uint16")
    with pytest.raises(ValueError):
        fa.FramedStream(left, protocol="bogus")
    with pytest.raises(ValueError):
        fa.FramedStream(left, idle_timeout=0)


async def test_a_cancelled_receive_loses_no_frame():
    left, right = memory_pair()
    async with fa.FramedStream(left) as a, fa.FramedStream(right) as b:
        with anyio.move_on_after(0.05) as scope:
            await b.receive()  # nothing comes: cancelled while reading
        assert scope.cancelled_caught
        await a.send_many([b"first", b"second"])
        with anyio.CancelScope() as scope:
            scope.cancel()
            await b.receive()  # cancelled with frames waiting: takes none
        with anyio.fail_after(TIMEOUT):
            assert await b.receive() == b"first"
            assert await b.receive() == b"second"


async def test_a_frame_arriving_as_its_receiver_is_cancelled_stays_first():
    left, right = memory_pair()
    async with fa.FramedStream(left) as a, fa.FramedStream(right) as b:
        received = []

        async def receiver(scope: anyio.CancelScope) -> None:
            with scope:
                received.append(await b.receive())

        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(receiver, scope)
            await anyio.wait_all_tasks_blocked()
            await a.send(b"raced")
            scope.cancel()  # in the same pass as the frame's arrival
        with anyio.fail_after(TIMEOUT):
            assert received == [b"raced"] or await b.receive() == b"raced"


async def test_concurrent_receivers_each_get_one_frame():
    left, right = memory_pair()
    async with fa.FramedStream(left) as a, fa.FramedStream(right) as b:
        got = []

        async def take() -> None:
            got.append(await b.receive())

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(take)
                await anyio.wait_all_tasks_blocked()
                for n in range(5):
                    await a.send(b"%d" % n)
        assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_cancelled_request_drops_its_own_reply_only():
    left, right = memory_pair()
    async with fa.FramedStream(left) as client, fa.FramedStream(right) as peer:
        with anyio.move_on_after(0.05) as scope:
            await client.request(b"slow")
        assert scope.cancelled_caught
        with anyio.fail_after(TIMEOUT):
            assert await peer.receive() == b"slow"
            await peer.send(b"reply to slow")  # late: its requester is gone
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.request, b"next")
                assert await peer.receive() == b"next"
                await peer.send(b"reply to next")
            await peer.send(b"unsolicited")
            assert await client.receive() == b"unsolicited"


async def test_a_request_answered_by_the_next_frame():
    left, right = memory_pair()
    async with fa.FramedStream(left) as client, fa.FramedStream(right) as peer:

        async def echo() -> None:
            async for frame in peer:
                await peer.send(frame[::-1])

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(echo)
                replies = []

                async def ask(text: bytes) -> None:
                    replies.append((text, await client.request(text)))

                async with anyio.create_task_group() as askers:
                    for n in range(10):
                        askers.start_soon(ask, b"req%d" % n)
                assert all(reply == text[::-1] for text, reply in replies)
                await client.aclose()
                tg.cancel_scope.cancel()


async def test_sending_on_a_closed_stream_is_connection_closed():
    left, right = memory_pair()
    a = fa.FramedStream(left)
    await a.aclose()
    assert a.closed
    with pytest.raises(ConnectionClosed):
        await a.send(b"late")
    with pytest.raises(ConnectionClosed):
        await a.receive()
    await right.aclose()
