"""Which core is loaded, and how to force the twin."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import framecodec
from framecodec.codec import _impl

from ..conftest import pure_build_expected


def test_compiled_core_is_what_a_normal_build_loads():
    forced = _impl.pure_python_forced()
    if pure_build_expected() or forced:
        assert framecodec.IMPLEMENTATION == "python"
    else:
        assert framecodec.IMPLEMENTATION == "cython", (
            "the compiled extension should have been built and loaded; "
            "framecodec fell back to the pure-Python twin"
        )
        assert Path(_impl.load("cython").__file__).suffix in (".so", ".pyd")


def test_twin_is_the_same_source_file_run_uncompiled():
    twin = _impl.load("python")
    assert twin.COMPILED is False
    assert Path(twin.__file__).name == "_codec.py"
    assert twin.__name__ == "framecodec.codec._codec_py"


def test_public_classes_come_from_the_selected_core():
    core = _impl.select()
    assert framecodec.FrameDecoder is core.FrameDecoder
    assert framecodec.pack_uint is core.pack_uint


def test_environment_variable_forces_the_twin():
    env = dict(os.environ, FRAMECODEC_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", "import framecodec; print(framecodec.IMPLEMENTATION)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "python"


def test_unknown_implementation_name_is_rejected():
    with pytest.raises(ValueError, match="'cython' or 'python'"):
        _impl.load("rust")


def test_shared_types_are_the_same_objects_in_both_cores(both_codecs):
    compiled, twin = both_codecs
    assert compiled.Message is twin.Message is framecodec.Message
    assert compiled.FrameTooLargeError is twin.FrameTooLargeError


def _import_framecodec(block_compiled: bool, **env: str):
    """Import framecodec in a fresh interpreter with warnings shown; the
    compiled core made unimportable (as when its build failed) if asked."""
    code = "import sys\n"
    if block_compiled:
        code += "sys.modules['framecodec.codec._codec'] = None\n"  # import raises ImportError
    code += "import framecodec\nprint(framecodec.IMPLEMENTATION)\n"
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env={**os.environ, "FRAMECODEC_PURE_PYTHON": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="only CPython has a compiled core to miss"
)
def test_a_missing_compiled_core_is_a_warning_on_cpython():
    out = _import_framecodec(block_compiled=True)
    assert out.stdout.strip() == "python"
    assert out.stderr.count("RuntimeWarning") == 1
    assert "compiled core is not available" in out.stderr
    assert "FRAMECODEC_PURE_PYTHON=1" in out.stderr  # the way to choose it quietly


def test_the_twin_asked_for_is_no_warning():
    out = _import_framecodec(block_compiled=True, FRAMECODEC_PURE_PYTHON="1")
    assert out.stdout.strip() == "python"
    assert "RuntimeWarning" not in out.stderr


@pytest.mark.skipif(
    sys.implementation.name == "cpython", reason="PyPy's behaviour: CPython has a compiled core"
)
def test_pypy_runs_the_twin_without_a_warning():
    out = _import_framecodec(block_compiled=False)
    assert out.stdout.strip() == "python"
    assert "RuntimeWarning" not in out.stderr
