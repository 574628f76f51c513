"""Unit tests for proxpi_min/core/render.py: page rendering, compression and ETags."""

from __future__ import annotations

import gzip
import html
import json
import urllib.parse
from html.parser import HTMLParser
from typing import Optional

import pytest

from proxpi_min.core.render import (
    render,
    render_project_list,
    render_project_page,
    with_files_rendered_anew,
)
from proxpi_min.core.simple import (
    HTML_TYPE,
    JSON_TYPE,
    TEXT_HTML,
    FileEntry,
    ProjectList,
    ProjectPage,
)
from proxpi_min.core.simple_parse import parse_project_list, parse_project_page

SHA = "a" * 64
SHA_B = "b" * 64
PAGE_URL = "http://proxy.example/index/foo/"


# ---------------------------------------------------------------- HTML helpers


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list = []
        self.meta: dict = {}
        self._current: Optional[dict] = None
        self._text: list = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._current, self._text = dict(attrs), []
        elif tag == "meta":
            attributes = dict(attrs)
            self.meta[attributes.get("name")] = attributes.get("content")

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text)))
            self._current = None


def anchors(body: bytes) -> list:
    parser = _Anchors()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.anchors


def meta(body: bytes) -> dict:
    parser = _Anchors()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.meta


def entry(filename: str = "foo-1.0.tar.gz", **fields) -> FileEntry:
    fields.setdefault("hashes", (("sha256", SHA),))
    return FileEntry(filename=filename, url=f"https://files.example/{filename}", **fields)


def page_of(*entries: FileEntry, name: str = "foo", versions: tuple = ("1.0",), sizes: bool = False) -> ProjectPage:
    return ProjectPage(name, tuple(entries), versions, sizes)


def html_anchor(file_entry: FileEntry) -> tuple:
    found = anchors(render_project_page(page_of(file_entry), TEXT_HTML))
    assert len(found) == 1
    return found[0]


def json_item(file_entry: FileEntry) -> dict:
    document = json.loads(render_project_page(page_of(file_entry), JSON_TYPE))
    assert len(document["files"]) == 1
    return document["files"][0]


# ---------------------------------------------------------------- HTML project page


@pytest.mark.parametrize("media", [TEXT_HTML, HTML_TYPE])
def test_html_page_document(media: str) -> None:
    body = render_project_page(page_of(entry(), entry("foo-1.0-py3-none-any.whl")), media)
    assert body.startswith(b"<!DOCTYPE html>")
    parser = _Anchors()
    parser.feed(body.decode("utf-8"))
    assert parser.meta["pypi:repository-version"] in ("1.0", "1.1")
    assert [text for _, text in parser.anchors] == ["foo-1.0.tar.gz", "foo-1.0-py3-none-any.whl"]
    assert b"<title>Links for foo</title>" in body


@pytest.mark.parametrize(
    ("filename", "href"),
    [
        ("foo-1.0.tar.gz", "foo-1.0.tar.gz"),
        ("torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl", "torch-2.3.0%2Bcu121-cp311-cp311-linux_x86_64.whl"),
        ("foo-1!2.0.tar.gz", "foo-1%212.0.tar.gz"),
    ],
)
def test_html_href_is_relative_and_quoted(filename: str, href: str) -> None:
    attributes, text = html_anchor(entry(filename, hashes=()))
    assert attributes["href"] == href
    assert text == filename  # the anchor text is the plain file name
    assert " " not in attributes["href"]


