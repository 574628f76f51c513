"""Unit tests for proxpi_min/core/simple_parse.py: parsing PEP 503 HTML and PEP 691 JSON pages."""

from __future__ import annotations

import html
import json
import urllib.parse
from typing import Any, Optional

import pytest

from proxpi_min.core.errors import BadUpstreamPage, UpstreamError
from proxpi_min.core.simple import HTML_TYPE, JSON_TYPE, FileEntry, ProjectPage
from proxpi_min.core.simple_parse import parse_project_list, parse_project_page
from proxpi_min.core.names import NormalizedName

PAGE_URL = "https://index.example/simple/foo/"
SHA = "a" * 64
SHA_B = "b" * 64
MD5 = "0123456789abcdef0123456789abcdef"


def html_page(*anchors: str, head: str = "") -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta name="pypi:repository-version" content="1.4">\n'
        f"{head}<title>Links for foo</title>\n</head>\n<body>\n<h1>Links for foo</h1>\n"
        + "".join(f"{anchor}<br />\n" for anchor in anchors)
        + "</body>\n</html>\n<!--SERIAL 1-->\n"
    ).encode("utf-8")


def parse_html(*anchors: str, head: str = "", url: str = PAGE_URL) -> ProjectPage:
    return parse_project_page(html_page(*anchors, head=head), "text/html", url, "foo")


def one_html(anchor: str, head: str = "", url: str = PAGE_URL) -> FileEntry:
    page = parse_html(anchor, head=head, url=url)
    assert len(page.files) == 1
    return page.files[0]


def json_page(files: list, **extra: Any) -> bytes:
    document = {"meta": {"api-version": "1.1"}, "name": "foo", "files": files}
    document.update(extra)
    return json.dumps(document).encode("utf-8")


def json_file(filename: str = "foo-1.0.tar.gz", **keys: Any) -> dict:
    item = {"filename": filename, "url": filename, "hashes": {"sha256": SHA}}
    item.update({key.replace("_", "-"): value for key, value in keys.items()})
    return item


def parse_json(files: list, url: str = PAGE_URL, **extra: Any) -> ProjectPage:
    return parse_project_page(json_page(files, **extra), JSON_TYPE, url, "foo")


def one_json(**keys: Any) -> FileEntry:
    page = parse_json([json_file(**keys)])
    assert len(page.files) == 1
    return page.files[0]


# ---------------------------------------------------------------- HTML project pages


def test_html_page_like_pypis() -> None:
    page = parse_html(
        f'<a href="https://files.example/packages/14/7e/foo-1.0-py3-none-any.whl#sha256={SHA}" '
        f'data-requires-python="&gt;=3.6.0" data-dist-info-metadata="sha256={SHA_B}" '
        f'data-core-metadata="sha256={SHA_B}">foo-1.0-py3-none-any.whl</a>',
        f'<a href="https://files.example/packages/81/bd/foo-1.0.tar.gz#sha256={SHA_B}" '
        'data-requires-python="&gt;=3.6.0" >foo-1.0.tar.gz</a>',
    )
    assert page == ProjectPage(
        name="foo",
        files=(
            FileEntry(
                filename="foo-1.0-py3-none-any.whl",
                url="https://files.example/packages/14/7e/foo-1.0-py3-none-any.whl",
                hashes=(("sha256", SHA),),
                requires_python=">=3.6.0",
                metadata=(("sha256", SHA_B),),
            ),
            FileEntry(
                filename="foo-1.0.tar.gz",
                url="https://files.example/packages/81/bd/foo-1.0.tar.gz",
                hashes=(("sha256", SHA_B),),
                requires_python=">=3.6.0",
            ),
        ),
        versions=("1.0",),
        all_sizes_known=False,
    )


@pytest.mark.parametrize(
    ("page_url", "head", "href", "expected"),
    [
        (PAGE_URL, "", "https://cdn.example/f/foo-1.0.tar.gz", "https://cdn.example/f/foo-1.0.tar.gz"),
        (PAGE_URL, "", "foo-1.0.tar.gz", "https://index.example/simple/foo/foo-1.0.tar.gz"),
        (PAGE_URL, "", "../../packages/ab/cd/foo-1.0.tar.gz",
         "https://index.example/packages/ab/cd/foo-1.0.tar.gz"),
        (PAGE_URL, "", "/files/foo-1.0.tar.gz", "https://index.example/files/foo-1.0.tar.gz"),
        (PAGE_URL, "", "//cdn.example/foo-1.0.tar.gz", "https://cdn.example/foo-1.0.tar.gz"),
        # without the trailing slash the last segment is not a directory
        ("https://index.example/simple/foo", "", "foo-1.0.tar.gz",
         "https://index.example/simple/foo-1.0.tar.gz"),
        # <base href>: absolute, relative to the page, host-absolute; only the first counts
        (PAGE_URL, '<base href="https://cdn.example/files/">', "foo-1.0.tar.gz",
         "https://cdn.example/files/foo-1.0.tar.gz"),
        (PAGE_URL, '<base href="../../files/">', "foo-1.0.tar.gz",
         "https://index.example/files/foo-1.0.tar.gz"),
        (PAGE_URL, '<base href="/dl/">', "x/foo-1.0.tar.gz", "https://index.example/dl/x/foo-1.0.tar.gz"),
        (PAGE_URL, '<base href="https://one.example/">\n<base href="https://two.example/">',
         "foo-1.0.tar.gz", "https://one.example/foo-1.0.tar.gz"),
        (PAGE_URL, '<base href="https://cdn.example/files/">', "https://other.example/foo-1.0.tar.gz",
         "https://other.example/foo-1.0.tar.gz"),
        # an absolute http(s) <base> counts whatever the page's own scheme, as in pip and uv
        ("http://index.example/simple/foo/", '<base href="https://cdn.example/pkgs/">', "foo-1.0.tar.gz",
         "https://cdn.example/pkgs/foo-1.0.tar.gz"),
        (PAGE_URL, '<base href="http://cdn.example/pkgs/">', "../foo-1.0.tar.gz", "http://cdn.example/foo-1.0.tar.gz"),
        ("file:///srv/simple/foo/", '<base href="https://cdn.example/pkgs/">', "foo-1.0.tar.gz",
         "https://cdn.example/pkgs/foo-1.0.tar.gz"),
        # a <base> of a scheme links may not have is ignored: links resolve against the page
        ("http://index.example/simple/foo/", '<base href="ftp://cdn.example/pkgs/">', "foo-1.0.tar.gz",
         "http://index.example/simple/foo/foo-1.0.tar.gz"),
    ],
)
def test_html_relative_hrefs(page_url: str, head: str, href: str, expected: str) -> None:
    entry = one_html(f'<a href="{href}#sha256={SHA}">foo-1.0.tar.gz</a>', head=head, url=page_url)
    assert entry.url == expected
    assert entry.hashes == (("sha256", SHA),)


