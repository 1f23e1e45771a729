"""What the network layer puts on the wire: frames or JSON-header messages.

A protocol makes decoders and turns outgoing items into a list of buffers
for one vectored write.  It never looks inside a byte: the codec does.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional, Union

from ..codec import _impl
from ..codec.formats import FrameFormat, resolve_format
from ..codec.messages import DEFAULT_MAX_HEADER_SIZE, REQUIRED_HEADER_KEYS, Message, MessageEncoder

__all__ = [
    "ASYNC_READ_SIZE",
    "FrameProtocol",
    "MessageProtocol",
    "Protocol",
    "explain_unsendable",
    "make_protocol",
    "with_read_size",
]

_core = _impl.select()

# Below this a payload is copied next to its header (one small buffer is
# cheaper to send than two); from here on it is sent from where it lies.
SMALL_PAYLOAD = 1024
# Bytes the asynchronous layers (aio, anyio) read per system call unless
# read_size says otherwise: what asyncio's own transports read at once, so a
# 64 KiB frame costs no extra read.
ASYNC_READ_SIZE = 256 * 1024


def _as_bytes(payload: Any) -> Any:
    """bytes and bytearray as they are; other buffers as a flat byte view,
    so that len() counts bytes."""
    if type(payload) is bytes or type(payload) is bytearray:
        return payload
    view = memoryview(payload)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class FrameProtocol:
    """Length-prefixed frames of one FrameFormat.

    A format that delivers whole frames (``strip=0``: grpc, postgres) also
    sends whole frames: what a handler returns or ``send()`` is given is a
    frame as received, header included, checked and sent as it is (the
    encoder's encode_frame), so echoing or relaying one needs no splitting.
    ``send(body, prefix=...)`` still builds a frame from a body.
    """

    name = "frames"

    def __init__(self, format: Union[str, FrameFormat, None] = None, **options: Any) -> None:
        self.format = resolve_format(format, **options)
        self._encoder = _core.FrameEncoder(self.format)
        self.whole_frames = self.format.strip == 0

    def new_decoder(self) -> Any:
        return _core.FrameDecoder(self.format)

    def header(self, length: int) -> bytes:
        header: bytes = self._encoder.header(length)
        return header

    def file_trailer(self, header: bytes, file: Any, start: int, size: int) -> bytes:
        """What follows a frame whose payload is ``size`` bytes of ``file``
        from ``start`` (send_file): b"" without a checksum; with one, the
        checksum, which means reading those bytes once more (the file is
        left where it was)."""
        if self.format.checksum is None:
            return b""
        crc = _core.crc32c(header)
        file.seek(start)
        left = size
        while left:
            chunk = file.read(min(left, 1 << 20))
            if not chunk:
                break  # the file is shorter: send_file reports it
            crc = _core.crc32c(chunk, crc)
            left -= len(chunk)
        file.seek(start)
        trailer: bytes = _core.pack_uint(crc, 4)
        return trailer

    def encode(self, payload: Any, prefix: Optional[bytes] = None) -> List[Any]:
        try:
            if self.whole_frames and prefix is None:
                return [self._encoder.encode_frame(payload)]
            if type(payload) is not bytes:
                payload = _as_bytes(payload)
            if len(payload) < SMALL_PAYLOAD:
                return [self._encoder.encode(payload, prefix)]
            header = self._encoder.header(len(payload), prefix)
            if self.format.checksum is None:
                return [header, payload]
            return [header, payload, self._encoder.trailer(header, payload)]
        except TypeError as exc:
            explain_unsendable(self, (payload,), exc)
            raise

    def encode_many(self, payloads: Iterable[Any]) -> List[Any]:
        # Small payloads joined, large ones left in place: one C call.
        try:
            if self.whole_frames:
                frames: List[Any] = self._encoder.encode_frames(payloads)
                return frames
            buffers: List[Any] = self._encoder.encode_vectored(payloads)
        except TypeError as exc:
            explain_unsendable(self, payloads, exc)
            raise
        return buffers


class MessageProtocol:
    """The JSON-header messages of the classic sockets tutorial.

    Items to send are content (dict or list as JSON, str as text, bytes as
    binary; see MessageEncoder.encode) or Message objects, whose content type,
    encoding and extra header keys are kept: echoing a Message answers with
    the same content type.  A Message built by hand may give just the keys it
    cares about, e.g. ``Message({"content-type": "binary/x"}, data)``.
    """

    name = "messages"

    def __init__(self, **options: Any) -> None:
        self._options = options
        _core.MessageDecoder(**options)  # validates the options now, not at the first connection
        self._encoder = MessageEncoder(options.get("max_header_size", DEFAULT_MAX_HEADER_SIZE))

    def new_decoder(self) -> Any:
        return _core.MessageDecoder(**self._options)

    def encode(
        self,
        item: Any,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        headers: Optional[Mapping[str, Any]] = None,
    ) -> List[bytes]:
        if isinstance(item, Message):
            header = item.header
            extra = {key: value for key, value in header.items() if key not in REQUIRED_HEADER_KEYS}
            if headers:
                extra.update(headers)
            content_type = content_type or header.get("content-type")
            content_encoding = content_encoding or header.get("content-encoding")
            item, headers = item.content, extra
        return [self._encoder.encode(item, content_type, content_encoding, headers)]

    def encode_many(self, items: Iterable[Any]) -> List[bytes]:
        return [self.encode(item)[0] for item in items]


Protocol = Union[FrameProtocol, MessageProtocol]


def explain_unsendable(protocol: Protocol, items: Any, exc: TypeError) -> None:
    """Raise a TypeError that says what is wrong when ``exc`` came from
    encoding a frame that is no bytes-like object (a str, typically);
    return, for the caller to raise ``exc`` itself, otherwise.

    FrameProtocol's encoders call it from their ``except TypeError``, so
    the sending path pays nothing for it; the codec's own message
    ("memoryview: a bytes-like object is required") names neither frames
    nor the fix.
    """
    if not isinstance(protocol, FrameProtocol) or not isinstance(items, (list, tuple)):
        return  # messages take str and JSON content; an iterator is consumed
    for item in items:
        if isinstance(item, str):
            raise TypeError(
                "frames are bytes-like objects (bytes, bytearray, memoryview), not str: "
                "encode the text first, e.g. text.encode()"
            ) from None
        try:
            memoryview(item).release()
        except TypeError:
            raise TypeError(
                "frames are bytes-like objects (bytes, bytearray, memoryview), "
                f"not {type(item).__name__}"
            ) from None


def make_protocol(
    protocol: Union[str, Protocol] = "frames",
    format: Union[str, FrameFormat, None] = None,
    **options: Any,
) -> Protocol:
    """A protocol from its name and options (or a ready one, without options)."""
    if isinstance(protocol, (FrameProtocol, MessageProtocol)):
        if format is not None or options:
            raise TypeError("pass format options to the protocol object, not beside it")
        return protocol
    if protocol == "frames":
        return FrameProtocol(format, **options)
    if protocol == "messages":
        if format is not None:
            raise TypeError("format applies to protocol='frames'; messages have a fixed format")
        return MessageProtocol(**options)
    raise ValueError(f"protocol must be 'frames' or 'messages', not {protocol!r}")


def with_read_size(
    protocol: Union[str, Protocol], options: Mapping[str, Any], read_size: int = ASYNC_READ_SIZE
) -> dict[str, Any]:
    """The options for make_protocol, with ``read_size`` unless they give one
    (a ready-made protocol keeps its own)."""
    if isinstance(protocol, str) and "read_size" not in options:
        return {**options, "read_size": read_size}
    return dict(options)
