"""examples/app_server.py and app_client.py: the tutorial's search application."""

from __future__ import annotations

import importlib.util
import pathlib
import selectors
import signal
import subprocess
import sys

import pytest

import framecodec

from .net_support import TIMEOUT

pytestmark = pytest.mark.usefixtures("no_leaks")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_server = load("app_server")
app_client = load("app_client")


@pytest.fixture
def server():
    with framecodec.serve("127.0.0.1:0", app_server.handle, protocol="messages").start() as running:
        yield running


@pytest.mark.parametrize(
    "action, value, expected",
    [
        ("search", "ring", "got result: Forged in the fires of Mount Doom. \U0001f48d"),
        ("search", "\U0001f436", "got result: \U0001f43e Fetching the stick! \U0001f3d1"),
        ("search", "nothing", 'got result: No match for "nothing".'),
        (
            "binary",
            "\U0001f436 payload",
            "got response: b'First 10 bytes of request: binary\\xf0\\x9f\\x90\\xb6'",
        ),
    ],
)
def test_client_and_server(server, capsys, action, value, expected):
    assert app_client.main([str(server.address), action, value]) == 0
    assert capsys.readouterr().out.strip() == expected


def test_invalid_action_and_content_type(server):
    with framecodec.connect(server.address, protocol="messages", timeout=TIMEOUT) as client:
        assert client.request({"action": "delete", "value": "x"}).value == {
            "result": 'Error: invalid action "delete".'
        }
        reply = client.request(b"0123456789abc", content_type="binary/custom-client-binary-type")
        assert reply.content_type == "binary/custom-server-binary-type"
        assert reply.content == b"First 10 bytes of request: 0123456789"


def test_server_script_runs_and_stops_on_ctrl_c(capsys):
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "app_server.py"), "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(TIMEOUT)
        address = process.stdout.readline().split()[-1]
        assert app_client.main([address, "search", "morpheus"]) == 0
        assert "white rabbit" in capsys.readouterr().out
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
        process.stdout.close()
        process.stderr.close()


def test_usage():
    assert app_client.main([]) == 2
    assert app_server.main([]) == 2


frame_relay = load("frame_relay")


@pytest.mark.parametrize("format", ["grpc", "postgres"])
def test_frame_relay_passes_whole_frames_unchanged(format):
    encoder = framecodec.FrameEncoder(format)

    def upstream_handler(frame):  # a whole frame in, a whole frame out
        return encoder.encode(frame[5:].upper(), prefix=frame[:1])

    upstream = framecodec.serve("127.0.0.1:0", upstream_handler, format=format).start()
    with (
        upstream,
        framecodec.connect(upstream.address, format=format, timeout=TIMEOUT) as through,
        frame_relay.relay("127.0.0.1:0", through, format).start() as relay,
        framecodec.connect(relay.address, format=format, timeout=TIMEOUT) as client,
    ):
        for prefix, body in [(b"Q", b"select 1"), (b"\x01", b""), (b"D", bytes(70_000))]:
            frame = encoder.encode(body, prefix=prefix)
            assert client.request(frame) == encoder.encode(body.upper(), prefix=prefix)


def test_frame_relay_usage():
    assert frame_relay.main([]) == 2
