"""The one rule for framecodec's environment flags (FRAMECODEC_PURE_PYTHON,
FRAMECODEC_NO_EXTENSION, FRAMECODEC_REQUIRE_EXTENSION): unset, empty, "0",
"false" and "no" (any case, spaces ignored) are off; anything else is on.

Plain Python with no imports from the package: setup.py loads this file by
path, before the package is built.
"""

from __future__ import annotations

import os

_OFF = ("", "0", "false", "no")


def flag(name: str) -> bool:
    """Whether environment flag ``name`` is on."""
    return os.environ.get(name, "").strip().lower() not in _OFF