@pytest.mark.parametrize(
    ("fragment", "hashes"),
    [
        (f"#sha256={SHA}", (("sha256", SHA),)),
        (f"#sha256={SHA.upper()}", (("sha256", SHA),)),
        (f"#md5={MD5}", (("md5", MD5),)),
        ("#sha512=" + "c" * 128, (("sha512", "c" * 128),)),
        ("#sha1=" + "d" * 40, (("sha1", "d" * 40),)),  # parsed; the renderer leaves it out
        ("#whirlpool=abcd", ()),  # not a hashlib-guaranteed algorithm
        ("#sha256=not-hex", ()),
        ("#sha256", ()),
        ("#", ()),
        ("#egg=foo", ()),
        ("", ()),
        # every "&"-separated pair is read, as pip reads them; pairs not hashes are ignored
        (f"#md5={MD5}&sha256={SHA}", (("md5", MD5), ("sha256", SHA))),
        (f"#sha256={SHA}&egg=foo", (("sha256", SHA),)),
        (f"#egg=foo-1.0&subdirectory=src&sha512={'c' * 128}", (("sha512", "c" * 128),)),
        (f"#sha256=not-hex&md5={MD5}", (("md5", MD5),)),
        (f"#md5={MD5}&sha256=", (("md5", MD5),)),
        (f"#sha256&md5={MD5}", (("md5", MD5),)),
        (f"#sha256={SHA}&sha256={SHA_B}", (("sha256", SHA),)),  # pip checks the first
        (f"#sha256={SHA}&SHA256={SHA_B}", (("sha256", SHA),)),
    ],
)
def test_html_hash_fragment(fragment: str, hashes: tuple) -> None:
    entry = one_html(f'<a href="https://f.example/foo-1.0.tar.gz{html.escape(fragment)}">foo-1.0.tar.gz</a>')
    assert entry.url == "https://f.example/foo-1.0.tar.gz"
    assert entry.hashes == hashes


@pytest.mark.parametrize("href", ["foo-1.0.tar.gz", "../../files/foo-1.0.tar.gz", "foo-1.0.tar.gz?sig=1"])
def test_html_hash_fragment_of_several_pairs_on_a_relative_link(href: str) -> None:
    entry = one_html(f'<a href="{href}#md5={MD5}&amp;sha256={SHA}&amp;egg=foo">foo-1.0.tar.gz</a>')
    assert entry.url == urllib.parse.urljoin(PAGE_URL, href)
    assert entry.hashes == (("md5", MD5), ("sha256", SHA))


