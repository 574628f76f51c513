"""lockmatch: lock files' wanted files matched against an index's files, and the wheel-tag filters."""

from __future__ import annotations

import pytest

from proxpi_min.core import lockmatch
from proxpi_min.core.lockfiles import Wanted
from proxpi_min.core.lockmatch import HASH_DIFFERS, NOT_ON_INDEX, Filters, match_files, wheel_fits
from proxpi_min.core.names import WheelName, parse_wheel_name
from proxpi_min.core.simple import FileEntry


@pytest.mark.parametrize(
    "filename, platforms, python, fits",
    [
        ("a-1-py3-none-any.whl", ("manylinux_2_17_x86_64",), (3, 11), True),
        ("a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", ("manylinux2014_x86_64",), (3, 11), True),
        ("a-1-cp311-cp311-manylinux_2_17_x86_64.whl", ("win_amd64",), None, False),
        ("a-1-cp310-cp310-win_amd64.whl", (), (3, 11), False),
        ("a-1-cp38-abi3-win_amd64.whl", (), (3, 11), True),
        ("a-1-cp312-abi3-win_amd64.whl", (), (3, 11), False),
        ("a-1-cp3\u00b2-abi3-win_amd64.whl", (), (3, 11), False),  # a digit int() refuses
        ("a-1-py2.py3-none-any.whl", (), (3, 9), True),
        ("a-1-1build-py3-none-any.whl", (), (3, 9), True),
        ("broken.whl", (), None, False),
    ],
)
def test_wheel_fits(filename, platforms, python, fits):
    assert wheel_fits(filename, platforms, python) is fits


def test_wheel_fits_the_targets_own_tag_takes_older_compatible_wheels():
    """--platform names the target machine: wheels of older compatible tags are kept."""
    target = ("manylinux_2_28_x86_64",)
    assert wheel_fits("a-1-cp311-cp311-manylinux_2_17_x86_64.whl", target, (3, 11))
    assert wheel_fits("a-1-cp311-cp311-manylinux1_x86_64.whl", target, (3, 11))
    assert wheel_fits("a-1-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", target, (3, 11))
    assert not wheel_fits("a-1-cp311-cp311-musllinux_1_1_x86_64.whl", target, (3, 11))
    assert not wheel_fits("a-1-cp311-cp311-win_amd64.whl", target, (3, 11))
    assert wheel_fits("a-1-cp311-cp311-macosx_10_9_universal2.whl", ("win_amd64", "macosx_11_0_arm64"), None)


@pytest.mark.parametrize(
    "pythons, fits",
    [
        ("py3", True), ("py311", True), ("py38", True), ("py30", True), ("py312", False),
        ("cp311", True), ("cp310", False), ("py2", False), ("py2.py38", True),
    ],
)
def test_wheel_fits_python_tags_as_pip_reads_them(pythons, fits):
    """packaging.tags: cpXY, pyX, and pyXY of the minor or an older one (abi3: see above)."""
    assert wheel_fits(f"a-1-{pythons}-none-any.whl", (), (3, 11)) is fits
    assert wheel_fits(f"a-1-{pythons}-none-win_amd64.whl", ("win_amd64",), (3, 11)) is fits


def test_Filters_keeps_sdists_unless_wheels_only():
    assert Filters(python_version=(3, 11)).keeps("a-1.tar.gz")
    assert not Filters(wheels_only=True).keeps("a-1.tar.gz")
    assert Filters(wheels_only=True).keeps("a-1-py3-none-any.whl")


def entry(filename: str, digest: str, algorithm: str = "sha256") -> FileEntry:
    return FileEntry(filename, f"https://index.example/{filename}", ((algorithm, digest),))


FILES = [
    entry("a-1.0-py3-none-any.whl", "11" * 32),
    entry("a-1.0.tar.gz", "22" * 32),
    entry("a-2.0-py3-none-any.whl", "33" * 32),
    entry("a-2.0.zip", "44" * 16, "md5"),
]