@pytest.mark.parametrize(
    ("hashes", "fragment"),
    [
        ((("sha256", SHA),), f"#sha256={SHA}"),
        ((("md5", "0" * 32), ("sha256", SHA)), f"#sha256={SHA}"),  # sha256 preferred
        ((("sha1", "1" * 40), ("sha256", SHA), ("sha512", "5" * 128)), f"#sha256={SHA}"),
        ((("sha512", "5" * 128), ("md5", "0" * 32)), "#sha512=" + "5" * 128),
        ((("sha384", "3" * 96),), "#sha384=" + "3" * 96),
        ((("md5", "0" * 32),), "#md5=" + "0" * 32),
        ((("sha1", "1" * 40),), ""),  # uv refuses sha1 fragments: none at all
        ((("sha224", "2" * 56),), ""),
        ((), ""),
    ],
)
def test_html_hash_fragment(hashes: tuple, fragment: str) -> None:
    attributes, _ = html_anchor(entry(hashes=hashes))
    assert attributes["href"] == "foo-1.0.tar.gz" + fragment


def test_html_escapes_script_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    body = render_project_page(
        page_of(
            entry(
                f"{evil}.tar.gz",
                requires_python=f'>=3"{evil}',
                yanked=evil,
                provenance=f'https://p.example/"{evil}',
            ),
            name=evil,
        ),
        TEXT_HTML,
    )
    assert b"<script>" not in body
    attributes, text = anchors(body)[0]
    assert text == f"{evil}.tar.gz"
    assert attributes["data-requires-python"] == f'>=3"{evil}'
    assert attributes["data-yanked"] == evil
    assert attributes["data-provenance"] == f'https://p.example/"{evil}'
    assert set(attributes) == {"href", "data-requires-python", "data-yanked", "data-provenance"}


def test_html_requires_python_is_escaped() -> None:
    body = render_project_page(page_of(entry(requires_python="<4,>=3.8")), TEXT_HTML)
    assert b'data-requires-python="&lt;4,&gt;=3.8"' in body
    assert html_anchor(entry(requires_python="<4,>=3.8"))[0]["data-requires-python"] == "<4,>=3.8"


def test_html_writes_a_lone_surrogate_a_json_page_may_carry_as_a_question_mark() -> None:
    # JSON escapes it ("\\ud800"); UTF-8 has no code for it.
    lone = "\ud800"
    page = page_of(entry(requires_python=">=3" + lone, yanked=lone, provenance="https://p.example/" + lone))
    attributes = anchors(render_project_page(page, TEXT_HTML))[0][0]
    assert (attributes["data-requires-python"], attributes["data-yanked"]) == (">=3?", "?")
    assert attributes["data-provenance"] == "https://p.example/?"
    assert json_item(page.files[0])["requires-python"] == ">=3" + lone
    listed = render_project_list(ProjectList.from_names(["a" + lone]), TEXT_HTML)
    assert anchors(listed)[0][1] == "a?"


def test_html_without_requires_python_has_no_attribute() -> None:
    assert "data-requires-python" not in html_anchor(entry())[0]


@pytest.mark.parametrize(
    ("yanked", "expected"),
    [(None, None), ("", ""), ("broken build", "broken build")],
)
def test_html_yanked(yanked: Optional[str], expected: Optional[str]) -> None:
    attributes, _ = html_anchor(entry(yanked=yanked))
    assert attributes.get("data-yanked", None) == expected
    assert ("data-yanked" in attributes) is (yanked is not None)


@pytest.mark.parametrize(
    ("metadata", "value"),
    [
        (None, None),
        ((), "true"),
        ((("sha256", SHA_B),), f"sha256={SHA_B}"),
        ((("md5", "0" * 32), ("sha256", SHA_B)), f"sha256={SHA_B}"),
        ((("sha1", "1" * 40),), "true"),  # a hash we do not name still means "exists"
    ],
)
def test_html_metadata_attributes(metadata: Optional[tuple], value: Optional[str]) -> None:
    attributes, _ = html_anchor(entry("foo-1.0-py3-none-any.whl", metadata=metadata))
    assert attributes.get("data-core-metadata") == value
    assert attributes.get("data-dist-info-metadata") == value
    assert attributes.get("data-core-metadata") != "false"