@pytest.mark.parametrize("digest", ["0xabcd", "-abcd", "+abcd", "ab_cd", " abcd"])
def test_non_hex_digests_are_dropped(digest: str) -> None:
    entry = one_html(f'<a href="https://f.example/foo-1.0.tar.gz#sha256={digest}">foo-1.0.tar.gz</a>')
    assert entry.hashes == ()


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ('data-requires-python="&gt;=3.8"', ">=3.8"),
        ('data-requires-python="&lt;4,&gt;=3.6"', "<4,>=3.6"),
        ('data-requires-python="&gt;=3.6, !=3.7.*"', ">=3.6, !=3.7.*"),
        ('data-requires-python="&#62;=3.8"', ">=3.8"),
        ('data-requires-python="&#x3E;=3.8"', ">=3.8"),
        ('data-requires-python="&gt;=3.8&amp;&quot;"', '>=3.8&"'),
        ('data-requires-python=">=3.8"', ">=3.8"),  # unescaped, as sloppy servers send it
        ('data-requires-python=""', None),
        ("", None),
    ],
)
def test_html_requires_python(attribute: str, expected: Optional[str]) -> None:
    entry = one_html(f'<a href="foo-1.0.tar.gz" {attribute}>foo-1.0.tar.gz</a>')
    assert entry.requires_python == expected


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("", None),
        ("data-yanked", ""),
        ('data-yanked=""', ""),
        ('data-yanked="broken build"', "broken build"),
        ('data-yanked="use &lt;2 &amp; &quot;x&quot;"', 'use <2 & "x"'),
    ],
)
def test_html_yanked(attribute: str, expected: Optional[str]) -> None:
    assert one_html(f'<a href="foo-1.0.tar.gz" {attribute}>foo-1.0.tar.gz</a>').yanked == expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ("", None),
        ('data-core-metadata="true"', ()),
        ('data-core-metadata="TRUE"', ()),
        (f'data-core-metadata="sha256={SHA}"', (("sha256", SHA),)),
        (f'data-core-metadata="sha256={SHA.upper()}"', (("sha256", SHA),)),
        ('data-core-metadata="false"', None),  # "false" means no .metadata file
        ('data-core-metadata="junk"', None),
        ('data-dist-info-metadata="true"', ()),
        (f'data-dist-info-metadata="sha256={SHA}"', (("sha256", SHA),)),
        ('data-dist-info-metadata="false"', None),
        (f'data-dist-info-metadata="sha256={SHA}" data-core-metadata="sha256={SHA}"',
         (("sha256", SHA),)),
        # PEP 714: data-core-metadata is read first
        (f'data-core-metadata="sha256={SHA}" data-dist-info-metadata="sha256={SHA_B}"',
         (("sha256", SHA),)),
        (f'data-dist-info-metadata="sha256={SHA_B}" data-core-metadata="true"', ()),
    ],
)
def test_html_metadata(attributes: str, expected: Optional[tuple]) -> None:
    entry = one_html(f'<a href="foo-1.0-py3-none-any.whl" {attributes}>foo-1.0-py3-none-any.whl</a>')
    assert entry.metadata == expected


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("", None), ('data-gpg-sig="true"', True), ('data-gpg-sig="false"', False)],
)
def test_html_gpg_sig(attribute: str, expected: Optional[bool]) -> None:
    assert one_html(f'<a href="foo-1.0.tar.gz" {attribute}>foo-1.0.tar.gz</a>').gpg_sig is expected


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("", None),
        ('data-provenance="https://pypi.org/integrity/foo/1.0/foo-1.0.tar.gz/provenance"',
         "https://pypi.org/integrity/foo/1.0/foo-1.0.tar.gz/provenance"),
        ('data-provenance="http://insecure.example/provenance"', None),
        ('data-provenance="../provenance"', None),
    ],
)
def test_html_provenance(attribute: str, expected: Optional[str]) -> None:
    assert one_html(f'<a href="foo-1.0.tar.gz" {attribute}>foo-1.0.tar.gz</a>').provenance == expected


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ('data-size="123"', 123),
        ('data-size="0"', 0),
        ('data-size="9999999999999999999"', 9999999999999999999),
        ('data-size="99999999999999999999"', None),  # more than uv's 64-bit "size" holds
        ('data-size="-1"', None),
        ('data-size="1.5"', None),
        ('data-size="1e3"', None),
        ('data-size=" 12"', None),
        ('data-size="\u0661\u0662"', None),  # digits, but not decimal ASCII ones
        ('data-size=""', None),
        ("data-size", None),
        ("", None),
    ],
)
def test_html_size(attribute: str, expected: Optional[int]) -> None:
    assert one_html(f'<a href="foo-1.0.tar.gz" {attribute}>foo-1.0.tar.gz</a>').size == expected


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("2024-01-01T00:00:00Z", True),
        ("2024-01-17T16:53:12.779164Z", True),
        ("2024-01-17T16:53:12.7Z", True),
        ("2024-02-29T23:59:59Z", True),
        ("2024-01-17T16:53:12.1234567Z", False),  # PEP 700: at most six digits of fraction
        ("2024-01-17T16:53:12.Z", False),
        ("2024-01-17T16:53:12", False),  # no "Z": not said to be UTC
        ("2024-01-17T16:53:12+00:00", False),
        ("2024-01-17 16:53:12Z", False),
        ("2024-1-17T16:53:12Z", False),
        ("2023-02-29T00:00:00Z", False),  # no such day
        ("2024-01-01T24:00:00Z", False),
        ("0000-01-01T00:00:00Z", False),
        ("2024-01-17", False),
        ("yesterday", False),
        ("", False),
    ],
)
def test_html_upload_time(value: str, kept: bool) -> None:
    entry = one_html(f'<a href="foo-1.0.tar.gz" data-upload-time="{value}">foo-1.0.tar.gz</a>')
    assert entry.upload_time == (value if kept else None)
    assert one_html('<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>').upload_time is None


@pytest.mark.parametrize(
    ("value", "passed_on"),
    [
        ("2024-01-17T16:53:12.779164Z", "2024-01-17T16:53:12.779164Z"),
        ("2024-01-17t16:53:12.779164z", "2024-01-17T16:53:12.779164Z"),  # RFC 3339 allows it
        ("2024-13-17T16:53:12Z", None),  # uv refuses a whole page for one such time
        ("2024-02-30T16:53:12Z", None),
        ("2024-01-17T16:53Z", None),
        ("20240117T165312Z", None),
        (" 2024-01-17T16:53:12Z", None),
        ("\uff12\uff10\uff12\uff14-01-17T16:53:12Z", None),  # full-width digits
        (1705510392, None),
    ],
)
def test_json_upload_time_is_passed_on_only_as_a_time(value, passed_on) -> None:
    """What is no time is no time for the cooldown either (its files are then of
    unknown age, as PROXPI_MIN_AGE_UNKNOWN says)."""
    body = {"meta": {"api-version": "1.1"}, "name": "foo", "files": [
        {"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": {}, "upload-time": value}]}
    page = parse_project_page(json.dumps(body).encode(), JSON_TYPE, "https://x/simple/foo/", NormalizedName("foo"))
    assert page.files[0].upload_time == passed_on


