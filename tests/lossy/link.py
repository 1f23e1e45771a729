"""A lossy, slow link between two network namespaces made for it.

``LossyLink`` creates a "server" and a "client" namespace, a TUN device for
each (opened by the relay in this process's namespace, then moved into its
own), addresses from 198.18.0.0/24 (RFC 2544's benchmarking range, which
exists only inside these namespaces), a token bucket (``tc tbf``) on each
device's way out, and the relay (relay.py) forwarding between the devices.
It starts programs inside a namespace with ``ip netns exec`` and, on
``close()``, ends them, stops the relay (its devices vanish with their
descriptors) and deletes both namespaces, whatever happened before.

The kernel of the machines this runs on has no netem qdisc (``tc qdisc add
... netem`` answers "Specified qdisc kind is unknown"), hence the relay:
delay, loss, reordering, duplication and corruption are done in Python,
the rate limit by the kernel's tbf.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from .relay import Impairments, Relay

SERVER_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX = "fclossy-"
TOP = pathlib.Path(__file__).resolve().parent.parent.parent  # the folder holding tests/
STARTUP_TIMEOUT = 30.0

# FRAMECODEC_LOSSY: "1" the lossy-link tests must run in full (fail where
# they cannot), "smoke" only their light part must run (.ci/run's
# interpreter matrix: the heavy runs happen once, with the binary wheel),
# "0" none runs (where no TUN device can exist, e.g. inside bubblewrap),
# unset: all of them run where they can (root, /dev/net/tun, iproute2), and
# under CI they must.
MODE = os.environ.get("FRAMECODEC_LOSSY", "")
_names = itertools.count()


def unavailable() -> Optional[str]:
    """Why no lossy link can be made here, or None."""
    if not sys.platform.startswith("linux"):
        return "lossy links need Linux (network namespaces, TUN devices)"
    if os.geteuid() != 0:
        return "lossy links need root (network namespaces, TUN devices, tc)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun here (a container or sandbox without TUN devices)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"no '{tool}' command (Debian's iproute2)"
    return None


def must_run() -> bool:
    return MODE in ("1", "smoke") or (MODE == "" and bool(os.environ.get("CI")))


def skip_reason() -> Optional[str]:
    """Why the lossy-link tests are skipped here, or None (they run, or fail)."""
    if MODE == "0":
        return "FRAMECODEC_LOSSY=0: no lossy link in this environment"
    reason = unavailable()
    return None if must_run() else reason


def heavy_skip_reason() -> Optional[str]:
    if MODE == "smoke":
        return "FRAMECODEC_LOSSY=smoke: the full lossy runs happen once in CI (binary wheel step)"
    return None


def run(*args: str, netns: Optional[str] = None, check: bool = True) -> None:
    """A setup command, inside ``netns`` if given."""
    argv = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


def remove_stale_namespaces() -> None:
    """Delete namespaces left by earlier runs whose process is gone (killed
    before its cleanup could run)."""
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
    )
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("x")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            run("ip", "netns", "del", name, check=False)


class Program:
    """A program started inside a namespace: its JSON lines, its end."""

    def __init__(self, argv: Sequence[str], netns: str) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=TOP,
        )
        self._buffer = b""

    def read_record(self, timeout: float = STARTUP_TIMEOUT) -> Dict[str, Any]:
        """The next JSON line of its output, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([stdout], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                raise TimeoutError(f"no output from {self.argv[3:5]} in {timeout} s")
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{self.argv[3:5]} ended early: {self.stderr()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def finish(self, timeout: float) -> Dict[str, Any]:
        """Close its input (a server's signal to stop), then its last record."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        record = self.read_record(timeout)
        self.process.wait(timeout)
        return record

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")[-4000:]

    def end(self, grace: float = 0.0) -> None:
        """Stop it if still running after ``grace`` seconds (bounded), and
        close its pipes."""
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class LossyLink:
    """Two namespaces, "server" and "client", joined by a Relay; see the module."""

    def __init__(
        self, impairments: Impairments, rate: Optional[str] = "10mbit", mtu: int = 1500
    ) -> None:
        remove_stale_namespaces()
        tag = f"{os.getpid()}x{next(_names)}"
        self.namespaces = {"server": f"{PREFIX}{tag}-server", "client": f"{PREFIX}{tag}-client"}
        self.addresses = {"server": SERVER_ADDRESS, "client": CLIENT_ADDRESS}
        self.rate = rate
        self.relay: Optional[Relay] = None
        self.programs: List[Program] = []
        devices = (f"fl{tag}s", f"fl{tag}c")  # at most 15 characters
        try:
            for netns in self.namespaces.values():
                run("ip", "netns", "add", netns)
                # No IPv6 (its router and neighbour chatter would cross the relay too).
                for conf in ("all", "default"):
                    run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1", netns=netns)
                run("ip", "link", "set", "lo", "up", netns=netns)
            self.relay = Relay(devices, impairments)
            for side, device in zip(("server", "client"), devices):
                netns = self.namespaces[side]
                run("ip", "link", "set", "dev", device, "netns", netns)
                run("ip", "addr", "add", f"{self.addresses[side]}/24", "dev", device, netns=netns)
                run("ip", "link", "set", "dev", device, "mtu", str(mtu), "up", netns=netns)
                if rate is not None:
                    run("tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", rate,
                       "burst", "16kb", "latency", "100ms", netns=netns)  # fmt: skip
            self.relay.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LossyLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, side: str, module_args: Sequence[str]) -> Program:
        """``python -m tests.lossy.peer ARGS`` inside the ``side`` namespace."""
        program = Program(
            [sys.executable, "-m", "tests.lossy.peer", *module_args], self.namespaces[side]
        )
        self.programs.append(program)
        return program

    def close(self) -> None:
        """End every program, stop the relay, delete both namespaces (each step
        runs whatever the previous ones did)."""
        try:
            while self.programs:
                self.programs.pop().end()
        finally:
            try:
                if self.relay is not None:
                    relay, self.relay = self.relay, None
                    relay.close()
            finally:
                for netns in self.namespaces.values():
                    run("ip", "netns", "del", netns, check=False)
