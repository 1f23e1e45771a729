# cython: language_level=3
"""The C API (framecodec/codec/capi.pxd) driven from Python, for test_capi.py."""
from framecodec.codec._codec cimport FrameDecoder
from framecodec.codec.capi cimport frames_received, next_frame


def pull(FrameDecoder decoder, frames=None):
    """The frames next_frame hands out now, copied into bytes (appended to
    ``frames``, which keeps those handed out before an error)."""
    cdef const unsigned char *data
    cdef Py_ssize_t size
    if frames is None:
        frames = []
    while next_frame(decoder, &data, &size):
        frames.append(data[:size])
    return frames


def received(FrameDecoder decoder, Py_ssize_t nbytes):
    return frames_received(decoder, nbytes)


def feed(FrameDecoder decoder, data, frames):
    """Bring ``data`` through get_buffer, frames_received and next_frame,
    appending the frames to ``frames``; errors propagate."""
    cdef Py_ssize_t done = 0, n
    while done < len(data):
        view = decoder.get_buffer()
        n = min(len(view), len(data) - done)
        view[:n] = data[done:done + n]
        frames_received(decoder, n)
        done += n
        pull(decoder, frames)


def feed_in_pieces(FrameDecoder decoder, data, Py_ssize_t piece, frames):
    """feed() with reads of at most ``piece`` bytes, so that frames are split
    at every kind of place (inside a header, inside a body, between frames)."""
    cdef Py_ssize_t done = 0, n
    while done < len(data):
        view = decoder.get_buffer()
        n = min(len(view), len(data) - done, piece)
        view[:n] = data[done:done + n]
        frames_received(decoder, n)
        done += n
        pull(decoder, frames)


def pull_then_stop(FrameDecoder decoder, data, Py_ssize_t first, Py_ssize_t more):
    """One read of ``data``; ``first`` frames pulled, then stop_after(more)
    with the rest still buffered, then pulled to the end: (before, after)."""
    cdef const unsigned char *p
    cdef Py_ssize_t size
    view = decoder.get_buffer(len(data))
    view[:len(data)] = data
    frames_received(decoder, len(data))
    before = []
    while len(before) < first and next_frame(decoder, &p, &size):
        before.append(p[:size])
    decoder.stop_after(more)
    return before, pull(decoder)


def span_offsets(FrameDecoder decoder, data):
    """One read of ``data``; each frame as (its pointer's offset from the
    first frame's, its size): spans of one buffer lie at increasing offsets."""
    cdef const unsigned char *p
    cdef const unsigned char *first = NULL
    cdef Py_ssize_t size
    view = decoder.get_buffer(len(data))
    view[:len(data)] = data
    frames_received(decoder, len(data))
    out = []
    while next_frame(decoder, &p, &size):
        if first == NULL:
            first = p
        out.append((p - first, size))
    return out
