"""RenderedPages: a page kept per generation, made anew or patched from the one kept
before, in the coding the client takes."""

from __future__ import annotations

import gzip

from proxpi_min.core.render import identity_body
from proxpi_min.core.simple import JSON_TYPE
from proxpi_min.index.rendered_pages import RenderedPages
from proxpi_min.infra.background import Background

BODY = b'{"files":[' + b",".join(b'{"filename":"f-%d"}' % n for n in range(200)) + b"]}"


class Maker:
    """A page's make(): counts its calls."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.body


def test_a_page_is_made_once_per_generation() -> None:
    pages = RenderedPages(1 << 20)
    make = Maker(BODY)
    first = pages.page(("project", "f"), (1,), make, JSON_TYPE, False)
    assert pages.page(("project", "f"), (1,), make, JSON_TYPE, False) is first
    assert make.calls == 1
    pages.page(("project", "f"), (2,), make, JSON_TYPE, False)
    assert make.calls == 2


def test_a_new_generation_is_patched_from_the_page_kept_before_in_either_coding() -> None:
    background = Background()
    pages = RenderedPages(1 << 20, background)
    make = Maker(BODY)
    seen = []

    def patch(old_generation: tuple, old_page):
        old_body = identity_body(old_page)
        seen.append((old_generation, old_body))
        return old_body.replace(b'"f-7"', b'"f-7","yanked":true')

    pages.page(("project", "f"), (1,), make, JSON_TYPE, True)  # answered plain, then gzipped
    background.flush()
    page = pages.page(("project", "f"), (2,), make, JSON_TYPE, True, patch)
    assert make.calls == 1
    assert seen == [((1,), BODY)]  # the gzip form kept, read back as the identity bytes
    assert identity_body(page) == BODY.replace(b'"f-7"', b'"f-7","yanked":true')
    background.flush()
    kept = pages.page(("project", "f"), (2,), make, JSON_TYPE, True)
    assert kept.encoding == "gzip" and gzip.decompress(kept.body) == identity_body(page)
    assert kept.etag != page.etag


def test_a_patch_that_cannot_tell_leaves_the_page_to_be_made_whole() -> None:
    pages = RenderedPages(1 << 20)
    make = Maker(BODY)
    pages.page(("project", "f"), (1,), make, JSON_TYPE, False)
    page = pages.page(("project", "f"), (2,), make, JSON_TYPE, False, lambda generation, kept: None)
    assert make.calls == 2 and page.body == BODY
