"""Every codec test runs against both implementations of the core.

The ``codec`` fixture is the core module, compiled or twin; tests build
decoders from it rather than from the package's top level, so one suite
covers both.  When the compiled core should exist (a normal build) and does
not load, the "cython" runs fail instead of quietly testing the twin twice.
"""

import os

import pytest

from framecodec import _impl

IMPLEMENTATIONS = ("cython", "python")


def pure_build_expected() -> bool:
    """True when this run tests a build made without the extension on purpose."""
    return os.environ.get("FRAMECODEC_NO_EXTENSION", "") not in ("", "0")


@pytest.fixture(params=IMPLEMENTATIONS)
def codec(request):
    if request.param == "cython" and pure_build_expected():
        pytest.skip("FRAMECODEC_NO_EXTENSION=1: this build has no compiled core by design")
    return _impl.load(request.param)


@pytest.fixture(scope="session")
def both_codecs():
    """(compiled, twin), for differential tests (modules, so session-scoped:
    hypothesis reuses it across examples)."""
    if pure_build_expected():
        pytest.skip("FRAMECODEC_NO_EXTENSION=1: this build has no compiled core by design")
    return _impl.load("cython"), _impl.load("python")


@pytest.fixture(scope="session")
def codec_both():
    """Both cores (or the twin alone in a build without the extension), for
    hypothesis tests, which cannot take a parametrised function-scoped fixture."""
    if pure_build_expected():
        return (_impl.load("python"),)
    return (_impl.load("cython"), _impl.load("python"))
