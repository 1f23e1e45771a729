"""The codec core: receive buffering, frame and message decoding, encoding.

One source, two implementations.  Run as it stands, this file is the
pure-Python twin.  setup.py also compiles this very file with Cython into an
extension module of the same name (framecodec.codec._codec), reading the C types
from the augmenting _codec.pxd beside it.  The twins cannot disagree on
behaviour because they are the same text: every limit, state transition and
error message is written once.  Where C wants a different primitive than
Python (reading an integer, cutting bytes out of a buffer), the code tests
``cython.compiled``, which Cython resolves at compile time: the extension
carries no Python-path code and the twin no C-path code.  Method bodies keep
two such branches, where speed needs them (the hot loop's length read and
encode_many's strategy); every other difference is a named primitive, given
in Python below and in C by _primitives.pxd and _codec.pxd under the same
name.  (The alternative, a separate .pyx and .py, is known to drift.)

The core never touches a socket: bytes in, frames out.
"""

from __future__ import annotations

import struct
from operator import index

try:
    import cython
except ImportError:  # the twin on a machine without Cython installed
    from . import _cython_shim as cython

from ..errors import (
    ChecksumError,
    DecoderDetachedError,
    FrameTooLargeError,
    IncompleteFrameError,
    MalformedHeaderError,
    ProtocolError,
)
from .formats import MAX_FRAME_SIZE_LIMIT, RAW_LENGTH_LIMIT, resolve_format
from .messages import (
    DEFAULT_MAX_CONTENT_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    Message,
    parse_message_header,
)

COMPILED = cython.compiled

# A frame whose delivered bytes reach this size, and which is not already
# wholly buffered, is received in a storage of its own: get_buffer() then
# hands out that storage, so the payload lands where it is delivered from
# instead of passing through the shared buffer.  Smaller frames are cut out
# of the shared buffer, which is cheaper than a storage each.
BIG_FRAME = 64 * 1024

# get_buffer() without a size hint offers room sized by how the last reads
# went, between MIN_READ and read_size, as Netty's adaptive allocator sizes
# its receive buffers: a connection that has sent a byte or two then gone
# quiet costs a small buffer, not read_size of memory held for nothing,
# while a busy stream's reads grow to read_size in a few calls.
MIN_READ = 1024
# A large frame's first storage after a hinted read, at least (see _FrameStorage).
FIRST_STORAGE = 4096

_INT32_MAX = 0x7FFFFFFF
_ESCAPE = 0xFFFFFFFF  # multiprocessing.connection: an 8-byte length follows
_RAW_LIMIT = RAW_LENGTH_LIMIT

# A decoder's phase: where in the stream its next byte falls.
_HEADER = 0  # between frames, or inside a frame's header
_BODY = 1  # the header is read; the body is being buffered
_IN_PLACE = 2  # a large body is being received in its own storage (_big)
_DISCARDING = 3  # an oversized frame's bytes are being dropped (_discard_left)
_FAILED = 4  # a protocol error ended the stream (_error); every call raises it again
_DETACHED = 5  # detach() handed the stream over; every call raises DecoderDetachedError

# stop_after(): the most frames it may be told (a bound the compiled core can hold).
_MAX_STOP_AFTER = 1 << 62

# on_oversized, as the decoders hold it.
_OVERSIZED_POLICY = {"fail": 0, "discard": 1, "raise": 2}
_OVERSIZED_FAIL = 0
_OVERSIZED_DISCARD = 1
_OVERSIZED_RAISE = 2
# max_frame_length=None: a whole-frame limit no frame reaches.
_NO_LENGTH_LIMIT = 1 << 62

if not cython.compiled:
    # Python versions of the primitives that _primitives.pxd gives in C.

    def resize_bytearray(buf, size):
        # Growing a bytearray that a live memoryview exports raises
        # BufferError, exactly as PyByteArray_Resize does in the C version.
        if size > len(buf):
            buf.extend(bytes(size - len(buf)))
        else:
            del buf[size:]

    def load_uint(p, pos, width, little):
        return int.from_bytes(p[pos : pos + width], "little" if little else "big")

    def store_uint(value, width, little):
        return value.to_bytes(width, "little" if little else "big")

    def concat(head, payload):
        return head + payload

    def length_reader(width, byteorder):
        # A struct unpack_from: twice as fast as load_uint's slice and
        # int.from_bytes.  (C reads the field in place and needs no reader.)
        code = _STRUCT_CODES.get(width)
        if code is None:  # 3 bytes: no struct code
            little = byteorder == "little"
            return lambda p, pos: (load_uint(p, pos, 3, little),)
        return struct.Struct((">" if byteorder == "big" else "<") + code).unpack_from

    def length_packer(width, byteorder):
        # A struct pack for encode_many's header cache; None for 3 bytes.
        code = _STRUCT_CODES.get(width)
        if code is None:
            return None
        return struct.Struct((">" if byteorder == "big" else "<") + code).pack

    def longest(items):
        return max(map(len, items))

    # A large frame's storage: a bytearray here, filled through its own
    # views and copied into bytes at the end (Python cannot export writable
    # memory of a bytes object); a bytes object exported in C.

    def new_storage(capacity):
        return bytearray(capacity)

    def fill_storage(storage, p, start, take):
        # Views released at once: see the tail of _crc32c_update.
        with (
            storage.view(take) as target,
            memoryview(p) as whole,
            whole[start : start + take] as piece,
        ):
            target[:] = piece
        storage.received(take)

    def grow_storage(storage, capacity):
        resize_bytearray(storage._data, capacity)

    def storage_exporter(storage):
        return storage._data

    def storage_frame(data, exports, size):
        return bytes(data)  # the twin's storage is never exported: it is size bytes long

    # CRC32C, table-driven (slicing-by-8), bit for bit what _crc32c.h computes.

    def init_checksums():
        global _CRC_TABLES
        first = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
            first.append(crc)
        tables = [first]
        for _ in range(7):
            tables.append([(crc >> 8) ^ first[crc & 0xFF] for crc in tables[-1]])
        _CRC_TABLES = tuple(tables)

    def checksum_engines():
        return 1  # the tables alone

    def _crc32c_update(crc, data):
        # crc is the raw (inverted) register; data a bytes-like object.
        t0, t1, t2, t3, t4, t5, t6, t7 = _CRC_TABLES
        words = len(data) // 8
        if words:
            # Eight bytes a step, read as one little-endian integer.
            for word in struct.unpack_from(f"<{words}Q", data):
                word ^= crc
                crc = (
                    t7[word & 0xFF]
                    ^ t6[(word >> 8) & 0xFF]
                    ^ t5[(word >> 16) & 0xFF]
                    ^ t4[(word >> 24) & 0xFF]
                    ^ t3[(word >> 32) & 0xFF]
                    ^ t2[(word >> 40) & 0xFF]
                    ^ t1[(word >> 48) & 0xFF]
                    ^ t0[word >> 56]
                )
        # The tail through a view released at once (PyPy would keep it
        # exporting the decoder's buffer until its garbage collector runs).
        with memoryview(data) as whole, whole[8 * words :] as tail:
            for byte in tail:
                crc = (crc >> 8) ^ t0[(crc ^ byte) & 0xFF]
        return crc

    def checksum_span(value, p, start, stop):
        with window(p, start, stop) as span:
            return _crc32c_update(value ^ 0xFFFFFFFF, span) ^ 0xFFFFFFFF

    def checksum_buffer(engine, value, data):
        with memoryview(data) as span:
            return _crc32c_update(value ^ 0xFFFFFFFF, span) ^ 0xFFFFFFFF

    def checked_frame(p, start, body, end):
        if checksum_span(0, p, start, end) != load_uint(p, end, 4, False):
            return None
        return p[body:end]

    def concat_sealed(head, payload):
        frame = head + payload
        return frame + store_uint(checksum_span(0, frame, 0, len(frame)), 4, False)

    def parse_received(decoder, out):
        # Parse from bytes, whose slices are bytes: one copy per call (C
        # parses the bytearray in place).  Returns the new position.
        with window(decoder._buf, decoder._pos, decoder._end) as received:
            chunk = bytes(received)
        return decoder._pos + decoder._parse(chunk, 0, len(chunk), out)

    def _compiled_only(*args):
        # Building bytes in place and exporting writable memory of them are
        # C-only; the twin's paths never reach these names.
        raise AssertionError("a compiled-only primitive was called by the pure-Python core")

    new_bytes = write_bytes = write_header = write_sealed = fill_buffer = _compiled_only

    _STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def as_bytes_view(data):
    """A flat unsigned-byte memoryview of any contiguous buffer."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def window(exporter, start, stop):
    """A view of ``exporter[start:stop]`` whose release() leaves no export
    behind: the whole-object view it is cut from is released at once.  (A
    bytearray refuses to resize while any view of it lives, and PyPy frees
    views only when its garbage collector runs: every view is released.)"""
    with memoryview(exporter) as whole:
        return whole[start:stop]


def _bytes_like(data):
    """``data`` as bytes or bytearray, copying only other buffer types."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    return as_bytes_view(data).tobytes()


