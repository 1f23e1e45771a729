"""framecodec.aio sets a plain TCP socket's receive low-water mark from its
decoder (net/lowwater.py), on both loops; TLS and Unix sockets get none."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any, List, Tuple

import pytest

import framecodec
from framecodec import FrameEncoder, aio
from framecodec.net.lowwater import MARK_CAP, MARK_FROM

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="SO_RCVLOWAT is set on Linux only"
    ),
]

ENCODER = FrameEncoder()
FRAME = ENCODER.encode(bytes(range(256)) * 1200)  # 307,204 bytes
PIECES = (50_000, 70_000, 70_000, 70_000, 40_000)  # then the last 7,204 bytes


def _mark(conn: aio.Connection) -> int:
    sock = conn._transport.get_extra_info("socket")  # type: ignore[union-attr]
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


async def _send_in_pieces(
    conn: aio.Connection, peer: Any
) -> Tuple[List[bytes], List[Tuple[int, int]]]:
    """The large frame in slow pieces, then a small one; what conn received,
    and (mark, what its decoder still needs) after each piece."""
    loop = asyncio.get_running_loop()
    receiving = asyncio.ensure_future(asyncio.gather(conn.recv(), conn.recv()))
    seen = []
    sent = 0
    for piece in PIECES:
        await loop.sock_sendall(peer, FRAME[sent : sent + piece])
        sent += piece
        await asyncio.sleep(0.01)  # read what the mark lets through, wait again
        seen.append((_mark(conn), conn._decoder.needed))
    await loop.sock_sendall(peer, FRAME[sent:] + ENCODER.encode(b"next"))
    received = list(await asyncio.wait_for(receiving, 10))
    return received, seen


def test_a_large_frame_sets_the_mark_to_its_rest_and_no_further(run: Any) -> None:
    """Never above what the frame still lacks, so a peer that sends a large
    frame slowly and then waits is never left waiting; 1 again once it is in."""

    async def main() -> Tuple[List[bytes], List[Tuple[int, int]], int]:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            host, port = listener.getsockname()
            accepting = loop.create_task(loop.sock_accept(listener))
            async with await aio.open_connection(f"{host}:{port}") as conn:
                peer, _ = await accepting
                with peer:
                    assert _mark(conn) == 1
                    received, seen = await _send_in_pieces(conn, peer)
                    return received, seen, _mark(conn)

    received, seen, after = run(main)
    assert received == [FRAME[4:], b"next"]
    assert after == 1
    for mark, needed in seen:
        assert mark == (min(needed, MARK_CAP) if needed >= MARK_FROM else 1), seen
    assert seen[0][0] > MARK_FROM  # set, with 257,204 or more bytes to come


def test_a_tls_connection_gets_no_mark(run: Any, pki: Any) -> None:
    """The kernel would count ciphertext, while plaintext may wait in the TLS layer."""

    async def main() -> Tuple[List[bytes], int]:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            host, port = listener.getsockname()
            context = framecodec.server_context(pki.cert, pki.key)
            accepted: asyncio.Future[Any] = loop.create_future()

            def serve(reader: Any, writer: Any) -> None:
                accepted.set_result(writer)

            server = await asyncio.start_server(serve, sock=listener, ssl=context)
            async with (
                server,
                await aio.open_connection(
                    f"{host}:{port}",
                    ssl_context=framecodec.client_context(pki.ca),
                    server_hostname="localhost",
                ) as conn,
            ):
                writer = await accepted
                receiving = asyncio.ensure_future(conn.recv())
                writer.write(FRAME[:100_000])
                await writer.drain()
                await asyncio.sleep(0.01)
                mark = _mark(conn)
                writer.write(FRAME[100_000:])
                frame = await asyncio.wait_for(receiving, 10)
                writer.close()
                return [frame], mark

    received, mark = run(main)
    assert received == [FRAME[4:]]
    assert mark == 1
