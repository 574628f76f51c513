"""IndexCache and Catalog with a function-backed fake upstream and a fake clock
(no sockets): TTLs, revalidation, stale copies, back-off, single flight, memory bound."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time

import pytest

from proxpi_min.index import index_cache, residence
from proxpi_min.index import catalog as catalog_module, rendered_pages
from proxpi_min.infra.background import Background
from proxpi_min.core.settings import IndexSettings
from proxpi_min.core.errors import AnswerTooSlow, BadUpstreamPage, Forbidden, NotFound, UpstreamError, UpstreamUnreachable
from proxpi_min.index.index_cache import OFFLINE_RECHECK, IndexCache
from proxpi_min.infra.aggregate import merged_health
from proxpi_min.index.catalog import Catalog
from proxpi_min.core.names import NormalizedName
from proxpi_min.index.page_store import PageStore
from proxpi_min.core.policy import Policy
from proxpi_min.index.upstream import PageResponse

JSON = "application/vnd.pypi.simple.v1+json"
BASE = "http://upstream.test/simple/"


def page_body(name: str, files: list) -> bytes:
    return json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [
                {"filename": f, "url": f"/files/{f}", "hashes": {"sha256": "ab" * 32}, "size": 1} for f in files
            ],
        }
    ).encode()


class FakeUpstream:
    """Answers fetch_page from a dict of pages; counts calls; can fail or answer 304."""

    def __init__(self) -> None:
        self.pages: dict = {}
        self.calls: list = []
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.gated: str | None = None  # only this project's fetches wait (None: all)

    def fetch_page(self, url, accept, etag=None, last_modified=None, absent=(404, 410)):
        self.calls.append((url, etag))
        name = url[len(BASE):].strip("/")
        body = self.pages.get(name)  # a held answer is the page as it was when asked
        if self.gate is not None and self.gated in (None, name):
            self.gate.wait(5)
        if self.error is not None:
            raise self.error
        if body is None:
            return PageResponse(404, b"", "", url, None, None)
        tag = f'"{hash(body)}"'
        if etag == tag:
            return PageResponse(304, b"", "", url, tag, None)
        return PageResponse(200, body, JSON + "; charset=utf-8", url, tag, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def upstream() -> FakeUpstream:
    fake = FakeUpstream()
    fake.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz"])
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(upstream, clock, tmp_path, ttl=60.0, store=True, offline=False) -> IndexCache:
    settings = IndexSettings(BASE, ttl)
    page_store = PageStore(str(tmp_path), BASE) if store else None
    return IndexCache(settings, upstream, page_store, offline=offline, clock=clock)


def alpha() -> NormalizedName:
    return NormalizedName("alpha")


def test_IndexCache_serves_from_memory_within_ttl(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    first = cache.project(alpha())
    clock.now += 59
    second = cache.project(alpha())
    assert len(upstream.calls) == 1
    assert first._replace(cached=True, fresh_for=1.0, fetched=False) == second  # what is left of its TTL
    assert (first.cached, second.cached) == (False, True)  # the second from memory: a page hit
    assert (first.fetched, second.fetched) == (True, False)  # the bytes came from upstream once
    assert [f.filename for f in first.value.files] == ["alpha-1.0.tar.gz"]


def test_IndexCache_revalidates_after_ttl_and_keeps_version_on_304(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    first = cache.project(alpha())
    clock.now += 61
    second = cache.project(alpha())
    assert len(upstream.calls) == 2
    assert upstream.calls[1][1] is not None  # sent If-None-Match
    assert second.generation == first.generation  # unchanged: nothing to re-render


def test_IndexCache_new_content_gets_new_version(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    first = cache.project(alpha())
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    clock.now += 61
    second = cache.project(alpha())
    assert second.generation != first.generation
    assert len(second.value.files) == 2


def test_IndexCache_ttl_zero_asks_every_time(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path, ttl=0)
    for _ in range(3):
        cache.project(alpha())
    assert len(upstream.calls) == 3


def test_IndexCache_invalidate_makes_next_request_ask(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    cache.project(alpha())
    cache.invalidate(alpha())
    cache.project(alpha())
    assert len(upstream.calls) == 2


def list_body(names: list) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}).encode()


def wait_for_calls(upstream: FakeUpstream, count: int) -> bool:
    """True once upstream has been asked *count* times; False if not within 5 s."""
    deadline = time.monotonic() + 5
    while len(upstream.calls) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def start_held(upstream: FakeUpstream, ask) -> tuple:
    """(thread, answers): *ask* running in a thread whose fetch upstream holds until
    ``upstream.gate`` is set; returns once upstream has been asked."""
    upstream.gate = threading.Event()
    answers: list = []
    asked = len(upstream.calls)
    thread = threading.Thread(target=lambda: answers.append(ask()))
    thread.start()
    assert wait_for_calls(upstream, asked + 1)
    return thread, answers


def filenames_of(lookup) -> list:
    return [f.filename for f in lookup.value.files]


@pytest.mark.parametrize("warm", [False, True], ids=["new-page", "revalidation"])
def test_IndexCache_invalidate_wins_over_a_fetch_already_under_way(upstream, clock, tmp_path, warm) -> None:
    """A fetch begun before the invalidation and answered after it (a new page, or a
    304 for the copy held) answers its own client, but is not kept as fresh: the next
    request asks upstream again and sees the release added meanwhile."""
    cache = make_cache(upstream, clock, tmp_path)
    if warm:
        cache.project(alpha())
        clock.now += 61
    held, answers = start_held(upstream, lambda: cache.project(alpha()))
    cache.invalidate("alpha")
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    upstream.gate.set()
    held.join(5)
    assert filenames_of(answers[0]) == ["alpha-1.0.tar.gz"]  # the page as it was when asked
    calls = len(upstream.calls)
    assert filenames_of(cache.project(alpha())) == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert len(upstream.calls) == calls + 1


def test_IndexCache_a_request_after_the_invalidation_does_not_wait_for_the_older_fetch(
    upstream, clock, tmp_path
) -> None:
    """The fetch under way when the page is invalidated is not shared with later
    requests: they start their own, whose answer stays, however the two finish."""
    cache = make_cache(upstream, clock, tmp_path)
    held, _ = start_held(upstream, lambda: cache.project(alpha()))
    cache.invalidate("alpha")
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    answers: list = []
    later = threading.Thread(target=lambda: answers.append(cache.project(alpha())))
    later.start()
    asked_again = wait_for_calls(upstream, 2)
    upstream.gate.set()
    held.join(5)
    later.join(5)
    assert asked_again
    assert filenames_of(answers[0]) == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert filenames_of(cache.project(alpha())) == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert len(upstream.calls) == 2


def test_IndexCache_invalidate_list_wins_over_a_fetch_already_under_way(upstream, clock, tmp_path) -> None:
    upstream.pages[""] = list_body(["alpha"])
    cache = make_cache(upstream, clock, tmp_path)
    held, _ = start_held(upstream, cache.project_list)
    cache.invalidate_list()
    upstream.pages[""] = list_body(["alpha", "beta"])
    upstream.gate.set()
    held.join(5)
    assert list(cache.project_list().value) == ["alpha", "beta"]


def test_IndexCache_a_failure_begun_before_the_invalidation_sets_no_back_off(upstream, clock, tmp_path) -> None:
    """Its client gets the stale copy, but the next request still asks upstream at once."""
    cache = make_cache(upstream, clock, tmp_path)
    cache.project(alpha())
    clock.now += 61
    held, answers = start_held(upstream, lambda: cache.project(alpha()))
    cache.invalidate("alpha")
    upstream.error = UpstreamError("down")
    upstream.gate.set()
    held.join(5)
    assert answers[0].stale and filenames_of(answers[0]) == ["alpha-1.0.tar.gz"]
    upstream.error = None
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    assert filenames_of(cache.project(alpha())) == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert len(upstream.calls) == 3


def test_IndexCache_unknown_project_is_none_and_cached(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    assert cache.project(NormalizedName("nope")).value is None
    assert cache.project(NormalizedName("nope")).value is None
    assert len(upstream.calls) == 1


def test_IndexCache_serves_stale_copy_with_back_off(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    good = cache.project(alpha())
    upstream.error = UpstreamError("down")
    clock.now += 61
    stale = cache.project(alpha())
    assert stale.stale and stale.value == good.value
    calls = len(upstream.calls)
    clock.now += index_cache.RETRY_FIRST / 2
    assert cache.project(alpha()).stale
    assert len(upstream.calls) == calls  # in back-off: upstream not asked again
    clock.now += index_cache.RETRY_FIRST
    cache.project(alpha())
    assert len(upstream.calls) == calls + 1
    upstream.error = None
    clock.now += 2 * index_cache.RETRY_FIRST + 1
    assert not cache.project(alpha()).stale


def test_IndexCache_error_without_copy_is_raised(upstream, clock, tmp_path) -> None:
    upstream.error = UpstreamError("down")
    cache = make_cache(upstream, clock, tmp_path)
    with pytest.raises(UpstreamError):
        cache.project(alpha())


@pytest.mark.parametrize(
    "bad_body",
    [page_body("alpha", []), b'{"files": "nope"}', b"[]", b"{not json"],
    ids=["empty", "wrong-shape", "not-object", "not-json"],
)
def test_IndexCache_bad_answer_never_replaces_good_copy(upstream, clock, tmp_path, bad_body) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    good = cache.project(alpha())
    upstream.pages["alpha"] = bad_body
    clock.now += 61
    after = cache.project(alpha())
    assert after.stale
    assert after.value == good.value


def test_IndexCache_concurrent_requests_share_one_fetch(upstream, clock, tmp_path) -> None:
    cache = make_cache(upstream, clock, tmp_path)
    upstream.gate = threading.Event()
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.project(alpha()))) for _ in range(8)]
    for thread in threads:
        thread.start()
    upstream.gate.set()
    for thread in threads:
        thread.join(5)
    assert len(results) == 8
    assert len(upstream.calls) == 1


def test_IndexCache_saved_page_survives_restart_and_outage(upstream, clock, tmp_path) -> None:
    make_cache(upstream, clock, tmp_path).project(alpha())
    upstream.error = UpstreamError("down")
    restarted = make_cache(upstream, clock, tmp_path)
    lookup = restarted.project(alpha())
    assert lookup.stale
    assert [f.filename for f in lookup.value.files] == ["alpha-1.0.tar.gz"]


def test_IndexCache_offline_uses_saved_pages_only(upstream, clock, tmp_path) -> None:
    make_cache(upstream, clock, tmp_path).project(alpha())
    calls = len(upstream.calls)
    offline = make_cache(upstream, clock, tmp_path, offline=True)
    assert offline.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    assert offline.project(NormalizedName("beta")).value is None  # as if upstream had none
    assert len(upstream.calls) == calls
    assert offline.saved_projects() == ["alpha"]


def test_IndexCache_offline_reads_a_saved_page_again_once_warm_rewrote_it(upstream, clock, tmp_path, monkeypatch) -> None:
    make_cache(upstream, clock, tmp_path).project(alpha())
    offline = make_cache(upstream, clock, tmp_path, offline=True)
    first = offline.project(alpha())
    assert offline.project(NormalizedName("beta")).value is None
    reads = []
    real_load = PageStore.load
    monkeypatch.setattr(PageStore, "load", lambda store, key: reads.append(key) or real_load(store, key))
    clock.now += OFFLINE_RECHECK
    assert offline.project(alpha()).generation == first.generation and reads == []  # unchanged: not read
    # warm, in another process, saves a new alpha page and a first beta page.
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    upstream.pages["beta"] = page_body("beta", ["beta-1.0.tar.gz"])
    warming = make_cache(upstream, clock, tmp_path, ttl=0.0)
    for name in ("alpha", "beta"):
        warming.project(NormalizedName(name))
    assert len(offline.project(alpha()).value.files) == 1  # within the recheck: as read
    clock.now += OFFLINE_RECHECK
    assert [e.filename for e in offline.project(alpha()).value.files] == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert offline.project(NormalizedName("beta")).value.files[0].filename == "beta-1.0.tar.gz"
    offline.invalidate("alpha")  # DELETE /cache/alpha: looked at again at once
    assert offline.project(alpha()).value is not None


@pytest.mark.parametrize("first_time", [True, False])
def test_Catalog_offline_pages_from_saved_copies_count_as_hits_not_upstream(
    upstream, clock, tmp_path, first_time
) -> None:
    """Offline nothing is asked upstream: a page read from its saved copy is a page hit
    (so the handler counts its bytes as sent from the cache), the first time as after."""
    make_cache(upstream, clock, tmp_path).project(alpha())
    catalog = Catalog([make_cache(upstream, clock, tmp_path, offline=True)], 1024 * 1024, offline=True)
    if not first_time:
        catalog.rendered_project(alpha(), JSON, False)
    answer = catalog.rendered_project(alpha(), JSON, False)
    assert answer.hit and not answer.stale
    assert b"alpha-1.0.tar.gz" in answer.rendered.body
    assert catalog.rendered_list(JSON, False).hit
    assert catalog.metrics.summary().cache["page"]["misses"] == 0


def test_IndexCache_drops_least_recently_used_pages_and_reads_them_back(
    upstream, clock, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 4)  # two one-file pages fit
    for name in ("beta", "gamma"):
        upstream.pages[name] = page_body(name, [f"{name}-1.0.tar.gz"])
    cache = make_cache(upstream, clock, tmp_path)
    first = cache.project(alpha())
    cache.project(NormalizedName("beta"))
    cache.project(NormalizedName("gamma"))  # alpha is now the least recently used: dropped
    assert "alpha" in cache.resident().dropped
    calls = len(upstream.calls)
    again = cache.project(alpha())
    assert len(upstream.calls) == calls  # read back from its saved copy, not fetched
    assert again == first._replace(fetched=False)  # same page, same version: rendered pages stay valid


def test_IndexCache_forgets_the_least_recently_used_dropped_pages_past_a_bound(
    upstream, clock, tmp_path, monkeypatch
) -> None:
    """What it keeps of a page dropped from memory (validators, fetch time) is bounded
    too: a page forgotten is read back from its saved copy as expired, revalidated with
    one conditional request."""
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 2)  # one one-file page fits
    monkeypatch.setattr(residence, "MAX_DROPPED", 2)
    names = [NormalizedName(f"p{i}") for i in range(6)]
    for name in names:
        upstream.pages[name] = page_body(name, [f"{name}-1.0.tar.gz"])
    cache = make_cache(upstream, clock, tmp_path)
    for name in names:
        cache.project(name)
    residency = cache.resident()
    assert (residency.in_memory, residency.dropped) == ({"p5"}, {"p3", "p4"})  # the rest forgotten
    calls = len(upstream.calls)
    again = cache.project(names[0])  # forgotten: its saved copy, revalidated
    assert again.value.files[0].filename == "p0-1.0.tar.gz"
    assert len(upstream.calls) == calls + 1 and upstream.calls[-1][1] is not None  # with its ETag
    cache.project(names[-2])  # dropped, not forgotten: read back, upstream not asked
    assert len(upstream.calls) == calls + 1


def test_IndexCache_a_page_forgotten_while_read_back_is_kept_whole(upstream, clock, tmp_path, monkeypatch) -> None:
    """A dropped page forgotten (MAX_DROPPED) while another thread reads it back from its
    saved copy: the page read back is kept as it is, and later drops find every page."""
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 2)  # one one-file page fits
    monkeypatch.setattr(residence, "MAX_DROPPED", 1)
    for name in ("p0", "p1", "p2", "p3"):
        upstream.pages[name] = page_body(name, [f"{name}-1.0.tar.gz"])
    cache = make_cache(upstream, clock, tmp_path)
    cache.project(NormalizedName("p0"))
    cache.project(NormalizedName("p1"))  # p0 dropped
    loading, go_on = threading.Event(), threading.Event()
    load = cache._store.load

    def held_load(key):
        saved = load(key)
        if key == "p0":
            loading.set()
            go_on.wait(5)
        return saved

    monkeypatch.setattr(cache._store, "load", held_load)
    reading = threading.Thread(target=cache.project, args=(NormalizedName("p0"),))
    reading.start()
    assert loading.wait(5)
    cache.project(NormalizedName("p2"))  # p1 dropped, so p0 is forgotten meanwhile
    go_on.set()
    reading.join(5)
    assert cache.project(NormalizedName("p3")).value is not None  # drops p0 again: no KeyError
    assert cache.project(NormalizedName("p0")).value.files[0].filename == "p0-1.0.tar.gz"


def test_IndexCache_without_store_never_drops(upstream, clock, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 1)
    upstream.pages["beta"] = page_body("beta", ["beta-1.0.tar.gz"])
    cache = make_cache(upstream, clock, tmp_path, store=False)
    cache.project(alpha())
    cache.project(NormalizedName("beta"))
    assert cache.project(alpha()).value is not None
    assert len(upstream.calls) == 2


def test_Catalog_merges_first_index_first(clock, tmp_path) -> None:
    root, extra = FakeUpstream(), FakeUpstream()
    root.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz"])
    extra.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"])
    caches = [
        IndexCache(IndexSettings(BASE, 60), root, None, clock=clock),
        IndexCache(IndexSettings(BASE, 60), extra, None, clock=clock),
    ]
    indexes = Catalog(caches, 1024 * 1024)
    assert indexes.locate_file(alpha(), "alpha-2.0.tar.gz").entry.url.endswith("alpha-2.0.tar.gz")
    body = json.loads(indexes.rendered_project(alpha(), JSON, False)[0].body)
    assert [f["filename"] for f in body["files"]] == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    page = indexes.project_page(alpha())
    assert [f.filename for f in page.files] == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    with pytest.raises(NotFound):
        indexes.locate_file(alpha(), "alpha-3.0.tar.gz")
    with pytest.raises(NotFound):
        indexes.rendered_project(NormalizedName("nope"), JSON, False)
    with pytest.raises(NotFound):
        indexes.project_page(NormalizedName("nope"))


def test_Catalog_renders_once_per_version(upstream, clock, tmp_path, monkeypatch) -> None:
    renders = []
    real = catalog_module.render_project_page
    monkeypatch.setattr(catalog_module, "render_project_page", lambda *a: renders.append(a) or real(*a))
    indexes = Catalog([make_cache(upstream, clock, tmp_path)], 1024 * 1024)
    for _ in range(3):
        indexes.rendered_project(alpha(), JSON, True)
    assert len(renders) == 1
    clock.now += 61  # revalidated with a 304: same version, no new rendering
    indexes.rendered_project(alpha(), JSON, True)
    assert len(renders) == 1


def test_IndexCache_accepts_an_empty_page_for_a_quarantined_project(upstream, clock, tmp_path) -> None:
    """PEP 792: an index must not offer a quarantined project's files; a stale copy
    would keep handing them out."""
    cache = make_cache(upstream, clock, tmp_path)
    cache.project(alpha())
    upstream.pages["alpha"] = json.dumps(
        {"meta": {"api-version": "1.4"}, "name": "alpha", "files": [], "project-status": {"status": "quarantined"}}
    ).encode()
    clock.now += 61
    after = cache.project(alpha())
    assert not after.stale
    assert after.value.files == ()


def test_IndexCache_a_page_dropped_while_in_use_stays_whole_for_its_user(
    upstream, clock, tmp_path, monkeypatch
) -> None:
    """Dropping replaces the entry; a thread revalidating the old one (a 304) still
    returns its page, and the page is put back."""
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 2)  # one one-file page fits
    upstream.pages["beta"] = page_body("beta", ["beta-1.0.tar.gz"])
    cache = make_cache(upstream, clock, tmp_path)
    first = cache.project(alpha())
    clock.now += 61
    upstream.gate, upstream.gated = threading.Event(), "alpha"
    results = []
    revalidation = threading.Thread(target=lambda: results.append(cache.project(alpha())))
    revalidation.start()
    while len(upstream.calls) < 2:  # alpha's revalidation is waiting upstream
        threading.Event().wait(0.01)
    cache.project(NormalizedName("beta"))  # meanwhile drops alpha (least recently used)
    assert "alpha" in cache.resident().dropped
    upstream.gate.set()  # now upstream answers alpha's revalidation: 304
    revalidation.join(5)
    assert results and results[0].value == first.value  # a page, never the drop marker
    assert cache.project(alpha()).value == first.value


def test_IndexCache_forgets_old_unknown_names(upstream, clock, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(residence, "MAX_ABSENT", 3)
    cache = make_cache(upstream, clock, tmp_path)
    for number in range(10):
        assert cache.project(NormalizedName(f"nope{number}")).value is None
    assert len(cache.resident().in_memory | cache.resident().dropped) == 3


def test_IndexCache_leaves_unservable_names_out_with_one_warning(upstream, clock, tmp_path, caplog) -> None:
    evil = 'evil-1.0-py3-none-any.whl"><b>x.whl'
    upstream.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz", evil, "a b.whl"])
    cache = make_cache(upstream, clock, tmp_path, ttl=0)
    with caplog.at_level("WARNING", logger="proxpi_min.index.index_cache"):
        page = cache.project(alpha()).value
    assert [entry.filename for entry in page.files] == ["alpha-1.0.tar.gz"]
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and repr(evil) in warnings[0], warnings
    # The saved copy (read back after a restart) holds the filtered page too.
    assert make_cache(upstream, clock, tmp_path, offline=True).project(alpha()).value.files == page.files
# ---------------------------------------------------------------- guard rails (policy.py)

DAY = 86400.0
INTERNAL = "http://internal.test/simple/"


def timed_body(name: str, uploads: dict) -> bytes:
    """A JSON page whose files carry PEP 700 upload times (None: no time given)."""
    files = []
    for filename, uploaded in uploads.items():
        item = {"filename": filename, "url": f"/files/{filename}", "hashes": {"sha256": "ab" * 32}, "size": 1}
        if uploaded is not None:
            item["upload-time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(uploaded))
        files.append(item)
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files}).encode()


def two_indexes(clock, policy_args: dict, wall: Clock):
    root, internal = FakeUpstream(), FakeUpstream()
    caches = [
        IndexCache(IndexSettings(BASE, 60), root, None, clock=clock),
        IndexCache(IndexSettings(INTERNAL, 60), internal, None, clock=clock),
    ]
    policy = Policy([BASE, INTERNAL], **policy_args)
    return root, internal, Catalog(caches, 1024 * 1024, policy=policy, wall_clock=wall)


def filenames(indexes, name="alpha") -> list:
    return [f["filename"] for f in json.loads(indexes.rendered_project(NormalizedName(name), JSON, False)[0].body)["files"]]


def test_Catalog_cooldown_completes_the_cached_page_as_time_passes(clock, monkeypatch) -> None:
    renders = []
    real = catalog_module.render_project_page
    monkeypatch.setattr(catalog_module, "render_project_page", lambda *a: renders.append(a) or real(*a))
    wall = Clock()
    wall.now = 100 * DAY
    root, _, indexes = two_indexes(clock, {"min_age": 7 * DAY}, wall)
    root.pages["alpha"] = timed_body("alpha", {"alpha-1.0.tar.gz": wall.now - 30 * DAY, "alpha-2.0.tar.gz": wall.now - DAY})
    assert filenames(indexes) == ["alpha-1.0.tar.gz"]
    assert indexes.rendered_project(alpha(), JSON, False).policies == "cooldown"
    with pytest.raises(Forbidden, match=r"'alpha-2.0.tar.gz' was uploaded 1d ago; the minimum age is 1w"):
        indexes.locate_file(alpha(), "alpha-2.0.tar.gz")
    wall.now += 6 * DAY - 1  # still one second short
    assert filenames(indexes) == ["alpha-1.0.tar.gz"]
    assert len(renders) == 1
    wall.now += 1
    assert filenames(indexes) == ["alpha-1.0.tar.gz", "alpha-2.0.tar.gz"]
    assert indexes.rendered_project(alpha(), JSON, False)[3] == ""
    assert indexes.locate_file(alpha(), "alpha-2.0.tar.gz").entry.filename == "alpha-2.0.tar.gz"
    assert len(renders) == 2
    assert len(root.calls) == 1  # nothing refetched: the TTL (fake monotonic clock) never ran out


def test_Catalog_pin_never_asks_the_other_index(clock) -> None:
    root, internal, indexes = two_indexes(clock, {"pins": [("acme-*", INTERNAL)]}, Clock())
    root.pages["acme-lib"] = page_body("acme-lib", ["acme_lib-99.0.tar.gz"])
    internal.pages["acme-lib"] = page_body("acme-lib", ["acme_lib-1.0.tar.gz"])
    assert filenames(indexes, "acme-lib") == ["acme_lib-1.0.tar.gz"]
    assert indexes.rendered_project(NormalizedName("acme-lib"), JSON, False)[3] == "pin"
    with pytest.raises(NotFound, match=r"on http://internal.test/simple/, the only index asked for it \(pin acme-\*="):
        indexes.locate_file(NormalizedName("acme-lib"), "acme_lib-99.0.tar.gz")
    assert root.calls == []
    assert indexes._policy.counts() == {("refused", "pin"): 1}


@pytest.mark.parametrize(
    ("first_has_it", "expected", "root_calls"),
    [(True, ["alpha-1.0.tar.gz"], 0), (False, ["alpha-9.0.tar.gz"], 1)],
)
def test_Catalog_first_index_stops_at_the_first_that_has_it(clock, first_has_it, expected, root_calls) -> None:
    # Here the internal index comes first: configured order is what counts.
    internal, root = FakeUpstream(), FakeUpstream()
    caches = [
        IndexCache(IndexSettings(INTERNAL, 60), internal, None, clock=clock),
        IndexCache(IndexSettings(BASE, 60), root, None, clock=clock),
    ]
    indexes = Catalog(caches, 1024 * 1024, policy=Policy([INTERNAL, BASE], first_index=True))
    if first_has_it:
        internal.pages["alpha"] = page_body("alpha", ["alpha-1.0.tar.gz"])
    root.pages["alpha"] = page_body("alpha", ["alpha-9.0.tar.gz"])
    assert filenames(indexes) == expected
    assert len(root.calls) == root_calls


def test_Catalog_denied_project_is_refused_before_any_index_is_asked(clock) -> None:
    root, internal, indexes = two_indexes(clock, {"deny": [("evil-*", None)]}, Clock())
    with pytest.raises(Forbidden, match=r"project 'evil-twin' is denied by the deny-list entry 'evil-\*'"):
        indexes.rendered_project(NormalizedName("evil-twin"), JSON, False)
    with pytest.raises(Forbidden):
        indexes.locate_file(NormalizedName("evil-twin"), "evil_twin-1.0.tar.gz")
    assert root.calls == internal.calls == []


def _health(success, failure, reason, stale, backoff, retry) -> dict:
    return {"url": "http://u/simple/", "ttl": 60.0, "last_success": success, "last_failure": failure,
            "last_failure_reason": reason, "stale_pages": stale, "backoff_pages": backoff,
            "next_retry_seconds": retry}


def test_merged_health_latest_success_and_failure_of_any_worker() -> None:
    reports = [
        (_health(100.0, 50.0, "older", 0, 0, None), True),
        (_health(90.0, 80.0, "newest", 2, 1, 4.0), True),
        (_health(120.0, None, None, 9, 9, 1.0), False),  # a worker gone: its pages are gone too
    ]
    merged = merged_health(reports)
    assert merged["url"] == "http://u/simple/" and merged["ttl"] == 60.0
    assert (merged["last_success"], merged["last_failure"], merged["last_failure_reason"]) == (120.0, 80.0, "newest")
    assert (merged["stale_pages"], merged["backoff_pages"], merged["next_retry_seconds"]) == (2, 1, 4.0)
    never = merged_health([(_health(None, None, None, 0, 0, None), True)])
    assert (never["last_success"], never["last_failure"], never["last_failure_reason"]) == (None, None, None)


# -- saving and compressing after the answer (Background) ---------------------------------


def gated_background():
    """A Background held shut until the returned event is set."""
    background = Background()
    opened = threading.Event()
    background.submit(lambda: opened.wait(10))
    return background, opened


def saving_later(upstream, clock, tmp_path, background, ttl=60.0) -> IndexCache:
    store = PageStore(str(tmp_path), BASE)
    return IndexCache(IndexSettings(BASE, ttl), upstream, store, clock=clock, background=background)


def test_IndexCache_answers_before_the_page_is_saved(upstream, clock, tmp_path) -> None:
    background, opened = gated_background()
    cache = saving_later(upstream, clock, tmp_path, background)
    try:
        assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
        assert PageStore(str(tmp_path), BASE).load("alpha") is None  # answered, not yet saved
    finally:
        opened.set()
    assert background.flush(10)
    saved = PageStore(str(tmp_path), BASE).load("alpha")
    assert saved.value == cache.project(alpha()).value


def test_IndexCache_a_page_not_yet_saved_is_never_dropped(upstream, clock, tmp_path, monkeypatch) -> None:
    """Only a page whose saved copy is current may leave memory: nothing is lost while
    its save waits, and once saved it is read back, not fetched again."""
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 2)  # one one-file page fits
    upstream.pages["beta"] = page_body("beta", ["beta-1.0.tar.gz"])
    background, opened = gated_background()
    cache = saving_later(upstream, clock, tmp_path, background)
    try:
        cache.project(alpha())
        cache.project(NormalizedName("beta"))
        assert "alpha" in cache.resident().in_memory
        assert "beta" in cache.resident().in_memory
    finally:
        opened.set()
    assert background.flush(10)
    assert "alpha" in cache.resident().dropped  # saved, then dropped
    calls = len(upstream.calls)
    assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    assert len(upstream.calls) == calls


def test_IndexCache_a_failed_save_is_logged_and_the_page_still_served(
    upstream, clock, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(residence, "MAX_RESIDENT_FILES", 2)
    upstream.pages["beta"] = page_body("beta", ["beta-1.0.tar.gz"])
    (tmp_path / "index").write_bytes(b"in the way")  # no directory can be made there
    background = Background()
    cache = saving_later(upstream, clock, tmp_path, background)
    assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    cache.project(NormalizedName("beta"))
    assert background.flush(10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot save index page" in message for message in warnings), warnings
    # Unsaved, so kept in memory past the bound: still answered without upstream.
    calls = len(upstream.calls)
    assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    assert len(upstream.calls) == calls


def test_IndexCache_saves_land_in_order(upstream, clock, tmp_path) -> None:
    """A page that changed twice while its saves waited ends saved as the last one."""
    background, opened = gated_background()
    cache = saving_later(upstream, clock, tmp_path, background, ttl=0)
    try:
        for version in ("1.0", "2.0", "3.0"):
            upstream.pages["alpha"] = page_body("alpha", [f"alpha-{version}.tar.gz"])
            cache.project(alpha())
    finally:
        opened.set()
    assert background.flush(10)
    assert PageStore(str(tmp_path), BASE).load("alpha").value.files[0].filename == "alpha-3.0.tar.gz"


def test_Catalog_answers_a_cold_page_uncompressed_then_compresses_it(upstream, clock, tmp_path) -> None:
    upstream.pages["alpha"] = page_body("alpha", [f"alpha-{n}.0.tar.gz" for n in range(50)])
    background, opened = gated_background()
    indexes = Catalog([make_cache(upstream, clock, tmp_path)], 1024 * 1024, background=background)
    try:
        first = indexes.rendered_project(alpha(), JSON, True)[0]
        assert first.encoding is None  # answered at once, as it is
        assert indexes.rendered_project(alpha(), JSON, True)[0] is first  # until compressed
    finally:
        opened.set()
    assert indexes.flush(10)
    later = indexes.rendered_project(alpha(), JSON, True)[0]
    assert later.encoding == "gzip"
    assert gzip.decompress(later.body) == first.body
    assert later.etag != first.etag and later.etag == first.etag[:-1] + '-gzip"'
    assert indexes.rendered_project(alpha(), JSON, False)[0].encoding is None


def test_Catalog_without_background_compresses_before_answering(upstream, clock, tmp_path) -> None:
    upstream.pages["alpha"] = page_body("alpha", [f"alpha-{n}.0.tar.gz" for n in range(50)])
    indexes = Catalog([make_cache(upstream, clock, tmp_path)], 1024 * 1024)
    assert indexes.rendered_project(alpha(), JSON, True)[0].encoding == "gzip"
    assert indexes.flush(0) and indexes.close(0)


def test_Catalog_a_page_past_the_answer_first_bound_is_compressed_first(
    upstream, clock, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(rendered_pages, "ANSWER_FIRST_MAX", 1024)
    upstream.pages["alpha"] = page_body("alpha", [f"alpha-{n}.0.tar.gz" for n in range(50)])
    indexes = Catalog([make_cache(upstream, clock, tmp_path)], 1024 * 1024, background=Background())
    assert indexes.rendered_project(alpha(), JSON, True)[0].encoding == "gzip"


def test_Catalog_close_finishes_the_saves_still_queued(upstream, clock, tmp_path) -> None:
    background, opened = gated_background()
    cache = saving_later(upstream, clock, tmp_path, background)
    indexes = Catalog([cache], 1024 * 1024, background=background)
    indexes.rendered_project(alpha(), JSON, True)
    threading.Timer(0.1, opened.set).start()
    assert indexes.close()
    assert PageStore(str(tmp_path), BASE).load("alpha") is not None


def test_IndexCache_a_page_not_saved_is_saved_on_a_later_use_once_the_disk_allows(
    upstream, clock, tmp_path, monkeypatch
) -> None:
    """ENOSPC injected into the page store's writes (not a read-only directory, which
    root writes into anyway); once writes work, the next use past SAVE_RETRY saves the
    page, and an offline cache on the same directory then finds it."""
    from proxpi_min.index import page_store

    real_write = page_store.write_atomically
    full = [True]

    def write(path, data, durable=False):
        if full[0]:
            raise OSError(28, "No space left on device")
        return real_write(path, data, durable)

    monkeypatch.setattr(page_store, "write_atomically", write)
    cache = make_cache(upstream, clock, tmp_path)
    assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    assert PageStore(str(tmp_path), BASE).load("alpha") is None
    full[0] = False
    cache.project(alpha())  # within SAVE_RETRY of the failure: not tried again yet
    assert PageStore(str(tmp_path), BASE).load("alpha") is None
    clock.now += index_cache.SAVE_RETRY
    calls = len(upstream.calls)
    cache.project(alpha())
    assert len(upstream.calls) == calls  # saved from memory, not fetched again
    assert PageStore(str(tmp_path), BASE).load("alpha").value.files[0].filename == "alpha-1.0.tar.gz"
    offline = make_cache(FakeUpstream(), clock, tmp_path, offline=True)
    assert offline.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"


def test_IndexCache_a_page_still_not_saved_is_tried_once_per_SAVE_RETRY(upstream, clock, tmp_path, monkeypatch) -> None:
    from proxpi_min.index import page_store

    tries = []

    def write(path, data, durable=False):
        tries.append(path)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(page_store, "write_atomically", write)
    cache = make_cache(upstream, clock, tmp_path)
    for _ in range(5):
        cache.project(alpha())
    assert len(tries) == 1
    clock.now += index_cache.SAVE_RETRY
    for _ in range(5):
        cache.project(alpha())
    assert len(tries) == 2


def test_IndexCache_a_costly_failure_of_a_new_page_is_remembered_for_the_back_off(upstream, clock, tmp_path) -> None:
    """A page too big (BadUpstreamPage) or too slow (UpstreamTimeout) that was never
    fetched: the next clients get the same error without a fetch until the back-off
    ends; invalidating the page ends it at once."""
    upstream.error = BadUpstreamPage("upstream page over 256 bytes: huge")
    cache = make_cache(upstream, clock, tmp_path, store=False)
    for _ in range(4):
        with pytest.raises(BadUpstreamPage, match="over 256 bytes"):
            cache.project(alpha())
    assert len(upstream.calls) == 1
    health = cache.health()
    assert (health["stale_pages"], health["backoff_pages"]) == (0, 1)
    assert health["last_failure_reason"] == "upstream page over 256 bytes: huge"
    clock.now += index_cache.RETRY_FIRST * 2
    with pytest.raises(BadUpstreamPage):
        cache.project(alpha())
    assert len(upstream.calls) == 2
    upstream.error = None
    with pytest.raises(BadUpstreamPage):  # in its (doubled) back-off still
        cache.project(alpha())
    cache.invalidate("alpha")
    assert cache.project(alpha()).value.files[0].filename == "alpha-1.0.tar.gz"
    assert len(upstream.calls) == 3


def test_IndexCache_a_cheap_failure_of_a_new_page_is_retried_at_once(upstream, clock, tmp_path) -> None:
    upstream.error = UpstreamError("upstream unreachable (Connection refused)")
    cache = make_cache(upstream, clock, tmp_path, store=False)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            cache.project(alpha())
    assert len(upstream.calls) == 3


def test_IndexCache_pages_failing_together_are_one_failure_of_their_index(upstream, clock, tmp_path) -> None:
    """A resolver asking for many new pages of a silent index at once: one failure of
    the index (its back-off the first one's), not one per page doubling it to minutes."""
    cache = make_cache(upstream, clock, tmp_path, store=False)
    upstream.error = UpstreamUnreachable("upstream unreachable (Connection refused)")
    for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i"):
        with pytest.raises(UpstreamError):
            cache.project(NormalizedName(name))
    assert cache.unreachable()
    clock.now += index_cache.RETRY_FIRST
    assert not cache.unreachable()


@pytest.mark.parametrize("error", [UpstreamError("upstream answered 500: x"), AnswerTooSlow("upstream page took over 120 s: x")])
def test_IndexCache_a_page_of_its_own_failing_is_no_failure_of_the_index(upstream, clock, tmp_path, error) -> None:
    cache = make_cache(upstream, clock, tmp_path, store=False)
    upstream.error = error
    with pytest.raises(UpstreamError):
        cache.project(alpha())
    assert not cache.unreachable()
