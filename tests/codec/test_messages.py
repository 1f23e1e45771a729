"""The JSON-header message protocol, against both implementations."""

import json
import struct
import sys

import pytest

from framecodec import Message, MessageEncoder
from framecodec.codec.messages import MAX_HEADER_DEPTH
from framecodec.errors import FrameTooLargeError, IncompleteFrameError, MalformedHeaderError

from .codec_support import read_like_a_socket


def tutorial_message(content_bytes, content_type, content_encoding):
    """A message built exactly as the Real Python tutorial's _create_message does."""

    def json_encode(obj, encoding):
        return json.dumps(obj, ensure_ascii=False).encode(encoding)

    jsonheader = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content_bytes),
    }
    jsonheader_bytes = json_encode(jsonheader, "utf-8")
    message_hdr = struct.pack(">H", len(jsonheader_bytes))
    return message_hdr + jsonheader_bytes + content_bytes


def raw_message(header, content=b""):
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">H", len(header_bytes)) + header_bytes + content


def good_header(**changes):
    header = {
        "byteorder": "little",
        "content-type": "text/json",
        "content-encoding": "utf-8",
        "content-length": 0,
    }
    header.update(changes)
    return header


def test_json_content_is_byte_identical_to_the_tutorial():
    request = {"action": "search", "value": "ring ◎"}
    content = json.dumps(request, ensure_ascii=False).encode("utf-8")
    assert MessageEncoder().encode(request) == tutorial_message(content, "text/json", "utf-8")


def test_binary_content_is_byte_identical_to_the_tutorial():
    content = b"\x00\x01binary request"
    ours = MessageEncoder().encode(
        content, content_type="binary/custom-client-binary-type", content_encoding="binary"
    )
    assert ours == tutorial_message(content, "binary/custom-client-binary-type", "binary")


def test_tutorial_messages_decode(codec):
    wire = tutorial_message(b'{"result": "\xf0\x9f\x90\x8d"}', "text/json", "utf-8")
    wire += tutorial_message(b"\xff\xfe", "binary/custom-server-binary-type", "binary")
    decoder = codec.MessageDecoder()
    messages = []
    for i in range(len(wire)):
        messages += decoder.feed(wire[i : i + 1])
    first, second = messages
    assert first.value == {"result": "🐍"}
    assert first.header["byteorder"] == sys.byteorder
    assert (second.content_type, second.content, second.value) == (
        "binary/custom-server-binary-type",
        b"\xff\xfe",
        b"\xff\xfe",
    )


def test_values_by_content_type(codec):
    encoder = MessageEncoder()
    wire = (
        encoder.encode([1, "two"])
        + encoder.encode("plain text")
        + encoder.encode("latin", content_encoding="latin-1")
    )
    values = [m.value for m in codec.MessageDecoder().feed(wire)]
    assert values == [[1, "two"], "plain text", "latin"]


def test_extra_headers_are_kept_in_order(codec):
    wire = MessageEncoder().encode(b"x", headers={"request-id": 7, "trace": "abc"})
    header_json = wire[2 : 2 + struct.unpack(">H", wire[:2])[0]].decode()
    assert list(json.loads(header_json)) == [
        "byteorder",
        "content-type",
        "content-encoding",
        "content-length",
        "request-id",
        "trace",
    ]
    (message,) = codec.MessageDecoder().feed(wire)
    assert message.header["request-id"] == 7
    assert message == Message(json.loads(header_json), b"x")


def test_extra_headers_cannot_replace_required_ones():
    with pytest.raises(ValueError, match="content-length"):
        MessageEncoder().encode(b"x", headers={"content-length": 9})


