"""Misbehaving peers against a running server, with a steady client alongside
that must be served without error throughout (the fast subset of
scripts/attack_report.py; docs/reliability.md has the full table)."""

from __future__ import annotations

import gc

import pytest

from .net_fixtures import _watched_fds
from .net_support import reset, wait_until

pytest_plugins = ["tests.net_fixtures"]
pytestmark = pytest.mark.usefixtures("no_leaks")


def upper(frame):
    return frame.upper()


@pytest.fixture
def tls(make_net):
    return make_net("tcp4", True)


def test_connections_reset_in_the_backlog_are_closed_and_counted(tls, backend):
    """ssl.py raises from wrap_socket() without closing its new socket when
    the peer reset the connection in the backlog; with the garbage collector
    off, only the server's own close frees those descriptors."""
    server = tls.serve(upper, backend=backend, max_connections=1)
    holder = tls.connect(server)
    assert holder.request(b"x") == b"X"  # the only slot: the others wait in the backlog
    before = _watched_fds()
    gc.disable()
    try:
        for i in range(10):
            sock = tls.raw(server, tls=False)
            if i % 2:
                sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello
            reset(sock)
        holder.close()
        wait_until(lambda: server.stats["closed"] == 11, message="every connection ended")
        wait_until(lambda: not _watched_fds() - before, timeout=2, message="descriptors closed")
    finally:
        gc.enable()
    assert server.stats["accepted"] == 11
    assert server.stats["network_errors"] == 10
    assert tls.connect(server).request(b"next") == b"NEXT"
