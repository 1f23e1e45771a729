"""Every codec test runs against both implementations of the core.

The ``codec`` fixture is the core module, compiled or twin; tests build
decoders from it rather than from the package's top level, so one suite
covers both.  When the compiled core should exist (a normal build on
CPython) and does not load, the "cython" runs fail instead of quietly
testing the twin twice.  Where it cannot exist (PyPy, or a build made
without it on purpose) they are skipped with that reason, never silently.
"""

import sys
from typing import Optional

import pytest

from framecodec._env import flag
from framecodec.codec import _impl

# The network tests' fixtures (no_leaks, pki, the net matrix): tests/net,
# tests/aio and the top-level network tests use them.
pytest_plugins = ["tests.net_fixtures"]


def no_compiled_core_reason() -> Optional[str]:
    """Why this run has no compiled core by design, or None when it must have one."""
    if sys.implementation.name != "cpython":
        return (
            f"{sys.implementation.name} runs the pure-Python twin: "
            "the compiled core is built for CPython only"
        )
    if flag("FRAMECODEC_NO_EXTENSION"):
        return "FRAMECODEC_NO_EXTENSION=1: this build has no compiled core by design"
    return None


def pure_build_expected() -> bool:
    """True when this run has no compiled core by design."""
    return no_compiled_core_reason() is not None


needs_compiled_core = pytest.mark.skipif(
    pure_build_expected(), reason=no_compiled_core_reason() or ""
)

IMPLEMENTATIONS = (pytest.param("cython", marks=needs_compiled_core), "python")


@pytest.fixture(params=IMPLEMENTATIONS)
def codec(request):
    return _impl.load(request.param)


@pytest.fixture(scope="session")
def both_codecs():
    """(compiled, twin), for differential tests (modules, so session-scoped:
    hypothesis reuses it across examples)."""
    reason = no_compiled_core_reason()
    if reason is not None:
        pytest.skip(reason)
    return _impl.load("cython"), _impl.load("python")


@pytest.fixture(scope="session")
def codec_both():
    """Both cores (or the twin alone where there is no compiled core), for
    hypothesis tests, which cannot take a parametrised function-scoped fixture."""
    if pure_build_expected():
        return (_impl.load("python"),)
    return (_impl.load("cython"), _impl.load("python"))
