"""In-memory index caches with TTLs (one per upstream index) and their merged view.

Per index: each page has its fetch time; an expired page is revalidated upstream
(If-None-Match / If-Modified-Since). When upstream fails, the last good copy is served,
marked stale, and upstream is retried with a back-off. Concurrent requests for the same
page share one upstream fetch. Locks guard only dictionaries, never I/O.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable, NamedTuple, Optional, Union

from .config import IndexSettings, redact_url
from .errors import BadUpstreamPage, Forbidden, NotFound, UpstreamError, UpstreamTimeout
from .metrics import Metrics
from .names import NormalizedName, canonicalize_name
from .page_store import LIST_KEY, PageStore, SavedPage
from .policy import Filtered, Policy
from .render import Rendered, render, render_project_list, render_project_page
from .simple import (
    FileEntry,
    ProjectList,
    ProjectPage,
    merge_lists,
    merge_pages,
    parse_project_list,
    parse_project_page,
    servable,
)
from .upstream import Upstream

__all__ = ["IndexCache", "Indexes", "Lookup"]

logger = logging.getLogger(__name__)

# Upstream pages: JSON preferred (PEP 691), HTML accepted.
UPSTREAM_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
# After a failed refresh, wait this long before asking upstream again (doubling per
# failure, up to the maximum) and serve the stale copy meanwhile.
RETRY_FIRST = 2.0
RETRY_MAX = 300.0

# Parsed project pages kept in memory, counted in files (each about 1 KB parsed, as
# measured with PyPI-like JSON pages). Past this, the least recently used are dropped
# and read back from their saved copy.
MAX_RESIDENT_FILES = 100_000
MAX_FILE_MAPS = 256  # projects whose file-name index is kept
MAX_ABSENT = 10_000  # names upstream said it does not have, remembered for their TTL
# Pages after the policies (each a new tuple over the same entries, and a file-name
# index), counted in files like MAX_RESIDENT_FILES.
MAX_VIEW_FILES = 100_000

Value = Union[ProjectPage, ProjectList, None]  # None: upstream says there is no such page
_DROPPED: Any = object()  # an entry whose page was dropped from memory (see above)
_versions = itertools.count(1)


class Lookup(NamedTuple):
    value: Value
    version: int  # changes whenever value does
    stale: bool  # the last refresh failed; value is the last good copy
    cached: bool = True  # answered from memory, without asking upstream or the disk


class _Entry:
    __slots__ = ("value", "version", "fetched", "url", "etag", "last_modified", "failures", "retry_at")

    def __init__(self, value: Value, url: str, etag: Optional[str], last_modified: Optional[str], fetched: float) -> None:
        self.value = value
        self.version = next(_versions)
        self.fetched = fetched
        self.url = url
        self.etag = etag
        self.last_modified = last_modified
        self.failures = 0
        self.retry_at = 0.0

    def lookup(self) -> Lookup:
        return Lookup(self.value, self.version, self.failures > 0)

    def dropped(self) -> "_Entry":
        """A copy without the page (see MAX_RESIDENT_FILES). A copy, so that a thread
        holding this entry still finds its page in it."""
        copy = _Entry(_DROPPED, self.url, self.etag, self.last_modified, self.fetched)
        copy.version, copy.failures, copy.retry_at = self.version, self.failures, self.retry_at
        return copy


class _Flight:
    """One upstream fetch in progress; followers wait for its result."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Optional[Lookup] = None
        self.error: Optional[BaseException] = None


