"""Unit tests for proxpi_min/core/markup.py: HTML escaping."""

from __future__ import annotations

import pytest

from proxpi_min.core.markup import escape


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ('<a href="x">&\'</a>', "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&lt;/a&gt;"),
        (42, "42"),
        (None, "None"),
    ],
)
def test_escape(value: object, expected: str) -> None:
    assert escape(value) == expected
