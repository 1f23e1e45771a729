# C versions of the primitives that _codec.py defines in Python under
# ``if not cython.compiled``; _codec.pxd cimports them under the same names.
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize


cdef extern from "Python.h":
    int PyByteArray_Resize(object bytearray, Py_ssize_t size) except -1
    char *PyByteArray_AS_STRING(object bytearray)

cdef extern from "_hton.h":
    uint64_t fc_load_uint(const unsigned char *p, int width, int little) nogil
    void fc_store_uint(unsigned char *p, uint64_t value, int width, int little) nogil

cdef extern from "_crc32c.h":
    void fc_crc32c_init() nogil
    uint32_t fc_crc32c(uint32_t value, const unsigned char *p, size_t n) nogil
    uint32_t fc_crc32c_with(int engine, uint32_t value, const unsigned char *p, size_t n) nogil
    int fc_crc32c_engines() nogil
    uint32_t fc_crc32c_append(unsigned char *frame, size_t head, const unsigned char *src,
                              size_t n) nogil
    uint32_t fc_crc32c_copy(uint32_t value, unsigned char *dst, const unsigned char *src,
                            size_t n) nogil
    uint32_t fc_crc32c_extract(unsigned char *dst, const unsigned char *frame, size_t head,
                               size_t n) nogil


cdef inline int resize_bytearray(bytearray buf, Py_ssize_t size) except -1:
    # Raises BufferError while a memoryview of buf is alive.
    return PyByteArray_Resize(buf, size)


cdef inline bytes new_bytes(Py_ssize_t size):
    # Uninitialised; filled in place before anyone else sees it.
    return PyBytes_FromStringAndSize(NULL, size)


cdef inline int fill_buffer(Py_buffer *buffer, object owner, bytes data, int flags) except -1:
    # A writable export of a bytes object that only its owner has seen yet.
    return PyBuffer_FillInfo(buffer, owner, PyBytes_AS_STRING(data), len(data), 0, flags)


cdef inline uint64_t load_uint(const unsigned char *p, Py_ssize_t pos, int width,
                               bint little) noexcept:
    return fc_load_uint(p + pos, width, little)


cdef inline bytes store_uint(uint64_t value, int width, bint little):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, width)
    fc_store_uint(<unsigned char *>PyBytes_AS_STRING(out), value, width, little)
    return out


cdef inline const char *_data_of(object data):
    # data is bytes or bytearray (see _bytes_like in _codec.py).
    if type(data) is bytes:
        return PyBytes_AS_STRING(data)
    return PyByteArray_AS_STRING(data)


cdef inline Py_ssize_t write_bytes(bytes out, Py_ssize_t pos, object data) except -1:
    # Copy data into out, which is being built, at pos; return the end.
    cdef Py_ssize_t size = len(data)
    memcpy(PyBytes_AS_STRING(out) + pos, _data_of(data), size)
    return pos + size


cdef inline Py_ssize_t write_header(bytes out, Py_ssize_t pos, Py_ssize_t header_size,
                                    uint64_t value, int width, bint little) except -1:
    # A zero prefix, then the length field; return the end.
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out) + pos
    memset(p, 0, header_size - width)
    fc_store_uint(p + header_size - width, value, width, little)
    return pos + header_size


cdef inline bytes concat(bytes head, object payload):
    # One allocation, two copies.
    cdef Py_ssize_t head_size = len(head)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head_size + len(payload))
    write_bytes(out, head_size, payload)
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(head), head_size)
    return out


cdef inline object length_reader(int width, object byteorder):
    return None  # the hot loop reads the field in place with load_uint


cdef inline object length_packer(int width, object byteorder):
    return None  # encode_many writes headers in place with write_header


cdef inline Py_ssize_t longest(list items) except -1:
    # The longest payload's length, in one C loop (the twin's max(map(len))
    # costs ~15 ns a payload).
    cdef Py_ssize_t largest = 0
    cdef Py_ssize_t size
    cdef object payload
    for payload in items:
        size = len(payload)
        if size > largest:
            largest = size
    return largest


cdef inline int init_checksums() except -1:
    # Fill the CRC32C tables and look for SSE4.2: once, at import.
    fc_crc32c_init()
    return 0


cdef inline int checksum_engines() noexcept:
    # 1 for the tables alone, 2 with the CPU's crc32 instruction, 3 with VPCLMULQDQ folding too.
    return fc_crc32c_engines()


cdef inline uint32_t checksum_span(uint32_t value, const unsigned char *p, Py_ssize_t start,
                                   Py_ssize_t stop) noexcept:
    # The CRC32C of p[start:stop], continuing from value.
    return fc_crc32c(value, p + start, stop - start)


cdef inline object checksum_buffer(int engine, uint32_t value, object data):
    # The CRC32C of any contiguous buffer (bytes, bytearray, a flat memoryview).
    cdef Py_buffer view
    cdef uint32_t crc
    if type(data) is bytes or type(data) is bytearray:
        return fc_crc32c_with(engine, value, <const unsigned char *>_data_of(data), len(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    crc = fc_crc32c_with(engine, value, <const unsigned char *>view.buf, <size_t>view.len)
    PyBuffer_Release(&view)
    return crc


cdef inline Py_ssize_t write_sealed(bytes out, Py_ssize_t start, Py_ssize_t pos,
                                    object data) except -1:
    # Copy data into out, which is being built, at pos, then the CRC32C of
    # out[start:pos] and data; return the end.  Data is read once for both
    # where the CPU can (fc_crc32c_append).
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t size = len(data)
    cdef uint32_t crc = fc_crc32c_append(p + start, pos - start,
                                         <const unsigned char *>_data_of(data), size)
    fc_store_uint(p + pos + size, crc, 4, 0)
    return pos + size + 4


cdef inline object checked_frame(const unsigned char *p, Py_ssize_t start, Py_ssize_t body,
                                 Py_ssize_t end):
    # p[body:end] as bytes if the CRC32C of p[start:end] is the 4 bytes at
    # end, None if not: the body is read once for the copy and the check
    # where the CPU can (fc_crc32c_extract).
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, end - body)
    cdef uint32_t crc = fc_crc32c_extract(<unsigned char *>PyBytes_AS_STRING(frame), p + start,
                                          body - start, end - body)
    if crc != fc_load_uint(p + end, 4, 0):
        return None
    return frame


cdef inline bytes concat_sealed(bytes head, object payload):
    # head, payload and the CRC32C of both: one allocation.
    cdef Py_ssize_t head_size = len(head)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head_size + len(payload) + 4)
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(head), head_size)
    write_sealed(out, 0, head_size, payload)
    return out


cdef inline bytes new_storage(Py_ssize_t capacity):
    # A large frame's storage is the bytes object it will be delivered as.
    return new_bytes(capacity)


cdef inline bytes storage_frame(bytes data, Py_ssize_t exports, Py_ssize_t size):
    # The storage itself, unless the caller still views it: then a copy of
    # its first size bytes (bytes() of a bytes object would be the same
    # object, not a copy).  Unviewed, it is already size bytes long.
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), size) if exports else data
