"""anchors: the scan reads the usual shape of simple pages exactly as html.parser does,
and leaves every other page to html.parser."""

from __future__ import annotations

import random

import pytest

from proxpi_min.core import anchors
from proxpi_min.core.render import render_project_page
from proxpi_min.core.simple import HTML_TYPE, FileEntry, ProjectPage

SHA = "ab" * 32

PYPI = f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.1">
    <meta name="pypi:project-status" content="active">
    <title>Links for demo</title>
  </head>
  <body>
    <h1>Links for demo</h1>
    <a href="https://files.example/demo-1.0.tar.gz#sha256={SHA}" data-requires-python="&gt;=3.8" >demo-1.0.tar.gz</a><br />
    <a href="https://files.example/demo-1.0-py3-none-any.whl#sha256={SHA}" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={SHA}" data-core-metadata="sha256={SHA}">demo-1.0-py3-none-any.whl</a><br />
    <a href="https://files.example/demo-0.9.tar.gz" data-yanked="broken &amp; gone">demo-0.9.tar.gz</a><br />
  </body>
</html>
<!--SERIAL 123-->"""
NEXUS = """<html lang="en"><head><title>Links for demo</title><meta name="api-version" value="2"/></head>
<body><h1>Links for demo</h1><a href="../../packages/demo/1.0/demo-1.0.tar.gz#sha256=00ff" rel="internal">demo-1.0.tar.gz</a><br/>
</body></html>"""
PYPISERVER = """<html><head><title>Links for demo</title></head><body><h1>Links for demo</h1>
 <a href="/packages/demo-1.0.tar.gz#md5=0a1b">demo-1.0.tar.gz</a><br>
</body></html>"""
DEVPI = """<!DOCTYPE html><html><head><title>demo: links</title></head><body><h1>demo: links</h1>
<a href="../../+f/0ab/cdef/demo-1.0.tar.gz#sha256=00ff">demo-1.0.tar.gz</a><br/>
<a href="../../+f/1ab/cdef/demo-1.0-py3-none-any.whl#sha256=00ff" data-requires-python="&lt;4,&gt;=3.9">demo-1.0-py3-none-any.whl</a><br/>
</body></html>"""
WITH_BASE = """<html><head><base href="https://mirror.example/files/"><title>Links</title></head><body>
<a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a></body></html>"""
FOREIGN_WORDS = """<html><body><h1>Down for maintenance</h1>Back soon &amp; sorry.</body></html>"""
ENTITY_SPACE = """<html><body>&#32;&nbsp;<a href="x.tar.gz">x&#46;tar&#46;gz</a></body></html>"""
SELF_CLOSED_HEADING = """<html><body><h1/>words<a href="x.tar.gz">x.tar.gz</a></body></html>"""
DEPRECATED = """<html><head><meta name="pypi:repository-version" content="1.4">
<meta name="pypi:project-status" content="deprecated">
<meta name="pypi:project-status-reason" content="use &quot;demo2&quot; &amp; more"><title>Links for demo</title></head>
<body><h1>Links for demo</h1><a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a></body></html>"""
OURS = render_project_page(
    ProjectPage("demo", (
        FileEntry("demo-1.0.tar.gz", "https://f.example/demo-1.0.tar.gz", (("sha256", SHA),), ">=3.8", "bad <release>"),
        FileEntry("demo-1.0+local-py3-none-any.whl", "https://f.example/w.whl", (), None, None, (), 3, None, True),
    ), ("1.0",), status="archived", status_reason='moved to "demo2" <soon> & more'),
    HTML_TYPE,
).decode()

USUAL = [PYPI, NEXUS, PYPISERVER, DEVPI, WITH_BASE, FOREIGN_WORDS, ENTITY_SPACE, SELF_CLOSED_HEADING, OURS, DEPRECATED,
         "", "<html><body></body></html>", "just words"]
