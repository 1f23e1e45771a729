"""HAProxy in front of framecodec servers, each in a network namespace of
its own, for tests/net/test_load_balancer.py.

Each backend gets a namespace joined to this one by a veth pair (a /30:
the host end .1, the backend .2), and runs tests/net/lb_backend.py in it
(``ip netns exec``: the process is the server itself, so SIGKILL kills the
server and nothing else).  HAProxy runs here, in ``mode tcp`` on loopback,
from a configuration written into the test's tmp_path.  Everything made is
removed on the way out, failure or not.

Namespaces rather than loopback ports: a backend then has an address and a
network stack of its own, as on a machine of its own (its death leaves its
address without a listener, the way a crashed host's does); they need root
and iproute2, which the CI has.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

BACKEND = Path(__file__).with_name("lb_backend.py")
BACKEND_PORT = 9000
START_TIMEOUT = 20.0  # seconds for a backend or HAProxy to come up

# Names unique to this process: helpers and CI may run the suite at once.
PREFIX = f"fcl{os.getpid() % 100000}"


def unavailable() -> Optional[str]:
    """Why the test cannot run here, or None.  With CI set, a missing
    HAProxy fails the test rather than skip it: .ci/run installs it (and
    sets FRAMECODEC_PEERS_HAPROXY=0 for the Debian sid root, which has
    neither HAProxy nor namespaces)."""
    if os.environ.get("FRAMECODEC_PEERS_HAPROXY") == "0":
        return "FRAMECODEC_PEERS_HAPROXY=0: the load balancer test runs on the host's interpreters"
    reason = None
    if shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        reason = "haproxy is not installed (Debian: apt-get install haproxy)"
    elif os.geteuid() != 0 or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
        reason = "network namespaces need root and iproute2 (ip)"
    if reason is not None and os.environ.get("CI"):
        pytest.fail(f"CI must run the load balancer test, but {reason}")
    return reason


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _quiet(*args: str) -> None:
    subprocess.run(args, capture_output=True, timeout=30)


def _taken_subnets() -> set:
    """The 10.x.y prefixes in use on this machine's interfaces."""
    out = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, timeout=30
    ).stdout
    return {word.rsplit(".", 1)[0] for word in out.split() if word.startswith("10.")}


@dataclass
class Backend:
    name: str
    namespace: str
    address: str  # host:port, reachable from here through the veth
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye; the kernel closes its sockets."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def _read_line(process: subprocess.Popen, deadline: float, what: str) -> str:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if line:
                return line.strip()
        if process.poll() is not None:
            break
    error = process.stderr.read() if process.stderr and process.poll() is not None else ""
    raise AssertionError(f"{what} did not start: {error}")


@contextmanager
def namespace(index: int, base: str) -> Iterator[str]:
    """A namespace joined to this one by a veth pair, on the index-th /30
    of ``base`` (10.x.y); yields the backend's IP."""
    here, there = f"{base}.{4 * index + 1}", f"{base}.{4 * index + 2}"
    name, host_end, far_end = f"{PREFIX}n{index}", f"{PREFIX}h{index}", f"{PREFIX}b{index}"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", far_end)
        _run("ip", "link", "set", far_end, "netns", name)
        _run("ip", "addr", "add", f"{here}/30", "dev", host_end)
        _run("ip", "link", "set", host_end, "up")
        _run("ip", "netns", "exec", name, "ip", "addr", "add", f"{there}/30", "dev", far_end)
        _run("ip", "netns", "exec", name, "ip", "link", "set", far_end, "up")
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield there
    finally:
        _quiet("ip", "link", "del", host_end)  # takes its peer along
        _quiet("ip", "netns", "del", name)


@contextmanager
def backend(index: int, name: str, base: str) -> Iterator[Backend]:
    with namespace(index, base) as ip:
        process = subprocess.Popen(
            ["ip", "netns", "exec", f"{PREFIX}n{index}", sys.executable, str(BACKEND),
             f"{ip}:{BACKEND_PORT}", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            line = _read_line(process, time.monotonic() + START_TIMEOUT, f"backend {name}")
            assert line == f"ready {ip}:{BACKEND_PORT}", line
            yield Backend(name, f"{PREFIX}n{index}", f"{ip}:{BACKEND_PORT}", process)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def haproxy_config(port: int, backends: List[Backend]) -> str:
    servers = "\n".join(
        # Health checks every 100 ms, down at the first failure: a dead
        # backend leaves the rotation at once.  Until then a connection to
        # it fails and HAProxy redispatches it to another (retries).
        f"    server {b.name} {b.address} check inter 100ms fall 1 rise 1"
        for b in backends
    )
    return f"""\
global
    nbthread 1
    maxconn 256

defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch

frontend framecodec
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    balance roundrobin
{servers}
"""


@contextmanager
def haproxy(tmp_path: Path, backends: List[Backend]) -> Iterator[str]:
    """HAProxy balancing over ``backends``; yields its address."""
    binary = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert binary is not None
    port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(port, backends))
    _run(binary, "-c", "-q", "-f", str(config))  # a bad configuration fails here, clearly
    with open(tmp_path / "haproxy.log", "w") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"haproxy did not start: {(tmp_path / 'haproxy.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: HAProxy's hard stop
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def balanced_backends(tmp_path: Path, names: List[str]) -> Iterator[tuple]:
    """(HAProxy's address, the backends), each backend in its namespace."""
    taken = _taken_subnets()
    rng = random.Random()
    while True:  # a free 10.x.y.0/24 for this run's /30s
        base = f"10.{rng.randrange(16, 250)}.{rng.randrange(0, 256)}"
        if base not in taken:
            break
    with ExitStack() as stack:
        backends = [stack.enter_context(backend(i, name, base)) for i, name in enumerate(names)]
        address = stack.enter_context(haproxy(tmp_path, backends))
        yield address, backends