def test_large_content_round_trips_through_get_buffer(codec):
    content = bytes(range(256)) * 2000
    wire = MessageEncoder().encode(content) * 2
    decoder = codec.MessageDecoder()
    messages, pos = [], 0
    while pos < len(wire):
        view = decoder.get_buffer()
        n = min(len(view), 5000, len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        pos += n
        messages += decoder.buffer_updated(n)
    assert [m.content for m in messages] == [content, content]


def test_after_large_content_reads_stop_before_the_next_content(codec):
    # The 2-byte length, then the JSON header, each read alone: the large
    # content behind them is read into its own storage, not copied there.
    content = bytes(range(256)) * 1024
    one = MessageEncoder().encode(content)
    header_length = int.from_bytes(one[:2], "big")
    decoder = codec.MessageDecoder()
    sizes: list[int] = []
    messages = read_like_a_socket(decoder, one, sizes)
    sizes.clear()
    messages += read_like_a_socket(decoder, one * 2, sizes)
    assert [m.content for m in messages] == [content] * 3
    assert sizes == [2, header_length, len(content)] * 2


@pytest.mark.parametrize(
    "wire, error, message",
    [
        (b"\x00\x00", MalformedHeaderError, "header length is zero"),
        (raw_message(b"\xff\xfe{}"), MalformedHeaderError, "not valid UTF-8"),
        (raw_message(b"{not json"), MalformedHeaderError, "not valid JSON"),
        (
            raw_message(good_header(**{"content-encoding": "utf\x00-8"})),
            MalformedHeaderError,
            "unknown text content-encoding",
        ),
        (
            raw_message(good_header(**{"content-encoding": "utf\ud800"})),
            MalformedHeaderError,
            "unknown text content-encoding",
        ),
        (raw_message(b"[1, 2]"), MalformedHeaderError, "not a JSON object but a list"),
        (
            raw_message({"byteorder": "big", "content-type": "text/json"}),
            MalformedHeaderError,
            "lacks required key\\(s\\): content-encoding, content-length",
        ),
        (
            raw_message(good_header(**{"content-length": -1})),
            MalformedHeaderError,
            "non-negative integer",
        ),
        (
            raw_message(good_header(**{"content-length": "5"})),
            MalformedHeaderError,
            "non-negative integer",
        ),
        (
            raw_message(good_header(**{"content-length": True})),
            MalformedHeaderError,
            "non-negative integer",
        ),
        (
            raw_message(good_header(**{"content-encoding": "klingon"})),
            MalformedHeaderError,
            "unknown text content-encoding 'klingon'",
        ),
        (
            raw_message(good_header(**{"content-encoding": "rot13"})),
            MalformedHeaderError,
            "unknown text content-encoding 'rot13'",
        ),
        (
            raw_message(good_header(**{"content-encoding": "zlib"})),
            MalformedHeaderError,
            "unknown text content-encoding 'zlib'",
        ),
        (
            raw_message(
                b'{"byteorder": "little", "content-type": "text/json", '
                b'"content-encoding": "utf-8", "content-length": 0, "content-length": 5}'
            ),
            MalformedHeaderError,
            "repeats the key 'content-length'",
        ),
        (
            raw_message(
                b'{"byteorder": "little", "content-type": "text/json", '
                b'"content-encoding": "utf-8", "content-length": 0, "x": {"a": 1, "a": 2}}'
            ),
            MalformedHeaderError,
            "repeats the key 'a'",
        ),
        (
            raw_message(good_header(**{"content-length": 101})),
            FrameTooLargeError,
            "content of 101 bytes exceeds max_content_size \\(100\\)",
        ),
        (b"\x01\x00", FrameTooLargeError, "header of 256 bytes exceeds max_header_size \\(255\\)"),
    ],
)
def test_malformed_messages_raise_typed_errors(codec, wire, error, message):
    good = MessageEncoder().encode({"ok": True})
    decoder = codec.MessageDecoder(max_header_size=255, max_content_size=100)
    with pytest.raises(error, match=message) as info:
        decoder.feed(good + wire)
    assert [m.value for m in info.value.frames] == [{"ok": True}]
    with pytest.raises(error, match="decoder failed earlier"):
        decoder.feed(good)


def test_binary_content_with_any_encoding_label_is_accepted(codec):
    wire = raw_message(good_header(**{"content-type": "image/png", "content-encoding": "whatever"}))
    (message,) = codec.MessageDecoder().feed(wire)
    assert message.value == b""


def test_limits_exactly_at_their_value(codec):
    header = json.dumps(good_header(**{"content-length": 100})).encode()
    decoder = codec.MessageDecoder(max_header_size=len(header), max_content_size=100)
    assert len(decoder.feed(raw_message(header, b"x" * 100))) == 1


def test_eof_mid_message(codec):
    wire = MessageEncoder().encode(b"abcdef")
    decoder = codec.MessageDecoder()
    decoder.feed(wire[:-2])
    with pytest.raises(IncompleteFrameError, match="2 more needed"):
        decoder.eof()


def test_eof_after_a_header_whose_content_has_not_started(codec):
    wire = MessageEncoder().encode(b"abcdef")
    decoder = codec.MessageDecoder()
    decoder.feed(wire[:-6])
    assert decoder.buffered == 0
    with pytest.raises(IncompleteFrameError, match="6 more needed"):
        decoder.eof()


def test_encoder_header_limit():
    with pytest.raises(FrameTooLargeError, match="max_header_size"):
        MessageEncoder(max_header_size=50).encode(b"x", headers={"pad": "y" * 100})


def test_mid_frame_after_a_header_whose_content_has_not_started(codec):
    wire = MessageEncoder().encode(b"abcdef")
    decoder = codec.MessageDecoder()
    decoder.feed(wire[:-6])
    assert decoder.buffered == 0 and decoder.mid_frame
    decoder.feed(wire[-6:])
    assert not decoder.mid_frame


def test_a_header_nested_too_deeply_is_malformed_and_fails_the_decoder(codec):
    decoder = codec.MessageDecoder()
    good = MessageEncoder().encode(b"kept")
    with pytest.raises(MalformedHeaderError, match="nested too deeply") as info:
        decoder.feed(good + raw_message(b"[" * 30_000 + b"]" * 30_000))
    assert [m.content for m in info.value.frames] == [b"kept"]
    with pytest.raises(MalformedHeaderError, match="decoder failed earlier"):
        decoder.feed(good)


def _nested_header(depth: int, inside: str = "") -> bytes:
    """A valid header whose extra key holds ``depth - 1`` nested lists."""
    header = json.loads(MessageEncoder().encode(b"x")[2:-1])
    text = json.dumps(header)[:-1] + ', "deep": ' + "[" * (depth - 1) + inside + "]" * (depth - 1)
    return (text + "}").encode()


def test_the_header_depth_limit_is_exact_and_the_same_everywhere(codec):
    """MAX_HEADER_DEPTH levels pass and one more fails, with the same message
    on every Python (whatever its json module's own recursion limit)."""
    at_limit = _nested_header(MAX_HEADER_DEPTH)
    [message] = codec.MessageDecoder().feed(raw_message(at_limit) + b"x")
    assert message.content == b"x"
    with pytest.raises(MalformedHeaderError, match=r"nested too deeply .*more than 64 levels"):
        codec.MessageDecoder().feed(raw_message(_nested_header(MAX_HEADER_DEPTH + 1)) + b"x")
    # Brackets inside strings (escaped quotes included) are not nesting.
    inside = json.dumps('\\"' + "[" * 1000 + '{"')
    [message] = codec.MessageDecoder().feed(raw_message(_nested_header(3, inside)) + b"x")
    assert message.header["deep"] == [[json.loads(inside)]]
