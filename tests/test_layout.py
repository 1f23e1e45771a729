"""The package's layers, read from its own source: codec <- net <- aio, anyio, cli;
benchmarks on top; no import cycle, imports inside functions included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import framecodec

PACKAGE = Path(framecodec.__file__).parent

# Each layer, and the framecodec modules it may import (besides its own).
BELOW = {
    "codec": {"errors", "_env"},
    "net": {"codec", "errors", "_env"},
    "aio": {"net", "codec", "errors", "_env"},
    # Beside aio, never on it: the codec, the errors and net's shared
    # vocabulary (addresses, protocols, handler shapes, endings, TLS).
    "anyio": {"net", "codec", "errors", "_env"},
    "cli": {"net", "codec", "errors", "_env"},
}
NETWORK_STDLIB = {"socket", "ssl", "selectors", "asyncio", "threading"}


def _modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """What ``name`` imports when it runs: every import statement, those
    inside functions included, those under ``if TYPE_CHECKING`` not."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    skipped = {
        id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            submodules = [
                f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules
            ]
            # "from package import submodule" needs the submodule; the package
            # is its importer's parent, initialised already.
            found.update(submodules if len(submodules) == len(node.names) else [module])
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {
        name: {m for m in _imports(name, path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle():
    graph = _graph()
    visiting: list = []
    done: Set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_each_layer_imports_only_the_layers_below():
    graph = _graph()
    for module, targets in graph.items():
        layer = _layer(module)
        if layer not in BELOW:
            continue
        for target in targets:
            other = _layer(target)
            assert other == layer or other in BELOW[layer], f"{module} imports {target}"


def test_nothing_in_the_library_imports_the_benchmarks():
    graph = _graph()
    for module, targets in graph.items():
        if _layer(module) not in ("benchmarks", "__main__"):
            assert not any(_layer(t) == "benchmarks" for t in targets), module


def test_the_codec_imports_no_network_module():
    modules = _modules()
    for name, path in modules.items():
        if _layer(name) == "codec":
            used = {m.split(".")[0] for m in _imports(name, path, modules)}
            assert not used & NETWORK_STDLIB, f"{name} imports {used & NETWORK_STDLIB}"


def test_no_module_but_the_codec_core_is_over_600_lines():
    for name, path in _modules().items():
        if name != "framecodec.codec._codec":
            assert len(path.read_text().splitlines()) <= 600, name


def test_importing_the_codec_loads_no_network_module():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"  # what the interpreter loaded itself (PyPy: threading)
        "from framecodec import FrameDecoder\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
    )
    assert not loaded & NETWORK_STDLIB, loaded & NETWORK_STDLIB
    assert not {m for m in loaded if m.startswith(("framecodec.net", "framecodec.aio"))}
    assert not {m for m in loaded if m == "anyio" or m.startswith(("anyio.", "framecodec.anyio"))}


def test_the_network_names_load_on_first_use():
    code = (
        "import sys, framecodec\n"
        "assert 'framecodec.net' not in sys.modules\n"
        "serve = framecodec.serve\n"
        "from framecodec.net.server import serve as real\n"
        "assert serve is real and 'serve' in dir(framecodec)\n"
        "print(framecodec.aio.open_connection.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "framecodec.aio.connect"
