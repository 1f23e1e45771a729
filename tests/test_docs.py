"""Every code example of the docs site (docs/*.md) and of README.md runs.

A page's ```python blocks run in order in one fresh interpreter, sharing
one namespace (a page may build on its earlier blocks).  A block whose first
line starts with ``>>>`` is a doctest: its shown output is checked.  Other
blocks are executed, and must not raise.  Examples that need a server start
one on loopback themselves.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
# Every page with a python example, and the README's tour: it is the first
# example a newcomer runs.  (Pages of prose and tables only are left out.)
PAGES = [
    page
    for page in ([*sorted(DOCS.glob("*.md")), ROOT / "README.md"] if DOCS.is_dir() else [])
    if FENCE.search(page.read_text(encoding="utf-8"))
]
PAGE_TIMEOUT = 120

# Runs in the child: each block is executed or doctested in one namespace.
RUNNER = r"""
import doctest, json, sys
page, blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
parser = doctest.DocTestParser()
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
for line, code in blocks:
    name = f"{page}:{line}"
    if code.lstrip().startswith(">>>"):
        test = parser.get_doctest(code, namespace, name, page, line)
        runner.run(test, clear_globs=False)
        if runner.failures:
            sys.exit(f"doctest failed: {name}")
    else:
        exec(compile(code, name, "exec"), namespace)
print("ran", len(blocks), "blocks")
"""


def blocks_of(page: pathlib.Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def imported_modules(code: str) -> set[str]:
    return set(re.findall(r"^\s*(?:import|from)\s+(\w+)", code, re.M))


@pytest.mark.skipif(not PAGES, reason="no docs/ beside tests/ (the suite was copied without it)")
@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_examples_run(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    blocks = blocks_of(page)
    for module in sorted(set().union(*(imported_modules(code) for _, code in blocks))):
        if importlib.util.find_spec(module) is None:
            # trustme (TLS examples): its cryptography has no PyPy wheel.
            pytest.skip(f"{page.name} needs {module}, not installed on this interpreter")
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([page.name, blocks]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=PAGE_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"ran {len(blocks)} blocks"


def test_fences_are_found() -> None:
    """The extractor sees a block (a broken pattern would skip every page)."""
    sample = "text\n```python\nx = 1\n```\nmore\n"
    assert FENCE.findall(sample) == ["x = 1\n"]
    if PAGES:
        for page in (DOCS / "frames.md", DOCS / "client.md", ROOT / "README.md"):
            assert page in PAGES
