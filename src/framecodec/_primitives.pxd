# C versions of the primitives that _codec.py defines in Python under
# ``if not cython.compiled``; _codec.pxd cimports them under the same names.
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize


cdef extern from "Python.h":
    bytearray PyByteArray_FromStringAndSize(const char *string, Py_ssize_t size)
    int PyByteArray_Resize(object bytearray, Py_ssize_t size) except -1
    char *PyByteArray_AS_STRING(object bytearray)

cdef extern from "_hton.h":
    uint64_t fc_load_uint(const unsigned char *p, int width, int little) nogil
    void fc_store_uint(unsigned char *p, uint64_t value, int width, int little) nogil


cdef inline bytearray new_bytearray(Py_ssize_t size):
    # Uninitialised: every byte is written by a receive before it is read.
    return PyByteArray_FromStringAndSize(NULL, size)


cdef inline int resize_bytearray(bytearray buf, Py_ssize_t size) except -1:
    # Raises BufferError while a memoryview of buf is alive.
    return PyByteArray_Resize(buf, size)


cdef inline uint64_t load_uint(const unsigned char *p, Py_ssize_t pos, int width, bint little) noexcept:
    return fc_load_uint(p + pos, width, little)


cdef inline bytes store_uint(uint64_t value, int width, bint little):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, width)
    fc_store_uint(<unsigned char *>PyBytes_AS_STRING(out), value, width, little)
    return out


cdef inline bytes cut(const unsigned char *p, Py_ssize_t start, Py_ssize_t end):
    return PyBytes_FromStringAndSize(<const char *>p + start, end - start)


cdef inline bytes concat(bytes head, payload):
    # payload is bytes or bytearray (see _bytes_like); one allocation, two copies.
    cdef Py_ssize_t head_size = len(head)
    cdef Py_ssize_t size = len(payload)
    cdef const char *src = PyBytes_AS_STRING(payload) if type(payload) is bytes else PyByteArray_AS_STRING(payload)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head_size + size)
    cdef char *dst = PyBytes_AS_STRING(out)
    memcpy(dst, PyBytes_AS_STRING(head), head_size)
    memcpy(dst + head_size, src, size)
    return out
