"""All configured indices as one catalog: their pages merged, the guard-rail policies
applied, and the result rendered once per change (see :class:`Catalog`)."""

from __future__ import annotations

import collections
import logging
import operator
import threading
import time
import urllib.parse
from typing import Callable, Iterable, NamedTuple, Optional, Protocol, Union

from ..core.errors import Forbidden, NotFound
from ..core.names import NormalizedName, canonicalize_name
from ..core.policy import Filtered, Policy
from ..core.render import Rendered, identity_body, render_project_list, render_project_page, with_files_rendered_anew
from ..core.simple import FileEntry, ProjectList, ProjectPage, merge_lists, merge_pages
from ..core.urls import redact_url
from ..infra.background import Background
from ..infra.metrics import Metrics
from .rendered_pages import RenderedPages, interim

__all__ = ["LOCAL_ORIGIN", "Catalog", "FileLocation", "LocalPages", "MetadataAdvert", "PageAnswer"]

logger = logging.getLogger(__name__)

_FILENAME = operator.itemgetter(0)  # FileEntry.filename
# Pages after the policies (each a new tuple over the same entries, and a file-name
# index), counted in files like residence.MAX_RESIDENT_FILES.
MAX_VIEW_FILES = 100_000
CLOSE_SECONDS = 30.0  # at most this long at shutdown for the saves still queued
LOCAL_ORIGIN = "local"  # FileLocation.index of a file of the local index (uploads)


class LocalPages(Protocol):
    """The local index (``files.local.LocalIndex``) as the catalog reads it."""

    def page(self, project: NormalizedName) -> Optional[tuple]:
        """(generation, ProjectPage) of a local project, or None."""

    def projects(self) -> list:
        """Every local project's name."""


class PageAnswer(NamedTuple):
    """A page to answer with, and how it was come by."""

    rendered: Rendered
    stale: bool  # an index answered with its last good copy (upstream failing)
    hit: bool  # no index had to ask upstream
    policies: str = ""  # the guard rails that changed the page, comma-separated
    fresh_for: Optional[float] = None  # seconds until an index asks upstream again; None: not counted
    interim: bool = False  # the identity form a gzip client gets until the gzip one is made
    fetched: bool = False  # an index sent its page now: the answer's bytes came from upstream


class FileLocation(NamedTuple):
    """A file an index lists, and that index's URL without credentials."""

    entry: FileEntry
    index: str


class MetadataAdvert(Protocol):
    """What pages advertise of wheels their index lists without metadata (PEP 658),
    implemented by ``files.metadata.WheelMetadata``."""

    def advertise(self, project: NormalizedName, files: tuple, local: frozenset = frozenset()) -> tuple:
        """*files*, with the metadata the proxy serves itself advertised (not for the
        files named in *local*, the local index's, which carry their own or none)."""

    def generation(self, project: NormalizedName) -> tuple:
        """Changes whenever :meth:`advertise` would say something new for *project*."""

    def changed_since(self, project: NormalizedName, generation: tuple) -> Optional[frozenset]:
        """The names of the files of *project* that :meth:`advertise` may say something
        new of since *generation*; None if that cannot be told."""


class _View(NamedTuple):
    """A project page after the policies, for the upstream pages it was made from."""

    generation: tuple  # the asked indices' Lookup generations
    filtered: Filtered
    files: dict  # file name -> FileEntry kept
    origin: Union[str, dict]  # the one index's URL (without credentials), or file name -> URL
    asked: tuple  # positions of the indices asked
    local: frozenset = frozenset()  # names of the files from the local index


