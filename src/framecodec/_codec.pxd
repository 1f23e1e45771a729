# C declarations for compiling _codec.py (an "augmenting .pxd"): the logic is
# in _codec.py, shared with the pure-Python twin; this file only says which
# names are C types and which primitives come from C.  Changing it must
# rebuild the extension (setup.py lists it as a dependency).
import cython

from framecodec._primitives cimport (
    concat,
    cut,
    load_uint,
    new_bytearray,
    resize_bytearray,
    store_uint,
)

cdef Py_ssize_t BIG_FRAME          # frames this large are received in their own storage
cdef unsigned long long _INT32_MAX
cdef unsigned long long _ESCAPE
cdef unsigned long long _RAW_LIMIT
cdef int _MESSAGE_HEAD
cdef int _MESSAGE_CONTENT


cdef object _bytes_like(object data)


cdef class _StreamDecoder:
    cdef bytearray _buf             # received bytes: [_pos:_end] undelivered, [_end:] spare room
    cdef Py_ssize_t _pos            # first undelivered byte in _buf
    cdef Py_ssize_t _end            # end of received bytes in _buf
    cdef Py_ssize_t _need           # bytes needed at _pos before parsing can progress
    cdef Py_ssize_t _read_size      # room get_buffer offers without a sizehint
    cdef Py_ssize_t _prealloc_limit # most a header can make us reserve up front
    cdef object _view               # memoryview handed out by get_buffer, released next call
    cdef Py_ssize_t _view_room      # its length, or -1 when none is outstanding
    cdef bytearray _big             # in-place storage of a large frame being received, or None
    cdef Py_ssize_t _big_filled     # bytes of it received so far
    cdef Py_ssize_t _big_size       # its final size
    cdef long long _discard_left    # bytes of an oversized frame still to drop
    cdef object _error              # the ProtocolError that broke this decoder, or None

    cdef _begin_call(self)
    cdef bint _between_frames(self)
    cdef bint _at_frame_start(self)
    cdef _reserve(self, Py_ssize_t size)
    cdef _reserve_big(self, Py_ssize_t size)
    cdef _start_big(self, const unsigned char *p, Py_ssize_t start, Py_ssize_t end,
                        Py_ssize_t size)
    cdef _advance(self, list out)
    @cython.locals(skip=Py_ssize_t)
    cdef _parse_buffered(self, list out)
    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1
    cdef _deliver_big(self, bytes data, list out)


cdef class FrameDecoder(_StreamDecoder):
    cdef readonly object format        # the FrameFormat in force
    cdef readonly Py_ssize_t discarded # oversized frames dropped (discard_oversized=True)
    cdef int _width                    # length field bytes
    cdef bint _little                  # length field is little-endian
    cdef Py_ssize_t _length_offset     # bytes before the length field
    cdef Py_ssize_t _header_size       # length_offset + width
    cdef Py_ssize_t _strip             # bytes cut from each frame's front; -1: the header
    cdef long long _adjustment         # added to the field to give the body length
    cdef long long _max_frame_size     # largest body accepted
    cdef bint _discard                 # drop oversized frames instead of raising
    cdef bint _escape                  # multiprocessing's 0xFFFFFFFF + 8-byte length

    @cython.locals(header_size=Py_ssize_t, width=int, avail=Py_ssize_t, head=Py_ssize_t,
                   raw="unsigned long long", body="long long", skip="long long",
                   total=Py_ssize_t, strip=Py_ssize_t)
    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1


cdef class FrameEncoder:
    cdef readonly object format        # the FrameFormat in force
    cdef int _width
    cdef bint _little
    cdef Py_ssize_t _length_offset
    cdef object _adjustment
    cdef object _max_frame_size
    cdef bint _escape
    cdef bytes _zero_prefix            # the default prefix: length_offset zero bytes
    cdef object _field_max             # largest value the length field can hold

    cpdef bytes header(self, object length, object prefix=*)
    cpdef bytes encode(self, object payload, object prefix=*)


cdef class MessageDecoder(_StreamDecoder):
    cdef Py_ssize_t _max_header_size
    cdef Py_ssize_t _max_content_size
    cdef int _state                    # _MESSAGE_HEAD or _MESSAGE_CONTENT
    cdef object _header                # parsed JSON header while its content arrives
    cdef Py_ssize_t _content_length    # that content's length

    @cython.locals(avail=Py_ssize_t, length=Py_ssize_t, header_length=Py_ssize_t)
    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1