def test_html_never_says_metadata_false() -> None:
    body = render_project_page(
        page_of(*(entry(f"foo-{n}.0-py3-none-any.whl", metadata=m) for n, m in enumerate([None, (), (("sha1", "1" * 40),)]))),
        TEXT_HTML,
    )
    assert b'metadata="false"' not in body


@pytest.mark.parametrize(("gpg", "value"), [(None, None), (True, "true"), (False, "false")])
def test_html_gpg_sig(gpg: Optional[bool], value: Optional[str]) -> None:
    assert html_anchor(entry(gpg_sig=gpg))[0].get("data-gpg-sig") == value


@pytest.mark.parametrize("media", [TEXT_HTML, HTML_TYPE])
def test_html_project_status(media: str) -> None:
    """PEP 792's meta tags, under a repository version of 1.4, which they need."""
    reason = 'moved to "bar" <2> & more'
    body = render_project_page(page_of(entry())._replace(status="deprecated", status_reason=reason), media)
    assert meta(body) == {
        "pypi:repository-version": "1.4",
        "pypi:project-status": "deprecated",
        "pypi:project-status-reason": reason,
    }
    assert b"<2>" not in body
    assert meta(render_project_page(page_of(entry())._replace(status="archived"), media)) == {
        "pypi:repository-version": "1.4",
        "pypi:project-status": "archived",
    }
    assert meta(render_project_page(page_of(entry()), media)) == {"pypi:repository-version": "1.1"}


def test_html_round_trips_through_the_parser() -> None:
    files = (
        entry("foo-1.0-py3-none-any.whl", requires_python=">=3.8", metadata=(("sha256", SHA_B),)),
        entry("foo-1.0+local.tar.gz", yanked="bad", metadata=None),
        entry("foo-1.1.tar.gz", yanked="", metadata=()),
    )
    body = render_project_page(page_of(*files)._replace(status="deprecated", status_reason="use <bar>"), TEXT_HTML)
    parsed = parse_project_page(body, "text/html; charset=utf-8", PAGE_URL, "foo")
    assert parsed.files == tuple(f._replace(url=PAGE_URL + f.filename.replace("+", "%2B")) for f in files)
    assert (parsed.status, parsed.status_reason) == ("deprecated", "use <bar>")


# ---------------------------------------------------------------- JSON project page


def test_json_page_document() -> None:
    page = page_of(entry(size=10), entry("foo-2.0.tar.gz", size=20), versions=("1.0", "2.0", "3.0"), sizes=True)
    document = json.loads(render_project_page(page, JSON_TYPE))
    assert document == {
        "meta": {"api-version": "1.1"},
        "name": "foo",
        "versions": ["1.0", "2.0", "3.0"],
        "files": [
            {"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": {"sha256": SHA}, "size": 10},
            {"filename": "foo-2.0.tar.gz", "url": "foo-2.0.tar.gz", "hashes": {"sha256": SHA}, "size": 20},
        ],
    }


@pytest.mark.parametrize(("sizes_known", "version"), [(True, "1.1"), (False, "1.0")])
def test_json_api_version_is_1_1_only_when_all_sizes_are_known(sizes_known: bool, version: str) -> None:
    page = page_of(entry(size=10 if sizes_known else None), sizes=sizes_known)
    assert json.loads(render_project_page(page, JSON_TYPE))["meta"]["api-version"] == version


