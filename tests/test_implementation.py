"""Which core is loaded, and how to force the twin."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import framecodec
from framecodec import _impl

from .conftest import pure_build_expected


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
    assert twin.__name__ == "framecodec._codec_py"


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
