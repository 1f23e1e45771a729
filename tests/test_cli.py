"""``python -m framecodec serve`` in a subprocess, ``send`` in process; the
program's help, version and exit statuses; errors that name what failed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

import framecodec
from framecodec import aio
from framecodec.__main__ import main, program_name
from framecodec.cli import MAX_FRAME_SIZE_DEFAULTS
from framecodec.net.protocols import MessageProtocol, explain_unsendable

from .net_fixtures import require_trustme
from .net_support import TIMEOUT, unix_path, wait_until

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


def test_every_preset_and_the_generic_options(capsysbinary):
    # HTTP/2 and MySQL frames are sent and echoed as the bytes after their
    # length field: the type, flags and stream id (or sequence id) first.
    with serve_process("127.0.0.1:0", "--format", "http2") as (address, _):
        code, out, _ = send(
            capsysbinary, address, "--format", "http2", "\x00\x01\x00\x00\x00\x03hi"
        )
        assert (code, out) == (0, b"\x00\x01\x00\x00\x00\x03hi\n")
        code, out, _ = send(capsysbinary, address, "--format", "http2", "--strip", "9", "TFSSSSok")
        assert (code, out) == (0, b"ok\n")  # the reply's whole 9-byte header stripped
    # The mysql preset spelled out in generic options, at a mysql server.
    generic = ("--width", "3", "--byteorder", "little", "--length-adjustment", "1")
    with serve_process("127.0.0.1:0", "--format", "mysql") as (address, _):
        code, out, _ = send(capsysbinary, address, *generic, "\x01SELECT 1")
        assert (code, out) == (0, b"\x01SELECT 1\n")
        code, out, _ = send(capsysbinary, address, *generic, "--strip", "4", "\x01SELECT 1")
        assert (code, out) == (0, b"SELECT 1\n")
    for preset in ("grpc", "postgres", "uint64", "multiprocessing"):
        with serve_process("127.0.0.1:0", "--format", preset) as (address, _):
            code, out, _ = send(capsysbinary, address, "--format", preset, "body")
            assert (code, out) == (0, b"body\n"), preset


def test_frame_limits_on_the_command_line(capsysbinary):
    with serve_process("127.0.0.1:0", "--max-frame-length", "10") as (address, process):
        code, out, _ = send(capsysbinary, address, "123456")  # 4 + 6 bytes: accepted
        assert (code, out) == (0, b"123456\n")
        code, _, _ = send(capsysbinary, address, "--timeout", "5", "1234567")
        assert code == 1  # the server refused the frame and closed the connection
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
        assert "exceeds max_frame_length (10)" in process.stderr.read()


def test_checksum_on_the_command_line(capsysbinary):
    with serve_process("127.0.0.1:0", "--checksum", "crc32c") as (address, process):
        code, out, _ = send(capsysbinary, address, "--checksum", "crc32c", "checked", "twice")
        assert (code, out) == (0, b"checked\ntwice\n")
        # A sender without the option sends no checksum: the server waits for
        # one that never comes, and the client gives up.
        code, _, _ = send(capsysbinary, address, "--timeout", "1", "unchecked")
        assert code == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    code, _, err = send(
        capsysbinary, "127.0.0.1:1", "--format", "multiprocessing", "--checksum", "crc32c", "x"
    )
    assert code == 1 and b"large_length_escape" in err
    code, _, err = send(
        capsysbinary, "127.0.0.1:1", "--protocol", "messages", "--checksum", "crc32c", "x"
    )
    assert code == 1 and b"--checksum applies to --protocol frames" in err
    with pytest.raises(SystemExit):
        main(["send", "127.0.0.1:1", "--checksum", "md5", "x"])


def test_bad_frame_options_are_reported(capsysbinary):
    code, _, err = send(capsysbinary, "127.0.0.1:1", "--format", "http2", "--strip", "10", "x")
    assert code == 1 and b"strip must be between 0 and 9, not 10" in err
    code, _, err = send(capsysbinary, "127.0.0.1:1", "--protocol", "messages", "--width", "2", "x")
    assert code == 1 and b"--width applies to --protocol frames" in err
    assert main(["serve", "127.0.0.1:0", "--strip", "0"]) == 1
    assert b"--strip applies to send" in capsysbinary.readouterr().err
    with pytest.raises(SystemExit):
        main(["send", "127.0.0.1:1", "--width", "5", "x"])


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


# -- the program: version, names, help --------------------------------------------


def run_cli(*args, program=None):
    """The CLI in a subprocess: ``python -m framecodec`` or the script ``program``."""
    command = [program] if program else [sys.executable, "-m", "framecodec"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_version():
    done = run_cli("--version")
    expected = f"framecodec {framecodec.__version__} (core: {framecodec.IMPLEMENTATION})"
    assert (done.returncode, done.stdout.strip()) == (0, expected)
    assert framecodec.IMPLEMENTATION in ("cython", "python")


def test_program_names():
    assert program_name("/venv/bin/framecodec") == "framecodec"
    assert program_name("C:\\venv\\Scripts\\framecodec.exe".replace("\\", os.sep)) == "framecodec"
    assert program_name("/src/framecodec/__main__.py") == "python -m framecodec"
    done = run_cli("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m framecodec [-h]")
    assert run_cli("serve", "--help").stdout.startswith("usage: python -m framecodec serve")
    script = os.path.join(os.path.dirname(sys.executable), "framecodec")
    if not os.path.exists(script):
        pytest.skip(f"no installed script at {script}")
    done = run_cli("--help", program=script)
    assert done.returncode == 0 and done.stdout.startswith("usage: framecodec [-h]")
    assert "python -m" not in done.stdout


def test_top_level_help_is_plain_text_with_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "::" not in text  # no reStructuredText
    for command in ("bench", "serve", "send"):
        assert f"    {command} " in text
    statuses = text[text.index("exit status:") :]
    for code, meaning in (("0", "success"), ("1", "error"), ("2", "usage"), ("130", "interrupt")):
        assert re.search(rf"^\s+{code}\s+.*{meaning}", statuses, re.MULTILINE), code


def option_help(text, option):
    """The help of ``option`` in an argparse help text, on one line."""
    match = re.search(rf"^  {re.escape(option)}\b(.*?)(?=^  -|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{option} not in the help"
    return " ".join(match.group(1).split())


@pytest.mark.parametrize(
    "command, option, default",
    [
        ("serve", "--backend", "selector"),
        ("serve", "--protocol", "frames"),
        ("serve", "--max-frame-size", MAX_FRAME_SIZE_DEFAULTS),
        ("serve", "--width", "the format's; 4 for uint32"),
        ("serve", "--byteorder", "the format's; big but for mysql"),
        ("serve", "--length-offset", "the format's; 0 for uint32"),
        ("send", "--length-adjustment", "the format's; 0 for uint32"),
        ("send", "--strip", "through the length field"),
        ("send", "--max-frame-length", "no such limit"),
        ("serve", "--max-connections", "1024 for selector, 64 for threads"),
        ("serve", "--idle-timeout", "never"),
        ("serve", "--workers", "1"),
        ("send", "--protocol", "frames"),
        ("send", "--max-frame-size", MAX_FRAME_SIZE_DEFAULTS),
        ("send", "--timeout", "10.0"),
        ("send", "--content-type", "text/plain"),
    ],
)
def test_help_shows_each_option_with_its_default(capsys, command, option, default):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    described = option_help(capsys.readouterr().out, option)
    assert f"(default: {default})" in described
    assert len(described.split("(default")[0].split()) > 2, "no help text beside the default"


# -- errors that name what failed ----------------------------------------------------


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_names_the_address(capsysbinary):
    port = closed_port()
    code, _, err = send(capsysbinary, f"127.0.0.1:{port}", "x", "--timeout", "2")
    assert code == 1
    assert err.startswith(f"framecodec send: cannot connect to 127.0.0.1:{port}: ".encode())
    assert b"refused" in err and b"Traceback" not in err


def test_missing_tls_files_are_named(capsys, tmp_path):
    missing = str(tmp_path / "missing.pem")
    assert main(["serve", "127.0.0.1:0", "--tls-cert", missing]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"framecodec serve: --tls-cert {missing}: ")
    assert "No such file" in err
    assert main(["send", "127.0.0.1:1", "--tls-ca", missing, "x"]) == 1
    assert f"--tls-ca {missing}: " in capsys.readouterr().err


def test_key_file_named_when_the_certificate_is_there(capsys, pki, tmp_path):
    missing = str(tmp_path / "key.pem")
    assert main(["serve", "127.0.0.1:0", "--tls-cert", pki.cert, "--tls-key", missing]) == 1
    assert f"--tls-key {missing}: " in capsys.readouterr().err


def test_a_url_is_not_an_address(capsysbinary):
    for parse in (framecodec.parse_address, framecodec.connect):
        with pytest.raises(ValueError, match="is a URL, not an address") as raised:
            parse("http://127.0.0.1:9000")
        assert "host:port" in str(raised.value) and "unix:/path" in str(raised.value)
        assert "127.0.0.1:9000" in str(raised.value).split("address")[-1]  # what to write
        assert "brackets" not in str(raised.value)
    code, _, err = send(capsysbinary, "tcp://127.0.0.1:9000", "x")
    assert code == 1 and b"is a URL" in err


def test_json_content_must_be_json(capsysbinary):
    port = closed_port()  # checked before connecting
    args = ("--protocol", "messages", "--content-type", "text/json")
    code, _, err = send(capsysbinary, f"127.0.0.1:{port}", *args, "notjson")
    assert code == 1
    assert b"'notjson' is not valid JSON" in err and b"text/json" in err
    assert b"cannot connect" not in err


STR_FRAME = r"frames are bytes-like objects .* not str: encode"


def test_str_frames_raise_a_clear_type_error(tcp):
    server = tcp.serve(lambda frame: frame)
    client = tcp.connect(server)
    with pytest.raises(TypeError, match=STR_FRAME):
        client.send("text")
    with pytest.raises(TypeError, match=STR_FRAME):
        client.request("text")
    with pytest.raises(TypeError, match=STR_FRAME):
        client.send_many([b"fine", "text"])
    with pytest.raises(TypeError, match=r"frames are bytes-like objects .* not int"):
        client.send(3)
    assert client.request(b"still usable") == b"still usable"  # nothing half sent
    # Messages take str content: their TypeErrors are left as they are.
    messages = MessageProtocol()
    assert explain_unsendable(messages, ("text",), TypeError("theirs")) is None


def test_str_frames_raise_a_clear_type_error_in_aio():
    async def main_():
        server = await aio.start_server("127.0.0.1:0", lambda frame: frame)
        try:
            conn = await aio.open_connection(server.address)
            try:
                for attempt in (conn.send("text"), conn.request("text")):
                    with pytest.raises(TypeError, match=STR_FRAME):
                        await attempt
                with pytest.raises(TypeError, match=STR_FRAME):
                    await conn.send_many(["text"])
                return await asyncio.wait_for(conn.request(b"ok"), TIMEOUT)
            finally:
                await conn.close()
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main_()) == b"ok"


# -- the hint for a TLS client at a plain server ---------------------------------------


def tls_hello(address, pki):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        framecodec.connect(address, ssl_context=framecodec.client_context(pki.ca), timeout=TIMEOUT)


HINT = "seems to speak TLS"


@pytest.mark.parametrize("backend", ["selector", "threads"])
def test_tls_client_at_a_plain_server_is_hinted_in_the_log(pki, caplog, backend):
    require_trustme()
    caplog.set_level(logging.INFO, logger="framecodec.server")
    with framecodec.serve("127.0.0.1:0", lambda frame: frame, backend=backend).start() as server:
        tls_hello(server.address, pki)
        wait_until(lambda: server.stats["protocol_errors"] == 1)
        with socket.create_connection(server.address.sockaddr, TIMEOUT) as plain:
            plain.sendall(b"\x7f\xff\xff\xff")  # too large too, but no TLS record
            assert plain.recv(1) == b""
        wait_until(lambda: server.stats["protocol_errors"] == 2)
    errors = [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]
    assert len(errors) == 2
    assert "exceeds max_frame_size" in errors[0] and HINT in errors[0]
    assert HINT not in errors[1]


def test_tls_client_at_a_plain_aio_server_is_hinted_in_the_log(pki, caplog):
    require_trustme()
    caplog.set_level(logging.INFO, logger="framecodec.server")

    async def main_():
        server = await aio.start_server("127.0.0.1:0", lambda frame: frame)
        try:
            await asyncio.get_running_loop().run_in_executor(None, tls_hello, server.address, pki)
            for _ in range(int(TIMEOUT / 0.01)):
                if server.stats["protocol_errors"]:
                    break
                await asyncio.sleep(0.01)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main_())
    assert any(HINT in r.getMessage() for r in caplog.records), caplog.text


# -- hints for a peer that speaks HTTP, or frames at a messages server -----------------


def first_bytes_errors(server, payload: bytes, caplog) -> str:
    """The protocol-error log line of a raw connection that sends payload."""
    with socket.create_connection(server.address.sockaddr, TIMEOUT) as peer:
        peer.sendall(payload)
        assert peer.recv(1) == b""  # the server closed it

    def logged() -> list:
        return [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]

    # (The count goes up before the line is logged, in the server's thread.)
    wait_until(lambda: server.stats["protocol_errors"] == 1 and logged())
    (line,) = logged()
    return line


@pytest.mark.parametrize("backend", ["selector", "threads"])
def test_an_http_client_is_hinted_in_the_log(caplog, backend):
    caplog.set_level(logging.INFO, logger="framecodec.server")
    with framecodec.serve("127.0.0.1:0", lambda frame: frame, backend=backend).start() as server:
        line = first_bytes_errors(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", caplog)
    assert "exceeds max_frame_size" in line
    assert "seems to speak HTTP: its first bytes are b'GET '" in line


@pytest.mark.parametrize("backend", ["selector", "threads"])
def test_a_frames_client_at_a_messages_server_is_hinted_in_the_log(caplog, backend):
    caplog.set_level(logging.INFO, logger="framecodec.server")
    server = framecodec.serve(
        "127.0.0.1:0", lambda message: message, protocol="messages", backend=backend
    )
    with server.start():
        line = first_bytes_errors(server, framecodec.FrameEncoder().encode(b"hello"), caplog)
    assert "header length is zero" in line
    assert "protocol='frames' client of this messages server" in line


def test_no_hint_for_a_peer_that_only_sends_garbage(caplog):
    caplog.set_level(logging.INFO, logger="framecodec.server")
    server = framecodec.serve("127.0.0.1:0", lambda message: message, protocol="messages")
    with server.start():
        line = first_bytes_errors(server, b"\x00\x05{nope", caplog)
    assert "seems to" not in line


# -- Ctrl-C ---------------------------------------------------------------------------


def test_ctrl_c_stops_serve_cleanly():
    with serve_process("127.0.0.1:0") as (address, process):
        with socket.create_connection(parse_host_port(address), TIMEOUT):
            pass  # it listens
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 130
        err = process.stderr.read()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.splitlines()[-1] == "interrupted"
    assert "shutting down" in err  # the server stopped as after SIGTERM


def test_ctrl_c_stops_send_cleanly():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "framecodec", "send", address, "x", "--timeout", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                assert conn.recv(100)  # its frame came: now it waits for the reply
                wait_until_sleeping(process.pid)
                process.send_signal(signal.SIGINT)
                assert process.wait(TIMEOUT) == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
            out, err = process.communicate(timeout=TIMEOUT)
    assert out == "" and err == "interrupted\n"


def wait_until_sleeping(pid):
    """Wait until process ``pid`` sleeps in the kernel (Linux: /proc), as it
    does once it is in the system call that waits for the reply.  CPython
    notices a signal at points between bytecodes: one that lands after the
    last of them but before the blocking call is seen only when that call
    returns (here, when the 30 s timeout ends), so the test must not signal
    while the client is still on its way into recv."""
    stat = f"/proc/{pid}/stat"
    if not os.path.exists(stat):
        time.sleep(0.5)  # no /proc: give it time to get there
        return

    def state():
        with open(stat) as file:
            return file.read().rpartition(")")[2].split()[0]  # after "pid (comm)"

    def asleep_twice():  # asleep, and still asleep a little later: not in passing
        if state() != "S":
            return False
        time.sleep(0.05)
        return state() == "S"

    wait_until(asleep_twice, message=f"process {pid} to wait for its reply")


def parse_host_port(address):
    host, _, port = address.rpartition(":")
    return host, int(port)
