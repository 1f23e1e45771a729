"""``python -m framecodec serve`` (an echo service) and ``send`` (its client)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import threading
from typing import Any, Dict

from .codec.formats import PRESETS
from .errors import ProtocolError

__all__ = ["add_parsers"]

ADDRESS_HELP = "host:port, [ipv6]:port, unix:/path or unix:@name (port 0: any free port)"
# Presets whose frames arrive without their header, so that echoing one
# frames it again identically.
ECHO_FORMATS = sorted(name for name, fmt in PRESETS.items() if fmt.strip is None)


def add_parsers(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an echo service",
        description="Echo every frame (or message, with the same content type) back to its sender.",
    )
    serve.add_argument("address", help=ADDRESS_HELP)
    serve.add_argument("--backend", choices=("selector", "threads"), default="selector")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on the address, e.g. one per core (default 1)",
    )
    _add_protocol_options(serve)
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="its private key, if not in --tls-cert")
    serve.add_argument(
        "--tls-ca", metavar="FILE", help="require client certificates signed by this CA"
    )
    serve.add_argument("--max-connections", type=int, metavar="N")
    serve.add_argument("--idle-timeout", type=float, metavar="SECONDS")
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
        "--content-type", help="messages: the payloads' content type (default text/plain)"
    )
    send.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs")
    send.add_argument("--tls-ca", metavar="FILE", help="use TLS, trusting this CA (implies --tls)")
    send.add_argument("--tls-cert", metavar="FILE", help="client certificate, for mutual TLS")
    send.add_argument("--tls-key", metavar="FILE", help="its private key, if not in --tls-cert")
    send.add_argument("--server-hostname", help="name to check the certificate against")
    send.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    send.set_defaults(run=run_send)


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=("frames", "messages"), default="frames")
    parser.add_argument(
        "--format", choices=ECHO_FORMATS, help="frame format (frames only; default uint32)"
    )
    parser.add_argument("--max-frame-size", type=int, metavar="BYTES")


def _protocol_options(args: argparse.Namespace) -> Dict[str, Any]:
    if args.protocol == "messages":
        if args.format:
            raise ValueError("--format applies to --protocol frames")
        return {"max_content_size": args.max_frame_size} if args.max_frame_size else {}
    options: Dict[str, Any] = {"format": args.format}
    if args.max_frame_size:
        options["max_frame_size"] = args.max_frame_size
    return options


def _fail(command: str, exc: BaseException) -> int:
    print(f"framecodec {command}: {exc}", file=sys.stderr)
    return 1


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
        context = (
            server_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
        )
        server = serve(
            args.address,
            _echo,
            backend=args.backend,
            protocol=args.protocol,
            ssl_context=context,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            workers=args.workers,
            **_protocol_options(args),
        )
    except (OSError, ValueError) as exc:
        return _fail("serve", exc)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
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
    return 0


def run_send(args: argparse.Namespace) -> int:
    from .net.client import connect
    from .net.tls import client_context

    try:
        options = _protocol_options(args)
        context = None
        if args.tls or args.tls_ca or args.tls_cert:
            context = client_context(args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key)
        payloads = [sys.stdin.buffer.read() if p == "-" else os.fsencode(p) for p in args.payload]
        with connect(
            args.address,
            protocol=args.protocol,
            timeout=args.timeout,
            ssl_context=context,
            server_hostname=args.server_hostname,
            **options,
        ) as client:
            if args.protocol == "frames":
                client.send_many(payloads)
            else:
                for payload in payloads:
                    _send_message(client, payload, args.content_type)
            for _ in payloads:
                _print_reply(client.recv())
    except (OSError, ValueError, ProtocolError, ssl.SSLError) as exc:
        return _fail("send", exc)
    return 0


def _send_message(client: Any, payload: bytes, content_type: Any) -> None:
    content_type = content_type or "text/plain"
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