@pytest.mark.parametrize(("sizes", "known"), [(["1", "2"], True), (["1", None], False), (["1", "x"], False)])
def test_html_all_sizes_known(sizes: list, known: bool) -> None:
    attributes = ["" if size is None else f' data-size="{size}"' for size in sizes]
    anchors = [f'<a href="foo-{n}.tar.gz"{attribute}>foo-{n}.tar.gz</a>' for n, attribute in enumerate(attributes)]
    assert parse_html(*anchors).all_sizes_known is known


@pytest.mark.parametrize(
    ("anchor", "filename"),
    [
        ('<a href="x/foo-1.0.tar.gz">foo-1.0.tar.gz</a>', "foo-1.0.tar.gz"),
        ('<a href="x/foo-1.0.tar.gz">\n  foo-1.0.tar.gz\n</a>', "foo-1.0.tar.gz"),
        ('<a href="x/foo-1.0.tar.gz"><span>foo-1.0.tar.gz</span></a>', "foo-1.0.tar.gz"),
        # the last path segment of the URL, percent-decoded, as pip and uv read it
        ('<a href="x/torch-2.3.0%2Bcu121-cp311-none-any.whl#sha256=ab"></a>',
         "torch-2.3.0+cu121-cp311-none-any.whl"),
        # whatever the text says: nginx's autoindex cuts names over 50 characters
        ('<a href="numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl">'
         "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.m..&gt;</a>",
         "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        ('<a href="/dl/v1.0/foo-1.0-py3-none-any.whl?token=x">foo 1.0 (wheel)</a>', "foo-1.0-py3-none-any.whl"),
        # a URL ending in "/" names no file: the text does
        ('<a href="x/foo-1.0.tar.gz/">foo-1.0.tar.gz</a>', "foo-1.0.tar.gz"),
    ],
)
def test_html_filename(anchor: str, filename: str) -> None:
    assert one_html(anchor).filename == filename


def test_html_anchors_without_href_are_skipped() -> None:
    page = parse_html('<a name="top">top</a>', '<a href="">empty</a>', '<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>')
    assert [entry.filename for entry in page.files] == ["foo-1.0.tar.gz"]


def test_html_versions_come_from_filenames() -> None:
    page = parse_html(
        '<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>',
        '<a href="foo-1.0-py3-none-any.whl">foo-1.0-py3-none-any.whl</a>',
        '<a href="Foo_Bar-9.tar.gz">Foo_Bar-9.tar.gz</a>',  # another project
        '<a href="foo-0.9.exe">foo-0.9.exe</a>',  # unknown extension
        '<a href="foo-2.0b1.zip">foo-2.0b1.zip</a>',
    )
    assert len(page.files) == 5  # every file is passed through, whatever its extension
    assert page.versions == ("1.0", "2.0b1")
    assert page.all_sizes_known is False


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=utf-8", "TEXT/HTML", HTML_TYPE, HTML_TYPE + "; charset=utf-8"],
)
def test_html_content_types(content_type: str) -> None:
    page = parse_project_page(
        html_page('<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>'), content_type, PAGE_URL, "foo"
    )
    assert [entry.filename for entry in page.files] == ["foo-1.0.tar.gz"]


def test_html_empty_page() -> None:
    page = parse_html()
    assert page == ProjectPage("foo", (), (), True)  # every file it lists (none) has a size


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><head><title>Links for foo</title></head><body><h1>Links for foo</h1></body></html>",
        b'<html><head><meta name="pypi:repository-version" content="1.0"></head><body>nothing yet</body></html>',
        b'<html><head><meta name="pypi:project-status" content="quarantined"></head><body>held</body></html>',
        b"<!DOCTYPE html><html><body></body></html><!-- a comment is no text -->",
        b"",
    ],
)
def test_html_empty_simple_pages_are_empty_projects(body: bytes) -> None:
    assert parse_project_page(body, "text/html", PAGE_URL, "foo").files == ()


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>Down for maintenance</h1><p>Back soon.</p></body></html>",
        b"<html><body>Service Unavailable</body></html>",
        b'<html><body><form action="/login"><input name="user"></form></body></html>',
        b"<html><head><script>location = '/portal'</script></head></html>",
        b"Bad Gateway",
    ],
)
def test_html_garbage_without_files_is_refused(body: bytes) -> None:
    """A maintenance, login or portal page answered 200 is not an empty project."""
    with pytest.raises(BadUpstreamPage, match="not a simple-API page"):
        parse_project_page(body, "text/html", PAGE_URL, "foo")


def test_html_text_beside_file_links_is_fine() -> None:
    body = b'<html><body><p>Files:</p><a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a></body></html>'
    assert len(parse_project_page(body, "text/html", PAGE_URL, "foo").files) == 1


# ---------------------------------------------------------------- JSON project pages


