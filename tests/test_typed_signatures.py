"""The overloads type checkers see stay in step with what the code accepts.

Each entry point forwards ``**options`` to the protocol; its overloads list
those options as keyword arguments instead (so that a misspelt one is a
type error).  Read from the source (some overloads exist only under
TYPE_CHECKING): every "frames" overload offers every FrameFormat field,
every "messages" overload every MessageDecoder option, and every overload
every parameter of the implementation, so a new option or parameter that
the overloads lack fails here rather than in a user's type checker.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import List, Set, Tuple

import pytest

import framecodec
from framecodec.codec import _impl
from framecodec.codec.formats import FrameFormat

PACKAGE = Path(framecodec.__file__).parent

# (file of the overloads, function, file of the implementation), the name
# "Class.method" for a method.
ENTRY_POINTS = [
    ("net/client.py", "connect", "net/client.py"),
    ("net/server/__init__.py", "serve", "net/server/__init__.py"),
    ("net/multiclient.py", "MultiClient.__init__", "net/multiclient.py"),
    ("aio/connect.py", "open_connection", "aio/connect.py"),
    ("aio/start.py", "start_server", "aio/server.py"),
    ("anyio/connect.py", "connect", "anyio/connect.py"),
    ("anyio/server.py", "serve", "anyio/server.py"),
    ("anyio/stream.py", "FramedStream.__init__", "anyio/stream.py"),
]

FRAME_OPTIONS = {field.name for field in dataclasses.fields(FrameFormat)} | {"format"}
MESSAGE_OPTIONS = set(inspect.signature(_impl.load("python").MessageDecoder).parameters)


def _definitions(path: str, qualname: str) -> List[ast.AST]:
    """Every def of ``qualname`` in ``path``, in order (overloads included)."""
    tree = ast.parse((PACKAGE / path).read_text())
    *owner, name = qualname.split(".")
    scopes: List[ast.AST] = [tree]
    if owner:
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner[0]]
    found = []
    for scope in scopes:
        nodes = ast.walk(scope) if not owner else iter(scope.body)
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found.append(node)
    return found


def _is_overload(node: ast.AST) -> bool:
    return any(ast.unparse(d) in ("overload", "typing.overload") for d in node.decorator_list)


def _parameters(node: ast.AST) -> Tuple[Set[str], str]:
    """The named parameters (self aside), and the protocol's annotation."""
    args = node.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    protocol = next((ast.unparse(a.annotation) for a in named if a.arg == "protocol"), "")
    return {a.arg for a in named} - {"self"}, protocol


@pytest.mark.parametrize("where, name, implemented", ENTRY_POINTS, ids=lambda v: str(v))
def test_overloads_offer_every_option_and_parameter(where, name, implemented):
    overloads = [node for node in _definitions(where, name) if _is_overload(node)]
    implementations = [node for node in _definitions(implemented, name) if not _is_overload(node)]
    assert len(overloads) >= 2 and implementations, (where, name)
    real, _ = _parameters(implementations[-1])
    assert implementations[-1].args.kwarg is not None
    kinds = []
    for node in overloads:
        offered, protocol = _parameters(node)
        ready = "frames" not in protocol and "messages" not in protocol
        missing = real - offered - ({"format"} if ready else set())  # format beside an object: no
        assert not missing, f"{where}: an overload of {name} lacks {sorted(missing)}"
        if "frames" in protocol:
            kinds.append("frames")
            assert offered >= FRAME_OPTIONS, sorted(FRAME_OPTIONS - offered)
            assert not (offered - real - FRAME_OPTIONS), sorted(offered - real - FRAME_OPTIONS)
        elif "messages" in protocol:
            kinds.append("messages")
            assert offered >= MESSAGE_OPTIONS, sorted(MESSAGE_OPTIONS - offered)
            assert not (offered - real - MESSAGE_OPTIONS), sorted(offered - real - MESSAGE_OPTIONS)
        else:  # a ready protocol object (FrameProtocol()): no options beside it
            assert offered <= real, sorted(offered - real)
    assert sorted(set(kinds)) == ["frames", "messages"], (where, name, kinds)
