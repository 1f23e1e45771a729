"""HTTP/2 frames written by the h2 library (an h2 client and server talking
in memory), decoded by framecodec and checked against hyperframe's reading
of the same bytes: every frame's type and length, byte-for-byte."""

from __future__ import annotations

import random

import pytest

from .refeed import check_refeed

h2_connection = pytest.importorskip("h2.connection", reason="h2 is in the test extra")
h2_config = pytest.importorskip("h2.config")
h2_events = pytest.importorskip("h2.events")
h2_settings = pytest.importorskip("h2.settings")
hyperframe = pytest.importorskip("hyperframe.frame")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# A 3-byte length of the payload, then type, flags and stream id: 6 more
# header bytes the length does not count.  Delivered whole (strip=0).
HTTP2 = {"width": 3, "length_adjustment": 6, "strip": 0}
BODIES = (0, 1, 70_000, 1_000_000)  # request bodies; each response twice as long
BIG_FRAMES = 1 << 20  # the server accepts DATA frames of up to 1 MiB


def converse():
    """(client's bytes, server's bytes) of a whole exchange."""
    rng = random.Random(14)
    client = h2_connection.H2Connection(h2_config.H2Configuration(client_side=True))
    server = h2_connection.H2Connection(h2_config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    # Effective once the client acknowledges it, before its next DATA frames.
    server.update_settings({h2_settings.SettingCodes.MAX_FRAME_SIZE: BIG_FRAMES})
    up, down = bytearray(), bytearray()
    pending = {}  # stream id -> (connection, bytes still to send, end stream)
    received = {}

    def send_some(conn, stream, data):
        pending[(id(conn), stream)] = [conn, stream, data]

    def flush(conn, out):
        out += conn.data_to_send()

    def pump_pending():
        for key, (conn, stream, data) in list(pending.items()):
            while data:
                room = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                conn.send_data(stream, data[:room], end_stream=len(data) <= room)
                data = data[room:]
            pending[key][2] = data
            if not data:
                del pending[key]

    bodies = {}
    for size in BODIES:
        stream = client.get_next_available_stream_id()
        client.send_headers(stream, [(":method", "POST"), (":path", f"/{size}"),
                                     (":scheme", "http"), (":authority", "peer")])  # fmt: skip
        body = rng.randbytes(size)
        bodies[stream] = body
        if body:
            send_some(client, stream, body)
        else:
            client.end_stream(stream)
    client.ping(b"12345678")
    for _ in range(10_000):  # bounded: the exchange needs a few hundred rounds
        pump_pending()
        chunk_up, chunk_down = client.data_to_send(), server.data_to_send()
        up += chunk_up
        down += chunk_down
        if not chunk_up and not chunk_down and not pending:
            break
        for event in server.receive_data(chunk_up):
            if isinstance(event, h2_events.DataReceived):
                received[event.stream_id] = received.get(event.stream_id, b"") + event.data
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2_events.StreamEnded):
                body = received.pop(event.stream_id, b"")
                assert body == bodies[event.stream_id]
                server.send_headers(event.stream_id, [(":status", "200")])
                send_some(server, event.stream_id, body * 2 or b"empty")
        for event in client.receive_data(chunk_down):
            if isinstance(event, h2_events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    else:
        raise AssertionError("the exchange did not settle")
    client.close_connection()
    server.close_connection()
    up += client.data_to_send()
    down += server.data_to_send()
    return bytes(up), bytes(down)


def hyperframe_frames(data):
    """(type, length) of each frame, as hyperframe reads the header."""
    frames, pos = [], 0
    while pos < len(data):
        frame, length = hyperframe.Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        frames.append((frame.type, length))
        pos += 9 + length
    assert pos == len(data)
    return frames


@pytest.fixture(scope="module")
def exchange():
    return converse()


def test_h2_streams_decoded(exchange, codec, record_property):
    up, down = exchange
    assert up.startswith(PREFACE)
    # The preface as a frame: its first byte read as a 1-byte length (docs/switching.md).
    opening = codec.FrameDecoder(width=1, length_adjustment=23 - ord("P"), strip=0)
    opening.stop_after(1)
    assert opening.feed(up) == [PREFACE]
    streams = {"client": opening.detach(), "server": down}
    assert streams["client"] == up[len(PREFACE) :]
    summary = {}
    for side, data in streams.items():
        frames = codec.FrameDecoder(**HTTP2).feed(data)
        assert b"".join(frames) == data  # byte-for-byte reassembly
        assert [(f[3], int.from_bytes(f[:3], "big")) for f in frames] == hyperframe_frames(data)
        types = {}
        for frame in frames:
            types[frame[3]] = types.get(frame[3], 0) + 1
        summary[side] = (len(frames), len(data), types)
        check_refeed(lambda: codec.FrameDecoder(**HTTP2), data, frames, seed=len(frames))
    kinds = {hyperframe.FRAMES[t].__name__ for s in summary.values() for t in s[2]}
    assert {"SettingsFrame", "HeadersFrame", "DataFrame", "WindowUpdateFrame",
            "PingFrame", "GoAwayFrame"} <= kinds  # fmt: skip
    # Large DATA frames: the server allowed 1 MiB ones, and the client used them.
    largest = max(
        int.from_bytes(f[:3], "big") for f in codec.FrameDecoder(**HTTP2).feed(streams["client"])
    )
    assert largest > 16_384
    record_property("h2", summary)
    print(f"\nh2: {summary}")
