"""Sphinx configuration of the framecodec docs site.

Why Sphinx (and not MkDocs): autodoc imports the package and reads the
docstrings of the module actually loaded, the compiled core as well as its
pure-Python twin (Cython keeps the docstrings and embeds the signatures),
so the API reference documents what users import; intersphinx links the
signatures' standard types (ssl.SSLContext, socket.socket...) to the Python
docs; myst-parser keeps the guide in Markdown (docs/anyio.md and
docs/reliability.md keep their paths); and -W turns every broken reference
into a build failure.  The code examples run through tests/test_docs.py.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` first).
"""

from __future__ import annotations

import pathlib

import framecodec

project = "framecodec"
author = "framecodec developers"
copyright = "framecodec developers"
release = version = framecodec.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve, checked
myst_enable_extensions = ["colon_fence", "substitution"]
myst_substitutions = {"implementation": framecodec.IMPLEMENTATION}

html_theme = "furo"
html_title = f"framecodec {release}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # without one, browsers log a 404 for /favicon.ico

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Every reference must resolve (-n, with -W an error), except what the
# signatures name that has no page on purpose: the classes of private
# modules (framecodec.net.protocols.FrameProtocol, ..., three levels down or more:
# the public modules are one level down), typing aliases, and anyio's and
# asyncio's own classes (no inventory of anyio offline; asyncio's annotations
# name the submodules its inventory does not).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:(class|obj)", r"framecodec(\.\w+){3,}"),
    (r"py:(class|obj)", r"AddressLike|.*Tuple\[str"),
    (r"py:(class|obj)", r"(anyio|asyncio)\..*"),
    # The network layers' types for type checkers (framecodec.net.types,
    # the handler and reply unions): they exist under TYPE_CHECKING only;
    # typing.md describes them.  WriteableBuffer is typeshed's.
    (r"py:(class|obj)", r"FrameData|MessageContent|(Frame|Message)Reply|Handler|WriteableBuffer"),
]

# The Python docs' inventory: Debian's python3-doc copy when installed (CI
# installs it: the build needs no network), else docs.python.org.
_LOCAL_INVENTORIES = sorted(pathlib.Path("/usr/share/doc").glob("python3*/html/objects.inv"))
intersphinx_mapping = {
    "python": (
        "https://docs.python.org/3",
        str(_LOCAL_INVENTORIES[-1]) if _LOCAL_INVENTORIES else None,
    ),
}
intersphinx_timeout = 10