UNUSUAL = [
    '<html><body><!-- <a href="hidden.tar.gz">hidden.tar.gz</a> --><a href="x.tar.gz">x.tar.gz</a></body></html>',
    '<html><body><script>var a = "<a href=\'s.tar.gz\'>s</a>";</script></body></html>',
    "<html><body><a href='single.tar.gz'>single.tar.gz</a></body></html>",
    "<html><body><a href=bare.tar.gz>bare.tar.gz</a></body></html>",
    '<HTML><BODY><A HREF="upper.tar.gz">upper.tar.gz</A></BODY></HTML>',
    '<html><head><title><a href="t.tar.gz">t</a></title></head></html>',
    '<html><body><a href="1.tar.gz">one<a href="2.tar.gz">two</a></body></html>',
    '<html><body><a href="x.tar.gz">x.tar.gz</a ></body></html>',
    '<html><body><a href="x.tar.gz"/>x.tar.gz</body></html>',
    '<html><body><a href="x.tar.gz">x.tar.gz</a> < 3</body></html>',
    '<html><body><p>words</p><a href="x.tar.gz">x.tar.gz</a></body></html>',
    '<html><body><a href="x.tar.gz" download>x.tar.gz</a></body></html>',
    '<html><body><a href="x.tar.gz" data-x="a>b">x.tar.gz</a></body></html>',
    '<html><body><form><input name="q"></form></body></html>',
    '<html><body><a href="x.tar.gz"><b>x</b>.tar.gz</a></body></html>',
    '<?xml version="1.0"?><html><body><a href="x.tar.gz">x.tar.gz</a></body></html>',
    '<html><body><![CDATA[<a href="c.tar.gz">c</a>]]></body></html>',
    '<html><body><a\x0bhref="x.whl">x.whl</a></body></html>',  # no space that ends a tag name
    '<html><h1\xa0>Links</h1><a href="x.whl">x.whl</a></html>',
    '<html><head><title><base href="https://evil.example/"></title></head><a href="x.whl">x.whl</a></html>',
    '<title><title></title>hello',
    '<html><body><a href="x.whl?sig=1&region=eu">x.whl</a></body></html>',  # read by version
    '<html><body><a href="x.whl">x&reg.whl</a></body></html>',
]


@pytest.mark.parametrize("text", USUAL)
def test_the_scan_reads_the_usual_shape_as_html_parser_does(text):
    scanned = anchors._scan(text)
    assert scanned is not None
    assert scanned == anchors._parse(text)


@pytest.mark.parametrize("text", UNUSUAL)
def test_anything_else_is_left_to_html_parser(text):
    assert anchors._scan(text) is None
    assert anchors.read_anchors(text) == anchors._parse(text)


@pytest.mark.parametrize("opened", ["<a ", '<a x="', "<"])
def test_a_page_with_more_tags_left_open_than_html_parser_reads_in_time_is_refused(opened):
    # html.parser's time grows with the square of them.
    page = '<a href="x-1.tar.gz">x-1.tar.gz</a>\n' + opened * (anchors.MAX_UNCLOSED + 1)
    with pytest.raises(ValueError, match="left open"):
        anchors.read_anchors(page)
    fewer = '<a href="x-1.tar.gz">x-1.tar.gz</a>\n<b>' + opened * 50
    assert anchors.read_anchors(fewer).anchors == [({"href": "x-1.tar.gz"}, "x-1.tar.gz")]


def test_what_the_pages_say():
    pypi = anchors.read_anchors(PYPI)
    assert [text for _, text in pypi.anchors] == ["demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl", "demo-0.9.tar.gz"]
    assert pypi.anchors[0][0]["data-requires-python"] == ">=3.8"
    assert pypi.anchors[2][0]["data-yanked"] == "broken & gone"
    assert (pypi.status, pypi.status_reason, pypi.api_version, pypi.simple) == ("active", None, "1.1", True)
    deprecated = anchors.read_anchors(DEPRECATED)
    assert (deprecated.status, deprecated.status_reason) == ("deprecated", 'use "demo2" & more')
    ours = anchors.read_anchors(OURS)
    assert (ours.status, ours.status_reason) == ("archived", 'moved to "demo2" <soon> & more')
    assert ours.api_version == "1.4"
    assert anchors.read_anchors(WITH_BASE).base == "https://mirror.example/files/"
    maintenance = anchors.read_anchors(FOREIGN_WORDS)
    assert maintenance.anchors == [] and maintenance.foreign and not maintenance.simple


PIECES = [
    "<html>", "</html>", "<head>", "</head>", "<body>", "</body>", "<title>", "</title>", "<h1>", "</h1>",
    "<h2/>", "<br>", "<br/>", "<br />", "\n", "  ", "words", "&amp;", "&gt;=3", "&#32;", "&nbsp;", "<",
    '<a href="a.tar.gz">a.tar.gz</a>', '<a href="b.whl#sha256=00" data-requires-python="&gt;=3.8">b.whl</a>',
    '<a>', '</a>', '<a href="c">', "<!-- x -->", "<p>", '<meta name="pypi:project-status" content="archived">',
    '<meta name="pypi:repository-version" content="1.0"/>', '<base href="https://b.example/">', "<script>",
    '<meta name="pypi:project-status-reason" content="a &amp; b">',
    "</script>", "<!DOCTYPE html>", "'", '"', ">", '<a href="d" data-yanked="">d &amp; e</a>', "<A HREF='z'>",
    '<a href="e?x=1&region=2">e</a>', "&reg", "\x0b", "\xa0", "<title/>", '<title lang="en">',
]


def test_random_pages_read_alike():
    chooser = random.Random(658)
    for _ in range(3000):
        text = "".join(chooser.choice(PIECES) for _ in range(chooser.randrange(1, 25)))
        assert anchors.read_anchors(text) == anchors._parse(text), text
