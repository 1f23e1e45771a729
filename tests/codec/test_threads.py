"""One decoder and one encoder driven from 8 threads at once, on both cores.

On a free-threaded build the compiled core's calls take turns through each
object's critical section; on a GIL build a call made while another is
suspended inside the same decoder (a thread switch while MessageDecoder
parses a JSON header in Python) is refused with a RuntimeError instead of
seeing a half-updated buffer.  Either way no frame is lost, duplicated or
corrupted, and nothing crashes.  (No free-threaded CPython runs here: the
wheel workflow runs this file against the cp314t and cp315t wheels.)
"""

import sys
import threading

import pytest

from framecodec import MessageEncoder

THREADS = 8
PER_THREAD = 300


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    """Switch threads as often as CPython allows, so calls really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def _run_threads(work):
    barrier = threading.Barrier(THREADS)
    failures = []

    def run(index):
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:  # reported below, with the thread it came from
            failures.append((index, exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert not failures, failures


def _feed_until_taken(decoder, wire, refused):
    """Feed whole frames; a call refused because another is in progress
    changed nothing, so it is simply made again."""
    while True:
        try:
            return decoder.feed(wire)
        except RuntimeError as exc:
            assert "already in a call from another thread" in str(exc)
            refused.append(1)


def _payload(thread, index):
    return f"{thread}:{index};".encode() * (1 + index % 9)


def test_one_frame_decoder_fed_from_eight_threads(codec):
    decoder = codec.FrameDecoder()
    encoder = codec.FrameEncoder()
    received, refused = [], []

    def work(thread):
        for index in range(PER_THREAD):
            received.extend(
                _feed_until_taken(decoder, encoder.encode(_payload(thread, index)), refused)
            )

    _run_threads(work)
    expected = [_payload(t, i) for t in range(THREADS) for i in range(PER_THREAD)]
    assert sorted(received) == sorted(expected)
    assert not decoder.mid_frame and decoder.buffered == 0


def test_one_message_decoder_fed_from_eight_threads(codec):
    decoder = codec.MessageDecoder()
    encoder = MessageEncoder()
    received, refused = [], []

    def work(thread):
        for index in range(PER_THREAD):
            wire = encoder.encode(_payload(thread, index), headers={"from": thread})
            for message in _feed_until_taken(decoder, wire, refused):
                received.append((message.header["from"], message.content))

    _run_threads(work)
    expected = [(t, _payload(t, i)) for t in range(THREADS) for i in range(PER_THREAD)]
    assert sorted(received) == sorted(expected)
    assert not decoder.mid_frame and decoder.buffered == 0


def test_one_frame_encoder_used_from_eight_threads(codec):
    encoder = codec.FrameEncoder("postgres")
    alone = codec.FrameEncoder("postgres")
    results = {}

    def work(thread):
        mine = []
        for index in range(PER_THREAD):
            payload = _payload(thread, index)
            mine.append(
                (
                    encoder.encode(payload, prefix=b"Q"),
                    encoder.encode_many([payload, payload[:3]]),
                    b"".join(bytes(part) for part in encoder.encode_vectored([payload] * 3)),
                    encoder.header(len(payload), prefix=b"D"),
                )
            )
        results[thread] = mine

    _run_threads(work)
    for thread in range(THREADS):
        for index, got in enumerate(results[thread]):
            payload = _payload(thread, index)
            assert got == (
                alone.encode(payload, prefix=b"Q"),
                alone.encode_many([payload, payload[:3]]),
                b"".join(bytes(part) for part in alone.encode_vectored([payload] * 3)),
                alone.header(len(payload), prefix=b"D"),
            )
