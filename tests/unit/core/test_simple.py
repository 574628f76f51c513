"""Unit tests for proxpi_min/core/simple.py: the pages' values, merged, filtered and compared."""

from __future__ import annotations

import copy
import html
import json
import urllib.parse
from typing import Optional

import pytest

from proxpi_min.core.names import NormalizedName
from proxpi_min.core.simple import (
    JSON_TYPE,
    FileEntry,
    ProjectList,
    ProjectPage,
    best_hash,
    is_hex,
    media_type,
    merge_lists,
    merge_pages,
    servable,
)
from proxpi_min.core.simple_parse import parse_project_page


# ---------------------------------------------------------------- media types


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ""),
        ("", ""),
        ("text/html", "text/html"),
        ("text/html; charset=utf-8", "text/html"),
        ("Application/Vnd.PyPI.Simple.V1+JSON ; charset=UTF-8", JSON_TYPE),
    ],
)
def test_media_type(header: Optional[str], expected: str) -> None:
    assert media_type(header) == expected



# ---------------------------------------------------------------- merging


def entry(filename: str, url: str, size: Optional[int] = None) -> FileEntry:
    return FileEntry(filename=filename, url=url, size=size)


def test_merge_pages_first_index_wins_per_filename() -> None:
    first = ProjectPage(
        "foo",
        (entry("foo-1.0.tar.gz", "https://one/foo-1.0.tar.gz", 1), entry("foo-1.1.tar.gz", "https://one/foo-1.1.tar.gz", 2)),
        ("1.0", "1.1"),
        True,
    )
    second = ProjectPage(
        "foo",
        (entry("foo-1.1.tar.gz", "https://two/foo-1.1.tar.gz", 3), entry("foo-2.0.tar.gz", "https://two/foo-2.0.tar.gz", 4)),
        ("1.1", "2.0", "3.0"),
        True,
    )
    merged = merge_pages("foo", [first, second])
    assert merged.name == "foo"
    assert [(e.filename, e.url) for e in merged.files] == [
        ("foo-1.0.tar.gz", "https://one/foo-1.0.tar.gz"),
        ("foo-1.1.tar.gz", "https://one/foo-1.1.tar.gz"),
        ("foo-2.0.tar.gz", "https://two/foo-2.0.tar.gz"),
    ]
    assert merged.versions == ("1.0", "1.1", "2.0", "3.0")
    assert merged.all_sizes_known is True
    # the other order: the second index's copy wins now
    reverse = merge_pages("foo", [second, first])
    assert dict((e.filename, e.url) for e in reverse.files)["foo-1.1.tar.gz"] == "https://two/foo-1.1.tar.gz"


@pytest.mark.parametrize(
    ("known", "expected"), [((True, True), True), ((True, False), False), ((False, True), False)]
)
def test_merge_pages_sizes_known_only_if_known_everywhere(known: tuple, expected: bool) -> None:
    pages = [ProjectPage("foo", (), (), flag) for flag in known]
    assert merge_pages("foo", pages).all_sizes_known is expected


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([(None, None), ("deprecated", "use bar"), ("archived", None)], ("deprecated", "use bar")),
        ([("archived", None), ("deprecated", "use bar")], ("archived", None)),
        ([(None, None), (None, None)], (None, None)),
    ],
)
def test_merge_pages_takes_the_status_of_the_first_index_that_states_one(statuses: list, expected: tuple) -> None:
    pages = [
        ProjectPage("foo", (entry(f"foo-{n}.0.tar.gz", "https://x/", 1),), (f"{n}.0",), True, *status)
        for n, status in enumerate(statuses)
    ]
    merged = merge_pages("foo", pages)
    assert (merged.status, merged.status_reason) == expected
    assert len(merged.files) == len(pages)


def test_merge_pages_a_quarantine_withholds_only_its_own_index_files() -> None:
    """A quarantining index offers no files (PEP 792); another index's files stay, and
    then the merged page states no quarantine it would contradict."""
    listed = ProjectPage("foo", (entry("foo-1.0.tar.gz", "https://one/x"),), ("1.0",), False)
    quarantined = ProjectPage("foo", (), ("1.0",), True, "quarantined", "malware")
    for pages in ([listed, quarantined], [quarantined, listed]):
        merged = merge_pages("foo", pages)
        assert merged == ProjectPage("foo", listed.files, ("1.0",), False, None, None)
    empty = ProjectPage("foo", (), (), True)
    assert merge_pages("foo", [empty, quarantined]) == ProjectPage("foo", (), ("1.0",), True, "quarantined", "malware")
    assert merge_pages("foo", [ProjectPage("foo", (), (), True, "active"), quarantined]).status == "active"


