# cython: language_level=3
"""Checksums the frames arriving on a socket with framecodec's C API.

Frames come as (pointer, length) spans of the decoder's buffer: no Python
object per frame.  The checksum folds each frame's FNV-1a hash into a
running total, so it depends on every byte and on where frames begin and
end (reference.py computes the same in Python).
"""
from framecodec.codec._codec cimport FrameDecoder
from framecodec.codec.capi cimport frames_received, next_frame


def checksum_socket(sock, FrameDecoder decoder):
    """Read ``sock`` to its end; return (frames, checksum)."""
    cdef const unsigned char *data
    cdef Py_ssize_t size, i
    cdef unsigned long long total = 0, h
    cdef Py_ssize_t frames = 0
    cdef Py_ssize_t n
    recv_into = sock.recv_into
    get_buffer = decoder.get_buffer
    while True:
        n = recv_into(get_buffer())
        if n == 0:
            decoder.eof()  # IncompleteFrameError if the stream stopped inside a frame
            return frames, total
        frames_received(decoder, n)
        while next_frame(decoder, &data, &size):
            h = 14695981039346656037ULL
            for i in range(size):
                h = (h ^ data[i]) * 1099511628211ULL
            total = total * 1000003ULL + h
            frames += 1
