"""pytest marks for tests that need something not every supported Python has."""

from __future__ import annotations

import sys

import pytest

__all__ = ["needs_tomllib"]

# The standard library reads TOML from Python 3.11 on; before, lock files in TOML are refused.
needs_tomllib = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="reading TOML lock files needs tomllib (Python 3.11+)"
)
