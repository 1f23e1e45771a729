# framecodec's Cython API: ``from framecodec.codec.capi cimport ...`` (see
# docs/cython-api.md).  A FrameDecoder's frames as (pointer, length), with no
# Python object per frame; the compiled core only (the twin has no C API).
# Ships in the wheel with the declarations it needs: _codec.pxd,
# _primitives.pxd, _hton.h and _crc32c.h (on the include path: framecodec.get_include()).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from framecodec.codec._codec cimport FrameDecoder
from framecodec.codec._primitives cimport PyByteArray_AS_STRING


cdef inline int frames_received(FrameDecoder decoder, Py_ssize_t nbytes) except -1:
    # buffer_updated(nbytes) that builds no frames: pull them with next_frame.
    # Raises what buffer_updated raises for a bad call or a failed decoder.
    return decoder._c_updated(nbytes)


cdef inline int next_frame(FrameDecoder decoder, const unsigned char **data,
                           Py_ssize_t *size) except -1:
    # The next complete frame: 1 with data[0] and size[0] set, or 0 when no
    # frame is complete.  The memory is valid until the next call on the
    # decoder.  Raises what buffer_updated would (FrameTooLargeError, ...).
    cdef Py_ssize_t start = decoder._c_next()
    if start >= 0:
        data[0] = <const unsigned char *>PyByteArray_AS_STRING(decoder._buf) + start
        size[0] = decoder._c_stop - start
        return 1
    if start == -1:
        data[0] = <const unsigned char *>PyBytes_AS_STRING(decoder._c_frame)
        size[0] = PyBytes_GET_SIZE(decoder._c_frame)
        return 1
    return 0