@pytest.mark.parametrize(
    ("status", "reason", "sizes_known", "version", "expected"),
    [
        ("deprecated", "use bar", True, "1.4", {"status": "deprecated", "reason": "use bar"}),
        ("quarantined", None, True, "1.4", {"status": "quarantined"}),
        (None, None, True, "1.1", "absent"),
        # PEP 792 needs 1.4, which needs every file's size (PEP 700): without, neither
        ("deprecated", "use bar", False, "1.0", "absent"),
    ],
)
def test_json_project_status(status, reason, sizes_known: bool, version: str, expected: object) -> None:
    page = page_of(entry(size=10 if sizes_known else None), sizes=sizes_known)
    document = json.loads(render_project_page(page._replace(status=status, status_reason=reason), JSON_TYPE))
    assert document["meta"]["api-version"] == version
    assert document.get("project-status", "absent") == expected
    stated = ["project-status"] if expected != "absent" else []
    assert list(document) == ["meta", "name", *stated, "versions", "files"]  # PyPI's order


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [(None, "absent"), ((), True), ((("sha256", SHA_B),), {"sha256": SHA_B})],
)
def test_json_core_metadata(metadata: Optional[tuple], expected: object) -> None:
    item = json_item(entry("foo-1.0-py3-none-any.whl", metadata=metadata))
    assert item.get("core-metadata", "absent") == expected
    assert "dist-info-metadata" not in item


def test_json_never_has_the_key_dist_info_metadata() -> None:
    files = [entry(f"foo-{n}.0-py3-none-any.whl", metadata=m) for n, m in enumerate([None, (), (("sha256", SHA_B),)])]
    body = render_project_page(page_of(*files), JSON_TYPE)
    assert b'"dist-info-metadata"' not in body
    for item in json.loads(body)["files"]:
        assert "dist-info-metadata" not in item


@pytest.mark.parametrize(("yanked", "expected"), [(None, "absent"), ("", True), ("broken build", "broken build")])
def test_json_yanked(yanked: Optional[str], expected: object) -> None:
    assert json_item(entry(yanked=yanked)).get("yanked", "absent") == expected


def test_json_fields() -> None:
    item = json_item(
        entry(
            "torch-2.3.0+cu121-cp311-none-any.whl",
            hashes=(("sha256", SHA), ("md5", "0" * 32)),
            requires_python="<4,>=3.8",
            size=123,
            upload_time="2024-01-17T16:53:12.779164Z",
            gpg_sig=False,
            provenance="https://pypi.org/integrity/torch/2.3.0/x/provenance",
        )
    )
    assert item == {
        "filename": "torch-2.3.0+cu121-cp311-none-any.whl",
        "url": "torch-2.3.0%2Bcu121-cp311-none-any.whl",
        "hashes": {"sha256": SHA, "md5": "0" * 32},
        "requires-python": "<4,>=3.8",  # plain, never HTML-escaped
        "size": 123,
        "upload-time": "2024-01-17T16:53:12.779164Z",
        "gpg-sig": False,
        "provenance": "https://pypi.org/integrity/torch/2.3.0/x/provenance",
    }


def test_json_round_trips_through_the_parser() -> None:
    files = (
        entry("foo-1.0-py3-none-any.whl", requires_python=">=3.8", metadata=(("sha256", SHA_B),), size=1,
              upload_time="2024-01-01T00:00:00Z"),
        entry("foo-1.0+local.tar.gz", yanked="bad", size=2),
        entry("foo-1.1.tar.gz", yanked="", metadata=(), size=3),
    )
    page = page_of(*files, versions=("1.0", "1.0+local", "1.1"), sizes=True)._replace(
        status="archived", status_reason="no longer kept"
    )
    parsed = parse_project_page(render_project_page(page, JSON_TYPE), JSON_TYPE, PAGE_URL, "foo")
    assert parsed == page._replace(
        files=tuple(f._replace(url=PAGE_URL + f.filename.replace("+", "%2B")) for f in files)
    )