def test_merge_pages_single_page_is_unchanged() -> None:
    page = ProjectPage("foo", (entry("foo-1.0.tar.gz", "https://one/x", 1),), ("1.0",), True)
    assert merge_pages("foo", [page]) == page


def test_merge_lists_dedups_by_normalised_name() -> None:
    one = ProjectList.from_names(["Foo.Bar", "baz"])
    two = ProjectList.from_names(["foo-bar", "FOO_BAR", "qux", "Baz"])
    merged = merge_lists([one, two])
    assert list(merged) == ["Foo.Bar", "baz", "qux"]
    assert len(merged) == 3


def test_merge_lists_of_nothing() -> None:
    assert list(merge_lists([])) == []
    assert list(merge_lists([ProjectList.from_names([])])) == []


# ---------------------------------------------------------------- ProjectList


@pytest.mark.parametrize("names", [[], ["a"], ["a", "b"], ["Foo.Bar", "baz", "qux", "x-y"]])
def test_project_list_len_and_iter(names: list) -> None:
    projects = ProjectList.from_names(names)
    assert len(projects) == len(names)
    assert list(projects) == names
    assert list(projects) == names  # iterable more than once
    assert bool(projects) is bool(names)


def test_project_list_from_generator() -> None:
    projects = ProjectList.from_names(name for name in ("a", "b"))
    assert list(projects) == ["a", "b"]
    assert projects.names == "a\nb"


def test_project_list_copies() -> None:
    projects = ProjectList.from_names(["a", "b"])
    assert copy.copy(projects) == projects


# -- servable: pages list only what the file route serves ---------------------

EVIL_NAME = 'evil-1.0-py3-none-any.whl"><b>x.whl'


@pytest.mark.parametrize("kind", ["html", "json"])
def test_servable_leaves_out_names_the_file_route_refuses(kind):
    good = "evil-1.0-py3-none-any.whl"
    if kind == "html":
        body = (
            # A file is named by its URL, as pip and uv name it, whatever the link's text.
            f'<a href="/f/{good}#sha256={"a" * 64}">{good}</a>'
            f'<a href="/f/{html.escape(urllib.parse.quote(EVIL_NAME))}#sha256={"b" * 64}">x.whl</a>'
            f'<a href="/f/..%2F..%2Fetc%2Fpasswd">y.whl</a>'
        ).encode()
        content_type = "text/html"
    else:
        files = [{"filename": name, "url": f"/f/{i}.whl", "hashes": {}} for i, name in
                 enumerate([good, EVIL_NAME, "../../etc/passwd"])]
        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "evil", "files": files}).encode()
        content_type = JSON_TYPE
    page = parse_project_page(body, content_type, "https://example.test/simple/evil/", NormalizedName("evil"))
    assert len(page.files) == 3
    kept, refused = servable(page)
    assert [entry.filename for entry in kept.files] == [good]
    assert refused == (EVIL_NAME, "../../etc/passwd")
    assert servable(kept) == (kept, ())


@pytest.mark.parametrize(
    ("hashes", "preference", "expected"),
    [
        ((("md5", "aa"), ("sha256", "bb")), ("sha256", "md5"), ("sha256", "bb")),
        ((("md5", "aa"), ("sha512", "cc")), ("sha256", "md5"), ("md5", "aa")),
        ((("blake2b", "dd"),), ("sha256", "md5"), None),
        ((), ("sha256",), None),
    ],
)
def test_best_hash_takes_the_first_of_the_preference_list(hashes, preference, expected) -> None:
    assert best_hash(hashes, preference) == expected


def test_best_hash_for_verifying_prefers_sha256_then_stronger_then_weaker() -> None:
    assert best_hash((("sha1", "aa"), ("sha384", "bb"), ("sha512", "cc"))) == ("sha512", "cc")
    assert best_hash((("md5", "aa"), ("blake2b", "dd"))) == ("blake2b", "dd")


@pytest.mark.parametrize(("value", "expected"), [("00aAfF", True), ("", False), ("0x1", False), ("ab\n", False), ("é", False)])
def test_is_hex(value: str, expected: bool) -> None:
    assert is_hex(value) is expected
