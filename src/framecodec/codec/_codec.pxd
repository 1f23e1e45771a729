# C declarations for compiling _codec.py (an "augmenting .pxd"): the logic is
# in _codec.py, shared with the pure-Python twin; this file only says which
# names are C types and which primitives come from C.  Changing it must
# rebuild the extension (setup.py lists it as a dependency).
import cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

from framecodec.codec._primitives cimport (
    checked_frame,
    checksum_buffer,
    checksum_engines,
    checksum_span,
    concat,
    concat_sealed,
    fc_crc32c_copy,
    init_checksums,
    fill_buffer,
    length_packer,
    length_reader,
    load_uint,
    longest,
    new_bytes,
    new_storage,
    resize_bytearray,
    storage_frame,
    store_uint,
    write_bytes,
    write_header,
    write_sealed,
)

cdef Py_ssize_t BIG_FRAME          # frames this large are received in their own storage
cdef Py_ssize_t MIN_READ           # least room get_buffer offers without a hint
cdef Py_ssize_t FIRST_STORAGE      # a large frame's first storage, at least
cdef unsigned long long _INT32_MAX
cdef unsigned long long _ESCAPE
cdef unsigned long long _RAW_LIMIT
cdef int _HEADER                   # the phases of a decoder (see _codec.py)
cdef int _BODY
cdef int _IN_PLACE
cdef int _DISCARDING
cdef int _FAILED
cdef int _DETACHED
cdef long long _MAX_STOP_AFTER
cdef int _OVERSIZED_FAIL           # on_oversized (see _codec.py)
cdef int _OVERSIZED_DISCARD
cdef int _OVERSIZED_RAISE
cdef long long _NO_LENGTH_LIMIT


cdef object window(object exporter, Py_ssize_t start, Py_ssize_t stop)
cdef object _bytes_like(object data)
cdef Py_ssize_t _stop(Py_ssize_t position) noexcept


cdef class _FrameStorage:
    cdef readonly Py_ssize_t size       # the frame's final size
    cdef public Py_ssize_t filled       # bytes of it received so far
    cdef Py_ssize_t _exports            # live buffer exports of this object
    cdef object _data                   # bytes (compiled) or bytearray (the twin)
    cdef readonly uint32_t crc          # CRC32C of a sealed frame's header and _checked bytes
    cdef Py_ssize_t _checked            # bytes of the storage that crc covers
    cdef Py_ssize_t _sealed_end         # where the bytes a checksum covers end; 0 for none

    @cython.locals(filled=Py_ssize_t, needed=Py_ssize_t, ahead=Py_ssize_t)
    cdef Py_ssize_t room(self, Py_ssize_t wanted, bint tight=*) except -1

    cdef view(self, Py_ssize_t size)

    cdef bytes finish(self, Py_ssize_t trailer)

    cdef seal(self, uint32_t value, Py_ssize_t trailer)

    cdef received(self, Py_ssize_t nbytes)

    @cython.locals(end=Py_ssize_t)
    cdef _check(self)


cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize)


cdef inline object storage_exporter(_FrameStorage storage):
    return storage  # it exports its bytes object's memory writable (__getbuffer__)


cdef inline int fill_storage(_FrameStorage storage, const unsigned char *p, Py_ssize_t start,
                             Py_ssize_t take) except -1:
    # Copy p[start:start + take] into the storage, which room() made room
    # for, and count it received: the bytes a checksum covers are checked
    # as they are copied, in one pass where the CPU can (fc_crc32c_copy).
    # (storage._checked is storage.filled until the checksum itself.)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(storage._data) + storage.filled
    cdef Py_ssize_t checked = min(storage.filled + take, storage._sealed_end) - storage.filled
    if checked > 0:
        storage.crc = fc_crc32c_copy(storage.crc, dst, p + start, checked)
        storage._checked += checked
    else:
        checked = 0
    memcpy(dst + checked, p + start + checked, take - checked)
    storage.filled += take
    return 0


cdef inline int grow_storage(_FrameStorage storage, Py_ssize_t size) except -1:
    # Realloc the storage's bytes object, keeping its contents: for large
    # blocks realloc remaps pages instead of copying them.  _PyBytes_Resize
    # needs the only reference, so no view may be exported (the twin's
    # bytearray refuses with the same error).
    cdef PyObject *obj = <PyObject *>storage._data
    if storage._exports:
        raise BufferError("Existing exports of data: object cannot be re-sized")
    Py_INCREF(<object>obj)  # our own reference...
    storage._data = None  # ...now the only one
    if _PyBytes_Resize(&obj, size) < 0:
        return -1  # the object is gone (obj is NULL); the storage holds None
    storage._data = <object>obj  # the attribute takes a reference...
    Py_DECREF(<object>obj)  # ...and ours is dropped
    return 0