class Catalog:
    """All configured indices as one: merged pages, rendered once per change.

    *is_cached* tells whether the file cache holds a file; offline, project pages list
    only those, so pip never picks a file we cannot serve, and so do the stale pages of
    an index failing as a whole, for the files on its own host. *policy* (guard
    rails; none by default) is applied to every merged page, so pages in every format,
    offline pages, metadata files and direct file URLs agree; *wall_clock* is what
    cooldowns count in. A project of the *local* index is served from it alone, no
    upstream asked (dependency confusion), unless *local_merge*; its files pass
    *local_policy* (the guard rails without the cooldown, by default) instead.
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
        local: Optional[LocalPages] = None,
        local_merge: bool = False,
        local_policy: Optional[Policy] = None,
        metadata: Optional[MetadataAdvert] = None,
    ) -> None:
        self.caches = caches
        self._local = local
        self._local_merge = local_merge
        self._local_policy = local_policy if local_policy is not None else Policy([LOCAL_ORIGIN])
        self._metadata = metadata
        self._background = background
        self.metrics = metrics or Metrics()
        # No policy is a policy that hides nothing: one way through for every page.
        self._policy = policy if policy is not None else Policy([cache.settings.url for cache in caches])
        self._wall_clock = wall_clock
        self._views: "collections.OrderedDict[str, _View]" = collections.OrderedDict()
        self._view_files = 0
        self._offline = offline
        self._is_cached = is_cached
        self._cache_generation = cache_generation
        self._pages = RenderedPages(page_memory, background)
        self._lock = threading.Lock()

    def _count(self, lookups: list, positions: Iterable[int]) -> bool:
        """Count a page hit (every index answered from memory, or offline: from the saved
        pages, with nothing upstream to ask) or miss, and each index that answered with a
        stale copy; True for a hit. *positions*: the indices that gave *lookups*."""
        hit = self._offline or all(lookup.cached for lookup in lookups)
        (self.metrics.hit if hit else self.metrics.miss)("page")
        for position, lookup in zip(positions, lookups):
            if lookup.stale:
                self.metrics.stale.inc(self.caches[position].settings.display_url)
        return hit

    def rendered_project(self, name: NormalizedName, media: str, compress: bool, all_files: bool = False) -> PageAnswer:
        """The merged project page in *media*; *all_files*: also, online, those of an
        index failing as a whole that the cache does not hold.

        :raises NotFound: no index has the project.
        :raises Forbidden: the deny or allow list refuses it.
        :raises UpstreamError: an index failed and had no copy to serve instead.
        """
        asked, lookups, local = self._ask(name)
        hit = self._count(lookups, asked)
        view = self._view(name, asked, lookups, local)
        # The instant since which this filtered answer holds: a cached page stays right
        # until a hidden file's cooldown ends (the view is then remade).
        generation = (*view.generation, view.filtered.since)
        if self._offline:
            generation += (self._cache_generation(),)
        metadata = self._metadata
        if metadata is not None:
            generation += (metadata.generation(name),)
        down = frozenset()
        if self._is_cached is not None and not self._offline and not all_files:
            down = self._hosts_down(asked)
        if down:
            generation += (down, self._cache_generation())

        def make() -> bytes:
            page = view.filtered.page
            if (self._offline or down) and self._is_cached is not None:
                page = page._replace(files=tuple(self._offline_files(name, page.files, view.local, down)))
            if metadata is not None:  # after the offline filter: a cached wheel has its METADATA
                page = page._replace(files=metadata.advertise(name, page.files, view.local))
            return render_project_page(page, media)

        def patch(old_generation: tuple, old_page: Rendered) -> Optional[bytes]:
            """The page kept before, if only metadata learned since tells it from this one:
            each such wheel written anew (a large page costs a whole render otherwise)."""
            if old_generation[:-1] != generation[:-1]:
                return None
            changed = metadata.changed_since(name, old_generation[-1])
            if changed is None:
                return None
            entries = tuple(entry for entry in view.filtered.page.files if entry.filename in changed)
            advertised = metadata.advertise(name, entries, view.local)
            return with_files_rendered_anew(identity_body(old_page), media, advertised)

        # Patched only where the metadata generation is the last part of the page's.
        patchable = metadata is not None and not down and not self._offline
        rendered = self._pages.page(
            ("project", name, media, compress, bool(down)), generation, make, media, compress,
            patch if patchable else None,
        )
        # Filtered for an outage: a front cache must not keep it past the outage.
        stale = bool(down) or any(lookup.stale for lookup in lookups)
        fresh_for = _fresh_for(lookups)
        if fresh_for is not None and view.filtered.until < float("inf"):  # a hidden file's cooldown ends
            fresh_for = min(fresh_for, max(0.0, view.filtered.until - self._wall_clock()))
        return PageAnswer(
            rendered, stale, hit, view.filtered.policies, fresh_for, interim(rendered, compress),
            any(lookup.fetched for lookup in lookups),
        )

    def files_in_memory(self, name: NormalizedName) -> Optional[tuple]:
        """Project *name*'s files after the policies, as last made for a client, if still
        in memory; nothing is fetched."""
        with self._lock:
            view = self._views.get(name)
        return None if view is None else view.filtered.page.files

    def locate_file_in_memory(self, name: NormalizedName, filename: str) -> Optional[FileLocation]:
        """The entry for *filename* in project *name*'s page after the policies, and
        where it is listed, as last made if still in memory (None: not there, or not
        listed); nothing is fetched."""
        with self._lock:
            view = self._views.get(name)
        entry = None if view is None else view.files.get(filename)
        return None if entry is None else _located(view, entry)

    def bring_in(self, name: NormalizedName) -> tuple:
        """Have project *name*'s page in memory, as a client's request would (same
        guard rails, same one fetch per page), without counting a request or a refusal:
        a prefetch. Returns (``"fetched"``: an index asked upstream, ``"fresh"``: all
        from memory, ``"error"``: an index's refresh failed and its last good copy is
        used; the page after the policies).

        :raises NotFound, Forbidden, UpstreamError: as :meth:`rendered_project`.
        """
        asked, lookups, local = self._ask(name, count=False)
        view = self._view(name, asked, lookups, local)
        if any(lookup.stale for lookup in lookups):
            return "error", view.filtered.page
        return "fresh" if all(lookup.cached for lookup in lookups) else "fetched", view.filtered.page

    def _ask(self, name: NormalizedName, count: bool = True) -> tuple:
        """(positions, lookups, local): the indices the policy asks for project *name*, in
        order, their answers now, and the local index's (generation, page) or None.

        :raises Forbidden: the deny or allow list refuses the project (no index asked;
            counted if *count*).
        """
        route = self._policy.route(name)
        if route.refusal is not None:
            if count:
                self._policy.count_refused(route.refusal[0])
            raise Forbidden(route.refusal[1], route.refusal[0])
        local = self._local.page(name) if self._local is not None else None
        if local is not None and not self._local_merge:
            return (), [], local  # a local project: the upstreams are not even asked
        if not route.first_only:
            return route.positions, [self.caches[position].project(name) for position in route.positions], local
        asked, lookups = [], []
        for position in route.positions:
            lookup = self.caches[position].project(name)
            asked.append(position)
            lookups.append(lookup)
            if lookup.value is not None:
                break
        return tuple(asked), lookups, local

    def _view(self, name: NormalizedName, asked: tuple, lookups: list, local: Optional[tuple] = None) -> _View:
        """The project's page after the policies, from the answers *lookups* of the
        indices at *asked* and the *local* index's; remade when a page changed or a
        cooldown ended.

        :raises NotFound: none of the indices asked has it.
        """
        # The local index counts its own generations: kept apart from the indices'.
        generation = (*[lookup.generation for lookup in lookups], ("local", local[0] if local else None))
        now = self._wall_clock()
        with self._lock:
            view = self._views.get(name)
            if view is not None and view.generation == generation and view.filtered.since <= now < view.filtered.until:
                self._views.move_to_end(name)
                return view
        pages = [
            (self.caches[i].settings.url, lookup.value)
            for i, lookup in zip(asked, lookups)
            if lookup.value is not None
        ]
        if not pages and local is None:
            note = self._policy.not_found_note(name, asked)[1] or (
                " in the offline cache" if self._offline else " on any index"
            )
            raise NotFound(f"project {name!r} is not{note}")
        filtered = None
        if pages:
            merged = pages[0][1] if len(pages) == 1 else merge_pages(name, [page for _, page in pages])
            filtered = self._policy.files(merged, pages, now, cut_short=len(asked) < len(self.caches))
        origin = (redact_url(pages[0][0]) if len(pages) == 1 else _origins(pages)) if pages else LOCAL_ORIGIN
        local_files: frozenset = frozenset()
        if local is not None:
            mine = self._local_policy.files(local[1], [(LOCAL_ORIGIN, local[1])], now, cut_short=False)
            local_files = frozenset(entry.filename for entry in mine.page.files)  # what its policy kept
            if filtered is None:  # served from the local index alone
                filtered = mine._replace(policies=",".join(filter(None, ("local", mine.policies))))
            else:
                filtered = _combine(name, mine, filtered)
                origin = {**_origins(pages), **dict.fromkeys(local_files, LOCAL_ORIGIN)}
        kept = filtered.page.files
        # A wheel request must not scan botocore's files: mapped by name at C speed, the
        # first of a name listed twice last, so that it wins.
        files = dict(zip(map(_FILENAME, reversed(kept)), reversed(kept)))
        if len(files) != len(kept):  # the page lists the one the file route serves
            kept = tuple(entry for entry in kept if files[entry.filename] is entry)
            filtered = filtered._replace(page=filtered.page._replace(files=kept))
        view = _View(generation, filtered, files, origin, asked, local_files)
        with self._lock:
            old = self._views.pop(name, None)
            self._view_files -= len(old.files) + 1 if old is not None else 0
            self._views[name] = view
            self._view_files += len(view.files) + 1
            while self._view_files > MAX_VIEW_FILES and len(self._views) > 1:
                _, dropped = self._views.popitem(last=False)
                self._view_files -= len(dropped.files) + 1
        return view

    def index_down(self, index: str) -> bool:
        """Whether the index *index* (its URL without credentials, as a FileLocation
        names it) is failing as a whole now."""
        return any(cache.unreachable() and redact_url(cache.settings.url) == index for cache in self.caches)

    def _hosts_down(self, positions: Iterable[int]) -> frozenset:
        """The hosts of the indices at *positions* that are failing as a whole now."""
        return frozenset(_host(self.caches[at].settings.url) for at in positions if self.caches[at].unreachable())

    def _offline_files(self, name: NormalizedName, files: tuple, local: frozenset, down: frozenset = frozenset()):
        """The files the cache holds (and the local ones; with *down*, those on other
        hosts than these), advertising metadata only where it holds that too (pip fails
        on a .metadata link that 404s)."""
        for entry in files:
            if entry.filename in local or (down and _host(entry.url) not in down):
                yield entry
            elif self._is_cached(name, entry, False):
                if entry.metadata is not None and not self._is_cached(name, entry, True):
                    entry = entry._replace(metadata=None)
                yield entry

    def rendered_list(self, media: str, compress: bool) -> PageAnswer:
        """The merged project list in *media*."""
        if self._offline:
            names = sorted({canonicalize_name(n) for cache in self.caches for n in cache.saved_projects()})
            lists, generation, stale, lookups = [ProjectList.from_names(names)], (hash(tuple(names)),), False, []
            hit = self._count([], ())  # read from the saved pages: nothing upstream to ask
        else:
            lookups = [cache.project_list() for cache in self.caches]
            lists = [lookup.value for lookup in lookups if lookup.value is not None]
            generation = tuple(lookup.generation for lookup in lookups)
            stale = any(lookup.stale for lookup in lookups)
            hit = self._count(lookups, range(len(self.caches)))
        local_names = self._local.projects() if self._local is not None else []
        if local_names:  # none (a server watching for uploads): the upstreams' list, not merged again
            lists.append(ProjectList.from_names(local_names))
            generation += (hash(tuple(local_names)),)
        policy = self._policy if self._policy.filters_list else None

        def make() -> bytes:
            merged = merge_lists(lists)
            if policy is not None:  # rendered once per change, so filtered once per change
                merged = ProjectList.from_names(n for n in merged if policy.listed(canonicalize_name(n)))
            return render_project_list(merged, media)

        rendered = self._pages.page(("list", media, compress), generation, make, media, compress)
        fetched = any(lookup.fetched for lookup in lookups)
        policies = self._policy.list_policies if policy is not None else ""
        return PageAnswer(rendered, stale, hit, policies, _fresh_for(lookups), interim(rendered, compress), fetched)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait up to *timeout* seconds for the pages still being saved or compressed
        after their answer; True if none is left."""
        return self._background is None or self._background.flush(timeout)

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """At shutdown: finish saving the pages and metadata answered so far (so that a
        restarted or offline proxy finds them all); later ones are saved before their
        answer. A disk that hangs is waited for *timeout* seconds at most (a WARNING
        says so)."""
        if self._background is None or self._background.close(timeout):
            return True
        logger.warning(
            "stopping with %d pages or metadata files still to be saved or compressed", self._background.pending
        )
        return False

    def project_page(self, name: NormalizedName) -> ProjectPage:
        """The merged page of project *name* from the indices the policy asks, with the
        files a policy hides still in it (so that ``warm`` can name them refused, see
        :meth:`refusal`, rather than missing).

        :raises NotFound: no index has the project.
        :raises Forbidden: the deny or allow list refuses it.
        :raises UpstreamError: an index failed and had no copy to serve instead.
        """
        filtered = self._view(name, *self._ask(name)).filtered
        if not filtered.hidden:
            return filtered.page
        return filtered.page._replace(files=filtered.page.files + tuple(filtered.hidden.values()))

    def refusal(self, name: NormalizedName, entry: FileEntry) -> Optional[str]:
        """Why a policy refuses *entry* of project *name* now, or None."""
        if not self._policy.active:
            return None
        filtered = self._view(name, *self._ask(name)).filtered
        if entry.filename not in filtered.hidden:
            return None
        return self._policy.refusal(name, entry, self._wall_clock())

    def locate_file(self, name: NormalizedName, filename: str) -> FileLocation:
        """The entry an index lists for *filename* in project *name*, and where.

        :raises NotFound: no index lists it (we only ever fetch listed URLs), or none of
            those a pin or first-index leaves (the message says which).
        :raises Forbidden: a policy refuses the project or this file (one INFO line).
        """
        policy = self._policy
        try:
            view = self._view(name, *self._ask(name))
        except Forbidden as exc:
            logger.info("refused %s/%s: %s", name, filename, exc.message)
            raise
        entry = view.files.get(filename)
        if entry is not None:
            return _located(view, entry)
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

    def policy_counts(self) -> dict:
        """What the policies counted (:meth:`Policy.counts`), the local files' among them."""
        counts = collections.Counter(self._policy.counts())
        counts.update(self._local_policy.counts())
        return dict(counts)

    def invalidate_project(self, name: NormalizedName) -> None:
        for cache in self.caches:
            cache.invalidate(name)

    def invalidate_list(self) -> None:
        for cache in self.caches:
            cache.invalidate_list()


