"""Build checksum.pyx against the installed framecodec (not its source tree).

    python build.py [BUILD_DIR]

compiles the extension module ``checksum`` into BUILD_DIR (default: here).
Cython finds framecodec's .pxd files on sys.path; the C compiler needs
framecodec.codec.get_include() for the header they include.  Needs Cython
and a C compiler.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Distribution, Extension

import framecodec.codec

HERE = os.path.dirname(os.path.abspath(__file__))


def build(build_dir=HERE, sources=("checksum.pyx",)):
    """Compile ``sources`` (.pyx files here, or paths) into ``build_dir``."""
    modules = [
        Extension(
            os.path.splitext(os.path.basename(source))[0],
            [os.path.join(HERE, source)],
            include_dirs=[framecodec.codec.get_include()],
        )
        for source in sources
    ]
    dist = Distribution(
        {
            "ext_modules": cythonize(
                modules, build_dir=os.path.join(build_dir, "cython"), quiet=True
            ),
            "script_args": [
                "build_ext",
                "--build-lib",
                build_dir,
                "--build-temp",
                os.path.join(build_dir, "temp"),
            ],
        }
    )
    dist.parse_command_line()
    dist.run_commands()
    return build_dir


if __name__ == "__main__":
    build(os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else HERE)
