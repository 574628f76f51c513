"""Unit tests for proxpi_min/core/versions.py: PEP 440 versions read one way."""

from __future__ import annotations

import pytest

from proxpi_min.core.versions import Version, final_key, parse_version, same_version, version_key


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1.0", Version(0, (1, 0), None, None, None, ())),
        (" V01.00 ", Version(0, (1, 0), None, None, None, ())),
        ("2!1.0-RC01", Version(2, (1, 0), ("rc", 1), None, None, ())),
        ("1.0preview", Version(0, (1, 0), ("rc", 0), None, None, ())),
        ("1.0-1", Version(0, (1, 0), None, 1, None, ())),
        ("1.0_1", Version(0, (1, 0), None, 1, None, ())),  # a file name's "_" (PEP 427)
        ("1.0.rev", Version(0, (1, 0), None, 0, None, ())),
        ("1.0a1.post2.dev3", Version(0, (1, 0), ("a", 1), 2, 3, ())),
        ("1.0+Ubuntu-01.x", Version(0, (1, 0), None, None, None, ("ubuntu", 1, "x"))),
    ],
)
def test_every_spelling_reads_to_its_normal_form(text: str, parsed: Version) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize("text", ["", "junk", "1.0-junk", "1..0", "1.0+", "\u00b2", "1.0 1", "9" * 65, "1." + "0" * 5000])
def test_text_that_is_no_version(text: str) -> None:
    assert parse_version(text) is None
    assert version_key(text) == version_key(text.upper())  # its own key, as written


def test_equality_pads_the_release_and_a_missing_local_label_matches_every_build() -> None:
    assert version_key("1.0") == version_key("1.0.0.0") != version_key("1.0.0.1")
    assert same_version("1.0", "1.0+cpu") and not same_version("1.0+cpu", "1.0")
    assert not same_version("1.0", "1.0.post0") and not same_version("1!1.0", "1.0")
    assert same_version("not.a-version", "NOT.A_VERSION")


def test_final_releases_sort_as_pep_440_orders_them() -> None:
    ordered = ["1.0", "1.0.post1", "1.0.1", "1.1", "1.10", "2", "1!0.1"]
    assert sorted(ordered[::-1], key=final_key) == ordered
    assert final_key("1.0") == final_key("1.0.0")
    for not_final in ("1.0rc1", "1.0.dev0", "1.0+local", "junk", "9" * 5000):
        assert final_key(not_final) is None
