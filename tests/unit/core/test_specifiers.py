"""Unit tests for proxpi_min/core/specifiers.py: Requires-Python against a Python version."""

from __future__ import annotations

import pytest

from proxpi_min.core.specifiers import python_satisfies

PYTHON = (3, 11, 4)


@pytest.mark.parametrize(
    ("specifier", "satisfied"),
    [
        (">=3.8", True),
        (">=3.99", False),
        (">= 3.6 ,  < 4", True),
        (">=3.8,<3.11", False),
        ("!=3.0.*,!=3.1.*,>=2.7", True),
        ("!=3.11.*", False),
        ("==3.*", True),
        ("==3.11.*", True),
        ("==3.11", False),  # 3.11.0 exactly (PEP 440: zero-padded)
        ("==3.11.4", True),
        ("~=3.7", True),  # >=3.7, ==3.*
        ("~=3.11.5", False),
        ("~=3.10.0", False),  # ==3.10.*
        (">3.11", True),
        ("<3.11.4", False),
        ("<=3.11.4", True),
        ("===3.11.4", True),
        ("===3.11", False),
        ("===3.11.*", False),  # arbitrary equality compares the text, "*" and all
        ("", True),
        (",", True),
        # Pre-release and dev bounds: just before their release, no final release between.
        (">=3.8.0b1", True),
        (">=3.11.4rc1", True),
        (">=3.12.0a1", False),
        ("<3.12.0a1", True),
        ("<=3.11.4.dev0", False),
        ("<4.0a0,>=3.99", False),  # every clause counts, whatever the order
        (">=3.99,<4.0a0", False),
        ("==3.11.4rc1", False),
        ("!=3.11.4rc1", True),
        # Post-releases come after their release; a local label holds for no release.
        (">=3.99.post1", False),
        (">=3.11.4.post1", False),
        ("<=3.11.4.post1", True),
        (">3.11.3.post1", True),
        ("==3.11.4.post0", False),
        ("==3.11.4+local", False),
        (">=3.11.4rc1.post1", True),  # a post-release of a pre-release: still before the release
        ("!=3.11.4+local", True),
        # Other spellings of one version, and prefixes padded with zeros.
        ("==3.11.04", True),
        (">=V3.8", True),
        ("==3.11.4.0.*", True),
        ("~=3.11.4rc1", True),  # >=3.11.4rc1, ==3.11.*
        (">=1!3.0", False),  # an epoch above any Python's 0
        # Not a valid specifier (junk, '*' where PEP 440 has none, a local label or a
        # post-release where it has none): taken as pip takes an invalid Requires-Python,
        # no reason to pass a file over, whichever clause it is.
        ("python3", True),
        (">=3.*", True),
        ("~=3", True),
        (">=3.99,junk", True),
        ("junk,>=3.99", True),
        (">=3.99+local", True),
        ("==3.99.post1.*", True),
    ],
)
def test_python_satisfies(specifier: str, satisfied: bool) -> None:
    assert python_satisfies(specifier, PYTHON) is satisfied


def test_a_two_part_python_compares_as_zero_padded() -> None:
    assert python_satisfies(">=3.9", (3, 9)) and not python_satisfies(">=3.9.1", (3, 9))