init_checksums()
# Where the compiled core has several engines, tests compare them ("auto" is the
# fastest this CPU has, the one frames use).
_CHECKSUM_ENGINES = {"auto": 0, "table": 1, "sse4.2": 2, "vpclmulqdq": 3}
CHECKSUM_ENGINES = ("table", "sse4.2", "vpclmulqdq")[: checksum_engines()]


def crc32c(data, value=0):
    """The CRC32C (Castagnoli) of ``data``, any contiguous buffer: the
    checksum frames carry with ``checksum="crc32c"``.  ``value`` continues
    an earlier result, as zlib.crc32 does: ``crc32c(b, crc32c(a))`` is
    ``crc32c(a + b)``."""
    return _crc32c_using("auto", data, value)


def _crc32c_using(engine, data, value=0):
    """crc32c() computed by the named engine (one of CHECKSUM_ENGINES, or "auto")."""
    if engine not in _CHECKSUM_ENGINES or (engine != "auto" and engine not in CHECKSUM_ENGINES):
        raise ValueError(f"no CRC32C engine {engine!r} here; there are {CHECKSUM_ENGINES}")
    if type(value) is not int:
        value = index(value)  # the same TypeError from both cores
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"value must be a CRC32C, between 0 and 0xFFFFFFFF, not {value}")
    if type(data) is not bytes and type(data) is not bytearray:
        data = as_bytes_view(data)
    return checksum_buffer(_CHECKSUM_ENGINES[engine], value, data)


def _over_limits(payload, total, max_frame_size, max_frame_length):
    """The FrameTooLargeError for a frame over a limit, naming the limit."""
    if payload > max_frame_size:
        return FrameTooLargeError(
            f"frame payload of {payload} bytes exceeds max_frame_size ({max_frame_size})"
        )
    return FrameTooLargeError(
        f"frame of {total} bytes exceeds max_frame_length ({max_frame_length})"
    )


def _stop(position):
    """_unusual_frame's answer "stop parsing at ``position``": a negative
    number, which no position is, so the hot loop tells it apart with one
    comparison and reads the position back as ``-answer - 1``."""
    return -position - 1


# ---------------------------------------------------------------------------
# Receive buffering shared by both decoders


class _FrameStorage:
    """Where one large frame is received in place.

    Compiled, the storage is a bytes object, written through this object's
    buffer export and, once full, delivered as the frame itself: the
    kernel's copy into it is the only one.  (The twin uses a bytearray and
    copies it into bytes at the end: Python cannot export writable memory of
    a bytes object.)

    What a header announces is not trusted: the first reservation is at
    most prealloc_limit, and each later one at most four times what has
    arrived, so a peer that announces 16 MiB and sends nothing costs
    prealloc_limit.  Growing a bytes object means moving to a larger one (at
    most a third of the frame is copied that way, in all).  A caller that
    passes get_buffer() a size hint (a server near its memory budget, which
    reads little at a time) has reserved only what it reads: the first
    reservation is what arrived and one read more, each later one a quarter
    more than has arrived, or that read.

    Storage never moves while a view of it is alive: the bytearray refuses
    to resize and the bytes form checks its exports, both with BufferError.
    A frame still viewed when it completes is delivered as a copy, so what
    the caller holds and what the caller is given never share memory.

    A sealed frame (one ending in its checksum, see seal()) is checked as
    it arrives, each piece while it is still in the CPU's cache, rather
    than in one pass over the whole frame at the end.
    """

    def __init__(self, size, prealloc_limit):
        self.size = size
        self.filled = 0
        self._exports = 0
        capacity = min(size, prealloc_limit)
        self._data = new_storage(capacity)
        self.crc = 0
        self._checked = 0
        self._sealed_end = 0  # nothing to check

    def seal(self, value, trailer):
        """The frame ends in a ``trailer``-byte checksum of the bytes before
        it, which ``value`` (the CRC32C of the header bytes kept outside the
        storage) begins; ``crc`` covers what has arrived, then the frame."""
        self.crc = value
        self._sealed_end = self.size - trailer
        self._check()

    def received(self, nbytes):
        """``nbytes`` more were written into the storage (through view())."""
        self.filled += nbytes
        if self._sealed_end:
            self._check()

    def _check(self):
        end = min(self.filled, self._sealed_end)
        if end > self._checked:
            self.crc = checksum_span(self.crc, self._data, self._checked, end)
            self._checked = end

    def room(self, wanted, tight=False):
        """Make room for up to ``wanted`` more bytes (never past the frame); return the room.

        Growing, it reserves four times what has arrived; ``tight`` (the
        caller gave a size hint), a quarter more: see above.
        """
        filled = self.filled
        needed = min(self.size, filled + wanted)
        if needed > len(self._data):
            ahead = filled + filled // 4 if tight else 4 * filled
            # Raises BufferError while a view of the storage is alive.
            grow_storage(self, min(self.size, max(needed, ahead)))
        return len(self._data) - filled

    def view(self, size):
        """A writable view of the next ``size`` bytes to fill."""
        return window(storage_exporter(self), self.filled, self.filled + size)

    def finish(self, trailer):
        """The completed frame as bytes, less its last ``trailer`` bytes (a
        checksum): the storage itself where it can be.

        While the caller still holds a view of the storage, the frame is a
        copy, and the storage stays alive for as long as the views are.
        """
        size = self.size - trailer
        if trailer and not self._exports:
            grow_storage(self, size)  # shrinking in place: realloc keeps the block
        frame = storage_frame(self._data, self._exports, size)
        if not self._exports:
            self._data = None
        return frame

    # Py_buffer is a C type Cython knows; Python never evaluates these annotations.
    def __getbuffer__(self, buffer: cython.pointer[Py_buffer], flags: cython.int):  # noqa: F821
        fill_buffer(buffer, self, self._data, flags)
        self._exports += 1

    def __releasebuffer__(self, buffer: cython.pointer[Py_buffer]):  # noqa: F821
        self._exports -= 1


