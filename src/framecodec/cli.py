"""``framecodec serve`` (an echo service) and ``send`` (its client), and
what every command shares: the help format, the exit statuses, the one-line
error reports that name the address or file concerned."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import ssl
import sys
import threading
from typing import Any, Callable, Dict, Optional

from .codec.formats import DEFAULT_MAX_FRAME_SIZE, PRESETS
from .codec.messages import DEFAULT_MAX_CONTENT_SIZE
from .errors import ProtocolError

__all__ = ["INTERRUPTED", "CommandParser", "HelpFormatter", "add_parsers"]

FAILED = 1
INTERRUPTED = 130  # 128 + SIGINT, as shells report it

ADDRESS_HELP = "host:port, [ipv6]:port, unix:/path or unix:@name (port 0: any free port)"
# What --max-frame-size is when not given: the codec's own defaults.
MAX_FRAME_SIZE_DEFAULTS = (
    f"the format's; {DEFAULT_MAX_FRAME_SIZE} for uint32, "
    f"{PRESETS['http2'].max_frame_size} for http2, {PRESETS['postgres'].max_frame_size} "
    f"for postgres; {DEFAULT_MAX_CONTENT_SIZE} for messages"
)
FORMATS = sorted(PRESETS)
# The generic frame options: (flag, FrameFormat option, argparse keywords).
# Their default is the --format preset's value, which they override.
FRAME_OPTIONS = (
    (
        "--width",
        "width",
        {
            "type": int,
            "choices": (1, 2, 3, 4, 8),
            "help": "length field bytes (default: the format's; 4 for uint32)",
        },
    ),
    (
        "--byteorder",
        "byteorder",
        {
            "choices": ("big", "little"),
            "help": "the length's byte order (default: the format's; big but for mysql)",
        },
    ),
    (
        "--length-offset",
        "length_offset",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "bytes before the length field (default: the format's; 0 for uint32)",
        },
    ),
    (
        "--length-adjustment",
        "length_adjustment",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "added to the length to give the bytes after the length field: -4 when "
            "it counts itself, 6 for HTTP/2's type, flags and stream id after it "
            "(default: the format's; 0 for uint32)",
        },
    ),
    (
        "--strip",
        "strip",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "send: bytes cut from the front of each reply before it is printed, "
            "0 up to the whole header (default: through the length field)",
        },
    ),
    (
        "--max-frame-length",
        "max_frame_length",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "largest whole frame accepted, header included, as Netty's "
            "maxFrameLength counts it (default: no such limit)",
        },
    ),
    (
        "--checksum",
        "checksum",
        {
            "choices": ("crc32c",),
            "help": "follow each frame with the CRC32C of its bytes, checked on receipt; "
            "both ends must say so (default: none)",
        },
    ),
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default shown, unless it has none worth showing (None,
    False); text with line breaks (the exit statuses) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class CommandParser(argparse.ArgumentParser):
    """A command's parser: the root's help format."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class Failure(Exception):
    """A failure to report on one line, already worded."""


