"""What the tests and scripts/lossy_link.py run over a LossyLink: frames
between a framecodec server and client, numbered datagrams, a raw TCP
stream.  Each returns the records its programs printed (peer.py), with what
the relay counted meanwhile, for the caller to check or report."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from .link import SERVER_ADDRESS, LossyLink

# The client of each server backend: the blocking ones get framecodec.connect.
CLIENTS = {"selector": "blocking", "threads": "blocking", "aio": "aio"}


@dataclasses.dataclass
class TLSFiles:
    """PEM files: the server's certificate and key (for SERVER_ADDRESS), the CA."""

    cert: str
    key: str
    ca: str


def relay_delta(link: LossyLink, before: Dict[str, int]) -> Dict[str, int]:
    assert link.relay is not None
    now = link.relay.stats
    return {key: now[key] - before.get(key, 0) for key in now if now[key] != before.get(key, 0)}


def frames(
    link: LossyLink,
    backend: str,
    tls: Optional[TLSFiles],
    *,
    count: int,
    max_size: int,
    budget: int,
    seed: int = 13,
    timeout: float = 30.0,
    deadline: float = 120.0,
) -> Dict[str, Any]:
    """A server of ``backend`` in the server namespace, its client in the
    client one, ``count`` checked frames each way; the client's result with
    the server's ("server") and the relay's counts ("relay") added."""
    assert link.relay is not None
    before = dict(link.relay.stats)
    server_args = ["server", "--host", SERVER_ADDRESS, "--backend", backend]
    client_args = ["client", "--host", SERVER_ADDRESS, "--backend", CLIENTS[backend]]
    if tls is not None:
        server_args += ["--cert", tls.cert, "--key", tls.key]
        client_args += ["--ca", tls.ca]
    server = link.start("server", server_args)
    port = server.read_record()["port"]
    client = link.start(
        "client",
        [*client_args, "--port", str(port), "--frames", str(count), "--max-size", str(max_size),
         "--budget", str(budget), "--seed", str(seed), "--timeout", str(timeout),
         "--deadline", str(deadline)],
    )  # fmt: skip
    try:
        result = client.read_record(deadline + timeout + 30)
    except (TimeoutError, RuntimeError) as exc:
        result = {"ok": False, "error": f"client: {exc}", "client_stderr": client.stderr()}
    client.end(grace=10)
    try:
        result["server"] = server.finish(timeout + 10)
    except (TimeoutError, RuntimeError) as exc:
        result["server"] = {"error": str(exc), "stderr": server.stderr()}
    server.end()
    result["relay"] = relay_delta(link, before)
    return result


def datagrams(
    link: LossyLink, count: int, interval: float = 0.0005, size: int = 64
) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """``count`` numbered datagrams from the client namespace to the server
    one: the receiver's record (sequence numbers in arrival order, payloads
    that did not match) and the relay's counts."""
    assert link.relay is not None
    before = dict(link.relay.stats)
    receiver = link.start(
        "server", ["udp-recv", "--host", SERVER_ADDRESS, "--size", str(size), "--idle", "0.5"]
    )
    port = receiver.read_record()["port"]
    sender = link.start(
        "client", ["udp-send", "--host", SERVER_ADDRESS, "--port", str(port),
                   "--count", str(count), "--interval", str(interval), "--size", str(size)],
    )  # fmt: skip
    sender.read_record(count * interval + 60)
    record = receiver.read_record(count * interval + 60)
    sender.end(grace=10)
    receiver.end(grace=10)
    return record, relay_delta(link, before)


def stream(link: LossyLink, size: int, seed: int = 13) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """``size`` seeded bytes over a raw TCP connection, client to server: the
    receiver's count of bytes that arrived changed, and the relay's counts."""
    assert link.relay is not None
    before = dict(link.relay.stats)
    receiver = link.start(
        "server", ["tcp-recv", "--host", SERVER_ADDRESS, "--size", str(size), "--seed", str(seed)]
    )
    port = receiver.read_record()["port"]
    sender = link.start(
        "client", ["tcp-send", "--host", SERVER_ADDRESS, "--port", str(port),
                   "--size", str(size), "--seed", str(seed)],
    )  # fmt: skip
    sender.read_record(90)
    record = receiver.read_record(90)
    sender.end(grace=10)
    receiver.end(grace=10)
    return record, relay_delta(link, before)


def late_arrivals(seqs: list) -> Tuple[int, int]:
    """(late, repeated) in an arrival order: late ones came after a higher
    number had; repeated ones had come before."""
    seen: set = set()
    highest = -1
    late = repeated = 0
    for seq in seqs:
        if seq in seen:
            repeated += 1
            continue
        seen.add(seq)
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    return late, repeated
