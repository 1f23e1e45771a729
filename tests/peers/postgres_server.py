"""Debian's PostgreSQL, started for the tests: initdb into a temporary
directory, trust authentication, a loopback port and a socket directory of
its own; stopped (pg_ctl stop) whatever happened."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

# FRAMECODEC_PEERS_POSTGRES: "1" the PostgreSQL tests must run (installed
# with apt-get if missing), "0" they are skipped (.ci/run sets it for the
# interpreter matrix: the server and its clients are the same on every
# interpreter, only the relay's Python differs), unset: they run when
# PostgreSQL is installed.
MODE = os.environ.get("FRAMECODEC_PEERS_POSTGRES", "")


def bindir() -> Optional[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def install() -> None:
    """apt-get install postgresql (as root, where apt-get exists)."""
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postgresql"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def skip_reason() -> Optional[str]:
    """Why the PostgreSQL tests cannot run here, or None."""
    if MODE == "0":
        return "FRAMECODEC_PEERS_POSTGRES=0: PostgreSQL runs on one interpreter of the CI only"
    if bindir() is None:
        if MODE == "1" and os.geteuid() == 0 and shutil.which("apt-get"):
            return None  # installed by the fixture
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and _postgres_user() is None:
        return "running as root with no 'postgres' user: PostgreSQL refuses to run as root"
    return None


def _postgres_user() -> Optional[str]:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: str
    host: str
    port: int
    sockdir: str
    user: str  # the OS user running it; also the database superuser's name

    def tool(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def run_as(self, argv: List[str], **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
        """A client tool, run as the server's OS user (root may not own its files)."""
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, **kwargs)


def start(tls: Optional[Tuple[bytes, bytes]] = None) -> Iterator[PostgresServer]:
    """A running server for the duration of the generator (a fixture's body);
    with ``tls`` (certificate chain, private key: PEM), ssl=on."""
    if bindir() is None and MODE == "1":
        install()
    bin_ = bindir()
    assert bin_ is not None
    root = os.geteuid() == 0
    user = "postgres" if root else os.environ.get("USER") or "postgres"
    # Not under pytest's tmp_path: its parents are private to root, and the
    # server runs as the postgres user.
    base = tempfile.mkdtemp(prefix="framecodec-pg-")
    data, sockdir = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sockdir)
    if root:
        shutil.chown(base, user)
        shutil.chown(sockdir, user)

    def as_user(argv: List[str]) -> List[str]:
        return ["runuser", "-u", user, "--", *argv] if root else argv

    port = free_port()
    server = PostgresServer(bin_, "127.0.0.1", port, sockdir, user)
    subprocess.run(
        as_user([server.tool("initdb"), "-D", data, "-A", "trust", "-U", user, "--no-sync"]),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    options = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    if tls is not None:
        paths = []
        for name, pem in zip(("server.crt", "server.key"), tls):
            path = os.path.join(base, name)
            with open(path, "wb") as file:
                file.write(pem)
            os.chmod(path, 0o600)  # the server refuses a key others can read
            if root:
                shutil.chown(path, user)
            paths.append(path)
        options += f" -c ssl=on -c ssl_cert_file={paths[0]} -c ssl_key_file={paths[1]}"
    log = os.path.join(base, "server.log")
    started = False
    try:
        subprocess.run(
            as_user(
                [
                    server.tool("pg_ctl"),
                    "-D",
                    data,
                    "-l",
                    log,
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        started = True
        yield server
    finally:
        if started or os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                as_user(
                    [server.tool("pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "60", "stop"]
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(base, ignore_errors=True)