def _located(view: _View, entry: FileEntry) -> FileLocation:
    """*entry*, a file *view* keeps, with the index that listed it."""
    origin = view.origin
    return FileLocation(entry, origin if isinstance(origin, str) else origin.get(entry.filename, ""))


def _combine(name: NormalizedName, local: Filtered, upstream: Filtered) -> Filtered:
    """The local page merged before the upstream ones (a file name there wins), each
    already filtered by its own policy (PROXPI_LOCAL_MERGE)."""
    policies = sorted({p for p in (*local.policies.split(","), *upstream.policies.split(",")) if p})
    return Filtered(
        merge_pages(name, [local.page, upstream.page]),
        {**upstream.hidden, **local.hidden},
        ",".join(policies),
        max(local.since, upstream.since),
        min(local.until, upstream.until),
    )


def _origins(pages: Iterable[tuple]) -> dict:
    """File name -> the URL (without credentials) of the first index listing it, from
    (index URL, page) pairs in index order: the first index wins, as in merging."""
    origins: dict = {}
    for url, page in pages:
        label = redact_url(url)
        for entry in page.files:
            origins.setdefault(entry.filename, label)
    return origins


def _fresh_for(lookups: list) -> Optional[float]:
    """How long a page made of *lookups* stays as it is: until the first of its indices
    asks upstream again (None: no index counts it)."""
    counted = [lookup.fresh_for for lookup in lookups if lookup.fresh_for is not None]
    return min(counted) if counted else None


def _host(url: str) -> tuple:
    """(host, port) of *url*, as a file's and its index's are compared (a port left out
    is its scheme's)."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)
