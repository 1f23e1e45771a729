"""Frames exchanged with multiprocessing.connection, a peer nobody here wrote."""

import socket
import threading
from multiprocessing.connection import Connection

import pytest


@pytest.fixture
def socket_pair():
    ours, theirs = socket.socketpair()
    ours.settimeout(10)  # theirs stays blocking: Connection writes with os.write
    yield ours, Connection(theirs.detach())
    ours.close()


SIZES = [0, 1, 100, 65_535, 65_536, 300_000, 3_000_000]


def test_frames_sent_by_send_bytes_are_decoded(codec, socket_pair):
    ours, connection = socket_pair
    payloads = [bytes([n % 256]) * n for n in SIZES]

    def send_all():
        for payload in payloads:
            connection.send_bytes(payload)
        connection.close()

    sender = threading.Thread(target=send_all)
    sender.start()
    decoder = codec.FrameDecoder("multiprocessing")
    received = []
    while True:
        n = ours.recv_into(decoder.get_buffer())
        if not n:
            break
        received += decoder.buffer_updated(n)
    decoder.eof()
    sender.join(10)
    assert received == payloads


def test_frames_from_frame_encoder_are_read_by_recv_bytes(codec, socket_pair):
    ours, connection = socket_pair
    payloads = [bytes([n % 256]) * n for n in SIZES]
    encoder = codec.FrameEncoder("multiprocessing")
    received = []

    def receive_all():
        for _ in payloads:
            received.append(connection.recv_bytes())

    receiver = threading.Thread(target=receive_all)
    receiver.start()
    ours.sendall(encoder.encode_many(payloads[:4]))
    for payload in payloads[4:]:
        # Vectored: header and payload leave in one call, the payload uncopied.
        sent = ours.sendmsg([encoder.header(len(payload)), payload])
        ours.sendall(memoryview(encoder.encode(payload))[sent:])
    receiver.join(10)
    assert received == payloads
    connection.close()


def test_send_bytes_header_matches_ours(codec, socket_pair):
    ours, connection = socket_pair
    connection.send_bytes(b"abc")
    assert ours.recv(100) == codec.FrameEncoder("multiprocessing").encode(b"abc")
    connection.close()
