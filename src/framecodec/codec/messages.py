"""The JSON-header message protocol of the classic Python sockets tutorial.

On the wire a message is a 2-byte big-endian header length, a UTF-8 JSON
header (an object with at least ``byteorder``, ``content-type``,
``content-encoding`` and ``content-length``), then ``content-length`` bytes
of content.  This module holds the parts that are plain Python in both
implementations: the Message type, header validation and the encoder.  The
streaming MessageDecoder lives in the codec core, which owns the buffering.
"""

from __future__ import annotations

import codecs
import json
import re
import struct
import sys
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from ..errors import FrameTooLargeError, MalformedHeaderError

__all__ = [
    "MAX_HEADER_DEPTH",
    "REQUIRED_HEADER_KEYS",
    "Message",
    "MessageEncoder",
    "parse_message_header",
]

REQUIRED_HEADER_KEYS = ("byteorder", "content-type", "content-encoding", "content-length")
DEFAULT_MAX_HEADER_SIZE = 64 * 1024 - 1  # the 2-byte length field's ceiling
DEFAULT_MAX_CONTENT_SIZE = 16 * 1024 * 1024

_pack_header_length = struct.Struct(">H").pack

# How deeply a header's JSON may nest.  Checked here rather than left to the
# json module, which raises RecursionError at a depth that depends on the
# Python version and the caller's stack (and not at all on 3.14, whose
# parser no longer recurses there).  A real header is one object deep.
MAX_HEADER_DEPTH = 64
# What json skips over when counting brackets: strings, escapes included.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[][{}]")


def _nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (JSON text)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class Message:
    """One decoded message: its JSON header (all keys, extras included) and content."""

    __slots__ = ("content", "header")

    def __init__(self, header: Dict[str, Any], content: bytes) -> None:
        self.header = header
        self.content = content

    @property
    def content_type(self) -> str:
        return str(self.header["content-type"])

    @property
    def content_encoding(self) -> str:
        return str(self.header["content-encoding"])

    @property
    def value(self) -> Any:
        """The content decoded: JSON for text/json, str for other text, else the bytes."""
        content_type = self.content_type
        if content_type == "text/json":
            return json.loads(self.content.decode(self.content_encoding))
        if content_type.startswith("text/"):
            return self.content.decode(self.content_encoding)
        return self.content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.header == other.header and self.content == other.content

    __hash__ = None  # type: ignore[assignment]  # mutable header

    def __repr__(self) -> str:
        more = "..." if len(self.content) > 64 else ""
        return f"Message(header={self.header!r}, content={self.content[:64]!r}{more})"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """A JSON object as a dict, refusing a repeated key: json would keep the
    last, so two readers of one header could disagree on what it says."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: Set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def parse_message_header(raw: bytes, max_content_size: int) -> Tuple[Dict[str, Any], int]:
    """Validate a JSON header; return it and its content length.

    Raises MalformedHeaderError saying what is wrong, or FrameTooLargeError
    when the announced content exceeds ``max_content_size``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedHeaderError(f"message header is not valid UTF-8: {exc}") from None
    # Only a header with that many brackets can nest that deep: most cost
    # two C-speed counts and no scan.
    if raw.count(b"[") + raw.count(b"{") > MAX_HEADER_DEPTH and (
        _nesting_depth(raw) > MAX_HEADER_DEPTH
    ):
        raise MalformedHeaderError(
            f"message header is nested too deeply to parse (more than {MAX_HEADER_DEPTH} levels)"
        )
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise MalformedHeaderError(f"message header repeats the key {exc.args[0]!r}") from None
    except ValueError as exc:
        raise MalformedHeaderError(f"message header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedHeaderError(
            f"message header is not a JSON object but a {type(header).__name__}"
        )
    missing = [key for key in REQUIRED_HEADER_KEYS if key not in header]
    if missing:
        raise MalformedHeaderError(f"message header lacks required key(s): {', '.join(missing)}")
    length = header["content-length"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise MalformedHeaderError(
            f"message header content-length must be a non-negative integer, not {length!r}"
        )
    content_type = header["content-type"]
    encoding = header["content-encoding"]
    if not isinstance(content_type, str) or not isinstance(encoding, str):
        raise MalformedHeaderError(
            "message header content-type and content-encoding must be strings"
        )
    if content_type.startswith("text/"):
        try:
            # Encoding names are printable ASCII; checked here because
            # lookup() tells others apart differently on each Python (PyPy
            # takes "utf\ud800" for utf-8, CPython refuses it).
            if not (encoding.isascii() and encoding.isprintable()):
                raise ValueError(encoding)
            # Refused too: codecs that lookup() knows but bytes.decode()
            # refuses, such as rot13 (str to str) and zlib (bytes to bytes).
            if not getattr(codecs.lookup(encoding), "_is_text_encoding", True):
                raise LookupError(encoding)
        except (LookupError, ValueError):  # ValueError: a NUL or lone surrogate in the name
            raise MalformedHeaderError(
                f"message header names an unknown text content-encoding {encoding!r}"
            ) from None
    if length > max_content_size:
        raise FrameTooLargeError(
            f"message content of {length} bytes exceeds max_content_size ({max_content_size})"
        )
    return header, length


class MessageEncoder:
    """Builds messages byte-identical to the tutorial's ``create_message``."""

    def __init__(self, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> None:
        if not 0 < max_header_size <= DEFAULT_MAX_HEADER_SIZE:
            raise ValueError(f"max_header_size must be between 1 and {DEFAULT_MAX_HEADER_SIZE}")
        self.max_header_size = max_header_size

    def encode(
        self,
        content: Any,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        headers: Optional[Mapping[str, Any]] = None,
    ) -> bytes:
        """One message.

        dict and list content is sent as ``text/json`` (``json.dumps`` with
        ``ensure_ascii=False``), str as ``text/plain``, both in UTF-8 unless
        ``content_encoding`` says otherwise; bytes-like content is sent as is
        (``binary/octet-stream``, encoding ``binary``) unless told otherwise.
        """
        if isinstance(content, (dict, list)):
            content_type = content_type or "text/json"
            content_encoding = content_encoding or "utf-8"
            body = json.dumps(content, ensure_ascii=False).encode(content_encoding)
        elif isinstance(content, str):
            content_type = content_type or "text/plain"
            content_encoding = content_encoding or "utf-8"
            body = content.encode(content_encoding)
        else:
            body = bytes(content)
            content_type = content_type or "binary/octet-stream"
            content_encoding = content_encoding or "binary"
        header = {
            "byteorder": sys.byteorder,
            "content-type": content_type,
            "content-encoding": content_encoding,
            "content-length": len(body),
        }
        if headers:
            clash = [key for key in headers if key in header]
            if clash:
                raise ValueError(f"extra headers may not replace {', '.join(clash)}")
            header.update(headers)
        header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
        if len(header_bytes) > self.max_header_size:
            raise FrameTooLargeError(
                f"message header of {len(header_bytes)} bytes exceeds max_header_size "
                f"({self.max_header_size})"
            )
        return _pack_header_length(len(header_bytes)) + header_bytes + body
