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
# The http2 preset: a 3-byte length of the payload, then type, flags and
# stream id; delivered whole.  The same as FrameDecoder(width=3,
# length_adjustment=6, strip=0), checked below.
HTTP2 = {"format": "http2"}
LARGEST_FRAME = (1 << 24) - 1  # the most SETTINGS_MAX_FRAME_SIZE allows
# Request bodies (each response twice as long, sent in 16 KiB frames): the
# last makes the client send one DATA frame of the largest size allowed.
BODIES = (0, 1, 70_000, 1_000_000, LARGEST_FRAME + 10)


def converse():
    """(client's bytes, server's bytes) of a whole exchange."""
    rng = random.Random(14)
    client = h2_connection.H2Connection(h2_config.H2Configuration(client_side=True))
    server = h2_connection.H2Connection(h2_config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    # The largest frames; once the client has acknowledged that (h2 refuses
    # them until then), windows that let a whole one through.
    codes = h2_settings.SettingCodes
    server.update_settings({codes.MAX_FRAME_SIZE: LARGEST_FRAME})
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
            if isinstance(event, h2_events.SettingsAcknowledged):
                if codes.MAX_FRAME_SIZE in event.changed_settings:
                    server.update_settings({codes.INITIAL_WINDOW_SIZE: 1 << 25})
                    server.increment_flow_control_window(1 << 26)
            elif isinstance(event, h2_events.DataReceived):
                received[event.stream_id] = received.get(event.stream_id, b"") + event.data
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2_events.StreamEnded):
                body = received.pop(event.stream_id, b"")
                assert body == bodies[event.stream_id]
                server.send_headers(event.stream_id, [(":status", "200")])
                reply = body * 2 if len(body) < LARGEST_FRAME else body[:100_000]
                send_some(server, event.stream_id, reply or b"empty")
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
    # The server allowed the largest frames, and the client sent one.
    largest = max(
        int.from_bytes(f[:3], "big") for f in codec.FrameDecoder(**HTTP2).feed(streams["client"])
    )
    assert largest == LARGEST_FRAME
    # The preset is the generic options, its limit the protocol's.
    explicit = codec.FrameDecoder(width=3, length_adjustment=6, strip=0, max_frame_size=1 << 24)
    assert explicit.feed(streams["server"]) == codec.FrameDecoder("http2").feed(streams["server"])
    record_property("h2", summary)
    print(f"\nh2: {summary}")
