"""Catalog with a local index (uploads): a local project served alone, the upstream
not asked; merge mode; a local page gone serves the upstream's (no stale view)."""

from __future__ import annotations

import json

import pytest

from proxpi_min.core.errors import NotFound
from proxpi_min.core.names import NormalizedName
from proxpi_min.core.settings import IndexSettings
from proxpi_min.core.simple import FileEntry, ProjectPage
from proxpi_min.index.catalog import LOCAL_ORIGIN, Catalog
from proxpi_min.index.index_cache import IndexCache
from tests.unit.index.test_index_cache import BASE, JSON, Clock, FakeUpstream, page_body

ALPHA = NormalizedName("alpha")


class FakeLocal:
    """LocalPages from a dict; the generation is whatever the test sets."""

    def __init__(self) -> None:
        self.pages: dict = {}
        self.generation = 1

    def page(self, project):
        files = self.pages.get(project)
        if not files:
            return None
        entries = tuple(FileEntry(name, "file:///local/" + name, (("sha256", "cd" * 32),)) for name in files)
        return self.generation, ProjectPage(project, entries, ("0.5",))

    def projects(self) -> list:
        return sorted(name for name, files in self.pages.items() if files)


def _catalog(merge: bool = False) -> tuple:
    upstream, local = FakeUpstream(), FakeLocal()
    upstream.pages["alpha"] = page_body("alpha", ["alpha-2.0.tar.gz"])
    cache = IndexCache(IndexSettings(BASE, 60), upstream, None, clock=Clock())
    return upstream, local, Catalog([cache], 1024 * 1024, local=local, local_merge=merge)


def _names(catalog: Catalog) -> list:
    return [f["filename"] for f in json.loads(catalog.rendered_project(ALPHA, JSON, False).rendered.body)["files"]]


def test_a_local_project_is_served_alone_and_upstream_is_not_asked() -> None:
    upstream, local, catalog = _catalog()
    local.pages["alpha"] = ["alpha-0.5.tar.gz"]
    answer = catalog.rendered_project(ALPHA, JSON, False)
    assert answer.policies == "local"
    assert _names(catalog) == ["alpha-0.5.tar.gz"]
    assert catalog.locate_file(ALPHA, "alpha-0.5.tar.gz").index == LOCAL_ORIGIN
    with pytest.raises(NotFound):
        catalog.locate_file(ALPHA, "alpha-2.0.tar.gz")
    assert upstream.calls == []
    assert "alpha" in catalog.rendered_list(JSON, False).rendered.body.decode()


def test_merge_mode_lists_local_files_first() -> None:
    _, local, catalog = _catalog(merge=True)
    local.pages["alpha"] = ["alpha-0.5.tar.gz"]
    assert _names(catalog) == ["alpha-0.5.tar.gz", "alpha-2.0.tar.gz"]
    assert catalog.locate_file(ALPHA, "alpha-0.5.tar.gz").index == LOCAL_ORIGIN
    assert catalog.locate_file(ALPHA, "alpha-2.0.tar.gz").index == BASE


def test_a_deleted_local_project_falls_back_to_the_upstream() -> None:
    # The local index counts generations apart: even one equal to the upstream page's,
    # the view made from the local page is not reused once that page is gone.
    _, local, catalog = _catalog()
    local.generation = catalog.caches[0].project(ALPHA).generation
    local.pages["alpha"] = ["alpha-0.5.tar.gz"]
    assert _names(catalog) == ["alpha-0.5.tar.gz"]
    local.pages["alpha"] = []
    assert _names(catalog) == ["alpha-2.0.tar.gz"]