class IndexCache:
    """The pages of one upstream index, cached for its TTL."""

    def __init__(
        self,
        settings: IndexSettings,
        upstream: Upstream,
        store: Optional[PageStore],
        offline: bool = False,
        clock: Callable[[], float] = time.monotonic,
        metrics: Optional[Metrics] = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._label = settings.display_url
        self._upstream = upstream
        self._store = store
        self._offline = offline
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._flights: dict[str, _Flight] = {}
        # Keys whose parsed page is in memory and could be read back if dropped: LRU
        # first, with their file counts.
        self._resident: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self._resident_files = 0
        self._absent: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self._failing: set = set()  # keys whose last refresh failed (served stale)
        # For the dashboard: Unix times of the last good and failed answers, and why.
        self._last_success: Optional[float] = None
        self._last_failure: Optional[tuple] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def project(self, name: NormalizedName) -> Lookup:
        """The project's page from this index (value None if upstream has none).

        :raises UpstreamError: upstream failed and no copy was ever fetched.
        """
        return self._get(name)

    def project_list(self) -> Lookup:
        """This index's project list."""
        return self._get(LIST_KEY)

    def invalidate(self, key: str) -> None:
        """Make the next request for *key* (a project name or LIST_KEY) ask upstream.

        The entry keeps its validators and stays the fallback if upstream fails.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.fetched = float("-inf")
                entry.retry_at = 0.0

    def invalidate_list(self) -> None:
        self.invalidate(LIST_KEY)

    def saved_projects(self) -> list:
        return self._store.saved_projects() if self._store else []

    def health(self) -> dict:
        """The dashboard's view of this index: last success and failure (Unix times),
        the failure's reason, pages served stale now and those waiting out a back-off."""
        now = self._clock()
        with self._lock:
            failing = [self._entries[key] for key in self._failing if key in self._entries]
            last_success, last_failure = self._last_success, self._last_failure
        waiting = [entry.retry_at - now for entry in failing if entry.retry_at > now]
        return {
            "url": self._label,
            "ttl": self.settings.ttl,
            "last_success": last_success,
            "last_failure": last_failure[0] if last_failure else None,
            "last_failure_reason": last_failure[1] if last_failure else None,
            "stale_pages": len(failing),
            "backoff_pages": len(waiting),
            "next_retry_seconds": min(waiting) if waiting else None,
        }

    # ------------------------------------------------------------------ lookup

    def _usable(self, entry: _Entry, now: float) -> bool:
        if self._offline:
            return True
        if now - entry.fetched < self.settings.ttl:
            return True
        # In back-off after a failure: keep serving the stale copy without asking.
        return entry.failures > 0 and now < entry.retry_at

    def _get(self, key: str) -> Lookup:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.value is not _DROPPED and self._usable(entry, self._clock()):
                if key in self._resident:
                    self._resident.move_to_end(key)
                return entry.lookup()
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = self._refresh(key, entry)._replace(cached=False)
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _refresh(self, key: str, entry: Optional[_Entry]) -> Lookup:
        """Fetch *key* from upstream (or the saved copy); runs without the lock."""
        if entry is not None and entry.value is _DROPPED:
            saved = self._store.load(key) if self._store is not None else None
            if saved is None or saved.etag != entry.etag:
                entry = None  # gone, or rewritten by another proxy: start afresh
            else:
                with self._lock:
                    entry.value = saved.value  # the same page, so the same version
                    self._remember(key, entry)
                if self._usable(entry, self._clock()):
                    return entry.lookup()
        elif entry is None and self._store is not None:
            saved = self._store.load(key)
            if saved is not None:
                # Loaded as expired-but-usable: revalidated now, the fallback if that fails.
                entry = _Entry(saved.value, saved.url, saved.etag, saved.last_modified, float("-inf"))
                self._put(key, entry, droppable=True)
        if self._offline:
            if entry is None:  # this index never had it: as if upstream said 404
                entry = _Entry(None, "", None, None, float("-inf"))
                self._put(key, entry, droppable=False)
            return entry.lookup()
        url = self.settings.url if key == LIST_KEY else f"{self.settings.url}{key}/"
        try:
            response = self._upstream.fetch_page(
                url, UPSTREAM_ACCEPT, entry.etag if entry else None, entry.last_modified if entry else None
            )
            now = self._clock()
            if response.status == 304 and entry is not None:
                # Unchanged: refreshed without re-parsing (and without re-rendering).
                self._succeeded(key, "not_modified")
                with self._lock:
                    entry.fetched, entry.failures, entry.retry_at = now, 0, 0.0
                    self._reinstate(key, entry)
                return entry.lookup()
            # Links resolve against the page's URL without credentials: file URLs, pages
            # and saved copies never carry them (Upstream adds them per host).
            page_url = redact_url(response.url)
            if response.status == 404:
                new = _Entry(None, page_url, None, None, now)
            else:
                if key == LIST_KEY:
                    value = parse_project_list(response.body, response.content_type)
                else:
                    value = self._servable(
                        parse_project_page(response.body, response.content_type, page_url, NormalizedName(key))
                    )
                _check_plausible(value, entry)
                new = _Entry(value, page_url, response.etag, response.last_modified, now)
        except UpstreamError as exc:
            return self._failed(key, entry, exc)
        self._succeeded(key, "ok")
        saved = False
        if self._store is not None:
            if new.value is None:
                self._store.delete(key)
            else:
                saved = self._store.save(key, SavedPage(new.value, new.url, new.etag, new.last_modified))
        self._put(key, new, droppable=saved)
        return new.lookup()

    def _servable(self, page: ProjectPage) -> ProjectPage:
        """The page without the files we would refuse to serve; one WARNING if any."""
        page, refused = servable(page)
        if refused:
            logger.warning(
                "%s lists %d file names that are not safe to serve, left out of its page: %s",
                redact_url(self.settings.url) + page.name + "/",
                len(refused),
                ", ".join(repr(name) for name in refused[:3]) + (", ..." if len(refused) > 3 else ""),
            )
        return page

    def _put(self, key: str, entry: _Entry, droppable: bool) -> None:
        """Store *entry*; a *droppable* one (its saved copy is current) may later leave
        memory and be read back."""
        with self._lock:
            self._entries[key] = entry
            self._resident_files -= self._resident.pop(key, 0)
            if droppable:
                self._remember(key, entry)
            if entry.value is None:  # "no such project": remembered, but not for ever
                self._absent[key] = None
                self._absent.move_to_end(key)
                while len(self._absent) > MAX_ABSENT:
                    forgotten = self._absent.popitem(last=False)[0]
                    if self._entries.get(forgotten) is not None and self._entries[forgotten].value is None:
                        del self._entries[forgotten]

    def _remember(self, key: str, entry: _Entry) -> None:
        """Count *entry*'s page as resident and drop the least recently used pages
        past MAX_RESIDENT_FILES. Called with the lock held."""
        if not isinstance(entry.value, ProjectPage):
            return
        self._resident_files -= self._resident.pop(key, 0)
        self._resident[key] = len(entry.value.files) + 1
        self._resident_files += self._resident[key]
        while self._resident_files > MAX_RESIDENT_FILES and len(self._resident) > 1:
            dropped, count = self._resident.popitem(last=False)
            self._resident_files -= count
            self._entries[dropped] = self._entries[dropped].dropped()

    def _reinstate(self, key: str, entry: _Entry) -> None:
        """Put back *entry* (with its page) if it was dropped meanwhile. Lock held."""
        if self._entries.get(key) is not entry:
            self._entries[key] = entry
            self._remember(key, entry)

    def _succeeded(self, key: str, outcome: str) -> None:
        self.metrics.upstream.inc(self._label, "page", outcome)
        with self._lock:
            self._failing.discard(key)
            self._last_success = time.time()

    def _failed(self, key: str, entry: Optional[_Entry], error: UpstreamError) -> Lookup:
        outcome = "timeout" if isinstance(error, UpstreamTimeout) else "error"
        self.metrics.upstream.inc(self._label, "page", outcome)
        with self._lock:
            self._last_failure = (time.time(), error.message)
            if entry is not None:
                self._failing.add(key)
        if entry is None:
            logger.warning("%s (nothing cached to serve instead)", error.message)
            raise error
        with self._lock:
            entry.failures += 1
            delay = min(RETRY_FIRST * 2 ** (entry.failures - 1), RETRY_MAX)
            entry.retry_at = self._clock() + delay
            self._reinstate(key, entry)
        logger.warning("%s; serving the stale copy of %s, next try in %.0f s", error.message, key, delay)
        return entry.lookup()


def _check_plausible(value: Union[ProjectPage, ProjectList], old: Optional[_Entry]) -> None:
    """Refuse an answer that would wipe out a good copy: an empty page or list where
    the copy we have lists something is far likelier an upstream fault than real.
    Except a quarantined project (PEP 792), whose files an index must no longer offer."""
    if old is None or old.value is None or len(_items(value)) or not len(_items(old.value)):
        return
    if isinstance(value, ProjectPage) and value.status == "quarantined":
        return
    raise BadUpstreamPage("upstream answered an empty page where it listed files before")


def _items(value: Union[ProjectPage, ProjectList]):
    return value.files if isinstance(value, ProjectPage) else value


class _View(NamedTuple):
    """A project page after the policies, for the upstream versions it was made from."""

    version: tuple  # the asked indices' Lookup versions
    filtered: Filtered
    files: dict  # file name -> (FileEntry kept, URL of the index that listed it)
    asked: tuple  # positions of the indices asked


class _RenderedPages:
    """Rendered pages under a byte budget, least recently used dropped first."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._pages: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: tuple) -> Optional[Rendered]:
        with self._lock:
            found = self._pages.get(key)
            if found is None or found[0] != version:
                return None
            self._pages.move_to_end(key)
            return found[1]

    def put(self, key: tuple, version: tuple, page: Rendered) -> None:
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._used -= len(old[1].body)
            if len(page.body) > self._budget:
                return
            self._pages[key] = (version, page)
            self._used += len(page.body)
            while self._used > self._budget:
                _, (_, dropped) = self._pages.popitem(last=False)
                self._used -= len(dropped.body)


class Indexes:
    """All configured indices as one: merged pages, rendered once per change.

    *is_cached* (offline mode) tells whether the file cache holds a file; project pages
    then list only those, so pip never picks a file we cannot serve. *policy* (guard
    rails) is applied to every merged page, so pages in every format, offline pages,
    metadata files and direct file URLs agree; *wall_clock* is what cooldowns count in.
    """

    def __init__(
        self,
        caches: list,
        page_memory: int,
        offline: bool = False,
        is_cached: Optional[Callable[[NormalizedName, FileEntry, bool], bool]] = None,
        cache_generation: Callable[[], int] = lambda: 0,
        metrics: Optional[Metrics] = None,
        policy: Optional[Policy] = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.caches = caches
        self.metrics = metrics or Metrics()
        # No policy in force: pages take the plain path, at no extra cost.
        self._policy = policy if policy is not None and policy.active else None
        self._wall_clock = wall_clock
        self._views: "collections.OrderedDict[str, _View]" = collections.OrderedDict()
        self._view_files = 0
        self._offline = offline
        self._is_cached = is_cached
        self._cache_generation = cache_generation
        self._rendered = _RenderedPages(page_memory)
        # Per project, file name -> entry: a wheel request must not scan botocore's 5000
        # files. Small next to the pages themselves; bounded all the same.
        self._file_maps: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def _merged(self, name: NormalizedName, lookups: list) -> ProjectPage:
        """The indices' pages as one (cheap: no copy when one index has the project).

        :raises NotFound: no index has the project.
        """
        pages = [lookup.value for lookup in lookups if lookup.value is not None]
        if not pages:
            where = "in the offline cache" if self._offline else "on any index"
            raise NotFound(f"project {name!r} is not {where}")
        return pages[0] if len(pages) == 1 else merge_pages(name, pages)

    def _count(self, lookups: list, caches: Optional[list] = None) -> bool:
        """Count a page hit (every index answered from memory) or miss, and each index
        that answered with a stale copy; True for a hit. *caches*: the indices that
        gave *lookups* (all by default; a pin or first-index asks fewer)."""
        hit = all(lookup.cached for lookup in lookups)
        (self.metrics.hit if hit else self.metrics.miss)("page")
        for cache, lookup in zip(self.caches if caches is None else caches, lookups):
            if lookup.stale:
                self.metrics.stale.inc(cache.settings.display_url)
        return hit

    def rendered_project(self, name: NormalizedName, media: str, compress: bool) -> tuple:
        """(Rendered, stale, hit, policies) of the merged project page in *media*; *hit*
        when no index had to ask upstream, *policies* the guard rails that changed the
        page ("" if none).

        :raises NotFound: no index has the project.
        :raises Forbidden: the deny or allow list refuses it.
        :raises UpstreamError: an index failed and had no copy to serve instead.
        """
        if self._policy is None:
            caches, lookups = self.caches, [cache.project(name) for cache in self.caches]
            version = tuple(lookup.version for lookup in lookups)
            policies = ""
            page_of = lambda: self._merged(name, lookups)  # noqa: E731
        else:
            view, lookups = self._view(name)
            caches = [self.caches[i] for i in view.asked]
            # The instant since which this filtered answer holds: a cached page stays
            # right until a hidden file's cooldown ends (the view is then remade).
            version = (*view.version, view.filtered.since)
            policies = view.filtered.policies
            page_of = lambda: view.filtered.page  # noqa: E731
        if self._offline:
            version += (self._cache_generation(),)

        def make() -> bytes:
            page = page_of()
            if self._offline and self._is_cached is not None:
                page = page._replace(files=tuple(self._offline_files(name, page.files)))
            return render_project_page(page, media)

        hit = self._count(lookups, caches)
        rendered = self._render(("project", name, media, compress), version, make, compress)
        return rendered, any(lookup.stale for lookup in lookups), hit, policies

    def _view(self, name: NormalizedName) -> tuple:
        """(view, lookups): the project's page after the policies, from the indices the
        policy asks (and their answers now); remade when an index's page changed or a
        cooldown ended.

        :raises Forbidden: the deny or allow list refuses the project (no index asked).
        :raises NotFound: none of the indices asked has it.
        """
        policy = self._policy
        route = policy.route(name)
        if route.refusal is not None:
            policy.count_refused(route.refusal[0])
            raise Forbidden(route.refusal[1])
        asked, lookups = [], []
        for position in route.positions:
            lookup = self.caches[position].project(name)
            asked.append(position)
            lookups.append(lookup)
            if route.first_only and lookup.value is not None:
                break
        version = tuple([lookup.version for lookup in lookups])
        now = self._wall_clock()
        with self._lock:
            view = self._views.get(name)
            if view is not None and view.version == version and view.filtered.since <= now < view.filtered.until:
                self._views.move_to_end(name)
                return view, lookups
        pages = [
            (self.caches[i].settings.url, lookup.value)
            for i, lookup in zip(asked, lookups)
            if lookup.value is not None
        ]
        if not pages:
            note = policy.not_found_note(name, asked)[1] or (
                " in the offline cache" if self._offline else " on any index"
            )
            raise NotFound(f"project {name!r} is not{note}")
        merged = pages[0][1] if len(pages) == 1 else merge_pages(name, [page for _, page in pages])
        filtered = policy.files(merged, pages, now, cut_short=len(asked) < len(self.caches))
        origins: dict = {}
        for url, page in pages:  # first index wins, as in merging
            label = redact_url(url)
            for entry in page.files:
                origins.setdefault(entry.filename, label)
        files = {entry.filename: (entry, origins.get(entry.filename, "")) for entry in filtered.page.files}
        view = _View(version, filtered, files, tuple(asked))
        with self._lock:
            old = self._views.pop(name, None)
            self._view_files -= len(old.files) + 1 if old is not None else 0
            self._views[name] = view
            self._view_files += len(view.files) + 1
            while self._view_files > MAX_VIEW_FILES and len(self._views) > 1:
                _, dropped = self._views.popitem(last=False)
                self._view_files -= len(dropped.files) + 1
        return view, lookups

    def _offline_files(self, name: NormalizedName, files: tuple):
        """The files the cache holds, advertising metadata only where it holds that too
        (pip fails on a .metadata link that 404s)."""
        for entry in files:
            if self._is_cached(name, entry, False):
                if entry.metadata is not None and not self._is_cached(name, entry, True):
                    entry = entry._replace(metadata=None)
                yield entry

    def rendered_list(self, media: str, compress: bool) -> tuple:
        """(Rendered, stale, hit) of the merged project list in *media*."""
        if self._offline:
            names = sorted({canonicalize_name(n) for cache in self.caches for n in cache.saved_projects()})
            lists, version, stale = [ProjectList.from_names(names)], (hash(tuple(names)),), False
            hit = self._count([])  # read from the saved pages: nothing upstream to ask
        else:
            lookups = [cache.project_list() for cache in self.caches]
            lists = [lookup.value for lookup in lookups if lookup.value is not None]
            version = tuple(lookup.version for lookup in lookups)
            stale = any(lookup.stale for lookup in lookups)
            hit = self._count(lookups)
        make = lambda: render_project_list(merge_lists(lists), media)  # noqa: E731
        return self._render(("list", media, compress), version, make, compress), stale, hit

    def _render(self, key: tuple, version: tuple, make: Callable[[], bytes], compress: bool) -> Rendered:
        # Only the coding a client asked for is kept: pip and uv always take gzip, so the
        # (5-10x larger) identity form of most pages is never held in memory.
        page = self._rendered.get(key, version)
        if page is None:
            page = render(make(), compress)
            self._rendered.put(key, version, page)
        return page

    def project_page(self, name: NormalizedName) -> ProjectPage:
        """The merged page of project *name* from the indices the policy asks, with the
        files a policy hides still in it (so that ``warm`` can name them refused, see
        :meth:`refusal`, rather than missing).

        :raises NotFound: no index has the project.
        :raises Forbidden: the deny or allow list refuses it.
        :raises UpstreamError: an index failed and had no copy to serve instead.
        """
        if self._policy is None:
            return self._merged(name, [cache.project(name) for cache in self.caches])
        filtered = self._view(name)[0].filtered
        return filtered.page._replace(files=filtered.page.files + tuple(filtered.hidden.values()))

    def refusal(self, name: NormalizedName, entry: FileEntry) -> Optional[str]:
        """Why a policy refuses *entry* of project *name* now, or None."""
        if self._policy is None:
            return None
        filtered = self._view(name)[0].filtered
        if entry.filename not in filtered.hidden:
            return None
        return self._policy.refusal(name, entry, self._wall_clock())

    def find_file(self, name: NormalizedName, filename: str) -> FileEntry:
        """The entry an index lists for *filename* in project *name*.

        :raises NotFound: no index lists it (we only ever fetch listed URLs), or none
            of those a pin or first-index leaves (the message says which).
        :raises Forbidden: a policy refuses the project or this file (one INFO line).
        """
        return self.locate_file(name, filename)[0]

    def locate_file(self, name: NormalizedName, filename: str) -> tuple:
        """(entry, URL of the index that listed it, without credentials) for *filename*.

        :raises NotFound: no index lists it, or none of those a pin or first-index
            leaves (the message says which).
        :raises Forbidden: a policy refuses the project or this file (one INFO line).
        """
        if self._policy is not None:
            return self._locate_by_policy(self._policy, name, filename)
        lookups = [cache.project(name) for cache in self.caches]
        version = tuple(lookup.version for lookup in lookups)
        with self._lock:
            found = self._file_maps.get(name)
            if found is not None and found[0] == version:
                self._file_maps.move_to_end(name)
        if found is None or found[0] != version:
            origins: dict = {}
            for cache, lookup in zip(self.caches, lookups):  # first index wins, as in merging
                label = cache.settings.display_url
                for entry in lookup.value.files if lookup.value is not None else ():
                    origins.setdefault(entry.filename, label)
            files = {entry.filename: (entry, origins.get(entry.filename, "")) for entry in self._merged(name, lookups).files}
            found = (version, files)
            with self._lock:
                self._file_maps[name] = found
                if len(self._file_maps) > MAX_FILE_MAPS:
                    self._file_maps.popitem(last=False)
        located = found[1].get(filename)
        if located is None:
            raise NotFound(f"{filename!r} is not a file of project {name!r}")
        return located

    def _locate_by_policy(self, policy: Policy, name: NormalizedName, filename: str) -> tuple:
        try:
            view = self._view(name)[0]
        except Forbidden as exc:
            logger.info("refused %s/%s: %s", name, filename, exc.message)
            raise
        located = view.files.get(filename)
        if located is not None:
            return located
        hidden = view.filtered.hidden.get(filename)
        if hidden is not None:
            reason = policy.refusal(name, hidden, self._wall_clock())
            logger.info("refused %s/%s: %s", name, filename, reason)
            raise Forbidden(reason)
        which, note = policy.not_found_note(name, view.asked)
        if which is not None:
            policy.count_refused(which)
            logger.info("refused %s/%s: not listed%s", name, filename, note)
        raise NotFound(f"{filename!r} is not a file of project {name!r}{note}")

    def invalidate_project(self, name: NormalizedName) -> None:
        for cache in self.caches:
            cache.invalidate(name)

    def invalidate_list(self) -> None:
        for cache in self.caches:
            cache.invalidate_list()
