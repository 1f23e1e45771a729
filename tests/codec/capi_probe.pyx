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