cdef class _StreamDecoder:
    cdef int _phase                 # _HEADER, _BODY, _IN_PLACE, _DISCARDING or _FAILED
    cdef bytearray _buf             # received bytes: [_pos:_end] undelivered, [_end:] spare room
    cdef Py_ssize_t _pos            # first undelivered byte in _buf
    cdef Py_ssize_t _end            # end of received bytes in _buf
    cdef Py_ssize_t _need           # bytes needed at _pos before parsing can progress
    cdef Py_ssize_t _frame_start    # bytes every frame begins with (its fixed header)
    cdef bint _exact                # after a large frame: read no further than needed
    cdef Py_ssize_t _read_size      # most room get_buffer offers without a sizehint
    cdef Py_ssize_t _read_guess     # the room it offers now, sized by the last reads
    cdef Py_ssize_t _prealloc_limit  # most a header can make us reserve up front
    cdef Py_ssize_t _hint           # the last get_buffer() size hint; 0: none
    cdef object _view               # memoryview handed out by get_buffer, released next call
    cdef Py_ssize_t _view_room      # its length, or -1 when none is outstanding
    cdef _FrameStorage _big         # _IN_PLACE: the storage the frame is received in
    cdef long long _discard_left    # _DISCARDING: bytes of the oversized frame still to drop
    cdef object _error              # _FAILED: the ProtocolError that broke this decoder
    cdef bint _busy                 # a public call is in progress (see _begin_call)
    cdef bint _c_inline             # capi.pxd's next_frame may take the next frame inline
    cdef Py_ssize_t _frames_left    # stop_after: frames still to deliver; -1 no limit, 0 stopped
    cdef bytes _big_head            # _IN_PLACE: the frame's bytes before its storage
    cdef object _oversized          # on_oversized="raise": the error this call ends with

    cdef _raise_oversized(self, list out)

    cdef _begin_call(self)

    cdef bint _between_frames(self)

    cdef _fail(self, exc, list out)

    @cython.locals(size=Py_ssize_t, pos=Py_ssize_t, take=Py_ssize_t, skip="long long",
                   big=_FrameStorage, phase=int)
    cdef _feed(self, bytes data, list out)

    @cython.locals(held=Py_ssize_t)
    cdef Py_ssize_t _room_wanted(self)

    @cython.locals(guess=Py_ssize_t)
    cdef _size_next_read(self, Py_ssize_t nbytes, Py_ssize_t offered)

    @cython.locals(held=Py_ssize_t, keep=Py_ssize_t)
    cdef _trim(self)

    cdef _append(self, bytes data, Py_ssize_t pos, Py_ssize_t size)

    cdef _reserve(self, Py_ssize_t size)

    cdef _start_big(self, const unsigned char *p, Py_ssize_t frame, Py_ssize_t start,
                    Py_ssize_t end, Py_ssize_t size, Py_ssize_t trailer)

    cdef _start_discard(self, long long left)

    cdef _end_discard(self)

    @cython.locals(skip="long long", big=_FrameStorage, first=Py_ssize_t)
    cdef _advance(self, list out)

    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1

    cdef _deliver_big(self, _FrameStorage big, bytes head, list out)

    cdef bytes _held_head(self)


cdef inline Py_ssize_t parse_received(_StreamDecoder decoder, list out) except -1:
    # Parse the buffered bytes in place; return the new position.
    return decoder._parse(decoder._buf, decoder._pos, decoder._end, out)


