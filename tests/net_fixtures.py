"""Fixtures of the network tests (tests/net, tests/aio, ...), loaded for the
whole suite by tests/conftest.py; every network test module uses
``no_leaks``, which fails a test that leaves a thread, a socket or a
selector behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator, List

import pytest

from .net_support import BACKENDS, FAMILIES, Net

try:
    import trustme
except ImportError:  # not installed on PyPy: see require_trustme
    trustme = None

NO_TRUSTME = (
    "TLS tests need certificates from trustme, whose cryptography has no PyPy wheel "
    "and cannot be built here (no Rust toolchain): the test extra leaves it out on PyPy"
)


def require_trustme(allow_module_level: bool = False) -> Any:
    """trustme, or skip on PyPy (where it cannot install) saying why; on
    CPython, where the test extra always installs it, its absence fails."""
    if trustme is None:
        if sys.implementation.name == "cpython":
            pytest.fail("trustme is missing: install the test extra ('.[test]')")
        pytest.skip(NO_TRUSTME, allow_module_level=allow_module_level)
    return trustme


def _watched_fds() -> set:
    """(fd, target) of this process's sockets and selectors."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(("socket:", "anon_inode:[eventpoll]")):
            found.add((int(name), target))
    return found


@pytest.fixture
def no_leaks() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    fds_before = _watched_fds()
    yield
    deadline = time.monotonic() + 5.0  # threads being joined may take a moment to go
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        fds = _watched_fds() - fds_before
        if (not threads and not fds) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not threads, f"threads left behind: {threads}"
    assert not fds, f"sockets or selectors left open: {sorted(fds)}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: Any) -> SimpleNamespace:
    """A CA, a server certificate for localhost/127.0.0.1/::1 and a client
    certificate, generated now (no key is ever committed), as PEM files."""
    directory = tmp_path_factory.mktemp("pki")
    ca = require_trustme().CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert("client.example")
    paths = SimpleNamespace(ca_obj=ca, directory=directory)
    for name, blob in (
        ("ca", ca.cert_pem),
        ("cert", server.cert_chain_pems[0]),
        ("key", server.private_key_pem),
        ("client_cert", client.private_key_and_cert_chain_pem),
    ):
        path = directory / f"{name}.pem"
        blob.write_to_path(str(path))
        setattr(paths, name, str(path))
    return paths


@pytest.fixture
def make_net(request: Any) -> Iterator[Any]:
    nets: List[Net] = []

    def make(family: str, tls: bool) -> Net:
        # The certificates only for TLS: plain tests run where trustme cannot.
        net = Net(family, tls, request.getfixturevalue("pki") if tls else None)
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.close()


MATRIX = [(family, tls) for family in FAMILIES for tls in (False, True)]


@pytest.fixture(params=MATRIX, ids=[f"{f}-{'tls' if t else 'plain'}" for f, t in MATRIX])
def net(request: Any, make_net: Any) -> Net:
    """Every family, plain and TLS."""
    return make_net(*request.param)  # type: ignore[no-any-return]


@pytest.fixture
def tcp(make_net: Any) -> Net:
    """IPv4, plain: for tests one point of the matrix covers."""
    return make_net("tcp4", False)  # type: ignore[no-any-return]


@pytest.fixture(params=BACKENDS)
def backend(request: Any) -> str:
    return request.param  # type: ignore[no-any-return]