@pytest.mark.parametrize(
    "want, chosen, failures",
    [
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "22" * 32),), "l"), ["a-1.0.tar.gz"], []),
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "22" * 32), ("md5", "0" * 32)), "l"), ["a-1.0.tar.gz"], []),
        (Wanted("a", "9", "a-9.tar.gz", (("sha256", "22" * 32),), "l"), [], [("a-9.tar.gz", NOT_ON_INDEX)]),
        (Wanted("a", "1.0", "a-1.0.tar.gz", (("sha256", "ff" * 32),), "l"), [], [("a-1.0.tar.gz", HASH_DIFFERS)]),
        (Wanted("a", "2.0", "a-2.0.zip", (("sha256", "44" * 32),), "l"), [], [("a-2.0.zip", HASH_DIFFERS)]),
        (Wanted("a", "1.0", None, (("sha256", "11" * 32), ("sha256", "22" * 32)), "l"),
         ["a-1.0-py3-none-any.whl", "a-1.0.tar.gz"], []),
        (Wanted("a", "1.0", None, (("sha256", "11" * 32), ("sha256", "ee" * 32)), "l"),
         ["a-1.0-py3-none-any.whl"], [("a==1.0 sha256:eeeeeeeeeeeeeeee...", NOT_ON_INDEX)]),
        # a hash of another version's file: pip takes none but the pinned version's
        (Wanted("a", "1.0", None, (("sha256", "33" * 32),), "l"), [], [("a==1.0 sha256:3333333333333333...", HASH_DIFFERS)]),
        (Wanted("a", "9.9", None, (("sha256", "11" * 32),), "l"), [], [("a==9.9", NOT_ON_INDEX)]),
        (Wanted("a", "2.0", None, (), "l"), ["a-2.0-py3-none-any.whl", "a-2.0.zip"], []),
        (Wanted("a", "3.0", None, (), "l"), [], [("a==3.0", NOT_ON_INDEX)]),
        # PEP 440 "==", the policy's rule: "2" is "2.0", "V2.0" too
        (Wanted("a", "2", None, (), "l"), ["a-2.0-py3-none-any.whl", "a-2.0.zip"], []),
        (Wanted("a", "V2.0", None, (), "l"), ["a-2.0-py3-none-any.whl", "a-2.0.zip"], []),
    ],
)
def test_match_files(want, chosen, failures):
    entries, failed = match_files([want], FILES)
    assert [e.filename for e, _ in entries] == chosen
    assert all(origin == "l" for _, origin in entries)
    assert [(f.what, f.reason) for f in failed] == failures
    assert all(f.origin == "l" for f in failed)


def test_a_pin_without_hash_takes_local_builds_of_its_version():
    files = [entry("a-2.0+cpu-py3-none-any.whl", "55" * 32), entry("a-2.0.1-py3-none-any.whl", "66" * 32)]
    entries, failed = match_files([Wanted("a", "2.0", None, (), "l")], files)
    assert [e.filename for e, _ in entries] == ["a-2.0+cpu-py3-none-any.whl"] and failed == []


@pytest.mark.parametrize(
    "filename, parsed",
    [
        ("Zope.Interface-5.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
         WheelName("Zope.Interface", "5.0", frozenset({"cp311"}), frozenset({"cp311"}),
                   frozenset({"manylinux_2_17_x86_64", "manylinux2014_x86_64"}))),
        ("a-1-1build-py2.py3-none-any.whl",
         WheelName("a", "1", frozenset({"py2", "py3"}), frozenset({"none"}), frozenset({"any"}))),
        ("a-1.tar.gz", None),
        ("a-1-py3-none.whl", None),
    ],
)
def test_parse_wheel_name(filename, parsed):
    assert parse_wheel_name(filename) == parsed


def test_all_is_sorted():
    assert sorted(lockmatch.__all__) == lockmatch.__all__
