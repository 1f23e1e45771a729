"""Build script: compiles the codec core (src/framecodec/codec/_codec.py) with Cython.

The same _codec.py is the pure-Python twin; compiling it under its own module
name makes the extension take precedence on import while the twin stays
importable by path (see framecodec/_impl.py).

FRAMECODEC_NO_EXTENSION=1 builds without the extension (a pure-Python
install, which nothing publishes: the sdist is the fallback).  A plain
``pip install`` where no compiler works falls back to the twin with a
warning on the terminal, and ``import framecodec`` warns again; a wheel or CI
build sets FRAMECODEC_REQUIRE_EXTENSION=1 (or runs under cibuildwheel) and
fails loudly instead.
"""

import importlib.util
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.join("src", "framecodec")
CODEC_DIR = os.path.join(PACKAGE_DIR, "codec")


def _load_env_rule():
    """framecodec/_env.py, by path: the package is not importable yet."""
    spec = importlib.util.spec_from_file_location(
        "_framecodec_env", os.path.join(HERE, PACKAGE_DIR, "_env.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flag


_flag = _load_env_rule()


NO_EXTENSION = _flag("FRAMECODEC_NO_EXTENSION")
REQUIRE_EXTENSION = _flag("FRAMECODEC_REQUIRE_EXTENSION") or _flag("CIBUILDWHEEL")

# Bounds and wraparound checks are off because the core checks every length
# against what is buffered before it indexes; the rest stays on (None checks
# on typed attributes, division checks) since they are cheap and catch bugs.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "embedsignature": True,
    # Each decoder's public methods hold its critical section (_codec.py):
    # safe without the GIL, and free on GIL builds.
    "freethreading_compatible": True,
}


class OptionalBuildExt(build_ext):
    """Falls back to the pure-Python twin when compiling fails, unless required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers...
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc):
        if REQUIRE_EXTENSION:
            raise
        _warn(
            f"framecodec's C extension could not be built ({exc}); installing the "
            "pure-Python implementation, about 10x slower. Install a C compiler and "
            "the Python headers and reinstall, or set FRAMECODEC_REQUIRE_EXTENSION=1 "
            "to make this an error."
        )


def _warn(message):
    """Say ``message`` where a plain ``pip install`` shows it.

    pip keeps a successful build's output to itself unless run with -v, so
    the warning also goes straight to the terminal when there is one.
    """
    line = f"WARNING: {message}\n"
    sys.stderr.write(line)
    try:
        with open("/dev/tty", "w") as terminal:
            terminal.write(line)
    except OSError:  # no terminal (CI, Windows): stderr, and import's warning, it is
        pass


def extensions():
    if NO_EXTENSION:
        return []
    if platform.python_implementation() != "CPython":
        return []  # PyPy runs the twin, which its JIT makes fast; cpyext would be slower
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSION:
            raise
        _warn("Cython is not available; installing framecodec's pure-Python twin (10x slower).")
        return []
    core = Extension(
        "framecodec.codec._codec",
        [os.path.join(CODEC_DIR, "_codec.py")],
        include_dirs=[CODEC_DIR],
        depends=[
            os.path.join(CODEC_DIR, name)
            for name in ("_codec.pxd", "_primitives.pxd", "_hton.h", "_crc32c.h")
        ],
    )
    # The C API's benchmark consumer (capi.pxd, cimported as users do).
    capi_reader = Extension(
        "framecodec.benchmarks._capi_reader",
        [os.path.join(PACKAGE_DIR, "benchmarks", "_capi_reader.pyx")],
        include_dirs=[CODEC_DIR],
        depends=[
            os.path.join(CODEC_DIR, name)
            for name in ("capi.pxd", "_codec.pxd", "_primitives.pxd", "_hton.h", "_crc32c.h")
        ],
    )
    return cythonize(
        [core, capi_reader],
        compiler_directives=COMPILER_DIRECTIVES,
        include_path=["src"],
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