def _json_dumps_reference(page: ProjectPage) -> bytes:
    """The JSON page as json.dumps writes it from dicts: what the renderer's text must
    be byte for byte."""
    files = []
    for f in page.files:
        item: dict = {"filename": f.filename, "url": urllib.parse.quote(f.filename), "hashes": dict(f.hashes)}
        if f.requires_python:
            item["requires-python"] = f.requires_python
        if f.yanked is not None:
            item["yanked"] = f.yanked or True
        if f.metadata is not None:
            item["core-metadata"] = dict(f.metadata) or True
        if f.size is not None:
            item["size"] = f.size
        if f.upload_time:
            item["upload-time"] = f.upload_time
        if f.gpg_sig is not None:
            item["gpg-sig"] = f.gpg_sig
        if f.provenance:
            item["provenance"] = f.provenance
        files.append(item)
    document: dict = {"meta": {"api-version": "1.1" if page.all_sizes_known else "1.0"}, "name": page.name}
    if page.status is not None and page.all_sizes_known:
        document["meta"]["api-version"] = "1.4"
        document["project-status"] = {"status": page.status}
        if page.status_reason:
            document["project-status"]["reason"] = page.status_reason
    document.update(versions=list(page.versions), files=files)
    return json.dumps(document, separators=(",", ":")).encode()


_HOSTILE = [
    'evil-1.0-py3-none-any.whl"><b>x.whl',
    'q"uote\\back-1.0.tar.gz',
    "ctl\x00\x01\x1f\x7f-1.0.tar.gz",
    "new\nline\r\ttab-1.0.tar.gz",
    "</script><script>alert(1)</script>-1.0.tar.gz",
    "caf\u00e9-\u2028\u2029-1.0.tar.gz",
    "emoji-\U0001f40d-1.0.tar.gz",
    "space and+plus%25-1.0.tar.gz",
    "foo-1.0.tar.gz",
]


@pytest.mark.parametrize("filename", _HOSTILE)
def test_json_text_is_what_json_dumps_writes_for_hostile_values(filename: str) -> None:
    hostile = filename.replace("-1.0.tar.gz", "")
    files = (
        entry(filename, hashes=((hostile, '"' + hostile),), requires_python=hostile, yanked=hostile,
              metadata=((hostile, hostile), ("sha256", SHA)), size=2**40, upload_time=hostile,
              gpg_sig=True, provenance=hostile),
        entry(filename, hashes=(("sha256", SHA), ("md5", "0"), ("sha256", SHA_B)), yanked="", metadata=(),
              size=0, gpg_sig=False),
        entry(filename, hashes=()),
    )
    page = page_of(*files, name=hostile, versions=(hostile, "1.0"), sizes=True)
    page = page._replace(status="deprecated", status_reason=hostile)
    body = render_project_page(page, JSON_TYPE)
    assert body == _json_dumps_reference(page)
    document = json.loads(body)
    assert [item["filename"] for item in document["files"]] == [filename] * 3
    assert document["files"][0]["hashes"] == {hostile: '"' + hostile}
    assert document["files"][1]["hashes"] == {"sha256": SHA_B, "md5": "0"}  # the last of a repeated name
    assert body.isascii()  # non-ASCII and U+2028/2029 escaped, as json.dumps does


# ---------------------------------------------------------------- both upstream formats


def test_html_upstream_size_and_upload_time_reach_the_json_page() -> None:
    """uv reads data-size and data-upload-time from HTML; our JSON then carries them
    (and says 1.1 once every file has a size), or ``uv --exclude-newer`` drops the files."""
    body = (
        f'<a href="foo-1.0.tar.gz#sha256={SHA}" data-size="10" data-upload-time="2024-01-01T00:00:00Z">'
        "foo-1.0.tar.gz</a>\n"
        f'<a href="foo-1.1.tar.gz#sha256={SHA}" data-size="20" data-upload-time="2024-02-01T00:00:00.5Z">'
        "foo-1.1.tar.gz</a>\n"
    ).encode()
    page = parse_project_page(body, TEXT_HTML, PAGE_URL, "foo")
    document = json.loads(render_project_page(page, JSON_TYPE))
    assert document["meta"]["api-version"] == "1.1"
    assert [(item["size"], item["upload-time"]) for item in document["files"]] == [
        (10, "2024-01-01T00:00:00Z"),
        (20, "2024-02-01T00:00:00.5Z"),
    ]