def test_json_page_like_pypis() -> None:
    body = json.dumps(
        {
            "meta": {"_last-serial": 22406780, "api-version": "1.4"},
            "name": "foo",
            "project-status": {"status": "active"},
            "versions": ["0.9", "1.0"],
            "files": [
                {
                    "filename": "foo-1.0-py3-none-any.whl",
                    "url": "https://files.example/packages/b1/fe/foo-1.0-py3-none-any.whl",
                    "hashes": {"sha256": SHA},
                    "requires-python": ">=3.6.0",
                    "core-metadata": {"sha256": SHA_B},
                    "data-dist-info-metadata": {"sha256": SHA_B},
                    "size": 147925,
                    "upload-time": "2024-01-17T16:53:12.779164Z",
                    "yanked": False,
                    "provenance": None,
                },
                {
                    "filename": "foo-1.0.tar.gz",
                    "url": "https://files.example/packages/aa/foo-1.0.tar.gz",
                    "hashes": {"sha256": SHA_B},
                    "requires-python": None,
                    "core-metadata": False,
                    "data-dist-info-metadata": False,
                    "size": 51024,
                    "upload-time": "2014-01-21T05:35:05.558877Z",
                    "yanked": False,
                    "provenance": None,
                },
            ],
        }
    ).encode()
    page = parse_project_page(body, JSON_TYPE, PAGE_URL, "foo")
    assert page == ProjectPage(
        name="foo",
        files=(
            FileEntry(
                filename="foo-1.0-py3-none-any.whl",
                url="https://files.example/packages/b1/fe/foo-1.0-py3-none-any.whl",
                hashes=(("sha256", SHA),),
                requires_python=">=3.6.0",
                metadata=(("sha256", SHA_B),),
                size=147925,
                upload_time="2024-01-17T16:53:12.779164Z",
            ),
            FileEntry(
                filename="foo-1.0.tar.gz",
                url="https://files.example/packages/aa/foo-1.0.tar.gz",
                hashes=(("sha256", SHA_B),),
                size=51024,
                upload_time="2014-01-21T05:35:05.558877Z",
            ),
        ),
        versions=("0.9", "1.0"),
        all_sizes_known=True,
        status="active",
    )


@pytest.mark.parametrize(
    ("page_url", "href", "kept"),
    [
        ("https://index.example/simple/foo/", "file:///etc/hostname", False),
        ("https://index.example/simple/foo/", "ftp://x.example/foo-1.0.tar.gz", False),
        ("https://index.example/simple/foo/", "/files/foo-1.0.tar.gz", True),
        ("file:///srv/simple/foo/", "../../files/foo-1.0.tar.gz", True),
        ("file:///srv/simple/foo/", "file:///srv/files/foo-1.0.tar.gz", True),
    ],
)
@pytest.mark.parametrize("kind", ["json", "html"])
def test_file_links_only_to_schemes_the_index_may_use(page_url, href, kept, kind) -> None:
    """An http(s) index must never make us read a local file (file: URL)."""
    if kind == "json":
        page = parse_json([json_file(url=href)], url=page_url)
    else:
        body = f'<a href="{href}">foo-1.0.tar.gz</a>'.encode()
        page = parse_project_page(body, "text/html", page_url, "foo")
    assert bool(page.files) == kept


@pytest.mark.parametrize("base", ["file:///", "file:///etc/", "FILE:///"])
def test_a_base_href_cannot_turn_http_links_into_file_urls(base) -> None:
    body = f'<base href="{base}"><a href="etc/hostname">evil-1.0.tar.gz</a>'.encode()
    page = parse_project_page(body, "text/html", "https://index.example/simple/evil/", "evil")
    assert all(entry.url.startswith("https://") for entry in page.files)


def html_status_page(*meta: tuple) -> bytes:
    tags = "".join(f'<meta name="pypi:{name}" content="{html.escape(value)}">' for name, value in meta)
    return f"<html><head>{tags}</head></html>".encode()


@pytest.mark.parametrize(
    "body, kind, status, reason",
    [
        (b'{"meta":{"api-version":"1.4"},"name":"foo","files":[],"project-status":{"status":"quarantined"}}',
         JSON_TYPE, "quarantined", None),
        (json_page([], **{"project-status": {"status": "deprecated", "reason": 'use "bar" <2>'}}),
         JSON_TYPE, "deprecated", 'use "bar" <2>'),
        (json_page([], **{"project-status": {"status": "archived", "reason": ""}}), JSON_TYPE, "archived", None),
        (json_page([], **{"project-status": {"status": "archived", "reason": 5}}), JSON_TYPE, "archived", None),
        # PEP 792 defines four markers: any other status is none stated, its reason with it
        (json_page([], **{"project-status": {"status": "frozen", "reason": "x"}}), JSON_TYPE, None, None),
        (json_page([], **{"project-status": {"status": "Deprecated"}}), JSON_TYPE, None, None),
        (json_page([], **{"project-status": {"status": {"a": 1}}}), JSON_TYPE, None, None),
        (json_page([], **{"project-status": {"reason": "x"}}), JSON_TYPE, None, None),
        (json_page([], **{"project-status": "deprecated"}), JSON_TYPE, None, None),
        (b'{"meta":{"api-version":"1.1"},"name":"foo","files":[]}', JSON_TYPE, None, None),
        (html_status_page(("project-status", "archived")), "text/html", "archived", None),
        (html_status_page(("project-status", "deprecated"), ("project-status-reason", 'use "bar" & <2>')),
         "text/html", "deprecated", 'use "bar" & <2>'),
        (html_status_page(("project-status-reason", "x"), ("project-status", "active")), "text/html", "active", "x"),
        (html_status_page(("project-status", "frozen"), ("project-status-reason", "x")), "text/html", None, None),
        (html_status_page(("project-status-reason", "x")), "text/html", None, None),
        (b"<html></html>", "text/html", None, None),
    ],
)
def test_project_status_is_read(body, kind, status, reason) -> None:
    page = parse_project_page(body, kind, PAGE_URL, "foo")
    assert (page.status, page.status_reason) == (status, reason)


