"""TLS: the context helpers, and each failure seen clearly by the side that
should see it while the server goes on serving."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import ssl
import time

import pytest

import framecodec
from framecodec import ConnectionHandler, FrameDecoder, FrameEncoder, ProtocolError

from ..net_fixtures import require_trustme
from ..net_support import (
    TIMEOUT,
    check_handshake_error,
    closing_listener,
    half_closing_client,
    wait_until,
)

trustme = require_trustme(allow_module_level=True)

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def tls(make_net):
    return make_net("tcp4", True)


def upper(frame):
    return frame.upper()


def write_cert(directory, name, cert):
    path = directory / f"{name}.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def test_context_helpers(pki):
    server = framecodec.server_context(pki.cert, pki.key)
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    mutual = framecodec.server_context(pki.cert, pki.key, cafile=pki.ca)
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    client = framecodec.client_context(pki.ca)
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client.protocol == ssl.PROTOCOL_TLS_CLIENT


class ResetAfterCheck(socket.socket):
    """An accepted socket whose peer resets just after the server checked
    it: the check sees it connected, ssl.py's own probe inside wrap_socket()
    does not."""

    def getpeername(self):
        return ("127.0.0.1", 1)


def test_a_reset_inside_wrap_socket_leaves_no_descriptor_open(pki):
    from framecodec.net.tls import wrap_accepted

    context = framecodec.server_context(pki.cert, pki.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        sock = ResetAfterCheck(fileno=accepted.detach())
        fd = sock.fileno()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # a RST
        time.sleep(0.05)
        with pytest.raises(ConnectionResetError) as caught:
            wrap_accepted(context, sock)
        # The exception (and its traceback, holding ssl.py's new SSLSocket)
        # is still alive here: the descriptor must be closed all the same.
        assert caught.value.__traceback__ is not None
        with pytest.raises(OSError):
            os.fstat(fd)


def test_plain_client_to_tls_server(tls, backend, caplog):
    server = tls.serve(upper, backend=backend)
    with framecodec.connect(server.address, timeout=TIMEOUT) as plain:
        plain.send(b"hello?")
        with pytest.raises((ConnectionError, ProtocolError)):
            plain.recv()
    wait_until(lambda: server.stats["tls_failures"] == 1)
    # The ending is counted, then logged: the log line may come a moment later.
    wait_until(lambda: "TLS handshake with 127.0.0.1" in caplog.text, message="the log line")
    assert "plain TCP" in caplog.text
    assert tls.connect(server).request(b"still serving") == b"STILL SERVING"


def test_untrusted_certificate(tls, backend, pki):
    server = tls.serve(upper, backend=backend)
    stranger = framecodec.client_context(None)  # trusts the system CAs, not ours
    stranger.load_verify_locations(cadata=trustme.CA().cert_pem.bytes().decode())
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        framecodec.connect(server.address, ssl_context=stranger, timeout=TIMEOUT)
    wait_until(lambda: server.stats["tls_failures"] == 1)
    assert tls.connect(server).request(b"ok") == b"OK"


def test_expired_certificate(tls, backend, pki):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    expired = pki.ca_obj.issue_cert("localhost", "127.0.0.1", not_after=past)
    path = write_cert(pki.directory, "expired", expired)
    server = tls.serve(upper, backend=backend, ssl_context=framecodec.server_context(path))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        tls.connect(server)
    wait_until(lambda: server.stats["tls_failures"] == 1)


def test_wrong_host_name(tls, backend):
    server = tls.serve(upper, backend=backend)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|not valid for"):
        tls.connect(server, server_hostname="example.com")
    assert tls.connect(server).request(b"right name") == b"RIGHT NAME"


def test_mutual_tls(tls, backend, pki):
    context = framecodec.server_context(pki.cert, pki.key, cafile=pki.ca)
    server = tls.serve(upper, backend=backend, ssl_context=context)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3 finishes the client's handshake first: the refusal may
        # surface at the first read.
        anonymous = tls.connect(server)
        anonymous.request(b"who am I?")
    wait_until(lambda: server.stats["tls_failures"] == 1)
    certified = framecodec.client_context(pki.ca, certfile=pki.client_cert)
    with framecodec.connect(
        server.address, ssl_context=certified, server_hostname="localhost", timeout=TIMEOUT
    ) as client:
        assert client.request(b"me") == b"ME"


def test_stuck_handshakes_do_not_stall_others(tls, backend, caplog):
    caplog.set_level(logging.INFO, logger="framecodec.server")
    server = tls.serve(upper, backend=backend, frame_timeout=1.0)
    silent = tls.raw(server, tls=False)  # connects, never says hello
    partial = tls.raw(server, tls=False)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
    client = tls.connect(server)
    for i in range(20):
        assert client.request(b"%d" % i) == b"%d" % i
    # Served while the stuck handshakes were still pending, not after they
    # were dropped.
    assert server.stats["timeouts"] == 0
    wait_until(lambda: server.stats["timeouts"] == 2, timeout=3)
    # The threads backend counts an ending before its worker logs it.
    wait_until(lambda: "handshake not complete" in caplog.text or "timed out" in caplog.text)
    for sock in (silent, partial):
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert client.request(b"after") == b"AFTER"


def test_tls_over_unix_needs_a_server_hostname(make_net, pki):
    net = make_net("unix", True)
    server = net.serve(upper)
    with pytest.raises(ValueError, match="server_hostname"):
        framecodec.connect(
            server.address, ssl_context=framecodec.client_context(pki.ca), timeout=TIMEOUT
        )
    client = net.connect(server)  # with server_hostname="localhost"
    assert client.request(b"unix") == b"UNIX"


def test_plain_server_and_tls_client(make_net, pki, backend):
    net = make_net("tcp4", False)
    server = net.serve(upper, backend=backend)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        framecodec.connect(
            server.address, ssl_context=framecodec.client_context(pki.ca), timeout=TIMEOUT
        )
    wait_until(lambda: server.stats["protocol_errors"] + server.stats["network_errors"] == 1)
    # The ClientHello looked like a huge frame; the next client is served.
    assert net.connect(server).request(b"ok") == b"OK"


class HalfCloser(ConnectionHandler):
    def frame_received(self, frame):
        return frame.upper()

    def eof_received(self):
        time.sleep(0.05)  # replies still pending when the peer has stopped writing
        self.connection.send(b"bye")


def test_half_close_over_tls(tls, backend, pki):
    """Python's SSLSocket has no TLS half-close (unwrap() is a full shutdown),
    so the client drives OpenSSL through memory BIOs: it sends close_notify,
    then reads on."""
    server = tls.serve(HalfCloser, backend=backend)
    with socket.create_connection(server.address.sockaddr, timeout=TIMEOUT) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = framecodec.client_context(pki.ca).wrap_bio(
            incoming, outgoing, server_hostname="localhost"
        )

        def step(operation):
            """Run a TLS operation to completion, moving its bytes."""
            while True:
                try:
                    result = operation()
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    if not data:
                        return b""
                    incoming.write(data)
                    continue
                except ssl.SSLZeroReturnError:  # the server's close_notify, or its FIN
                    return b""
                sock.sendall(outgoing.read())
                return result

        step(client.do_handshake)
        step(lambda: client.write(FrameEncoder().encode_many([b"a", b"b"])))
        try:
            client.unwrap()  # close_notify out; the server's is not awaited
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
        decoder, frames = FrameDecoder(), []
        while True:
            chunk = step(lambda: client.read(65536))
            if not chunk:
                break
            frames += decoder.feed(chunk)
    assert frames == [b"A", b"B", b"bye"]
    wait_until(lambda: server.stats["clean_closes"] == 1)


# -- one connection's OpenSSL error never reaches another ---------------------------


def _handshaken_client(pki):
    """A client SSLObject whose TLS 1.3 handshake with a server over memory
    BIOs is complete: reading from it now wants more bytes."""
    server_ctx = framecodec.server_context(pki.cert, pki.key)
    client_ctx = framecodec.client_context(pki.ca)
    into_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    into_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(into_client, from_client, server_hostname="localhost")
    server = server_ctx.wrap_bio(into_server, from_server, server_side=True)
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        into_server.write(from_client.read())
        into_client.write(from_server.read())
    return client


def _push_stale_epipe():
    """Leave an EPIPE entry in this thread's OpenSSL error queue, as a
    close_notify written to a vanished peer does (OpenSSL 3's ERR_new and
    ERR_set_error; ERR_LIB_SYS is 2)."""
    import _ssl
    import ctypes

    try:
        lib = ctypes.CDLL(_ssl.__file__)
        lib.ERR_new.restype = None
        lib.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        lib.ERR_set_error.restype = None
    except (OSError, AttributeError):
        pytest.fail("libcrypto's ERR_new/ERR_set_error are not reachable from _ssl")
    lib.ERR_new()
    lib.ERR_set_error(2, 32, None)


@pytest.mark.skipif(
    not hasattr(ssl, "OP_IGNORE_UNEXPECTED_EOF"),
    reason="OpenSSL before 3.0 has no ERR_set_error to plant a stale entry with",
)
@pytest.mark.skipif(
    framecodec.net.tls._find_err_clear_error() is None,
    reason="this Python's ssl module does not expose libcrypto (PyPy's is cffi-built)",
)
def test_a_stale_openssl_error_is_cleared_when_a_tls_connection_closes(pki):
    client = _handshaken_client(pki)
    with pytest.raises(ssl.SSLWantReadError):
        client.read(10)  # healthy: it wants the peer's bytes
    # The CPython bug cleared against (gh-148594): a stale entry turns that
    # wait into an error on an unrelated connection.
    _push_stale_epipe()
    with pytest.raises(OSError) as stale:
        client.read(10)
    assert not isinstance(stale.value, ssl.SSLWantReadError)
    # Closing any TLS connection empties the queue: the next read waits again.
    _push_stale_epipe()
    a, b = socket.socketpair()
    b.close()
    framecodec.net.transport.close_socket(
        framecodec.client_context(pki.ca).wrap_socket(
            a, server_hostname="localhost", do_handshake_on_connect=False
        )
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.read(10)


# -- a client that half-closes after a large request (issue 13) ----------------------


def first_three(frame):
    return frame[:3]


@pytest.mark.parametrize("close_notify", [False, True], ids=["fin", "close_notify"])
def test_every_reply_reaches_a_client_that_half_closed_after_a_large_frame(
    tls, backend, pki, close_notify
):
    """The aio server lost the last reply here (asyncio's TLS layer shut
    down at the FIN); the blocking servers must not either."""
    server = tls.serve(first_three, backend=backend)
    context = framecodec.client_context(pki.ca)
    for _ in range(3):
        replies = half_closing_client(
            server.address, [b"a" * (1 << 20), b"xyz"], context=context, close_notify=close_notify
        )
        assert replies == [b"aaa", b"xyz"]
    wait_until(lambda: server.stats["clean_closes"] == 3)


# -- a handshake the server ends: TLSHandshakeError (issue 13) ------------------------


def test_connect_to_a_server_that_closes_in_the_handshake(pki):
    with closing_listener() as address, pytest.raises(framecodec.TLSHandshakeError) as caught:
        framecodec.connect(address, ssl_context=framecodec.client_context(pki.ca), timeout=TIMEOUT)
    check_handshake_error(caught.value, address)


def test_multiclient_to_a_server_that_closes_in_the_handshake(pki):
    with (
        closing_listener() as address,
        framecodec.MultiClient(
            timeout=TIMEOUT, ssl_context=framecodec.client_context(pki.ca)
        ) as clients,
    ):
        conn = clients.connect(address, server_hostname="localhost")
        assert list(clients) == []
    check_handshake_error(conn.error, address)
