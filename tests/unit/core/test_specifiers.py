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
        ("", True),
        (",", True),
        # Not a specifier this reads (a pre-release bound, junk, '*' where PEP 440 has none):
        # as pip takes an invalid Requires-Python, no reason to pass a file over.
        (">=3.8.0b1", True),
        ("python3", True),
        (">=3.*", True),
        ("~=3", True),
        (">=3.99,junk", False),  # a clause that reads and fails is enough
    ],
)
def test_python_satisfies(specifier: str, satisfied: bool) -> None:
    assert python_satisfies(specifier, PYTHON) is satisfied


def test_a_two_part_python_compares_as_zero_padded() -> None:
    assert python_satisfies(">=3.9", (3, 9)) and not python_satisfies(">=3.9.1", (3, 9))
