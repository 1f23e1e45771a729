"""The "framecodec C API (Cython)" contender's receiver: capi.pxd's next_frame on a socket.

Its read loop is the Cython module _capi_reader, which setup.py compiles
beside the core, cimporting the C API as users do; a build without it (the
pure-Python twin, PyPy) has no such row.  It reads the raw sender's very
bytes (contenders.py): the receiving end is what it measures
(encode_many's sender tops out below this reader).
"""

from __future__ import annotations

import importlib
import socket

import framecodec

from .base import READ_SIZE, SocketReceiver, ended, perf_counter, went_on

READER = "framecodec.benchmarks._capi_reader"


class CapiReceiver(SocketReceiver):
    """The codec's C API from Cython: frames as (pointer, length), no object each."""

    def read(self, sock: socket.socket, count: int) -> float:
        reader = importlib.import_module(READER)
        decoder = framecodec.FrameDecoder()
        frames = int(reader.read_frames(sock, decoder, count, READ_SIZE))
        end = perf_counter()
        if frames < count:
            decoder.eof()
            raise ended(frames, count)
        if frames > count or decoder.buffered:
            raise went_on()
        return end
