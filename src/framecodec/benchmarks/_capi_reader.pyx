# cython: language_level=3
"""The "framecodec C API" contender's read loop: frames pulled with capi.pxd's
next_frame as (pointer, length), no Python object per frame.  setup.py
compiles it beside the core; builds without Cython have no such row."""
from framecodec.codec._codec cimport FrameDecoder
from framecodec.codec.capi cimport frames_received, next_frame


def read_frames(sock, FrameDecoder decoder, Py_ssize_t count, Py_ssize_t read_size):
    """Read frames until ``count`` are complete; return how many (more if the
    stream held more, fewer if it ended).  Each frame's first byte is read."""
    cdef const unsigned char *data
    cdef Py_ssize_t size, n, frames = 0
    cdef unsigned long long seen = 0
    recv_into = sock.recv_into
    get_buffer = decoder.get_buffer
    while frames < count:
        n = recv_into(get_buffer(read_size))
        if n == 0:
            break
        frames_received(decoder, n)
        while next_frame(decoder, &data, &size):
            if size:
                seen += data[0]
            frames += 1
    return frames


def decode_stream(FrameDecoder decoder, stream, Py_ssize_t chunk):
    """In memory, for the instruction counts (instructions.py): ``stream``
    copied into get_buffer(chunk) views ``chunk`` bytes at a time, as the
    Python API's row brings it, and its frames pulled with next_frame;
    return how many."""
    cdef const unsigned char *data
    cdef Py_ssize_t size, n, pos = 0, end = len(stream), frames = 0
    cdef unsigned long long seen = 0
    source = memoryview(stream)
    get_buffer = decoder.get_buffer
    while pos < end:
        view = get_buffer(chunk)
        n = min(len(view), chunk, end - pos)
        view[:n] = source[pos:pos + n]
        pos += n
        frames_received(decoder, n)
        while next_frame(decoder, &data, &size):
            if size:
                seen += data[0]
            frames += 1
    return frames
