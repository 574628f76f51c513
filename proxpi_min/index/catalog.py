"""All configured indices as one: their pages merged, the guard-rail policies applied,
and the result rendered once per change (see :class:`Indexes`)."""

from __future__ import annotations

import collections
import functools
import logging
import operator
import threading
import time
from typing import Callable, Iterable, NamedTuple, Optional, Union

from ..infra.background import Background
from ..core.urls import redact_url
from ..core.errors import Forbidden, NotFound
from ..infra.metrics import Metrics
from ..core.names import NormalizedName, canonicalize_name
from ..core.policy import Filtered, Policy
from ..core.render import Rendered, gzipped, render, render_project_list, render_project_page, worth_compressing
from ..core.simple import FileEntry, ProjectList, ProjectPage, merge_lists, merge_pages

__all__ = ["Indexes"]

logger = logging.getLogger(__name__)

MAX_FILE_MAPS = 256  # projects whose file-name index is kept
_FILENAME = operator.itemgetter(0)  # FileEntry.filename
# Pages after the policies (each a new tuple over the same entries, and a file-name
# index), counted in files like index_cache.MAX_RESIDENT_FILES.
MAX_VIEW_FILES = 100_000
# A rendered page up to this size is answered uncompressed the first time and compressed
# after the answer (see Indexes._render). A larger one (the root list of a whole index)
# is compressed first: sending it uncompressed over a slow link costs more.
ANSWER_FIRST_MAX = 4 << 20
CLOSE_SECONDS = 30.0  # at most this long at shutdown for the saves still queued


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

    def holds(self, size: int) -> bool:
        """Whether a page of *size* bytes would be kept."""
        return size <= self._budget

    def replace(self, key: tuple, version: tuple, old: Rendered, new: Rendered) -> None:
        """Put *new* in place of *old*, unless the page changed (or left) meanwhile."""
        with self._lock:
            found = self._pages.get(key)
            if found is not None and found[0] == version and found[1] is old:
                self._put(key, version, new)

    def put(self, key: tuple, version: tuple, page: Rendered) -> None:
        with self._lock:
            self._put(key, version, page)

    def _put(self, key: tuple, version: tuple, page: Rendered) -> None:
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
        background: Optional[Background] = None,
    ) -> None:
        self.caches = caches
        self._background = background
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
        origins = _origins(pages)
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
        policy = self._policy if self._policy is not None and self._policy.filters_list else None

        def make() -> bytes:
            merged = merge_lists(lists)
            if policy is not None:  # rendered once per change, so filtered once per change
                merged = ProjectList.from_names(n for n in merged if policy.listed(canonicalize_name(n)))
            return render_project_list(merged, media)

        return self._render(("list", media, compress), version, make, compress), stale, hit

    def _render(self, key: tuple, version: tuple, make: Callable[[], bytes], compress: bool) -> Rendered:
        # Only the coding a client asked for is kept: pip and uv always take gzip, so the
        # (5-10x larger) identity form of most pages is never held in memory for long.
        page = self._rendered.get(key, version)
        if page is None:
            page = render(make(), False)
            # Answer first: this client (and any other until it is done) gets the page as
            # it is, which it may take whatever it accepts (RFC 9110 12.5.3); compressing
            # it first would keep it waiting ~20 ms for a page of 5,000 files.
            answer_first = (
                compress
                and self._background is not None
                and worth_compressing(page)
                and len(page.body) <= ANSWER_FIRST_MAX
                and self._rendered.holds(len(page.body))
            )
            if compress and not answer_first:
                page = gzipped(page)
            self._rendered.put(key, version, page)
            if answer_first:
                self._background.submit(functools.partial(self._compress, key, version, page))
        return page

    def _compress(self, key: tuple, version: tuple, page: Rendered) -> None:
        self._rendered.replace(key, version, page, gzipped(page))

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait up to *timeout* seconds for the pages still being saved or compressed
        after their answer; True if none is left."""
        return self._background is None or self._background.flush(timeout)

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """At shutdown: finish saving the pages answered so far (so that a restarted or
        offline proxy finds them all); later ones are saved before their answer. A disk
        that hangs is waited for *timeout* seconds at most (a WARNING says so)."""
        if self._background is None or self._background.close(timeout):
            return True
        logger.warning("stopping with %d pages still to be saved or compressed", self._background.pending)
        return False

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
            having = [(cache, lookup.value) for cache, lookup in zip(self.caches, lookups) if lookup.value is not None]
            if len(having) == 1:  # the usual case: one index has it, every file is its own
                # Mapped at C speed (4,415 numpy files, on the first file asked for).
                page_files = having[0][1].files
                files = dict(zip(map(_FILENAME, page_files), page_files))
                origin: Union[str, dict] = having[0][0].settings.display_url
            else:
                origin = _origins((cache.settings.url, page) for cache, page in having)
                files = {entry.filename: entry for entry in self._merged(name, lookups).files}
            found = (version, files, origin)
            with self._lock:
                self._file_maps[name] = found
                if len(self._file_maps) > MAX_FILE_MAPS:
                    self._file_maps.popitem(last=False)
        entry = found[1].get(filename)
        if entry is None:
            raise NotFound(f"{filename!r} is not a file of project {name!r}")
        origin = found[2]
        return entry, origin if isinstance(origin, str) else origin.get(filename, "")

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


def _origins(pages: Iterable[tuple]) -> dict:
    """File name -> the URL (without credentials) of the first index listing it, from
    (index URL, page) pairs in index order: the first index wins, as in merging."""
    origins: dict = {}
    for url, page in pages:
        label = redact_url(url)
        for entry in page.files:
            origins.setdefault(entry.filename, label)
    return origins
