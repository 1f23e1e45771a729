"""Stands in for the ``cython`` module when Cython is not installed.

The pure-Python twin (_codec.py run uncompiled) only asks ``cython.compiled``.
"""

compiled = False