@pytest.mark.parametrize("status", ["quarantined", "deprecated"])
def test_a_quarantined_project_has_no_files(status: str) -> None:
    """PEP 792: an index must not offer any file of a quarantined project."""
    files = [json_file("foo-1.0.tar.gz"), json_file("foo-1.1.tar.gz")]  # no sizes
    from_json = parse_json(files, versions=["1.0", "1.1"], **{"project-status": {"status": status}})
    from_html = parse_html(
        '<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>', head=f'<meta name="pypi:project-status" content="{status}">'
    )
    quarantined = status == "quarantined"
    assert len(from_json.files) == (0 if quarantined else 2) and len(from_html.files) == (0 if quarantined else 1)
    assert from_json.versions == ("1.0", "1.1")
    # No file lacks a size then: the page may say API 1.4, which PEP 792 needs.
    assert from_json.all_sizes_known is from_html.all_sizes_known is quarantined


@pytest.mark.parametrize(
    "body, kind",
    [(b"[" * 100_000 + b"]" * 100_000, JSON_TYPE), (b"<![foo[ x", "text/html")],
    ids=["deeply-nested-json", "bad-markup"],
)
def test_pages_that_break_the_parsers_are_bad_pages(body, kind) -> None:
    with pytest.raises(BadUpstreamPage):
        parse_project_page(body, kind, PAGE_URL, "foo")


@pytest.mark.parametrize("version, read", [("1.0", True), ("1.4", True), ("1.99", True), ("x", True),
                                            ("2.0", False), ("10.1", False)])
def test_a_page_of_a_later_major_api_version_is_not_read(version: str, read: bool) -> None:
    """PEP 629: a client must not read a page of a major version it does not know; the
    proxy, which re-serves pages as 1.x, must not either."""
    pages = [
        (json.dumps({"meta": {"api-version": version}, "name": "foo", "files": []}).encode(), JSON_TYPE),
        (f'<meta name="pypi:repository-version" content="{version}"><a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>'.encode(),
         "text/html"),
    ]
    for body, kind in pages:
        if read:
            assert parse_project_page(body, kind, PAGE_URL, "foo").name == "foo"
        else:
            with pytest.raises(BadUpstreamPage, match="API version"):
                parse_project_page(body, kind, PAGE_URL, "foo")
    lists = json.dumps({"meta": {"api-version": version}, "projects": [{"name": "foo"}]}).encode()
    if read:
        assert list(parse_project_list(lists, JSON_TYPE)) == ["foo"]
    else:
        with pytest.raises(BadUpstreamPage, match="API version"):
            parse_project_list(lists, JSON_TYPE)


@pytest.mark.parametrize(
    ("page_url", "url", "expected"),
    [
        (PAGE_URL, "foo-1.0.tar.gz", "https://index.example/simple/foo/foo-1.0.tar.gz"),
        (PAGE_URL, "../../files/foo-1.0.tar.gz", "https://index.example/files/foo-1.0.tar.gz"),
        (PAGE_URL, "/f/foo-1.0.tar.gz", "https://index.example/f/foo-1.0.tar.gz"),
        (PAGE_URL, "https://cdn.example/foo-1.0.tar.gz", "https://cdn.example/foo-1.0.tar.gz"),
    ],
)
def test_json_relative_urls(page_url: str, url: str, expected: str) -> None:
    page = parse_json([json_file(url=url)], url=page_url)
    assert page.files[0].url == expected


# Links that share a directory are joined once per directory (see simple_parse._Links): on
# every page shape the result must be urljoin's, link by link, whatever came before.
RESOLVE_PAGES = [
    "https://index.example/simple/foo/",
    "https://index.example/simple/foo",
    "https://index.example/simple/foo/;p?q=1",
    "http://127.0.0.1:8080/index/foo/",
    "file:///srv/simple/foo/",
]
RESOLVE_HREFS = [
    "foo-1.0.tar.gz", "foo-1.1.tar.gz", "../../files/foo-1.0.tar.gz", "../../files/foo-1.1.whl",
    "/f/foo-1.0.tar.gz", "/f/foo-1.1.tar.gz", "//cdn.example/p/foo-1.0.tar.gz", "./foo-2.0.zip",
    "a/./b/../foo-1.0.tar.gz", "https://cdn.example/x/../foo-1.0.tar.gz", "foo-1.0.tar.gz?x=1",
    "dir;p/foo-1.0.tar.gz", "dir/foo-1.0.tar.gz;p", "dir/..", "dir/.", " foo-1.0.tar.gz",
    "foo-1.0\t.tar.gz", "dir/foo%2B1.0.tar.gz", "?q", "", "../../../../foo-1.0.tar.gz",
    "file:///etc/passwd", "ftp://h/foo-1.0.tar.gz",
]
# RFC 3986 5.4.2: ".." past the root stops at the root ("../../../g" -> "http://a/g");
# CPython 3.13.0's urljoin turns this one into "file:foo-1.0.tar.gz".
ABOVE_ROOT = {("file:///srv/simple/foo/", "../../../../foo-1.0.tar.gz"): "file:///foo-1.0.tar.gz"}