def add_parsers(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an echo service",
        description="Echo every frame (or message, with the same content type) back to its sender.",
    )
    serve.add_argument("address", help=ADDRESS_HELP)
    serve.add_argument(
        "--backend",
        choices=("selector", "threads"),
        default="selector",
        help="selector: one thread multiplexes every connection; threads: a thread each",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on the address, e.g. one per core",
    )
    _add_protocol_options(serve)
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="its private key, if not in --tls-cert")
    serve.add_argument(
        "--tls-ca", metavar="FILE", help="require client certificates signed by this CA"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections served at once; more wait in the backlog "
        "(default: 1024 for selector, 64 for threads)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection silent for this long (default: never)",
    )
    serve.add_argument("--quiet", action="store_true", help="log warnings only, not connections")
    serve.set_defaults(run=run_serve)

    send = commands.add_parser(
        "send",
        help="send payloads to a server and print its replies",
        description="Send each PAYLOAD as one frame (or message); print the replies, one a line.",
    )
    send.add_argument("address", help=ADDRESS_HELP)
    send.add_argument("payload", nargs="+", help="a payload; - reads one from standard input")
    _add_protocol_options(send)
    send.add_argument(
        "--content-type",
        default="text/plain",
        metavar="TYPE",
        help="messages: the payloads' content type (text/json payloads must be JSON)",
    )
    send.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs")
    send.add_argument("--tls-ca", metavar="FILE", help="use TLS, trusting this CA (implies --tls)")
    send.add_argument("--tls-cert", metavar="FILE", help="client certificate, for mutual TLS")
    send.add_argument("--tls-key", metavar="FILE", help="its private key, if not in --tls-cert")
    send.add_argument(
        "--server-hostname",
        metavar="NAME",
        help="name to check the certificate against (default: the address's host)",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="bound on connecting, and on the wait for each reply",
    )
    send.set_defaults(run=run_send)


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=("frames", "messages"),
        default="frames",
        help="frames: length-prefixed payloads; messages: JSON header, then content",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="frame format preset, which the options below override (frames only; "
        "default: uint32). Frames are sent as the bytes after their length field, "
        "any bytes before it (--length-offset) as zeros",
    )
    parser.add_argument(
        "--max-frame-size",
        type=int,
        metavar="BYTES",
        help="largest frame payload (the bytes after the whole header) or message "
        f"content accepted (default: {MAX_FRAME_SIZE_DEFAULTS})",
    )
    for flag, _, keywords in FRAME_OPTIONS:
        parser.add_argument(flag, **keywords)


def _protocol_options(args: argparse.Namespace) -> Dict[str, Any]:
    given = {
        option: getattr(args, option)
        for _, option, _ in FRAME_OPTIONS
        if getattr(args, option) is not None
    }
    if args.protocol == "messages":
        if args.format or given:
            flag = "--format" if args.format else "--" + next(iter(given)).replace("_", "-")
            raise ValueError(f"{flag} applies to --protocol frames")
        return {"max_content_size": args.max_frame_size} if args.max_frame_size else {}
    # Replies are printed, and frames echoed, as the bytes after their length
    # field unless --strip says otherwise: echoing them frames them again
    # identically, which whole frames (a preset's strip=0) would not be.
    options: Dict[str, Any] = {"format": args.format, "strip": None, **given}
    if args.max_frame_size:
        options["max_frame_size"] = args.max_frame_size
    return options


def _fail(command: str, exc: BaseException) -> int:
    print(f"framecodec {command}: {exc}", file=sys.stderr)
    return FAILED


def _concerning(what: str, exc: BaseException, name: Optional[str] = None) -> Failure:
    """``exc`` worded with the address or file it concerned (``what``),
    unless its own text names it (``name``, by default ``what``) already."""
    text = str(exc) or type(exc).__name__
    return Failure(text if (name or what) in text else f"{what}: {text}")


def _tls_context(make: Callable[[], ssl.SSLContext], files: Dict[str, Optional[str]]) -> Any:
    """The context ``make`` builds from ``files`` (option: path).  The ssl
    module names no file when one is missing or unreadable: find it."""
    try:
        return make()
    except OSError as exc:  # ssl.SSLError included: a file that is not PEM
        given = {option: path for option, path in files.items() if path is not None}
        for option, path in given.items():
            if not os.access(path, os.R_OK):
                # Worded here: ssl's own words differ (PyPy says "Error").
                missing = not os.path.exists(path)
                detail = os.strerror(errno.ENOENT if missing else errno.EACCES)
                raise Failure(f"{option} {path}: {detail}") from None
        named = ", ".join(f"{option} {path}" for option, path in given.items()) or "TLS"
        raise _concerning(named, exc) from None


def _echo(item: Any) -> Any:
    return item  # a Message goes back with its own content type