class _StreamDecoder:
    """Owns the received bytes; subclasses say where frames begin and end.

    Buffer layout: ``_buf[_pos:_end]`` holds received bytes not yet
    delivered; ``_buf[_end:]`` is spare room that get_buffer() hands out for
    ``recv_into``.  Delivered bytes are dropped from the front only when room
    is needed, and only what remains (less than one frame) is moved, so each
    received byte is moved a bounded number of times: no quadratic copying,
    which is what the tutorial's ``buf = buf[n:]`` costs on a stream of small
    frames.  Memory stays near the largest frame plus one read.  Frames of
    BIG_FRAME bytes or more are received in a _FrameStorage of their own.

    Moving and growing are both resizes of a bytearray, which CPython refuses
    with BufferError while any memoryview of it is alive; the view this
    decoder handed out is released at the next call (it is valid only until
    buffer_updated), so a BufferError means the caller kept another view of
    our memory, and it is raised instead of corrupting what they hold.
    """

    def __init__(self, read_size, prealloc_limit, frame_start):
        self._phase = _HEADER
        self._buf = bytearray()
        self._pos = 0
        self._end = 0
        self._need = frame_start
        self._frame_start = frame_start
        self._exact = False
        self._read_size = read_size
        self._read_guess = min(read_size, MIN_READ)
        self._prealloc_limit = prealloc_limit
        self._hint = 0  # the size hint of the last get_buffer(), 0 for none
        self._view = None
        self._view_room = -1
        self._big = None
        self._discard_left = 0
        self._error = None
        self._busy = False
        # The C API (capi.pxd): True only while next_frame may take the next
        # frame inline, with this one test: between frames, no stop_after
        # count, no frames pending as bytes, no call in progress.  Set by
        # the C API's calls, cleared by every public call (_begin_call).
        self._c_inline = False
        self._oversized = None
        # stop_after(): frames still to deliver; -1 when no limit is set, 0
        # once stopped (received bytes are then held, unparsed, for detach).
        self._frames_left = -1
        self._big_head = b""  # _IN_PLACE: the frame's bytes before its storage (for detach)

    # -- public API --------------------------------------------------------

    @property
    def buffered(self):
        """Bytes received but not yet delivered as part of a frame."""
        held = self._end - self._pos
        if self._big is not None:
            held += self._big.filled
        return held

    @property
    def reserved(self):
        """Bytes of memory this decoder's input takes: ``buffered``, plus
        the room a large frame's own storage has set aside beyond what has
        arrived of it (up to three times as much again).  What a server's memory
        budget counts; the shared buffer's spare room is not counted (it is
        small between frames: see _trim)."""
        held = self._end - self._pos
        if self._big is not None:
            held += len(self._big._data) if self._big._data is not None else self._big.filled
        return held

    @property
    def mid_frame(self):
        """True while a frame has begun and is not complete: part of its
        header or payload has arrived, or an oversized frame is still being
        discarded; and after a protocol error, which leaves a frame that
        never completes.  A frame deadline starts when this becomes true."""
        return not self._between_frames()

    @property
    def needed(self):
        """Bytes the frame in progress still lacks, once its header has
        said how long it is (an oversized frame's that are still to be
        dropped included); 0 between frames, inside a header, once stopped
        and after an error.  The peer must send that many before this frame
        can be delivered, so a reader may ask its kernel not to wake it for
        fewer (the network layers set SO_RCVLOWAT from it)."""
        phase = self._phase
        if self._frames_left == 0:
            return 0
        if phase == _IN_PLACE:
            return self._big.size - self._big.filled
        if phase == _BODY:
            return self._need - (self._end - self._pos)
        if phase == _DISCARDING:
            return max(self._discard_left - (self._end - self._pos), 0)
        return 0

    @property
    def stopped(self):
        """True once the frames stop_after() allowed are delivered (and after detach)."""
        return self._frames_left == 0

    def stop_after(self, frames):
        """Deliver at most ``frames`` more frames, then stop, to switch framing.

        Once the last of them is delivered, no call delivers another frame,
        even from bytes that arrived in the same feed() or read: whatever
        follows is held, unparsed, for detach().  Until then get_buffer()
        offers no more room than the next step of the next frame needs (a
        header, then the rest of the frame), so a reader never takes from
        its socket a byte past the last frame.  A frame in progress counts
        as the first.  Without it there is no limit and no cost.
        """
        with cython.critical_section(self):
            self._begin_call()
            try:
                if type(frames) is not int:
                    frames = index(frames)  # the same TypeError from both cores
                if frames < 1 or frames > _MAX_STOP_AFTER:
                    raise ValueError(
                        f"stop_after needs between 1 and {_MAX_STOP_AFTER} frames, not {frames} "
                        "(to stop now, call detach())"
                    )
                if self._frames_left == 0 and self._end > self._pos:
                    raise RuntimeError(
                        f"{type(self).__name__} stopped holding {self._end - self._pos} bytes "
                        "it has not parsed: detach() them and feed them to a new decoder"
                    )
                self._frames_left = frames
            finally:
                self._busy = False

    def detach(self):
        """Hand the stream over: every byte received and not delivered, as bytes.

        That is the bytes after the last frame delivered, including any part
        of a frame in progress (its header too, even when the frame was
        being received in place).  Afterwards every call on this decoder
        raises DecoderDetachedError.  Refused (RuntimeError) while an
        oversized frame is being discarded, whose bytes are gone.
        """
        with cython.critical_section(self):
            self._begin_call()
            try:
                if self._phase == _DISCARDING:
                    raise RuntimeError(
                        "cannot detach while an oversized frame is being discarded: "
                        f"{self._discard_left} of its bytes are still to come"
                    )
                rest = self._held_head()
                if self._phase == _IN_PLACE:
                    rest += self._big_head + bytes(self._big._data[: self._big.filled])
                rest += bytes(self._buf[self._pos : self._end])
                self._buf = bytearray()
                self._pos = self._end = 0
                self._big = None
                self._big_head = b""
                self._frames_left = 0
                self._phase = _DETACHED
                return rest
            finally:
                self._busy = False

    def feed(self, data):
        """Add received bytes; return the list of frames they completed.

        ``data`` may be bytes, bytearray, memoryview or any contiguous buffer.
        """
        with cython.critical_section(self):
            self._begin_call()
            try:
                if type(data) is not bytes:
                    data = as_bytes_view(data).tobytes()
                self._hint = 0
                out = []
                try:
                    self._feed(data, out)
                except ProtocolError as exc:
                    self._fail(exc, out)
                if self._oversized is not None:
                    self._raise_oversized(out)
                return out
            finally:
                self._busy = False

    def get_buffer(self, sizehint=-1):
        """A writable memoryview for ``sock.recv_into``; then call buffer_updated.

        While a large frame is being received, the view lies in that frame's
        own storage and never extends past the frame, so the payload lands in
        place.  Right after a large frame it covers only the next header (or
        the rest of the small frame that header begins), so that a large
        payload behind it lands in place too.  Otherwise it offers at least
        ``sizehint`` bytes of the shared buffer; with no hint, room sized by
        the last reads (up to the ``read_size`` option: see MIN_READ), and at
        least the rest of the frame in progress, up to ``read_size``.  A
        hint also bounds what a large frame's own storage reserves ahead of
        its bytes: a caller that reads little at a time holds little.  The
        view is valid until the next call on this decoder.
        """
        with cython.critical_section(self):
            self._begin_call()
            try:
                if type(sizehint) is not int:
                    sizehint = index(sizehint)  # the same TypeError from both cores
                if sizehint > MAX_FRAME_SIZE_LIMIT:
                    # Checked here so no size arithmetic below can overflow.
                    raise OverflowError(
                        f"sizehint {sizehint} is larger than any buffer this decoder makes"
                    )
                self._hint = sizehint if sizehint > 0 else 0
                if self._phase == _IN_PLACE:
                    big = self._big
                    if sizehint <= 0:
                        view = big.view(big.room(self._read_size))
                    else:
                        view = big.view(big.room(sizehint, True))
                elif self._frames_left > 0:
                    # stop_after: no further than the next step, so the socket
                    # keeps every byte past the last frame.
                    if self._phase == _DISCARDING:
                        wanted = min(self._discard_left, self._read_size)
                    else:
                        wanted = max(1, self._need - (self._end - self._pos))
                    self._reserve(wanted)
                    view = window(self._buf, self._end, self._end + wanted)
                elif self._exact and self._phase != _DISCARDING:
                    # Large frames come in runs: read up to the next one's payload
                    # and no further, or its first read would land here and be copied.
                    wanted = max(1, max(self._need, self._frame_start) - (self._end - self._pos))
                    self._reserve(wanted)
                    view = window(self._buf, self._end, self._end + wanted)
                elif sizehint > 0:
                    self._reserve(sizehint)
                    view = window(self._buf, self._end, len(self._buf))
                else:
                    self._reserve(self._room_wanted())
                    view = window(self._buf, self._end, len(self._buf))
                self._view = view
                self._view_room = len(view)
                return view
            finally:
                self._busy = False

    def buffer_updated(self, nbytes):
        """``nbytes`` were written into the last get_buffer() view; return completed frames."""
        with cython.critical_section(self):
            room = self._view_room
            self._begin_call()
            try:
                if type(nbytes) is not int:
                    nbytes = index(nbytes)  # the same TypeError from both cores
                if room < 0:
                    raise RuntimeError("buffer_updated() called without a preceding get_buffer()")
                if nbytes < 0 or nbytes > room:
                    raise ValueError(
                        f"nbytes must be between 0 and {room}, the size of the buffer given"
                    )
                out = []
                try:
                    if self._phase == _IN_PLACE:
                        self._big.received(nbytes)
                        self._advance(out)
                    else:
                        self._end += nbytes
                        self._advance(out)
                        self._size_next_read(nbytes, room)
                except ProtocolError as exc:
                    self._fail(exc, out)
                if self._oversized is not None:
                    self._raise_oversized(out)
                return out
            finally:
                self._busy = False

    def eof(self):
        """The stream ended; raise IncompleteFrameError if it stopped inside a frame."""
        with cython.critical_section(self):
            self._begin_call()
            try:
                if self._between_frames():
                    return
                if self._phase == _HEADER and self._end - self._pos >= self._need:
                    # Only an on_oversized="raise" leaves bytes that could be
                    # parsed: the frames among them are the caller's still.
                    raise RuntimeError(
                        "bytes received behind an oversized frame are not decoded yet: "
                        'call feed(b"") before eof()'
                    )
                buffered = self.buffered
                if self._phase == _IN_PLACE:
                    missing = self._big.size - self._big.filled
                elif self._phase == _DISCARDING:
                    missing = self._discard_left
                else:
                    missing = self._need - buffered
                error = IncompleteFrameError(
                    f"stream ended inside a frame: {buffered} bytes buffered, "
                    f"{missing} more needed",
                    (),
                    missing,
                    buffered,
                )
                self._fail(error, [])
            finally:
                self._busy = False

    # -- machinery ---------------------------------------------------------

    def _begin_call(self):
        """Refuse a call while another thread is inside one; raise again a
        past protocol error; release the view handed out last.  Then this
        call is in progress until the caller clears ``_busy``.

        On a free-threaded build each public method holds the decoder's
        critical section, so calls from several threads take turns.  The
        busy flag catches what that cannot: a call made while another one
        is suspended inside this decoder (a GIL switch while MessageDecoder
        parses a header in Python), which would otherwise see the buffer
        half updated.
        """
        self._c_inline = False  # whatever this call changes, capi.pxd tests nothing else
        if self._busy:
            raise RuntimeError(
                f"{type(self).__name__} is already in a call from another thread: "
                "a decoder reads one stream, one call at a time"
            )
        if self._phase == _FAILED:
            error = self._error
            raise error.again() from error
        if self._phase == _DETACHED:
            raise DecoderDetachedError(
                f"{type(self).__name__} was detached: feed its bytes to the decoder that took over"
            )
        view = self._view
        if view is not None:
            self._view = None
            self._view_room = -1
            try:
                view.release()
            except BufferError:
                pass  # the caller re-exported it; moving our memory will raise instead
        self._busy = True

    def _fail(self, exc, out):
        """Keep the frames completed before the error on it; stay failed."""
        exc.frames = out
        self._error = exc
        self._phase = _FAILED
        raise exc

    def _raise_oversized(self, out):
        """on_oversized="raise": the frame over a limit is being dropped, and
        the bytes received behind it wait for the next call; raise for it
        with the frames completed before it, and carry on afterwards."""
        error = self._oversized
        self._oversized = None
        error.frames = out
        raise error

    def _between_frames(self):
        # A stopped decoder holds bytes for detach(), not a frame of its own.
        return self._frames_left == 0 or (self._phase == _HEADER and self._end == self._pos)

    def _feed(self, data, out):
        size = len(data)
        pos = 0
        if not size:
            # Nothing new: deliver what is already received, which is a
            # whole frame only when an on_oversized="raise" stopped a call.
            self._advance(out)
        while pos < size:
            phase = self._phase
            if phase == _IN_PLACE:
                # A large frame in progress: its bytes go straight to its storage.
                big = self._big
                take = min(size - pos, big.room(size - pos))
                fill_storage(big, data, pos, take)
                pos += take
                self._advance(out)
                if self._oversized is not None:
                    break  # a bad checksum is raised for now; what follows waits
            elif phase == _DISCARDING:
                skip = min(size - pos, self._discard_left)
                self._discard_left -= skip
                pos += skip
                if not self._discard_left:
                    self._end_discard()
                    if self._oversized is not None:
                        break  # it is raised for now; what follows waits for the next call
            elif self._frames_left == 0:
                # Stopped (stop_after): hold the rest, unparsed, for detach().
                self._append(data, pos, size - pos)
                return
            elif self._end > self._pos or self._frames_left > 0:
                # Part of a frame is buffered: move over only what its next
                # step needs, so the rest of data can be parsed in place.
                # Under stop_after, every frame goes so, one step at a time,
                # so that no parse can reach past the last frame allowed.
                take = min(size - pos, max(1, self._need - (self._end - self._pos)))
                self._append(data, pos, take)
                pos += take
                self._advance(out)
                if self._oversized is not None and self._phase != _DISCARDING:
                    break
            elif size - pos < self._need:
                self._append(data, pos, size - pos)
                pos = size
            else:
                # Nothing buffered: parse in place, keep only an incomplete tail.
                # (A frame received in place or discarded takes all of data.)
                pos = self._parse(data, pos, size, out)
                if pos < size:
                    self._append(data, pos, size - pos)
                    pos = size
        if pos < size:  # an oversized frame stopped the loop
            self._append(data, pos, size - pos)

    def _room_wanted(self):
        """Room for a read with no size hint: enough that the buffer then
        holds the guess, and at least the rest of the frame in progress
        (up to read_size)."""
        held = self._end - self._pos
        return max(self._read_guess - held, min(self._need - held, self._read_size), 1)

    def _size_next_read(self, nbytes, offered):
        """After a read into the shared buffer: one that filled what was
        offered asks for four times the room next time (up to read_size);
        one that used under an eighth of it halves the room (down to
        MIN_READ), and the memory the buffer does not need is given back:
        the stream has gone quiet, and may stay so for long."""
        guess = self._read_guess
        if nbytes >= offered:
            if guess < self._read_size:
                self._read_guess = min(4 * guess, self._read_size)
        elif 8 * nbytes < offered:
            if guess > MIN_READ:
                self._read_guess = max(guess // 2, MIN_READ)
            self._trim()

    def _trim(self):
        """Shrink a buffer much larger than what it holds: a quiet
        connection keeps what it holds, not its peak.  (The next read grows
        it again, to the room the last reads asked for.)"""
        buf = self._buf
        held = self._end - self._pos
        keep = max(held, MIN_READ)
        if len(buf) <= 4 * keep:
            return
        try:
            if self._pos:
                del buf[: self._pos]
                self._end = held
                self._pos = 0
            resize_bytearray(buf, keep)
        except BufferError:
            pass  # the caller holds a view of our memory; shrink another time

    def _append(self, data, pos, size):
        """Copy ``data[pos:pos + size]`` to the end of the buffered bytes."""
        self._reserve(size)
        self._buf[self._end : self._end + size] = memoryview(data)[pos : pos + size]
        self._end += size

    def _reserve(self, size):
        """Make ``size`` bytes of spare room after ``_end``."""
        buf = self._buf
        if len(buf) - self._end >= size:
            return
        if self._pos:
            # Drop delivered bytes from the front; what moves is less than a frame.
            del buf[: self._pos]
            self._end -= self._pos
            self._pos = 0
        if len(buf) - self._end < size:
            resize_bytearray(buf, max(self._end + size, 2 * len(buf)))

    def _start_big(self, p, frame, start, end, size, trailer):
        """Receive the frame ``size`` bytes long that begins at ``p[start:end]`` in place.

        ``p[frame:start]`` is the part of the frame before what is delivered
        (the header stripped), kept for detach() and, when the frame ends in
        a ``trailer``-byte checksum (0 for none), checked with it.

        The storage reserved now is bounded by prealloc_limit whatever the
        header announced (after a hinted read, by what arrived and one read
        more); beyond that it grows only as the payload arrives.
        """
        have = end - start
        first = self._prealloc_limit
        if self._hint:  # the caller reads little at a time: see _FrameStorage
            first = min(first, max(have + self._hint, FIRST_STORAGE))
        big = _FrameStorage(size, first)
        if trailer:
            big.seal(checksum_span(0, p, frame, start), trailer)
        big.room(have)
        fill_storage(big, p, start, have)
        self._big = big
        self._big_head = p[frame:start]
        self._phase = _IN_PLACE

    def _start_discard(self, left):
        """Drop the next ``left`` bytes: the rest of an oversized frame."""
        self._discard_left = left
        self._phase = _DISCARDING

    def _end_discard(self):
        self._phase = _HEADER
        self._need = 1  # parse whatever comes next

    def _advance(self, out):
        """Deliver whatever the received bytes complete, appending to ``out``."""
        if self._frames_left == 0:
            return  # stopped (stop_after): the bytes are held for detach()
        first = len(out)
        if self._phase == _IN_PLACE:
            big = self._big
            if big.filled < big.size:
                return
            head = self._big_head
            self._big = None
            self._big_head = b""
            self._phase = _HEADER
            self._need = self._frame_start
            self._exact = True
            self._deliver_big(big, head, out)
        while self._oversized is None:  # a pending error stops the call (on_oversized="raise")
            if self._phase == _DISCARDING:
                skip = min(self._discard_left, self._end - self._pos)
                self._discard_left -= skip
                self._pos += skip
                if self._discard_left:
                    break
                self._end_discard()
            if self._end - self._pos < self._need:
                break
            delivered = len(out)
            self._pos = parse_received(self, out)
            if len(out) > delivered:
                self._exact = False  # small frames follow: back to full reads
            if self._phase != _DISCARDING:
                break
        if self._pos == self._end:
            self._pos = self._end = 0
        if self._frames_left > 0:
            # stop_after: callers bring at most one step of one frame at a
            # time, so this count cannot pass zero.
            self._frames_left -= len(out) - first

    def _parse(self, p, pos, end, out):
        """Append the frames that ``p[pos:end]`` completes; return the new position.

        ``p`` is bytes (a C pointer when compiled).  Before returning with an
        incomplete frame, set the phase (_HEADER or _BODY) and ``_need``, the
        bytes needed at that position to make progress; or start an in-place
        storage (``_start_big``) or a discard (``_start_discard``) and return
        ``end``.
        """
        raise NotImplementedError

    def _deliver_big(self, big, head, out):
        """Deliver the frame completed in ``big`` (``head``: its bytes before the storage)."""
        raise NotImplementedError

    def _held_head(self):
        """Bytes of the frame in progress that the buffer no longer holds (for detach)."""
        return b""


# ---------------------------------------------------------------------------
# Length-prefixed frames


class FrameDecoder(_StreamDecoder):
    """Splits a byte stream into length-prefixed frames (sans-IO).

    ``FrameDecoder(format=None, **options)``: ``format`` is a preset name
    (see framecodec.PRESETS) or a FrameFormat; options override it.

    A header announcing a payload over ``max_frame_size`` (or a whole frame
    over ``max_frame_length``) is oversized as soon as it is complete, before
    its payload is buffered.  ``on_oversized`` says what follows: "fail"
    raises FrameTooLargeError and the decoder stays failed; "discard"
    (``discard_oversized=True``) drops the frame's bytes as they arrive and
    goes on with the next frame; "raise" raises FrameTooLargeError for that
    frame, drops its bytes as they arrive, and goes on with the next frames
    at the next call (``feed(b"")`` delivers those already received: call
    it before ``eof()``, which raises RuntimeError until then).  The
    frames ``discard`` and ``raise`` dropped are counted in ``discarded``.

    With ``checksum="crc32c"`` every frame is followed by the CRC32C of its
    bytes, which is checked before the frame is delivered (without it).  A
    frame whose checksum does not match is never delivered: it raises
    ChecksumError, or is dropped, as ``on_oversized`` says for a frame over
    a limit; such frames are counted in ``corrupted`` (and, dropped, in
    ``discarded``).

    On a protocol error, the frames the call completed before the bad header
    ride on the exception as ``.frames``; the decoder then stays failed
    (except for on_oversized="raise", as said).
    """

    def __init__(self, format=None, **options):
        fmt = resolve_format(format, **options)
        strip = fmt.header_size if fmt.strip is None else fmt.strip
        # A frame is parsed once its length field and the bytes strip removes
        # have arrived (every frame holds both: see formats).
        frame_start = max(fmt.header_size, strip)
        _StreamDecoder.__init__(self, fmt.read_size, fmt.prealloc_limit, frame_start)
        self.format = fmt
        self.discarded = 0
        self.corrupted = 0
        self._trailer = fmt.trailer_size
        self._width = fmt.width
        self._little = fmt.byteorder == "little"
        self._length_offset = fmt.length_offset
        self._header_size = fmt.header_size
        self._strip_header = fmt.strip is None
        self._strip = strip
        self._adjustment = fmt.length_adjustment
        self._max_frame_size = fmt.max_frame_size
        self._on_oversized = _OVERSIZED_POLICY[fmt.on_oversized]
        self._escape = fmt.large_length_escape
        self._unpack_length = length_reader(fmt.width, fmt.byteorder)
        # The payload is the field plus a negative adjustment (which takes
        # back header bytes the field counts); a positive one adds header bytes.
        self._payload_adjustment = min(0, fmt.length_adjustment)
        length_limit = fmt.max_frame_length
        self._max_frame_length = _NO_LENGTH_LIMIT if length_limit is None else length_limit
        # Length fields in [_min_raw, _max_raw] give an ordinary frame; any
        # other value (negative or oversized after adjustment, the
        # multiprocessing escape) takes the slow path, _unusual_frame.  Both
        # limits are folded into _max_raw here, so the hot loop checks one.
        min_raw = max(0, -fmt.length_adjustment)
        max_raw = min(fmt.max_frame_size - self._payload_adjustment, RAW_LENGTH_LIMIT - 1)
        if length_limit is not None:
            max_raw = min(max_raw, length_limit - fmt.header_size - fmt.length_adjustment)
        if fmt.large_length_escape:
            max_raw = min(max_raw, _INT32_MAX)
        if max_raw < min_raw:  # no value is ordinary
            min_raw, max_raw = 1, 0
        self._min_raw = min_raw
        self._max_raw = max_raw
        # The C API's state (see _c_next): frames the shared path built as bytes.
        self._c_frames = None
        self._c_index = 0
        self._c_frame = None
        self._c_stop = 0

    def _parse(self, p, pos, end, out):
        # The hot loop: everything it reads is in locals, and each test is
        # the cheapest form that serves both the C and the Python build.
        header_size = self._header_size
        frame_start = self._frame_start
        last = end - frame_start  # the last position where a header (and strip) fits
        offset = self._length_offset
        width = self._width
        little = self._little
        strip = self._strip
        trailer = self._trailer
        head_adjust = header_size + self._adjustment + trailer
        min_raw = self._min_raw
        max_raw = self._max_raw
        unpack = self._unpack_length
        while True:
            if pos > last:
                self._phase = _HEADER
                self._need = frame_start
                return pos
            if cython.compiled:
                raw = load_uint(p, pos + offset, width, little)
            else:
                raw = unpack(p, pos + offset)[0]
            if raw > max_raw or raw < min_raw:
                pos = self._unusual_frame(p, pos, end, raw, out)
                if pos < 0:  # parsing stops here: see _stop
                    return -pos - 1
                continue
            stop = pos + raw + head_adjust  # where this frame ends, checksum included
            if stop > end:
                if stop - pos - strip >= BIG_FRAME:
                    self._start_big(p, pos, pos + strip, end, stop - pos - strip, trailer)
                    return end
                # The header stays buffered and is read again when the body is
                # complete: cheaper than remembering what it said.
                self._phase = _BODY
                self._need = stop - pos
                return pos
            if trailer:
                frame = checked_frame(p, pos, pos + strip, stop - trailer)
                if frame is None:
                    pos = self._corrupt_span(p, pos, stop, out)
                    if pos < 0:  # parsing stops here: see _stop
                        return -pos - 1
                    continue
                out.append(frame)
            else:
                out.append(p[pos + strip : stop])
            pos = stop

    def _unusual_frame(self, p, pos, end, raw, out):
        """The frame at ``pos`` whose length field ``raw`` is off the fast path.

        Raises for a negative or oversized length, skips an oversized frame
        when discarding, and reads multiprocessing's escaped 8-byte length.
        Returns the position to go on parsing from, or ``_stop(position)``
        when parsing must stop there until more bytes arrive.
        """
        avail = end - pos
        head = self._header_size
        if self._escape and raw > _INT32_MAX:
            if raw != _ESCAPE:
                raise MalformedHeaderError(
                    f"negative frame length (0x{raw:08x}) in a signed 4-byte field", out
                )
            head += 8
            if avail < head:
                self._phase = _HEADER
                self._need = head
                return _stop(pos)
            raw = load_uint(p, pos + self._header_size, 8, False)
        if raw >= _RAW_LIMIT:
            # Too large to count, let alone discard; checked before any
            # arithmetic so the compiled core cannot overflow.
            raise FrameTooLargeError(
                f"length field announces {raw} bytes, over max_frame_size ({self._max_frame_size})",
                out,
            )
        body = raw
        body += self._adjustment
        if body < 0:
            raise MalformedHeaderError(
                f"length field {raw} with length_adjustment {self._adjustment} "
                f"gives a negative frame length {body}",
                out,
            )
        total = head + body
        wire = total + self._trailer  # what the frame takes on the wire
        payload = raw
        payload += self._payload_adjustment
        if payload > self._max_frame_size or total > self._max_frame_length:
            error = _over_limits(payload, total, self._max_frame_size, self._max_frame_length)
            raising = self._refuse(error, out)
            if avail < wire:
                self._start_discard(wire - avail)
                return _stop(end)
            if raising:
                self._phase = _HEADER
                self._need = self._frame_start
                return _stop(pos + wire)
            return pos + wire
        # An escaped length within the limits: an ordinary frame with a longer header.
        strip = head if self._strip_header else self._strip
        if avail >= wire:
            if not self._trailer:
                out.append(p[pos + strip : pos + total])
                return pos + wire
            frame = checked_frame(p, pos, pos + strip, pos + total)
            if frame is None:
                return self._corrupt_span(p, pos, pos + wire, out)
            out.append(frame)
            return pos + wire
        if wire - strip >= BIG_FRAME:
            self._start_big(p, pos, pos + strip, end, wire - strip, self._trailer)
            return _stop(end)
        self._phase = _BODY
        self._need = wire
        return _stop(pos)

    def _refuse(self, error, out):
        """A frame refused (oversized, or failing its checksum), as
        on_oversized says: "fail" raises ``error`` now, with the frames
        completed before it; otherwise the frame is dropped and counted, and
        under "raise" ``error`` is raised when this call ends.  Whether
        parsing stops behind the frame (under "raise")."""
        if self._on_oversized == _OVERSIZED_FAIL:
            error.frames = out
            raise error
        self.discarded += 1
        if self._on_oversized == _OVERSIZED_RAISE:
            self._oversized = error
            return True
        return False

    def _corrupt_frame(self, stop, expected, actual, size, out):
        """The frame of ``size`` bytes ending at ``stop`` (its checksum
        included) carries ``expected`` but its bytes give ``actual``.  Raise
        ChecksumError, or drop the frame as on_oversized says; the answer is
        _unusual_frame's (a position, or _stop(position)).  Its length field
        may be what was damaged, in which case what follows is misframed:
        only "fail" ends such a stream at once."""
        self.corrupted += 1
        error = ChecksumError(
            f"frame of {size} bytes fails its checksum: it carries CRC32C 0x{expected:08x}, "
            f"its bytes give 0x{actual:08x}",
            (),
            expected,
            actual,
        )
        if self._refuse(error, out):
            self._phase = _HEADER
            self._need = self._frame_start
            return _stop(stop)
        return stop

    def _corrupt_span(self, p, start, stop, out):
        """_corrupt_frame for the frame at p[start:stop], checksum included
        (checked_frame said only that it fails)."""
        end = stop - 4
        expected = load_uint(p, end, 4, False)
        actual = checksum_span(0, p, start, end)
        return self._corrupt_frame(stop, expected, actual, end - start, out)

    def _deliver_big(self, big, head, out):
        trailer = self._trailer
        if trailer:
            # The storage ends with the checksum of the header bytes before
            # it (head) and its own bytes before the checksum: big.crc.
            size = big.size - trailer
            expected = load_uint(big._data, size, 4, False)
            actual = big.crc
            if actual != expected:
                big.finish(trailer)  # frees the storage
                self._corrupt_frame(0, expected, actual, len(head) + size, out)
                return
        out.append(big.finish(trailer))

    # -- the C API ---------------------------------------------------------
    # Compiled, these two are cdef methods, called by the inline functions of
    # capi.pxd that Cython consumers cimport: frames handed out as spans of
    # the shared buffer, with no bytes object each.  The twin has no C API;
    # it runs this shared logic only for the tests.

    def _c_updated(self, nbytes):
        """buffer_updated() that only records the bytes: _c_next() delivers them."""
        with cython.critical_section(self):
            room = self._view_room
            self._begin_call()
            try:
                if room < 0:
                    raise RuntimeError("buffer_updated() called without a preceding get_buffer()")
                if nbytes < 0 or nbytes > room:
                    raise ValueError(
                        f"nbytes must be between 0 and {room}, the size of the buffer given"
                    )
                if self._phase == _IN_PLACE:
                    self._big.received(nbytes)
                else:
                    self._end += nbytes
                    self._size_next_read(nbytes, room)
                self._c_inline = (
                    self._phase == _HEADER
                    and self._frames_left < 0
                    and self._c_frames is None
                    and not self._trailer  # capi.pxd's inline path checks no checksum
                )
                return 0
            finally:
                self._busy = False

    def _c_next(self):
        """The next frame: its start in ``_buf`` (its end in ``_c_stop``); -1
        when it is the bytes ``_c_frame``; -2 when no frame is complete.

        capi.pxd's next_frame takes ordinary frames between frames itself,
        inline in its caller, and calls this for everything else: once a
        read, for the frame the read split (in _BODY, its header still
        buffered) or for the frame it leaves incomplete.  Those are taken
        here, with the hot loop's own tests and steps, as spans; the rest
        (large, escaped, oversized or bad headers, stop_after's end, a failed
        or busy decoder) goes through the shared path of buffer_updated(),
        whose frames come as bytes and whose errors are raised the same way,
        with the frames that call completed on the exception's ``frames``.
        """
        if self._c_frames is not None:  # (attributes, not locals: no reference counting)
            if self._c_index < len(self._c_frames):
                self._c_frame = self._c_frames[self._c_index]
                self._c_index += 1
                return -1
            self._c_frames = None
            self._c_frame = None
        phase = self._phase
        if phase in (_HEADER, _BODY) and self._frames_left != 0 and not self._busy:
            pos = self._pos
            avail = self._end - pos
            if avail < self._need:
                # As _advance: nothing to parse before more bytes arrive.
                if not avail:
                    self._pos = self._end = 0
                return -2
            if avail >= self._frame_start:
                raw = load_uint(self._buf, pos + self._length_offset, self._width, self._little)
                if raw <= self._max_raw and raw >= self._min_raw:
                    trailer = self._trailer
                    stop = pos + raw + self._header_size + self._adjustment + trailer
                    if stop <= self._end:
                        # A frame whose checksum fails takes the shared path,
                        # which raises or drops it as buffer_updated() would.
                        if not trailer or checksum_span(
                            0, self._buf, pos, stop - trailer
                        ) == load_uint(self._buf, stop - trailer, 4, False):
                            self._pos = stop
                            self._c_stop = stop - trailer
                            self._phase = _HEADER
                            self._need = self._frame_start
                            self._exact = False  # as _advance: small frames follow
                            if self._frames_left > 0:
                                self._frames_left -= 1
                            # capi.pxd's inline path checks no checksum.
                            self._c_inline = self._frames_left < 0 and not trailer
                            return pos + self._strip
                    elif stop - pos - self._strip < BIG_FRAME:
                        # As _parse: the header stays buffered until the body is.
                        self._c_inline = False
                        self._phase = _BODY
                        self._need = stop - pos
                        return -2
        with cython.critical_section(self):
            self._begin_call()
            try:
                out = []
                try:
                    self._advance(out)
                except ProtocolError as exc:
                    self._fail(exc, out)
                if self._oversized is not None:
                    self._raise_oversized(out)
            finally:
                self._busy = False
        if not out:
            return -2
        self._c_frames = out
        self._c_frame = out[0]
        self._c_index = 1
        return -1


class FrameEncoder:
    """Builds length-prefixed frames in the format FrameDecoder reads.

    ``FrameEncoder(format=None, **options)`` takes the same presets and options.
    The payload is the frame's body (what follows the length field); formats
    with a ``length_offset`` take those leading bytes as ``prefix`` (zeros by
    default).  A body whose frame the decoder would refuse (a payload over
    ``max_frame_size``, a whole frame over ``max_frame_length``) or beyond
    what the length field can express raises FrameTooLargeError.

    With ``checksum="crc32c"`` every frame is followed by the CRC32C of its
    bytes (4 bytes, big-endian), which every method but header() writes.
    """

    def __init__(self, format=None, **options):
        fmt = resolve_format(format, **options)
        self.format = fmt
        self._trailer = fmt.trailer_size
        self._width = fmt.width
        self._little = fmt.byteorder == "little"
        self._length_offset = fmt.length_offset
        self._adjustment = fmt.length_adjustment
        self._max_frame_size = fmt.max_frame_size
        # The largest body (what follows the length field) within both limits.
        max_body = fmt.max_frame_size + max(0, fmt.length_adjustment)
        if fmt.max_frame_length is not None:
            max_body = min(max_body, fmt.max_frame_length - fmt.header_size)
        self._max_body = max_body
        length_limit = fmt.max_frame_length
        self._max_length = _NO_LENGTH_LIMIT if length_limit is None else length_limit
        self._escape = fmt.large_length_escape
        self._zero_prefix = bytes(fmt.length_offset)
        field_max = (1 << 64) - 1 if fmt.large_length_escape else (1 << (8 * fmt.width)) - 1
        self._field_max = field_max
        # Payload sizes in [_plain_min, _plain_max] need no check beyond that
        # range and get the plain header: zero prefix, no escape.
        plain_max = min(max_body, field_max + fmt.length_adjustment)
        if fmt.large_length_escape:
            plain_max = min(plain_max, _INT32_MAX)
        self._plain_min = max(0, fmt.length_adjustment)
        self._plain_max = plain_max
        self._plain_header_size = fmt.header_size
        self._pack_length = length_packer(fmt.width, fmt.byteorder)
        self._header_cache = {}

    def header(self, length, prefix=None):
        """The header of a frame whose payload is ``length`` bytes.

        For vectored writes: ``sock.sendmsg([enc.header(len(p)), p])`` sends a
        frame without copying the payload.  With a checksum the frame goes
        on with the checksum of both: ``trailer(h, p)``.
        """
        if prefix is None:
            prefix = self._zero_prefix
        elif len(prefix) != self._length_offset:
            raise ValueError(
                f"prefix must be exactly length_offset ({self._length_offset}) bytes, "
                f"not {len(prefix)}"
            )
        if length < 0:
            raise ValueError(f"frame length must not be negative, not {length}")
        if length > self._max_body:
            raise self._too_large(length, self._plain_header_size)
        field = length - self._adjustment
        if field < 0 or field > self._field_max:
            raise FrameTooLargeError(
                f"frame of {length} bytes cannot be expressed in a {self._width}-byte "
                f"length field with length_adjustment {self._adjustment}"
            )
        if self._escape and field > _INT32_MAX:
            if length + 12 > self._max_length:
                raise self._too_large(length, 12)  # the escape's 8 bytes count too
            return store_uint(_ESCAPE, 4, False) + store_uint(field, 8, False)
        if self._length_offset:
            return bytes(prefix) + store_uint(field, self._width, self._little)
        return store_uint(field, self._width, self._little)

    def trailer(self, header, payload):
        """What follows ``header`` and ``payload`` on the wire: the checksum
        of both (4 bytes) with ``checksum="crc32c"``, b"" without one.

        For vectored writes of a frame built from header(): ``[h, p,
        enc.trailer(h, p)]``, the payload left where it lies.
        """
        if not self._trailer:
            return b""
        checksum = checksum_buffer(0, crc32c(header), as_bytes_view(payload))
        return store_uint(checksum, 4, False)

    def _too_large(self, length, header_size):
        fmt = self.format
        return _over_limits(
            length - max(0, self._adjustment),
            header_size + length,
            self._max_frame_size,
            fmt.max_frame_length,
        )

    def encode(self, payload, prefix=None):
        """One frame: header and payload in one bytes object."""
        payload = _bytes_like(payload)
        if self._trailer:
            return concat_sealed(self.header(len(payload), prefix), payload)
        return concat(self.header(len(payload), prefix), payload)

    def encode_frame(self, frame):
        """A whole frame, checked and put back on the wire unchanged.

        ``frame`` is header and body, as a decoder of this format with
        ``strip=0`` delivers it (grpc, postgres): relaying or echoing one is
        ``encode_frame(frame)``.  The length field is checked, not
        rewritten: one that disagrees with the frame's size raises
        MalformedHeaderError (a frame cut or edited by mistake is caught
        here, not by the peer), a body over ``max_frame_size``
        FrameTooLargeError.  To build a frame from a body, use encode().
        With a checksum, the frame is given without one (as a decoder
        delivers it) and sent with its own.
        """
        frame = _bytes_like(frame)
        if type(frame) is not bytes:
            frame = bytes(frame)
        self._check_frame(frame)
        if self._trailer:
            return self._seal(frame)
        return frame

    def _seal(self, frame):
        return concat_sealed(frame, b"")

    def encode_frames(self, frames):
        """Many whole frames, each checked as by encode_frame(), as a list
        of buffers for one vectored write: runs of frames under BIG_FRAME
        bytes joined, larger ones left as they are."""
        buffers = []
        run = []
        for frame in frames:
            frame = self.encode_frame(frame)
            if len(frame) < BIG_FRAME:
                run.append(frame)
                continue
            if run:
                buffers.append(b"".join(run))
                run = []
            buffers.append(frame)
        if run:
            buffers.append(b"".join(run))
        return buffers

    def _check_frame(self, frame):
        size = len(frame)
        head = self._plain_header_size
        if size < head:
            raise MalformedHeaderError(
                f"a whole frame of this format has at least its {head}-byte header, "
                f"not {size} bytes"
            )
        field = load_uint(frame, self._length_offset, self._width, self._little)
        if self._escape and field > _INT32_MAX:
            if field != _ESCAPE:
                raise MalformedHeaderError(
                    f"negative frame length (0x{field:08x}) in a signed 4-byte field"
                )
            head += 8
            if size < head:
                raise MalformedHeaderError(
                    f"a whole frame with an escaped length has at least {head} bytes, not {size}"
                )
            field = load_uint(frame, 4, 8, False)
        body = size - head
        if field + self._adjustment != body:
            raise MalformedHeaderError(
                f"frame of {size} bytes whose length field ({field}) says "
                f"{head + field + self._adjustment}: a whole frame's length field must "
                "match its size"
            )
        if body > self._max_body or head + body > self._max_length:
            raise self._too_large(body, head)

    def _plain_headers(self, sizes):
        """The twin's headers for ordinary sizes, from a small cache: a dict
        lookup costs a third of a struct.pack."""
        cache = self._header_cache
        try:
            return list(map(cache.__getitem__, sizes))
        except KeyError:
            if len(cache) > 4096:
                cache.clear()
            for size in set(sizes):
                cache[size] = self._pack_length(size - self._adjustment)
            return list(map(cache.__getitem__, sizes))

    def encode_many(self, payloads):
        """Many frames in one bytes object, for a single send.

        Compiled, the frames are written straight into the result (one copy
        of each payload); the twin joins headers and payloads.
        """
        plain_min = self._plain_min
        plain_max = self._plain_max
        trailer = self._trailer
        if not cython.compiled:
            # The twin runs no bytecode per frame when every size is
            # ordinary: types checked, headers looked up and payloads
            # interleaved by C-level map() and slice assignment.
            items = list(payloads)
            try:
                sizes = list(map(bytes.__len__, items))  # also proves they are bytes
            except TypeError:
                items = [_bytes_like(payload) for payload in items]
                sizes = list(map(len, items))
            if trailer:
                return b"".join(map(self.encode, items))
            parts = [b""] * (2 * len(items))
            parts[1::2] = items
            if (
                sizes
                and self._pack_length is not None
                and not self._length_offset
                and max(sizes) <= plain_max
                and (plain_min == 0 or plain_min <= min(sizes))
            ):
                parts[0::2] = self._plain_headers(sizes)
            else:
                parts[0::2] = map(self.header, sizes)
            return b"".join(parts)
        items = payloads if type(payloads) is list else list(payloads)
        for payload in items:
            if type(payload) is not bytes:
                items = [_bytes_like(payload) for payload in items]
                break
        total = 0
        for payload in items:
            size = len(payload)
            if size < plain_min or size > plain_max:
                total += len(self.header(size))  # raises if it must
            else:
                total += self._plain_header_size
            total += size + trailer
        out = new_bytes(total)
        pos = 0
        for payload in items:
            size = len(payload)
            start = pos
            if size < plain_min or size > plain_max:
                pos = write_bytes(out, pos, self.header(size))
            else:
                pos = write_header(
                    out,
                    pos,
                    self._plain_header_size,
                    size - self._adjustment,
                    self._width,
                    self._little,
                )
            if trailer:
                pos = write_sealed(out, start, pos, payload)  # the payload and the checksum
            else:
                pos = write_bytes(out, pos, payload)
        return out

    def encode_vectored(self, payloads):
        """Many frames as a list of buffers for one vectored write (sendmsg).

        Runs of payloads under BIG_FRAME bytes are joined with their headers,
        as encode_many() joins them; a larger payload is not copied: it goes
        in the list as it is, behind a buffer holding its header.
        """
        items = payloads if type(payloads) is list else list(payloads)
        if not items:
            return []
        largest = longest(items)
        # len() of an array of wider items counts items, not bytes: such a
        # payload may be joined when it could have been left in place, but
        # the bytes sent are right either way.
        if largest < BIG_FRAME:
            return [self.encode_many(items)]
        buffers = []
        run = []
        for payload in items:
            if type(payload) is not bytes and type(payload) is not bytearray:
                payload = as_bytes_view(payload)  # flat bytes, uncopied: len() counts bytes
            if len(payload) < BIG_FRAME:
                run.append(payload)
                continue
            if run:
                buffers.append(self.encode_many(run))
                run = []
            head = self.header(len(payload))
            buffers.append(head)
            buffers.append(payload)
            if self._trailer:
                buffers.append(self.trailer(head, payload))
        if run:
            buffers.append(self.encode_many(run))
        return buffers


# ---------------------------------------------------------------------------
# JSON-header messages


class MessageDecoder(_StreamDecoder):
    """Splits a byte stream into Message objects of the JSON-header protocol.

    Limits are checked before anything is buffered: a header length of zero
    or over ``max_header_size``, and a content-length over
    ``max_content_size``.  Errors behave as FrameDecoder's.  ``on_oversized``
    applies to content over ``max_content_size`` as FrameDecoder applies it
    to frames ("fail", "discard" or "raise"; dropped messages are counted in
    ``discarded``); a header over ``max_header_size`` always fails, as the
    content it announces cannot be known without reading it.
    """

    def __init__(
        self,
        max_header_size=DEFAULT_MAX_HEADER_SIZE,
        max_content_size=DEFAULT_MAX_CONTENT_SIZE,
        read_size=64 * 1024,
        prealloc_limit=256 * 1024,
        on_oversized="fail",
    ):
        if not 0 < max_header_size <= DEFAULT_MAX_HEADER_SIZE:
            raise ValueError(f"max_header_size must be between 1 and {DEFAULT_MAX_HEADER_SIZE}")
        if not 0 <= max_content_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_content_size must be between 0 and {MAX_FRAME_SIZE_LIMIT}")
        if read_size < 1 or prealloc_limit < 1:
            raise ValueError("read_size and prealloc_limit must be positive")
        if type(on_oversized) is not str or on_oversized not in _OVERSIZED_POLICY:
            raise ValueError(
                f"on_oversized must be one of 'fail', 'discard', 'raise', not {on_oversized!r}"
            )
        _StreamDecoder.__init__(self, read_size, prealloc_limit, 2)
        self.discarded = 0
        self._max_header_size = max_header_size
        self._max_content_size = max_content_size
        self._on_oversized = _OVERSIZED_POLICY[on_oversized]
        # "fail" lets the header parser refuse the content; the others read
        # its length to drop it.
        failing = self._on_oversized == _OVERSIZED_FAIL
        self._header_content_limit = max_content_size if failing else MAX_FRAME_SIZE_LIMIT
        self._header = None
        self._content_length = 0
        self._header_raw = b""  # _BODY, _IN_PLACE: the header's bytes (for detach)

    def _parse(self, p, pos, end, out):
        # Unlike FrameDecoder, the parsed JSON header is remembered (in
        # _BODY) rather than parsed again when its content is complete.
        while True:
            avail = end - pos
            if self._phase == _BODY:
                length = self._content_length
                if avail < length:
                    self._need = length
                    return pos
                out.append(Message(self._header, p[pos : pos + length]))
                pos += length
                self._header = None
                self._phase = _HEADER
                continue
            if avail < 2:
                self._need = 2
                return pos
            header_length = (p[pos] << 8) | p[pos + 1]
            if header_length == 0:
                raise MalformedHeaderError("message header length is zero", out)
            if header_length > self._max_header_size:
                raise FrameTooLargeError(
                    f"message header of {header_length} bytes exceeds max_header_size "
                    f"({self._max_header_size})",
                    out,
                )
            if avail < 2 + header_length:
                self._need = 2 + header_length
                return pos
            try:
                header, length = parse_message_header(
                    p[pos + 2 : pos + 2 + header_length], self._header_content_limit
                )
            except ProtocolError as exc:
                exc.frames = out
                raise
            pos += 2 + header_length
            avail -= 2 + header_length
            if length > self._max_content_size:
                pos = self._oversized_message(pos, end, length)
                if pos < 0:  # parsing stops here: see _stop
                    return -pos - 1
                continue
            if avail >= length:
                out.append(Message(header, p[pos : pos + length]))
                pos += length
                continue
            self._header = header
            self._header_raw = p[pos - 2 - header_length : pos]
            self._content_length = length
            self._phase = _BODY
            if length >= BIG_FRAME:
                self._start_big(p, pos, pos, end, length, 0)
                return end
            self._need = length
            return pos

    def _oversized_message(self, pos, end, length):
        """Drop the content over max_content_size at ``pos`` (on_oversized
        "discard" or "raise"); the answer is _unusual_frame's."""
        self.discarded += 1
        raising = self._on_oversized == _OVERSIZED_RAISE
        if raising:
            self._oversized = FrameTooLargeError(
                f"message content of {length} bytes exceeds max_content_size "
                f"({self._max_content_size})"
            )
        avail = end - pos
        if avail < length:
            self._start_discard(length - avail)
            return _stop(end)
        if raising:
            self._phase = _HEADER
            self._need = 2
            return _stop(pos + length)
        return pos + length

    def _deliver_big(self, big, head, out):
        out.append(Message(self._header, big.finish(0)))
        self._header = None

    def _held_head(self):
        return self._header_raw if self._header is not None else b""


# ---------------------------------------------------------------------------
# Integers in network byte order


def _check_width(width):
    if width not in (1, 2, 3, 4, 8) or type(width) is bool:
        raise ValueError(f"width must be 1, 2, 3, 4 or 8, not {width!r}")


def _is_little(byteorder):
    if byteorder == "big":
        return False
    if byteorder == "little":
        return True
    raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")


def pack_uint(value, width=4, byteorder="big"):
    """``value`` as a ``width``-byte unsigned integer (network order by default)."""
    _check_width(width)
    little = _is_little(byteorder)
    if value < 0 or value >= (1 << (8 * width)):
        raise OverflowError(f"{value} does not fit in an unsigned {width}-byte integer")
    return store_uint(value, width, little)


def unpack_uint(data, width=4, byteorder="big", offset=0):
    """The ``width``-byte unsigned integer at ``data[offset:]``."""
    _check_width(width)
    little = _is_little(byteorder)
    data = _bytes_like(data)
    if offset < 0 or offset + width > len(data):
        raise ValueError(
            f"need {width} bytes at offset {offset}, but the data is {len(data)} bytes long"
        )
    return load_uint(data, offset, width, little)