@pytest.mark.parametrize("media", [JSON_TYPE, TEXT_HTML, HTML_TYPE])
def test_a_page_renders_alike_from_either_upstream_format(media: str) -> None:
    """Sizes, upload times and status read from HTML are rendered as those read from JSON."""
    reason = 'moved to "bar" & more'
    html_body = (
        '<html><head><meta name="pypi:project-status" content="deprecated">'
        f'<meta name="pypi:project-status-reason" content="{html.escape(reason)}"></head><body>'
        f'<a href="foo-1.0.tar.gz#sha256={SHA}" data-size="10" data-upload-time="2024-01-01T00:00:00Z">'
        "foo-1.0.tar.gz</a>"
        f'<a href="foo-1.1.tar.gz#sha256={SHA}" data-size="20">foo-1.1.tar.gz</a></body></html>'
    ).encode()
    json_body = json.dumps({
        "meta": {"api-version": "1.4"},
        "name": "foo",
        "project-status": {"status": "deprecated", "reason": reason},
        "files": [
            {"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": {"sha256": SHA}, "size": 10,
             "upload-time": "2024-01-01T00:00:00Z"},
            {"filename": "foo-1.1.tar.gz", "url": "foo-1.1.tar.gz", "hashes": {"sha256": SHA}, "size": 20},
        ],
    }).encode()
    from_html = parse_project_page(html_body, TEXT_HTML, PAGE_URL, "foo")
    from_json = parse_project_page(json_body, JSON_TYPE, PAGE_URL, "foo")
    assert from_html == from_json
    assert render_project_page(from_html, media) == render_project_page(from_json, media)


# ---------------------------------------------------------------- project list


def test_render_project_list_html() -> None:
    body = render_project_list(ProjectList.from_names(["Foo.Bar", "baz", "A&B"]), TEXT_HTML)
    assert body.startswith(b"<!DOCTYPE html>")
    assert anchors(body) == [
        ({"href": "foo-bar/"}, "Foo.Bar"),
        ({"href": "baz/"}, "baz"),
        ({"href": "a&b/"}, "A&B"),
    ]
    assert list(parse_project_list(body, TEXT_HTML)) == ["Foo.Bar", "baz", "A&B"]


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", 'x" onmouseover="alert(1)'])
def test_render_project_list_html_escapes_hrefs(name: str) -> None:
    body = render_project_list(ProjectList.from_names([name]), TEXT_HTML)
    assert b"<script>" not in body
    assert anchors(body) == [({"href": name.lower() + "/"}, name)]


def test_render_project_list_html_escapes_text() -> None:
    body = render_project_list(ProjectList.from_names(["a<b>c"]), TEXT_HTML)
    assert b">a&lt;b&gt;c</a>" in body


@pytest.mark.parametrize("names", [[], ["Foo.Bar"], ["Foo.Bar", "baz", "<x>"]])
def test_render_project_list_json(names: list) -> None:
    document = json.loads(render_project_list(ProjectList.from_names(names), JSON_TYPE))
    assert document == {"meta": {"api-version": "1.0"}, "projects": [{"name": name} for name in names]}


def test_render_empty_project_list_html() -> None:
    body = render_project_list(ProjectList.from_names([]), HTML_TYPE)
    assert body.startswith(b"<!DOCTYPE html>")
    assert anchors(body) == []


# ---------------------------------------------------------------- render() and gzip


