# framecodec's Cython API: ``from framecodec.codec.capi cimport ...`` (see
# docs/cython-api.md).  A FrameDecoder's frames as (pointer, length), with no
# Python object per frame; the compiled core only (the twin has no C API).
# Ships in the wheel with the declarations it needs: _codec.pxd,
# _primitives.pxd, _hton.h and _crc32c.h (on the include path: framecodec.get_include()).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject

from framecodec.codec._codec cimport FrameDecoder
from framecodec.codec._primitives cimport PyByteArray_AS_STRING, load_uint


cdef extern from "Python.h":
    # PyByteArray_AS_STRING of a borrowed pointer: no reference counted per frame.
    char *_capi_bytearray_data "PyByteArray_AS_STRING" (PyObject *bytearray)


cdef inline int frames_received(FrameDecoder decoder, Py_ssize_t nbytes) except -1:
    # buffer_updated(nbytes) that builds no frames: pull them with next_frame.
    # Raises what buffer_updated raises for a bad call or a failed decoder.
    return decoder._c_updated(nbytes)


cdef inline int next_frame(FrameDecoder decoder, const unsigned char **data,
                           Py_ssize_t *size) except -1:
    # The next complete frame: 1 with data[0] and size[0] set, or 0 when no
    # frame is complete.  The memory is valid until the next call on the
    # decoder.  Raises what buffer_updated would (FrameTooLargeError, ...).
    #
    # The common case runs here, compiled into the caller, with no call: an
    # ordinary frame (a length field on the hot loop's fast path) wholly
    # buffered, while the decoder's _c_inline says it is between frames with
    # no stop_after count, no frame pending as bytes and no call in
    # progress.  It makes the core's own tests (_c_next's, the hot loop's)
    # and its steps.  Everything else, about once a read, is _c_next's: the
    # frame a read split, the frame left incomplete, and the shared path of
    # buffer_updated() for the rest.
    cdef Py_ssize_t pos = decoder._pos
    cdef Py_ssize_t stop
    cdef unsigned long long raw
    cdef const unsigned char *buf
    if decoder._c_inline and decoder._end - pos >= decoder._frame_start:
        buf = <const unsigned char *>_capi_bytearray_data(<PyObject *>decoder._buf)
        raw = load_uint(buf, pos + decoder._length_offset, decoder._width, decoder._little)
        if raw <= decoder._max_raw and raw >= decoder._min_raw:
            # raw is under RAW_LENGTH_LIMIT here: no sum below can overflow.
            stop = pos + <Py_ssize_t>raw + decoder._header_size + <Py_ssize_t>decoder._adjustment
            if stop <= decoder._end:
                decoder._pos = stop
                decoder._exact = False  # as _advance: small frames follow
                data[0] = buf + pos + decoder._strip
                size[0] = stop - pos - decoder._strip
                return 1
    return _next_frame_called(decoder, data, size)


cdef inline int _next_frame_called(FrameDecoder decoder, const unsigned char **data,
                                   Py_ssize_t *size) except -1:
    # next_frame through the core's _c_next: a span of the shared buffer, a
    # frame built as bytes, or none.
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
