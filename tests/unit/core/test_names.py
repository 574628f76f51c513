"""Unit tests for proxpi_min/core/names.py: PEP 503 names, request validation, file names."""

from __future__ import annotations

import pytest

from proxpi_min.core.errors import BadRequest
from proxpi_min.core.names import (
    canonicalize_name,
    check_filename,
    parse_project_name,
    version_from_filename,
)

# ---------------------------------------------------------------- canonicalize_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("foo", "foo"),
        ("Foo", "foo"),
        ("FOO-BAR", "foo-bar"),
        ("foo_bar", "foo-bar"),
        ("foo.bar", "foo-bar"),
        ("Foo.Bar", "foo-bar"),
        ("foo__bar", "foo-bar"),
        ("foo-._-bar", "foo-bar"),
        ("a_b.c-d", "a-b-c-d"),
        ("zope.interface", "zope-interface"),
        ("Django", "django"),
        ("ruamel.yaml.clib", "ruamel-yaml-clib"),
        ("pkg1", "pkg1"),
    ],
)
def test_canonicalize_name(name: str, expected: str) -> None:
    assert canonicalize_name(name) == expected


@pytest.mark.parametrize("name", ["Foo.Bar", "a__b", "X-_-Y.z", "already-normal"])
def test_canonicalize_name_is_idempotent(name: str) -> None:
    once = canonicalize_name(name)
    assert canonicalize_name(once) == once


# ---------------------------------------------------------------- parse_project_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo", "foo"),
        ("Foo_Bar", "foo-bar"),
        ("Foo.Bar", "foo-bar"),
        ("a", "a"),
        ("A", "a"),
        ("1", "1"),
        ("a1", "a1"),
        ("a..b", "a-b"),  # dots inside a name are fine; only the ends must be alphanumeric
        ("a-_.b", "a-b"),
        ("zope.interface", "zope-interface"),
        ("x" * 200, "x" * 200),  # the longest name accepted
    ],
)
def test_parse_project_name_accepts_and_normalises(text: str, expected: str) -> None:
    assert parse_project_name(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "..",  # also what "%2e%2e" is after the request path is percent-decoded
        "...",
        "%2e%2e",  # a literal, undecoded spelling
        "%2E%2E",
        "../etc",
        "a/..",
        "a/b",
        "a/",
        "/a",
        "a\\b",
        "..\\a",
        "a\x00",
        "\x00",
        "a\x00b",
        "/etc/passwd",
        "//server/share",
        "\\\\server\\share",
        "C:\\Windows",
        "C:",
        "~root",
        "a\n",
        "a\r\nb",
        "a\tb",
        "a b",
        " a",
        "a ",
        "-a",
        "a-",
        "_a",
        "a_",
        ".a",
        "a.",
        "a%2fb",
        "a?b",
        "a#b",
        "x" * 201,  # overlong
        "x" * 10000,
    ],
)
def test_parse_project_name_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_project_name(text)
    assert info.value.status == 400


@pytest.mark.parametrize("text", ["\u212a", "\u017f", "\u0130", "\u0131", "a\u017fb"])
def test_parse_project_name_refuses_non_ascii_lookalikes(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_project_name(text)


# ---------------------------------------------------------------- check_filename


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0.tar.gz",
        "foo-1.0-py3-none-any.whl",
        "foo-1.0-py3-none-any.whl.metadata",
        "Foo_Bar-1.0.zip",
        "torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl",
        "foo-1!2.0.tar.gz",  # PEP 440 epoch
        "foo-1.0~rc1.tar.gz",
        "foo-1.0.exe",
        "foo-1.0-py2.7.egg",
        "x" * 255,
    ],
)
def test_check_filename_accepts(filename: str) -> None:
    assert check_filename(filename) == filename


@pytest.mark.parametrize(
    "filename",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-rf",
        "_x.whl",
        "a/b",
        "../foo-1.0.tar.gz",
        "/etc/passwd",
        "a\\b",
        "..\\x",
        "a\x00b",
        "foo.whl\x00",
        "a b",
        "a\n",
        "a%2Fb",
        "a?b",
        "a#b",
        "a:b",
        "a*b",
        "\uff41.whl",  # fullwidth "a"
        "caf\u00e9-1.0.tar.gz",
        "x" * 256,  # overlong
    ],
)
def test_check_filename_refuses(filename: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_filename(filename)
    assert info.value.status == 400


# ---------------------------------------------------------------- version_from_filename


@pytest.mark.parametrize(
    ("filename", "project", "expected"),
    [
        # wheels (PEP 427): name-version(-build)?-python-abi-platform.whl
        ("foo-1.0-py3-none-any.whl", "foo", "1.0"),
        ("foo_bar-2.0.1-cp311-cp311-manylinux_2_17_x86_64.whl", "foo-bar", "2.0.1"),
        ("Foo.Bar-3.0-py2.py3-none-any.whl", "foo-bar", "3.0"),
        ("foo-1.0-1-py3-none-any.whl", "foo", "1.0"),  # with a build tag
        ("torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl", "torch", "2.3.0+cu121"),
        # sdists, including names with dashes
        ("foo-1.0.tar.gz", "foo", "1.0"),
        ("foo-bar-1.0.tar.gz", "foo-bar", "1.0"),
        ("foo-bar-baz-1.0.tar.gz", "foo-bar-baz", "1.0"),
        ("Foo.Bar-1.0.zip", "foo-bar", "1.0"),
        ("foo_bar-1.0.tar.bz2", "foo-bar", "1.0"),
        ("foo-2-1.0.tar.gz", "foo-2", "1.0"),  # a name ending in a number
        ("foo-1.0.tgz", "foo", "1.0"),
        ("foo-1.0.tar.xz", "foo", "1.0"),
        ("foo-1.0.tar", "foo", "1.0"),
        # every archive pip takes as an sdist, in any case
        ("foo-1.0.txz", "foo", "1.0"),
        ("foo-1.0.tlz", "foo", "1.0"),
        ("foo-1.0.tar.lz", "foo", "1.0"),
        ("foo-1.0.tar.lzma", "foo", "1.0"),
        ("foo-1.0.TAR.GZ", "foo", "1.0"),
        ("foo-1.0-beta.tar.gz", "foo", "1.0-beta"),  # legacy version with a dash
        ("foo-1!2.0.tar.gz", "foo", "1!2.0"),
    ],
)
def test_version_from_filename(filename: str, project: str, expected: str) -> None:
    assert version_from_filename(filename, project) == expected


@pytest.mark.parametrize(
    ("filename", "project"),
    [
        # unknown extensions
        ("foo-1.0.exe", "foo"),
        ("foo-1.0-py2.7.egg", "foo"),
        ("foo-1.0.rpm", "foo"),
        ("foo-1.0.msi", "foo"),
        ("foo-1.0", "foo"),
        # malformed wheels
        ("foo-1.0.whl", "foo"),
        ("foo-1.0-py3-any.whl", "foo"),
        # sdists of another project, or without a version
        ("bar-1.0.tar.gz", "foo"),
        ("foobar-1.0.tar.gz", "foo"),
        ("foo-1.0.tar.gz", "foo-bar"),
        ("foo.tar.gz", "foo"),
        ("foo-.tar.gz", "foo"),
    ],
)
def test_version_from_filename_unknown(filename: str, project: str) -> None:
    assert version_from_filename(filename, project) is None


def test_version_from_filename_wheel_of_another_project() -> None:
    assert version_from_filename("other-1.0-py3-none-any.whl", "foo") is None
