"""A server's plain handler answered in the loop's read callback
(framecodec.anyio.answering, asyncio) and its hand-overs to the task: the
same behaviour on both backends (trio runs the ordinary path)."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from framecodec import ConnectionClosed, FrameEncoder
from framecodec import anyio as fa

from .support import TIMEOUT, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leaks")]


def echo(frame: bytes) -> bytes:
    return frame


async def wait_for(condition) -> None:
    with anyio.fail_after(TIMEOUT):
        while not condition():
            await anyio.sleep(0.005)


async def test_replies_the_socket_cannot_take_wait_for_room_in_order():
    # The client sends far more than the kernel buffers before reading a
    # reply: the server's replies meet backpressure in mid-frame, their rest
    # sent by the task, and reading resumes in the callback after.
    count = 300
    frames = [i.to_bytes(4, "big") * 16_384 for i in range(count)]  # 64 KiB each
    async with serving(echo) as (server, _), await fa.connect(server.address) as stream:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.send_many, frames)
                await anyio.sleep(0.2)  # the server's sending side fills up
                for expected in frames:
                    assert await stream.receive() == expected
            assert await stream.request(b"after") == b"after"
    assert server.stats["network_errors"] == 0


async def test_a_burst_of_requests_is_answered_in_one_go_and_in_order():
    count = 2_000  # more reads than one callback makes (YIELD_EVERY)
    async with serving(echo) as (server, _), await fa.connect(server.address) as stream:
        with anyio.fail_after(TIMEOUT):
            await stream.send_many(b"%d" % i for i in range(count))
            for i in range(count):
                assert await stream.receive() == b"%d" % i


async def test_frames_before_a_protocol_error_are_answered_first():
    encoder = FrameEncoder()
    good = encoder.encode(b"fine")
    bad = encoder.encode(b"b" * 200)
    async with (
        serving(echo, max_frame_size=100) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        with anyio.fail_after(TIMEOUT):
            await stream.stream.send(good + good + bad)  # one write: one read
            assert await stream.receive() == b"fine"
            assert await stream.receive() == b"fine"
            with pytest.raises(ConnectionClosed):
                await stream.receive()
        await wait_for(lambda: server.stats["closed"] == 1)
    assert server.stats["protocol_errors"] == 1


async def test_a_batch_handler_that_returns_nothing_sends_nothing():
    seen = []

    def record(frames):
        seen.extend(frames)
        return [b"ack"] if frames[-1] == b"last" else None

    async with (
        serving(record, batch=True) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        with anyio.fail_after(TIMEOUT):
            for i in range(5):
                await stream.send(b"%d" % i)
            assert await stream.request(b"last") == b"ack"
    assert seen == [b"0", b"1", b"2", b"3", b"4", b"last"]


async def test_a_handler_error_after_good_answers_ends_that_connection(caplog):
    def handler(frame: bytes) -> bytes:
        if frame == b"boom":
            raise RuntimeError("the handler's bug")
        return frame

    async with serving(handler) as (server, _), await fa.connect(server.address) as stream:
        with anyio.fail_after(TIMEOUT):
            for _ in range(3):
                assert await stream.request(b"ok") == b"ok"
            await stream.send_many([b"boom", b"never"])
            with pytest.raises(ConnectionClosed):
                await stream.receive()
        await wait_for(lambda: server.stats["closed"] == 1)
    assert server.stats["handler_errors"] == 1
    assert "the handler's bug" in caplog.text


async def test_idle_timeout_counts_from_the_last_answer():
    async with (
        serving(echo, idle_timeout=0.3) as (server, _),
        await fa.connect(server.address) as stream,
    ):
        with anyio.fail_after(TIMEOUT):
            for _ in range(5):  # busy for longer than idle_timeout in all
                assert await stream.request(b"ping") == b"ping"
                await anyio.sleep(0.1)
            with pytest.raises(ConnectionClosed):
                await stream.receive()  # then idle: closed
        await wait_for(lambda: server.stats["closed"] == 1)
    assert server.stats["timeouts"] == 1


async def test_shutdown_with_clients_mid_conversation_closes_them_cleanly():
    async with serving(echo) as (server, scope), contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(await fa.connect(server.address)) for _ in range(3)
        ]
        with anyio.fail_after(TIMEOUT):
            for stream in streams:
                assert await stream.request(b"x") == b"x"
            scope.cancel()
            for stream in streams:
                with pytest.raises(ConnectionClosed):
                    await stream.receive()
    assert server.stats["clean_closes"] == 3


async def test_a_plain_handler_may_use_anyio_calls_that_need_no_task():
    # On asyncio it runs in the read callback, outside any task.
    async with anyio.create_task_group() as tg:
        ran = anyio.Event()

        async def mark() -> None:
            ran.set()

        def handler(frame: bytes) -> bytes:
            tg.start_soon(mark)
            return b"%.0f" % (anyio.current_time() * 0)

        async with serving(handler) as (server, _), await fa.connect(server.address) as stream:
            with anyio.fail_after(TIMEOUT):
                assert await stream.request(b"now") == b"0"
                await ran.wait()
