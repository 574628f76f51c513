"""index.page_budget: saved pages of every index kept within a budget, least recently
fetched dropped first, other processes' pages counted at each scan."""

from __future__ import annotations

import os

from proxpi_min.core.settings import IndexSettings
from proxpi_min.core.simple import ProjectPage
from proxpi_min.index.index_cache import IndexCache
from proxpi_min.index.page_budget import MIN_BUDGET, PAGES_SHARE, SavedPagesBudget, pages_budget
from proxpi_min.index.page_store import PageStore, SavedPage
from tests.unit.index.test_index_cache import BASE, Clock, FakeUpstream, page_body


def _page(name: str, files: int = 0) -> SavedPage:
    return SavedPage(ProjectPage(name, (), tuple(str(i) for i in range(files))), f"https://i.example/{name}/", None, None)


def _saved(cache_dir) -> set:
    root = os.path.join(cache_dir, "index")
    return {name[:-5] for store in os.listdir(root) for name in os.listdir(os.path.join(root, store))
            if name.endswith(".json")}


def _size(store: PageStore, key: str) -> int:
    return os.path.getsize(os.path.join(store.directory, key + ".json"))


def test_the_budget_is_a_share_of_the_cache_size_with_a_floor():
    assert pages_budget(0) == MIN_BUDGET
    assert pages_budget(100 * MIN_BUDGET) == int(100 * MIN_BUDGET * PAGES_SHARE)


def test_the_least_recently_fetched_pages_go_first(tmp_path):
    budget = SavedPagesBudget(str(tmp_path / "index"), 10**9)
    first = PageStore(str(tmp_path), "https://one.example/simple/", budget)
    second = PageStore(str(tmp_path), "https://two.example/simple/", budget)  # one budget for both
    first.save("a", _page("a", 50))
    second.save("b", _page("b", 50))
    first.save("c", _page("c", 50))
    first.touch("a")  # fetched again unchanged: now the most recent
    size = _size(first, "a")
    budget.budget = int(2.5 * size)  # room for two, pruned to 90% of it: two stay
    second.save("d", _page("d", 50))
    assert _saved(tmp_path) == {"a", "d"}
    assert first.load("b") is None and second.load("b") is None  # gone, so fetched anew when asked
    assert os.path.exists(os.path.join(first.directory, "_url"))  # what names the store stays


def test_other_processes_pages_count_from_the_first_save(tmp_path):
    other = PageStore(str(tmp_path), "https://one.example/simple/")  # another process: no budget here
    for name in ("a", "b", "c"):
        other.save(name, _page(name, 50))
    size = _size(other, "a")
    ours = PageStore(str(tmp_path), "https://one.example/simple/", SavedPagesBudget(str(tmp_path / "index"), 3 * size))
    ours.save("d", _page("d", 50))  # four pages over a budget of three: the oldest go
    assert _saved(tmp_path) == {"c", "d"}


def test_a_deleted_page_gives_its_room_back(tmp_path):
    store = PageStore(str(tmp_path), "https://one.example/simple/", None)
    store.save("probe", _page("probe", 50))
    size = _size(store, "probe")
    store.delete("probe")
    budget = SavedPagesBudget(str(tmp_path / "index"), 2 * size)
    store = PageStore(str(tmp_path), "https://one.example/simple/", budget)
    store.save("a", _page("a", 50))
    store.delete("a")  # a project the index no longer has
    store.save("b", _page("b", 50))
    store.save("c", _page("c", 50))
    assert _saved(tmp_path) == {"b", "c"}


def test_a_page_saved_again_by_another_process_since_it_was_counted_stays(tmp_path):
    store = PageStore(str(tmp_path), "https://one.example/simple/")
    store.save("probe", _page("probe", 50))
    size = _size(store, "probe")
    store.delete("probe")
    budget = SavedPagesBudget(str(tmp_path / "index"), 10**9)
    ours = PageStore(str(tmp_path), "https://one.example/simple/", budget)
    ours.save("a", _page("a", 50))
    ours.save("b", _page("b", 50))
    later = os.path.getmtime(os.path.join(ours.directory, "a.json")) + 5
    os.utime(os.path.join(ours.directory, "a.json"), (later, later))  # another process saved it since
    budget.budget = int(2.5 * size)
    ours.save("c", _page("c", 50))  # "a" is the oldest we know of, but not on disk
    assert _saved(tmp_path) == {"a", "c"}


def test_a_page_revalidated_whose_saved_copy_was_pruned_is_saved_again(tmp_path):
    upstream, clock = FakeUpstream(), Clock()
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz"])
    store = PageStore(str(tmp_path), BASE)
    cache = IndexCache(IndexSettings(BASE, 60), upstream, store, clock=clock)
    cache.project("alpha")
    os.unlink(os.path.join(store.directory, "alpha.json"))  # pruned
    clock.now += 61
    cache.project("alpha")  # revalidated: a 304
    assert upstream.calls[-1][1] is not None  # a conditional request
    assert store.load("alpha") is not None