@pytest.mark.parametrize("size", [1024, 5000, 200_000])
def test_render_gzip_round_trip(size: int) -> None:
    body = (b"<a href='x'>x</a>\n" * (size // 17 + 1))[:size]
    rendered = render(body, TEXT_HTML, compress=True)
    assert rendered.encoding == "gzip"
    assert gzip.decompress(rendered.body) == body
    assert len(rendered.body) < size


@pytest.mark.parametrize("size", [1024, 5000])
def test_render_identity_keeps_the_bytes(size: int) -> None:
    body = b"x" * size
    rendered = render(body, TEXT_HTML, compress=False)
    assert rendered.encoding is None
    assert rendered.body == body


@pytest.mark.parametrize("size", [0, 1, 1023])
def test_render_small_bodies_are_not_gzipped(size: int) -> None:
    rendered = render(b"x" * size, TEXT_HTML, compress=True)
    assert rendered.encoding is None
    assert rendered.body == b"x" * size


def test_render_etag_is_stable_and_strong() -> None:
    body = b"some page" * 500
    one, two = render(body, TEXT_HTML, compress=True), render(bytes(body), TEXT_HTML, compress=True)
    assert one.etag == two.etag
    assert one.body == two.body  # no timestamp in the gzip header
    assert one.etag.startswith('"') and one.etag.endswith('"') and len(one.etag) > 2
    assert not one.etag.startswith("W/")


def test_render_each_coding_has_its_own_etag() -> None:
    body = b"some page" * 500
    assert render(body, TEXT_HTML, compress=True).etag != render(body, TEXT_HTML, compress=False).etag


@pytest.mark.parametrize("other", [b"some page" * 499, b"Some page" * 500, b""])
@pytest.mark.parametrize("compress", [True, False])
def test_render_etag_differs_for_other_bytes(other: bytes, compress: bool) -> None:
    assert render(b"some page" * 500, TEXT_HTML, compress).etag != render(other, TEXT_HTML, compress).etag


@pytest.mark.parametrize("compress", [True, False])
def test_render_each_media_type_has_its_own_etag(compress: bool) -> None:
    """RFC 9110 8.8.1: a strong ETag is unique across representations, and text/html and
    v1+html are two, with one body."""
    body = render_project_page(page_of(entry()), TEXT_HTML) * 20
    tags = {render(body, media, compress).etag for media in (TEXT_HTML, HTML_TYPE, JSON_TYPE)}
    assert len(tags) == 3


# ---------------------------------------------------------------- one file rendered anew


def _entry(filename: str, **fields) -> FileEntry:
    return FileEntry(filename, f"https://files.example/{filename}", (("sha256", SHA),), **fields)


_NAMES = [
    "foo-1.0.tar.gz",
    "foo-1.0.tar.gz.asc",  # the name before it, and more
    "foo-1.0-py3-none-any.whl",
    "foo-1.0+local-py3-none-any.whl",  # quoted in a link
    "foo-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
]


@pytest.mark.parametrize("media", [JSON_TYPE, HTML_TYPE])
@pytest.mark.parametrize("changed", [[0], [1], [2], [3], [4], [0, 4], [1, 2, 3]])
def test_files_rendered_anew_give_the_bytes_of_a_whole_render(media: str, changed: list) -> None:
    before = [_entry(name, metadata=() if name.endswith(".whl") else None) for name in _NAMES]
    after = list(before)
    for position in changed:
        after[position] = after[position]._replace(metadata=(("sha256", SHA_B),), yanked="gone <now>")
    page = ProjectPage("foo", tuple(before), ("1.0", "2.0"), True)
    body = render_project_page(page, media)
    whole = render_project_page(page._replace(files=tuple(after)), media)
    assert whole != body
    assert with_files_rendered_anew(body, media, [after[p] for p in changed]) == whole


@pytest.mark.parametrize("media", [JSON_TYPE, HTML_TYPE])
def test_files_rendered_anew_only_where_each_is_listed_once(media: str) -> None:
    listed = _entry("foo-1.0-py3-none-any.whl", metadata=())
    page = ProjectPage("foo", (listed, _entry("foo-1.0.tar.gz")), ("1.0",), True)
    body = render_project_page(page, media)
    assert with_files_rendered_anew(body, media, []) == body
    assert with_files_rendered_anew(body, media, [_entry("foo-3.0-py3-none-any.whl")]) is None
    twice = render_project_page(page._replace(files=(listed, listed)), media)
    assert with_files_rendered_anew(twice, media, [listed]) is None
    assert with_files_rendered_anew(body, media, [listed, listed]) is None
