"""Chooses the codec core: the compiled extension, or its pure-Python twin.

Both are built from the same file, src/framecodec/codec/_codec.py.  Importing
``framecodec.codec._codec`` finds the compiled extension first when it was built
(extension modules take precedence over .py files); the twin is loaded from
the .py file itself under the name ``framecodec.codec._codec_py``, so both can be
used side by side (the tests and benchmarks do).

FRAMECODEC_PURE_PYTHON=1 in the environment forces the twin.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Dict

from .._env import flag

_TWIN_NAME = "framecodec.codec._codec_py"
_loaded: Dict[str, ModuleType] = {}


def load(implementation: str) -> ModuleType:
    """The codec core module for "cython" or "python"; ImportError if unavailable."""
    if implementation in _loaded:
        return _loaded[implementation]
    if implementation == "cython":
        module = importlib.import_module("framecodec.codec._codec")
        if not module.COMPILED:
            raise ImportError("framecodec's compiled extension is not built")
    elif implementation == "python":
        module = _load_twin()
    else:
        raise ValueError(f"implementation must be 'cython' or 'python', not {implementation!r}")
    _loaded[implementation] = module
    return module


def _load_twin() -> ModuleType:
    if _TWIN_NAME in sys.modules:
        return sys.modules[_TWIN_NAME]
    # importlib.machinery, not importlib.util: the latter imports threading
    # (on PyPy), and the codec's import loads no such module.
    from importlib.machinery import ModuleSpec, SourceFileLoader

    source = os.path.join(os.path.dirname(__file__), "_codec.py")
    loader = SourceFileLoader(_TWIN_NAME, source)
    module = ModuleType(_TWIN_NAME)
    module.__spec__ = ModuleSpec(_TWIN_NAME, loader, origin=source)
    module.__spec__.has_location = True
    module.__file__ = source
    module.__loader__ = loader
    module.__package__ = __package__
    sys.modules[_TWIN_NAME] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[_TWIN_NAME]
        raise
    return module


def pure_python_forced() -> bool:
    return flag("FRAMECODEC_PURE_PYTHON")


def select() -> ModuleType:
    """The core the package exports: compiled unless forced off or not built.

    On CPython a missing compiled core is a RuntimeWarning: the twin is about
    10x slower, and a user who did not ask for it should know.  PyPy runs the
    twin by design (its JIT is what makes it fast there), so it says nothing.
    """
    if "selected" in _loaded:  # decided once: the warning comes once
        return _loaded["selected"]
    _loaded["selected"] = core = _choose()
    return core


def _choose() -> ModuleType:
    if pure_python_forced():
        return load("python")
    try:
        return load("cython")
    except ImportError as exc:
        if sys.implementation.name == "cpython":
            warnings.warn(
                f"framecodec's compiled core is not available ({exc}); using the "
                "pure-Python twin, about 10x slower. Reinstall framecodec where a C "
                "compiler and the Python headers work (pip prints why the build failed "
                "with -v), or set FRAMECODEC_PURE_PYTHON=1 to choose the twin and "
                "silence this warning.",
                RuntimeWarning,
                stacklevel=4,
            )
    return load("python")
