"""Twisted's Int32StringReceiver against framecodec's clients and server:
random frames of 0 to 256 KiB, both ways, every one intact."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys

import pytest

import framecodec
from framecodec import aio

from .refeed import check_refeed

pytest.importorskip("twisted", reason="Twisted is in the test extra")

PEER = pathlib.Path(__file__).resolve().parent / "twisted_peer.py"
COUNT = 60
TIMEOUT = 120
sys.path.insert(0, str(PEER.parent))
from twisted_peer import payloads  # noqa: E402


@pytest.fixture
def twisted_server():
    process = subprocess.Popen(
        [sys.executable, str(PEER), "server"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())
        yield ("127.0.0.1", port)
    finally:
        process.kill()
        process.wait(TIMEOUT)
        process.stdout.close()


def test_blocking_client_to_twisted_server(twisted_server):
    frames = payloads(1, COUNT)
    with framecodec.connect(twisted_server, timeout=TIMEOUT) as client:
        assert [client.request(frame) for frame in frames] == frames
        # Pipelined: all sent, then all read back.
        for frame in frames:
            client.send(frame)
        assert [client.recv() for _ in frames] == frames


def test_aio_client_to_twisted_server(twisted_server):
    frames = payloads(2, COUNT)

    async def main():
        async with await aio.open_connection(twisted_server) as conn:
            echoed = [await conn.request(frame) for frame in frames]
            for frame in frames:
                await conn.send(frame)
            echoed += [await conn.recv() for _ in frames]
        return echoed

    assert asyncio.run(asyncio.wait_for(main(), TIMEOUT)) == frames * 2


def test_twisted_client_to_framecodec_server(tmp_path, codec):
    capture = tmp_path / "received"
    with framecodec.serve("127.0.0.1:0", lambda frame: frame).start() as server:
        port = server.address.port
        result = subprocess.run(
            [sys.executable, str(PEER), "client", str(port), "3", str(COUNT), str(capture)],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = payloads(3, COUNT)
    assert summary == {
        "ok": True, "error": None, "frames": COUNT, "bytes": sum(map(len, expected)),
    }  # fmt: skip
    # What Twisted received from framecodec's server, re-decoded in every way.
    wire = capture.read_bytes()
    assert wire == codec.FrameEncoder().encode_many(expected)
    check_refeed(lambda: codec.FrameDecoder(), wire, expected, seed=3, overhead=4)