@pytest.mark.parametrize("page_url", RESOLVE_PAGES)
@pytest.mark.parametrize("kind", [JSON_TYPE, HTML_TYPE])
def test_links_resolve_as_urljoin_does(page_url: str, kind: str) -> None:
    allowed = ("http", "https", "file") if page_url.startswith("file:") else ("http", "https")
    # An anchor without href is no link at all; a JSON "url" of "" is the page itself.
    hrefs = [href for href in RESOLVE_HREFS if href or kind == JSON_TYPE]
    joined = [ABOVE_ROOT.get((page_url, href)) or urllib.parse.urljoin(page_url, href) for href in hrefs]
    expected = [url for url in joined if url.partition(":")[0] in allowed]
    if kind == JSON_TYPE:
        page = parse_json([json_file(filename=f"f{i}.whl", url=href) for i, href in enumerate(hrefs)], url=page_url)
    else:
        anchors = "".join(f'<a href="{html.escape(href)}">f{i}.whl</a>' for i, href in enumerate(hrefs))
        page = parse_project_page(anchors.encode(), kind, page_url, NormalizedName("foo"))
    assert [entry.url for entry in page.files] == expected


@pytest.mark.parametrize(
    ("hashes", "url", "expected"),
    [
        ({"sha256": SHA}, "foo-1.0.tar.gz", (("sha256", SHA),)),
        ({"SHA256": SHA.upper()}, "foo-1.0.tar.gz", (("sha256", SHA),)),
        ({"sha256": SHA, "blake2b_256": "ab"}, "foo-1.0.tar.gz", (("sha256", SHA),)),
        ({"sha256": "zz"}, "foo-1.0.tar.gz", ()),
        # the one-SHA-256 shortcut keeps the general rules
        ({"sha256": SHA.upper()}, "foo-1.0.tar.gz", (("sha256", SHA),)),
        ({"sha256": "g" * 64}, "foo-1.0.tar.gz", ()),
        ({"sha256": " " + SHA[1:]}, "foo-1.0.tar.gz", ()),
        ({"sha256": 123}, "foo-1.0.tar.gz", ()),
        ({"md5": "ab" * 16}, "foo-1.0.tar.gz", (("md5", "ab" * 16),)),
        ({}, "foo-1.0.tar.gz", ()),
        # no usable "hashes": the URL's fragment is used (and removed from the URL)
        ({}, f"foo-1.0.tar.gz#sha256={SHA}", (("sha256", SHA),)),
        ({"sha256": SHA_B}, f"foo-1.0.tar.gz#sha256={SHA}", (("sha256", SHA_B),)),
    ],
)
def test_json_hashes(hashes: dict, url: str, expected: tuple) -> None:
    entry = one_json(hashes=hashes, url=url)
    assert entry.hashes == expected
    assert entry.url == "https://index.example/simple/foo/foo-1.0.tar.gz"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, None),
        ({"core-metadata": True}, ()),
        ({"core-metadata": {"sha256": SHA}}, (("sha256", SHA),)),
        ({"core-metadata": {"sha256": SHA.upper()}}, (("sha256", SHA),)),
        ({"core-metadata": {}}, ()),
        ({"core-metadata": {"blake3": "ab"}}, ()),  # exists, no hash we can use
        ({"core-metadata": False}, None),
        ({"core-metadata": None}, None),
        # fallbacks: PEP 658's name and PyPI's "data-" spelling
        ({"dist-info-metadata": True}, ()),
        ({"dist-info-metadata": {"sha256": SHA}}, (("sha256", SHA),)),
        ({"dist-info-metadata": False}, None),
        ({"data-dist-info-metadata": True}, ()),
        ({"data-dist-info-metadata": {"sha256": SHA}}, (("sha256", SHA),)),
        ({"data-dist-info-metadata": False}, None),
        # "core-metadata", when present, is the answer
        ({"core-metadata": {"sha256": SHA}, "dist-info-metadata": {"sha256": SHA_B}}, (("sha256", SHA),)),
        ({"core-metadata": False, "dist-info-metadata": True}, None),
        ({"core-metadata": True, "data-dist-info-metadata": False}, ()),
        ({"dist-info-metadata": {"sha256": SHA}, "data-dist-info-metadata": {"sha256": SHA_B}},
         (("sha256", SHA),)),
    ],
)
def test_json_metadata(keys: dict, expected: Optional[tuple]) -> None:
    item = json_file("foo-1.0-py3-none-any.whl")
    item.update(keys)
    assert parse_json([item]).files[0].metadata == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, None), (True, ""), ("broken build", "broken build"), ("", None), (None, None)],
)
def test_json_yanked(value: Any, expected: Optional[str]) -> None:
    assert one_json(yanked=value).yanked == expected


def test_json_yanked_absent() -> None:
    assert parse_json([json_file()]).files[0].yanked is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(">=3.8", ">=3.8"), ("<4,>=3.6", "<4,>=3.6"), ("&gt;=3.8", "&gt;=3.8"), (None, None), ("", None)],
)
def test_json_requires_python_is_not_unescaped(value: Any, expected: Optional[str]) -> None:
    assert one_json(requires_python=value).requires_python == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (12345, 12345), (True, None), (-1, None), ("12", None), (1.5, None)]
)
def test_json_size(value: Any, expected: Optional[int]) -> None:
    assert one_json(size=value).size == expected