def run_serve(args: argparse.Namespace) -> int:
    from .net.server import serve
    from .net.tls import server_context

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if (args.tls_key or args.tls_ca) and not args.tls_cert:
            raise ValueError("--tls-key and --tls-ca need --tls-cert")
        context = None
        if args.tls_cert:
            context = _tls_context(
                lambda: server_context(args.tls_cert, args.tls_key, args.tls_ca),
                {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca},
            )
        if args.strip is not None:
            raise ValueError(
                "--strip applies to send: serve echoes the bytes after each frame's length field"
            )
        options = _protocol_options(args)
        try:
            server = serve(
                args.address,
                _echo,
                backend=args.backend,
                protocol=args.protocol,
                ssl_context=context,
                max_connections=args.max_connections,
                idle_timeout=args.idle_timeout,
                workers=args.workers,
                **options,
            )
        except OSError as exc:
            raise _concerning(f"cannot listen on {args.address}", exc, args.address) from None
    except (Failure, ValueError) as exc:
        return _fail("serve", exc)
    # SIGTERM stops the service; so does SIGINT (Ctrl-C), which the exit
    # status then reports.  Either way the server shuts down cleanly first.
    stop = threading.Event()
    received = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server.start():
            tls = " over TLS" if context else ""
            how = f"{args.backend} backend" + (
                f", {args.workers} workers" if args.workers != 1 else ""
            )
            print(f"serving {args.protocol}{tls} on {server.address} ({how})", flush=True)
            stop.wait()
            logging.getLogger("framecodec.server").info("%s: shutting down", server.address)
    except RuntimeError as exc:  # workers that could not start
        return _fail("serve", exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and received[0] == signal.SIGINT:
        raise KeyboardInterrupt  # reported by main() as every command's interruption is
    return 0


def run_send(args: argparse.Namespace) -> int:
    from .net.addresses import parse_address
    from .net.client import connect
    from .net.tls import client_context

    try:
        options = _protocol_options(args)
        target = parse_address(args.address)
        context = None
        if args.tls or args.tls_ca or args.tls_cert:
            context = _tls_context(
                lambda: client_context(args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key),
                {"--tls-ca": args.tls_ca, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key},
            )
        payloads = [_payload(text, args) for text in args.payload]
        try:
            client = connect(
                target,
                protocol=args.protocol,
                timeout=args.timeout,
                ssl_context=context,
                server_hostname=args.server_hostname,
                **options,
            )
        except OSError as exc:  # ssl.SSLError included
            raise _concerning(f"cannot connect to {target}", exc, str(target)) from None
        with client:
            try:
                if args.protocol == "frames":
                    client.send_many(payloads)
                else:
                    for payload in payloads:
                        _send_message(client, payload, args.content_type)
                for _ in payloads:
                    _print_reply(client.recv())
            except (OSError, ProtocolError) as exc:
                raise _concerning(str(target), exc) from None
    except (Failure, ValueError) as exc:
        return _fail("send", exc)
    return 0


def _payload(text: str, args: argparse.Namespace) -> bytes:
    """A payload from the command line (- reads standard input), checked
    against its content type: text/json must be JSON, or the reply cannot be
    decoded either."""
    payload = sys.stdin.buffer.read() if text == "-" else os.fsencode(text)
    if args.protocol == "messages" and args.content_type == "text/json":
        try:
            json.loads(payload)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            shown = "standard input" if text == "-" else repr(text)
            raise Failure(
                f"payload {shown} is not valid JSON, which content type text/json requires: {exc}"
            ) from None
    return payload


def _send_message(client: Any, payload: bytes, content_type: str) -> None:
    encoding = "utf-8" if content_type.startswith("text/") else "binary"
    client.send(payload, content_type=content_type, content_encoding=encoding)


def _print_reply(reply: Any) -> None:
    value: Any = getattr(reply, "value", reply)  # a Message's decoded content, or a frame
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        data = json.dumps(value, ensure_ascii=False).encode()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()
