"""pytest marks for tests that need something not every supported Python has."""

from __future__ import annotations

import re
import sys

import pip
import pytest

__all__ = ["needs_pip_json_metadata", "needs_tomllib"]

# The standard library reads TOML from Python 3.11 on; before, lock files in TOML are refused.
needs_tomllib = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="reading TOML lock files needs tomllib (Python 3.11+)"
)

# Pages in JSON carry PEP 714's "core-metadata" only (the older key crashed pip 22.3-23.1),
# which pip reads from 23.2 on; an older pip downloads wheels to learn their dependencies.
needs_pip_json_metadata = pytest.mark.skipif(
    tuple(int(part) for part in re.findall(r"\d+", pip.__version__)[:2]) < (23, 2),
    reason="pip before 23.2 does not read core-metadata in JSON pages",
)