@pytest.mark.parametrize(
    ("sizes", "known"),
    [([1, 2], True), ([1, None], False), ([None, None], False), ([], True)],
)
def test_json_all_sizes_known(sizes: list, known: bool) -> None:
    files = []
    for number, size in enumerate(sizes):
        item = json_file(f"foo-{number}.tar.gz")
        if size is not None:
            item["size"] = size
        files.append(item)
    assert parse_json(files).all_sizes_known is known


def test_json_other_fields() -> None:
    entry = one_json(
        upload_time="2024-01-17T16:53:12Z",
        gpg_sig=True,
        provenance="https://pypi.org/integrity/foo/1.0/foo-1.0.tar.gz/provenance",
    )
    assert entry.upload_time == "2024-01-17T16:53:12Z"
    assert entry.gpg_sig is True
    assert entry.provenance == "https://pypi.org/integrity/foo/1.0/foo-1.0.tar.gz/provenance"
    assert one_json(provenance="http://x.example/p").provenance is None
    assert one_json(gpg_sig="yes").gpg_sig is None


@pytest.mark.parametrize(
    "content_type",
    [
        JSON_TYPE,
        JSON_TYPE + "; charset=utf-8",
        JSON_TYPE + ";charset=UTF-8",
        "Application/Vnd.Pypi.Simple.V1+Json",
    ],
)
def test_json_content_types(content_type: str) -> None:
    page = parse_project_page(json_page([json_file()]), content_type, PAGE_URL, "foo")
    assert [entry.filename for entry in page.files] == ["foo-1.0.tar.gz"]


@pytest.mark.parametrize(
    ("extra", "versions"),
    [
        ({"versions": ["0.1", "1.0", "2.0"]}, ("0.1", "1.0", "2.0")),  # incl. versions without files
        ({"versions": []}, ()),
        ({}, ("1.0", "1.1")),  # API 1.0: derived from the file names
        ({"versions": "1.0"}, ("1.0", "1.1")),  # wrong shape: derived
        ({"versions": [1, 2]}, ("1.0", "1.1")),
    ],
)
def test_json_versions(extra: dict, versions: tuple) -> None:
    files = [json_file("foo-1.0.tar.gz"), json_file("foo-1.0-py3-none-any.whl"), json_file("foo-1.1.zip")]
    assert parse_json(files, **extra).versions == versions


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "text/plain", "application/xml",
     "application/vnd.pypi.simple.v2+json", "application/octet-stream"],
)
def test_unknown_media_type_raises(content_type: Optional[str]) -> None:
    with pytest.raises(BadUpstreamPage):
        parse_project_page(json_page([json_file()]), content_type, PAGE_URL, "foo")
    with pytest.raises(BadUpstreamPage):
        parse_project_list(b'{"projects": []}', content_type)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"<html></html>",
        b"\xff\xfe",
        b"[]",
        b'"files"',
        b"null",
        b"{}",
        b'{"files": {}}',
        b'{"files": null}',
        b'{"files": [1]}',
        b'{"files": ["foo-1.0.tar.gz"]}',
        b'{"files": [{"url": "foo-1.0.tar.gz", "hashes": {}}]}',
        b'{"files": [{"filename": "foo-1.0.tar.gz", "hashes": {}}]}',
        b'{"files": [{"filename": 1, "url": "foo-1.0.tar.gz", "hashes": {}}]}',
        b'{"files": [{"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": []}]}',
    ],
)
def test_json_of_the_wrong_shape_raises(body: bytes) -> None:
    with pytest.raises(BadUpstreamPage) as info:
        parse_project_page(body, JSON_TYPE, PAGE_URL, "foo")
    assert isinstance(info.value, UpstreamError)
    assert info.value.status == 502


# ---------------------------------------------------------------- project lists


def test_parse_project_list_html() -> None:
    body = (
        b"<!DOCTYPE html><html><head><title>Simple index</title></head><body>\n"
        b'<a href="/simple/foo-bar/">Foo.Bar</a>\n'
        b'<a href="/simple/baz/">\n  baz\n</a>\n'
        b'<a href="/simple/amp/">A&amp;B</a>\n'
        b'<a href="/simple/empty/"></a>\n'
        b"</body></html>"
    )
    assert list(parse_project_list(body, "text/html; charset=utf-8")) == ["Foo.Bar", "baz", "A&B"]


def test_parse_project_list_of_a_directory_listing() -> None:
    body = b'<ul><li><a href="foo-bar/">foo-bar/</a></li><li><a href="baz/">baz/</a></li></ul>'
    assert list(parse_project_list(body, "text/html")) == ["foo-bar", "baz"]


def test_parse_project_list_html_tags_end_before_the_next_one_begins() -> None:
    # Else each "<a" of "<a<a<a..." would scan to the end of the page (300 KB: 29 s).
    body = b'<a href="/simple/one/">one</a>' + b"<a" * 150_000 + b'<a href="/simple/two/">two</a>'
    assert list(parse_project_list(body, "text/html")) == ["one", "two"]


def test_parse_project_list_json() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.4", "_last-serial": 5},
            "projects": [
                {"name": "Foo.Bar", "_last-serial": 3},
                {"name": "baz"},
                {"name": ""},
                {"name": 5},
                {"name": "bad\nname"},
                {},
                "not-an-object",
            ],
        }
    ).encode()
    assert list(parse_project_list(body, JSON_TYPE + "; charset=utf-8")) == ["Foo.Bar", "baz"]


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"projects": {}}', b"nope"])
def test_parse_project_list_json_of_the_wrong_shape_raises(body: bytes) -> None:
    with pytest.raises(BadUpstreamPage):
        parse_project_list(body, JSON_TYPE)
