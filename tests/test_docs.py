"""The Python examples of the docs pages written to run (docs/switching.md)
do, in order, each page in one namespace."""

from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Pages whose every Python block is self-contained (others show fragments
# that need a server running).
RUNNABLE = ["switching.md"]


@pytest.mark.parametrize("name", RUNNABLE)
def test_page_examples_run(name):
    blocks = BLOCK.findall((DOCS / name).read_text())
    assert len(blocks) >= 5
    namespace: dict = {"__name__": f"docs_{name.split('.')[0]}"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{name} example {number}", "exec"), namespace)