cdef class FrameDecoder(_StreamDecoder):
    cdef readonly object format        # the FrameFormat in force
    cdef readonly Py_ssize_t discarded  # frames dropped (on_oversized discard or raise)
    cdef readonly Py_ssize_t corrupted  # frames whose checksum did not match
    cdef Py_ssize_t _trailer           # checksum bytes after each body: 4, or 0
    cdef int _width                    # length field bytes
    cdef bint _little                  # length field is little-endian
    cdef Py_ssize_t _length_offset     # bytes before the length field
    cdef Py_ssize_t _header_size       # length_offset + width
    cdef bint _strip_header            # strip the whole header, however long
    cdef Py_ssize_t _strip             # bytes cut from each frame's front
    cdef unsigned long long _min_raw   # length fields in [_min_raw, _max_raw] take the fast path
    cdef unsigned long long _max_raw
    cdef object _unpack_length         # the twin's struct reader; None when compiled
    cdef long long _adjustment         # added to the field to give the body length
    cdef long long _max_frame_size     # largest payload accepted (after payload_offset)
    cdef long long _max_frame_length   # largest whole frame accepted
    cdef long long _payload_adjustment  # added to the field to give the payload length
    cdef int _on_oversized             # _OVERSIZED_FAIL, _DISCARD or _RAISE
    cdef bint _escape                  # multiprocessing's 0xFFFFFFFF + 8-byte length
    cdef list _c_frames                # the C API (capi.pxd): frames built as bytes, to hand out
    cdef Py_ssize_t _c_index           # the next of them
    cdef bytes _c_frame                # the frame handed out, when it is one of them
    cdef Py_ssize_t _c_stop            # the end in _buf of the frame handed out, otherwise

    @cython.locals(header_size=Py_ssize_t, frame_start=Py_ssize_t, last=Py_ssize_t,
                   offset=Py_ssize_t, width=int,
                   little=bint, strip=Py_ssize_t, head_adjust=Py_ssize_t,
                   min_raw="unsigned long long", max_raw="unsigned long long",
                   raw="unsigned long long", stop=Py_ssize_t, trailer=Py_ssize_t)
    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1

    @cython.locals(avail=Py_ssize_t, head=Py_ssize_t, body="long long", payload="long long",
                   total="long long", wire="long long", strip=Py_ssize_t)
    # Its answer may be negative (a stop, see _stop): only -1 with an exception set is an error.
    cdef Py_ssize_t _unusual_frame(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                                   unsigned long long raw, list out) except? -1

    cdef Py_ssize_t _corrupt_frame(self, Py_ssize_t stop, unsigned long long expected,
                                   unsigned long long actual, Py_ssize_t size,
                                   list out) except? -1

    @cython.locals(end=Py_ssize_t, expected="unsigned long long", actual="unsigned long long")
    cdef Py_ssize_t _corrupt_span(self, const unsigned char *p, Py_ssize_t start, Py_ssize_t stop,
                                  list out) except? -1

    cdef int _c_updated(self, Py_ssize_t nbytes) except -1

    @cython.locals(pos=Py_ssize_t, avail=Py_ssize_t, raw="unsigned long long", stop=Py_ssize_t,
                   phase=int, out=list, trailer=Py_ssize_t)
    cdef Py_ssize_t _c_next(self) except -3


cdef class FrameEncoder:
    cdef readonly object format        # the FrameFormat in force
    cdef int _width
    cdef bint _little
    cdef Py_ssize_t _length_offset
    cdef object _adjustment
    cdef object _max_frame_size
    cdef object _max_body              # the largest body within max_frame_size and max_frame_length
    cdef object _max_length            # max_frame_length, or a limit no frame reaches
    cdef bint _escape
    cdef bytes _zero_prefix            # the default prefix: length_offset zero bytes
    cdef object _field_max             # largest value the length field can hold
    cdef Py_ssize_t _plain_min         # payload sizes in [_plain_min, _plain_max] get
    cdef Py_ssize_t _plain_max         # the plain header without further checks
    cdef Py_ssize_t _plain_header_size
    cdef Py_ssize_t _trailer           # checksum bytes after each body: 4, or 0
    cdef object _pack_length           # the twin's struct packer; None when compiled
    cdef dict _header_cache            # the twin's packed headers by payload size

    cpdef bytes header(self, object length, object prefix=*)

    cpdef bytes trailer(self, object header, object payload)

    cpdef bytes encode(self, object payload, object prefix=*)

    @cython.locals(total=Py_ssize_t, pos=Py_ssize_t, size=Py_ssize_t, plain_min=Py_ssize_t,
                   plain_max=Py_ssize_t, items=list, out=bytes, start=Py_ssize_t,
                   trailer=Py_ssize_t)
    cpdef bytes encode_many(self, object payloads)

    @cython.locals(largest=Py_ssize_t, size=Py_ssize_t, items=list, buffers=list, run=list)
    cpdef list encode_vectored(self, object payloads)

    # The length field stays a Python int: its sums with the header and the
    # adjustment must not wrap (a field of 2**64 - 1 is a finding otherwise).
    @cython.locals(size=Py_ssize_t, head=Py_ssize_t, body=Py_ssize_t)
    cdef _check_frame(self, bytes frame)

    cdef bytes _seal(self, bytes frame)


cdef class MessageDecoder(_StreamDecoder):
    cdef readonly Py_ssize_t discarded  # oversized messages dropped (on_oversized discard or raise)
    cdef Py_ssize_t _max_header_size
    cdef Py_ssize_t _max_content_size
    cdef Py_ssize_t _header_content_limit  # the content limit the header parser enforces
    cdef int _on_oversized             # _OVERSIZED_FAIL, _DISCARD or _RAISE
    cdef object _header                # _BODY: the parsed JSON header whose content arrives
    cdef Py_ssize_t _content_length    # that content's length
    cdef bytes _header_raw             # _BODY, _IN_PLACE: that header's bytes (for detach)

    @cython.locals(avail=Py_ssize_t, length=Py_ssize_t, header_length=Py_ssize_t)
    cdef Py_ssize_t _parse(self, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                           list out) except -1

    @cython.locals(avail=Py_ssize_t, raising=bint)
    cdef Py_ssize_t _oversized_message(self, Py_ssize_t pos, Py_ssize_t end,
                                       Py_ssize_t length) except? -1
