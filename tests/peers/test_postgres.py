"""examples/pg_relay.py between Debian's PostgreSQL and its own clients
(psql, pgbench, and a raw client sending its startup packet and a query in
one write): every message framed both ways, every byte forwarded."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import ssl
import sys
import time

import pytest

from framecodec import FrameDecoder, FrameEncoder
from framecodec.errors import FrameTooLargeError, IncompleteFrameError

from . import postgres_server
from .refeed import check_refeed

pytestmark = pytest.mark.skipif(
    postgres_server.skip_reason() is not None, reason=postgres_server.skip_reason() or ""
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent.parent / "examples"
BIG_ROW = 20_000_000  # one DataRow over 16 MiB (the generic default limit)
TIMEOUT = 120


def load_relay():
    spec = importlib.util.spec_from_file_location("example_pg_relay", EXAMPLES / "pg_relay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pg_relay = load_relay()


@pytest.fixture(scope="module")
def server():
    yield from postgres_server.start()


@pytest.fixture(scope="module")
def relay(server):
    """One relay for the module, capturing: its counts are checked at the end."""
    with pg_relay.PgRelay((server.host, server.port), capture=True) as running:
        yield running


@pytest.fixture(scope="module")
def tls_setup():
    trustme = pytest.importorskip(
        "trustme", reason="trustme (test certificates): its cryptography has no PyPy wheel"
    )
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    return ca, cert


@pytest.fixture(scope="module")
def tls_server(tls_setup):
    _, cert = tls_setup
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    yield from postgres_server.start(tls=(chain, cert.private_key_pem.bytes()))


def psql(server, relay, sql, *extra, env=None):
    host, port = relay.address
    result = server.run_as(
        [server.tool("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", host, "-p", str(port), "-U", server.user, "-d", "postgres", *extra],
        input=sql.encode(), capture_output=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, (
        result.stderr.decode(errors="replace"),
        [c.error for c in relay.connections],
    )
    return result.stdout


def test_psql_queries(server, relay):
    before = len(relay.connections)
    out = psql(
        server,
        relay,
        "select 1 + 1;\n"
        "create table fruit (id int primary key, name text);\n"
        "insert into fruit select i, 'fruit ' || i from generate_series(1, 5000) i;\n"
        "select count(*), sum(id) from fruit;\n"
        "select name from fruit where id = 4242;\n"
        "select string_agg(name, ',') from fruit where id <= 3;\n"
        "drop table fruit;\n",
    )
    assert out.decode().splitlines() == [
        "2", "5000|12502500", "fruit 4242", "fruit 1,fruit 2,fruit 3",
    ]  # fmt: skip
    (conn,) = relay.connections[before:]
    # libpq's default sslmode=prefer asks for TLS first; this server has none.
    assert conn.answers == b"N"
    assert conn.to_server.packets == 2  # SSLRequest, then the startup packet


def test_psql_multi_megabyte_row(server, relay):
    out = psql(server, relay, f"select repeat('x', {BIG_ROW});\n")
    assert out == b"x" * BIG_ROW + b"\n"
    conn = relay.connections[-1]
    assert conn.to_client.types["D"] == 1
    assert conn.to_client.bytes_in > BIG_ROW


def test_startup_and_query_in_one_write(server, relay):
    """A raw client: an SSLRequest (answered N), then the startup packet and
    a query in a single write, which the relay's opening decoder reads in
    one recv() and hands on with detach()."""
    untyped = FrameEncoder(length_adjustment=-4)
    typed = FrameEncoder("postgres")
    before = len(relay.connections)
    with socket.create_connection(relay.address, timeout=TIMEOUT) as sock:
        answers = b""
        sock.sendall(untyped.encode(pg_relay.SSL_REQUEST.to_bytes(4, "big")))
        answers += sock.recv(1)
        assert answers == b"N", relay.connections[-1].error
        startup = (3 << 16).to_bytes(4, "big") + b"user\0%s\0database\0postgres\0\0" % (
            server.user.encode()
        )
        query = typed.encode(b"select 'in one write'\0", prefix=b"Q")
        sock.sendall(untyped.encode(startup) + query)
        decoder = FrameDecoder("postgres")
        replies = []
        deadline = time.monotonic() + TIMEOUT
        while [r[:1] for r in replies].count(b"Z") < 2 and time.monotonic() < deadline:
            data = sock.recv(65536)
            assert data, "the server closed early"
            replies += decoder.feed(data)
        sock.sendall(typed.encode(b"", prefix=b"X"))
        assert sock.recv(1) == b""
    kinds = [r[:1] for r in replies]
    assert kinds[0] == b"R" and kinds[-1] == b"Z"  # AuthenticationOk ... ReadyForQuery
    rows = [r for r in replies if r[:1] == b"D"]
    assert len(rows) == 1 and rows[0].endswith(b"in one write")
    (conn,) = relay.connections[before:]
    assert conn.answers == b"N" and conn.to_server.packets == 2


def test_second_ssl_request_refused(server, relay):
    """PostgreSQL answers a second SSLRequest with an ErrorResponse (a typed
    message) and closes: the relay forwards it framed."""
    request = FrameEncoder(length_adjustment=-4).encode(pg_relay.SSL_REQUEST.to_bytes(4, "big"))
    with socket.create_connection(relay.address, timeout=TIMEOUT) as sock:
        sock.sendall(request)
        assert sock.recv(1) == b"N"
        sock.sendall(request)
        decoder = FrameDecoder("postgres")
        replies = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            replies += decoder.feed(data)
        decoder.eof()
    assert [r[:1] for r in replies] == [b"E"]
    assert b"unsupported frontend protocol" in replies[0]


def test_gssenc_request_answered_g(server, relay):
    """Debian's server is built with GSSAPI: it answers a GSSENCRequest over
    TCP with G (GSSAPI tokens follow, which the relay forwards unparsed)."""
    before = len(relay.connections)
    with socket.create_connection(relay.address, timeout=TIMEOUT) as sock:
        request = FrameEncoder(length_adjustment=-4).encode(
            pg_relay.GSSENC_REQUEST.to_bytes(4, "big")
        )
        sock.sendall(request)
        assert sock.recv(1) == b"G"
    deadline = time.monotonic() + TIMEOUT
    (conn,) = relay.connections[before:]
    while relay._threads[before].is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert conn.error is None and conn.encrypted and conn.answers == b"G"
    assert conn.to_server.bytes_in == conn.to_server.bytes_out == len(request)
    assert conn.to_server.opaque == conn.to_client.opaque == 0


def test_a_bad_client_ends_its_own_connection_only(server):
    """A startup packet announcing 2 GiB, and one cut short: each ends that
    connection, with the error kept; the next client is served."""
    with pg_relay.PgRelay((server.host, server.port)) as relay:
        for wire in (b"\x7f\xff\xff\xff", b"\x00\x00\x00\x10abc"):
            with socket.create_connection(relay.address, timeout=TIMEOUT) as sock:
                sock.sendall(wire)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b""  # closed by the relay
        assert psql(server, relay, "select 'still here';\n") == b"still here\n"
    errors = [conn.error for conn in relay.connections]
    assert isinstance(errors[0], FrameTooLargeError)
    assert isinstance(errors[1], IncompleteFrameError)
    assert errors[2] is None


def test_pgbench(server, relay):
    host, port = relay.address
    common = ["-h", host, "-p", str(port), "-U", server.user]
    init = server.run_as(
        [server.tool("pgbench"), "-i", "-s", "1", "-q", *common, "postgres"],
        capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr.decode(errors="replace")
    run = server.run_as(
        [server.tool("pgbench"), "-c", "4", "-t", "200", "-n", *common, "postgres"],
        capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    out = run.stdout.decode()
    assert run.returncode == 0, out + run.stderr.decode(errors="replace")
    assert "number of transactions actually processed: 800/800" in out
    assert "number of failed transactions: 0 " in out


def check_connections(relay, codec):
    """Every connection of ``relay`` closed cleanly, framed every byte both
    ways; each captured stream decodes the same whatever the cuts."""
    deadline = time.monotonic() + TIMEOUT
    while any(t.is_alive() for t in relay._threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    for conn in relay.connections:
        if conn.encrypted:
            continue  # a GSSENCRequest answered G: checked by its test
        assert conn.error is None, repr(conn.error)
        for way in (conn.to_server, conn.to_client):
            assert way.opaque == 0
            assert way.bytes_in == way.bytes_out > 0
        assert conn.to_server.packets >= 1  # (a refused second SSLRequest: no message)
        assert conn.to_client.messages >= 1
        up_stream, down_stream = conn.captured
        # Re-decode the capture: opening packets, then messages, each way.
        opening = codec.FrameDecoder(**pg_relay.UNTYPED)
        opening.stop_after(conn.to_server.packets)
        packets = opening.feed(bytes(up_stream))
        assert len(packets) == conn.to_server.packets
        typed_up = opening.detach()
        typed_down = bytes(down_stream[len(conn.answers) :])
        for data, way in ((typed_up, conn.to_server), (typed_down, conn.to_client)):
            expected = codec.FrameDecoder("postgres").feed(data)
            assert len(expected) == way.messages
            assert b"".join(expected) == data
            check_refeed(
                lambda: codec.FrameDecoder("postgres"),
                data, expected, seed=way.messages,
            )  # fmt: skip


def test_starttls_through_the_relay(tls_setup, tls_server, codec):
    """ssl=on: psql (sslmode=require) asks for TLS, the server says S, and
    the relay upgrades both sides (STARTTLS), framing the decrypted messages."""
    ca, cert = tls_setup
    for_clients = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(for_clients)
    to_server = ssl.create_default_context()
    ca.configure_trust(to_server)  # verifies the server's certificate for 127.0.0.1
    upstream = (tls_server.host, tls_server.port)
    with pg_relay.PgRelay(upstream, capture=True, tls=(for_clients, to_server)) as relay:
        env = {"PGSSLMODE": "require", "PATH": os.environ.get("PATH", "")}
        out = psql(
            tls_server, relay,
            "select ssl, version from pg_stat_ssl where pid = pg_backend_pid();\n"
            f"select length(repeat('y', {BIG_ROW // 4}));\n", env=env,
        )  # fmt: skip
        assert out.decode().splitlines()[0].startswith("t|TLS")
        assert out.decode().splitlines()[1] == str(BIG_ROW // 4)
        out = psql(tls_server, relay, f"select repeat('z', {BIG_ROW // 4});\n", env=env)
        assert out == b"z" * (BIG_ROW // 4) + b"\n"
    assert len(relay.connections) == 2
    for conn in relay.connections:
        assert conn.tls and conn.answers == b"S" and not conn.encrypted
    check_connections(relay, codec)
    up, down = relay.totals()
    print(
        f"\npostgres TLS: {len(relay.connections)} connections; to server "
        f"{up.packets} packets + {up.messages} messages, {up.bytes_in} bytes; to client "
        f"{down.packets} answers + {down.messages} messages, {down.bytes_in} bytes"
    )


def test_relay_counts_and_refeed(server, relay, codec, record_property):
    """Runs last: every connection so far closed cleanly, framed every byte
    both ways; each captured stream decodes the same whatever the cuts."""
    check_connections(relay, codec)
    assert len(relay.connections) >= 8  # psql x2, the raw clients, pgbench's
    up, down = relay.totals()
    record_property("pg_connections", len(relay.connections))
    record_property("pg_to_server", (up.messages, up.bytes_in))
    record_property("pg_to_client", (down.messages, down.bytes_in))
    print(
        f"\npostgres: {len(relay.connections)} connections; to server "
        f"{up.packets} packets + {up.messages} messages, {up.bytes_in} bytes; to client "
        f"{down.packets} answers + {down.messages} messages, {down.bytes_in} bytes"
    )
