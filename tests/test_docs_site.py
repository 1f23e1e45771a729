"""The built docs site: its internal links resolve, its API reference lists
every public name, and its pages render in headless Chromium without
console errors.

These tests read a built site (``python -m sphinx -b html docs
docs/_build/html``, or the directory in FRAMECODEC_DOCS_HTML); .ci/run's
docs step builds it and runs them.  Elsewhere (the suite copied without
docs/, an interpreter without the docs extra) they are skipped, saying why.
"""

from __future__ import annotations

import base64
import functools
import html.parser
import http.server
import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE = pathlib.Path(os.environ.get("FRAMECODEC_DOCS_HTML", ROOT / "docs" / "_build" / "html"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = pathlib.Path(os.environ.get("FRAMECODEC_DOCS_SCREENSHOT", "/tmp/docs-api.png"))
BROWSER_TIMEOUT = 60.0

needs_site = pytest.mark.skipif(
    not (SITE / "index.html").is_file(),
    reason=f"no built docs site at {SITE} (.ci/run's docs step builds one)",
)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or importlib.util.find_spec("websockets") is None,
    reason="needs Debian's chromium and the websockets package (the docs extra)",
)
# The names the issue asks the API reference to show, by their anchors.
REQUIRED_ANCHORS = (
    "framecodec.FrameDecoder",
    "framecodec.connect",
    "framecodec.serve",
    "framecodec.aio.start_server",
)


class _Page(html.parser.HTMLParser):
    """The ids a page defines and the local links it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: Set[str] = set()
        self.links: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            elif name in ("href", "src") and value:
                self.links.append(value)


@functools.cache
def parse(path: pathlib.Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def pages() -> List[pathlib.Path]:
    return sorted(p for p in SITE.rglob("*.html") if "_static" not in p.parts)


@needs_site
def test_internal_links_resolve() -> None:
    broken = []
    checked = 0
    for page in pages():
        for link in parse(page).links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or parts.netloc:  # external: not checked (no network)
                continue
            target = (page.parent / urllib.parse.unquote(parts.path)) if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(SITE)}: {link} (no such file)")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and urllib.parse.unquote(parts.fragment) not in parse(target).ids
            ):
                broken.append(f"{page.relative_to(SITE)}: {link} (no such anchor)")
    assert checked > 100
    assert not broken, "\n".join(broken)


def public_anchors() -> Iterator[str]:
    """The anchor each public name should have in the API reference."""
    import framecodec
    from framecodec import errors

    error_names = {name for name, value in vars(errors).items() if isinstance(value, type)}
    error_names = {n for n in error_names if issubclass(getattr(errors, n), BaseException)}
    for name in error_names:
        yield f"framecodec.errors.{name}"
    for name in framecodec.__all__:
        if name not in error_names:
            yield f"framecodec.{name}"
    for module in ("codec", "net"):  # their names are framecodec's
        for name in importlib.import_module(f"framecodec.{module}").__all__:
            if name not in error_names:
                yield f"framecodec.{name}"
    for module in ("aio", "anyio"):
        for name in importlib.import_module(f"framecodec.{module}").__all__:
            yield f"framecodec.{module}.{name}"


@needs_site
def test_api_reference_lists_every_public_name() -> None:
    ids = parse(SITE / "api.html").ids
    missing = sorted(set(public_anchors()) - ids)
    assert not missing, f"not in the API reference: {missing}"
    assert set(REQUIRED_ANCHORS) <= ids


# -- the browser ------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site_url() -> Iterator[str]:
    """The built site served over HTTP on loopback, as a reader would get it."""
    handler = functools.partial(_Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def chromium() -> Iterator[str]:
    """Headless Chromium; yields its DevTools HTTP endpoint."""
    profile = tempfile.mkdtemp(prefix="fc-chromium-")
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Chromium writes the port it chose into its profile.
        port_file = pathlib.Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + BROWSER_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands and events."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._ids = 0
        self.events: List[Dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._ids += 1
        self._ws.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        deadline = time.monotonic() + BROWSER_TIMEOUT
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> Dict[str, Any]:
        deadline = time.monotonic() + BROWSER_TIMEOUT
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(
                json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            )

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


def console_errors(events: List[Dict[str, Any]]) -> List[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args"))[:500])
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
    return errors


@needs_site
@needs_browser
def test_pages_render_in_chromium(site_url: str, chromium: str) -> None:
    from websockets.sync.client import connect

    request = urllib.request.Request(f"{chromium}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=BROWSER_TIMEOUT) as response:
        target = json.load(response)
    with connect(target["webSocketDebuggerUrl"], max_size=None) as websocket:
        devtools = DevTools(websocket)
        for domain in ("Page", "Runtime", "Log"):
            devtools.call(f"{domain}.enable")
        rendered = {}
        for page in pages():
            name = page.relative_to(SITE).as_posix()
            devtools.events.clear()
            devtools.call("Page.navigate", url=site_url + name)
            devtools.wait_for("Page.loadEventFired")
            errors = console_errors(devtools.events)
            assert not errors, f"{name}: console errors: {errors}"
            # Rendered: a title, a sidebar, and text in the main article.
            rendered[name] = devtools.evaluate(
                "[document.title, document.querySelectorAll('.sidebar-tree a').length,"
                " (document.querySelector('article') || document.body).innerText.length]"
            )
            title, sidebar_links, text = rendered[name]
            assert "framecodec" in title, (name, title)
            assert sidebar_links >= 10, (name, sidebar_links)
            assert text > 0 or name == "search.html", name  # filled in by a query

        devtools.call("Page.navigate", url=site_url + "api.html")
        devtools.wait_for("Page.loadEventFired")
        for anchor in REQUIRED_ANCHORS:
            shown = devtools.evaluate(
                f"(e => e !== null && e.offsetHeight > 0 && e.innerText)"
                f"(document.getElementById({json.dumps(anchor)}))"
            )
            assert shown and anchor.rsplit(".", 1)[-1] in shown, (anchor, shown)
        assert not console_errors(devtools.events)
        shot = devtools.call("Page.captureScreenshot", format="png")
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.stat().st_size > 10_000
    assert len(rendered) >= 15
