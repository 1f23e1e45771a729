"""``python -m framecodec serve`` in a subprocess, ``send`` in process."""

from __future__ import annotations

import contextlib
import io
import os
import selectors
import signal
import subprocess
import sys

import pytest

from framecodec.__main__ import main

from .net_support import TIMEOUT, unix_path

pytestmark = pytest.mark.usefixtures("no_leaks")


@contextlib.contextmanager
def serve_process(*args):
    """Run ``serve`` until the block ends; yield (address, stderr lines so far)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "framecodec", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "serve printed nothing"
        line = process.stdout.readline()
        assert line.startswith("serving"), process.stderr.read()
        yield line.split(" on ")[1].split(" (")[0], process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        finally:
            process.stdout.close()
            process.stderr.close()


def send(capsysbinary, *args):
    code = main(["send", *args])
    out, err = capsysbinary.readouterr()
    return code, out, err


def test_frames_echo_and_connection_log(capsysbinary):
    with serve_process("127.0.0.1:0") as (address, process):
        code, out, _ = send(capsysbinary, address, "hello", "wörld", "")
        assert (code, out) == (0, "hello\nwörld\n\n".encode())
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
        log = process.stderr.read()
    assert "connection from 127.0.0.1" in log
    assert "shutting down" in log


def test_messages_over_unix_with_threads(capsysbinary):
    path = unix_path()
    with serve_process(f"unix:{path}", "--backend", "threads", "--protocol", "messages") as (
        address,
        _,
    ):
        assert address == f"unix:{path}"
        code, out, _ = send(capsysbinary, address, "--protocol", "messages", "hi there")
        assert (code, out) == (0, b"hi there\n")
        code, out, _ = send(
            capsysbinary,
            address,
            "--protocol",
            "messages",
            "--content-type",
            "text/json",
            '{"a": [1, 2]}',
        )
        assert (code, out) == (0, b'{"a": [1, 2]}\n')  # answered as JSON: same content type
    assert not os.path.exists(path)  # removed at a clean shutdown


def test_tls_and_mutual_tls(capsysbinary, pki):
    with serve_process("127.0.0.1:0", "--tls-cert", pki.cert, "--tls-key", pki.key) as (address, _):
        code, out, _ = send(capsysbinary, address, "--tls-ca", pki.ca, "secret")
        assert (code, out) == (0, b"secret\n")
        code, out, err = send(capsysbinary, address, "plain")  # no TLS: refused
        assert code == 1 and b"framecodec send:" in err
    mutual = ("--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-ca", pki.ca)
    with serve_process("127.0.0.1:0", *mutual) as (address, _):
        code, out, _ = send(
            capsysbinary, address, "--tls-ca", pki.ca, "--tls-cert", pki.client_cert, "me"
        )
        assert (code, out) == (0, b"me\n")
        code, _, err = send(capsysbinary, address, "--tls-ca", pki.ca, "anonymous")
        assert code == 1 and b"framecodec send:" in err


def test_stdin_payload_and_format(capsysbinary, monkeypatch):
    with serve_process("127.0.0.1:0", "--format", "uint16") as (address, _):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped\x00bytes")))
        code, out, _ = send(capsysbinary, address, "--format", "uint16", "-", "x")
        assert (code, out) == (0, b"piped\x00bytes\nx\n")


def test_errors_are_reported_without_tracebacks(capsysbinary):
    code, _, err = send(capsysbinary, "127.0.0.1:1", "x", "--timeout", "2")
    assert code == 1 and err.startswith(b"framecodec send:") and b"Traceback" not in err
    code, _, err = send(capsysbinary, "nonsense", "x")
    assert code == 1 and b"lacks a port" in err
    code, _, err = send(
        capsysbinary, "127.0.0.1:1", "--protocol", "messages", "--format", "uint16", "x"
    )
    assert code == 1 and b"--format" in err
    assert main(["serve", "127.0.0.1:0", "--tls-key", "k.pem"]) == 1
    assert b"--tls-cert" in capsysbinary.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "127.0.0.1:0", "--backend", "fork"])
