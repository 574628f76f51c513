"""In-memory index caches with TTLs, one per upstream index.

Per index: each page has its fetch time; an expired page is revalidated upstream
(If-None-Match / If-Modified-Since). When upstream fails, the last good copy is served,
marked stale, and upstream is retried with a back-off. Concurrent requests for the same
page share one upstream fetch. Locks guard only dictionaries, never I/O.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from typing import Callable, NamedTuple, Optional

from ..core.errors import AnswerTooSlow, BadUpstreamPage, Forbidden, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from ..core.names import NormalizedName
from ..core.settings import IndexSettings
from ..core.simple import (
    HTML_TYPE,
    JSON_TYPE,
    TEXT_HTML,
    ProjectPage,
    servable,
)
from ..core.simple_parse import parse_project_list, parse_project_page
from ..core.units import backoff
from ..core.urls import redact_url
from ..infra.background import Background
from ..infra.metrics import Metrics
from .page_entry import DROPPED, Lookup, PageEntry, check_plausible, fetched_at
from .page_store import LIST_KEY, PageStore, RawPage, SavedPage
from .residence import Residence
from .upstream import Upstream

__all__ = ["IndexCache", "Residency"]

logger = logging.getLogger(__name__)

# Upstream pages: JSON preferred (PEP 691), HTML accepted.
UPSTREAM_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, {TEXT_HTML};q=0.01"
# After a failed refresh, wait this long before asking upstream again (doubling per
# failure, up to the maximum) and serve the stale copy meanwhile.
RETRY_FIRST = 2.0
RETRY_MAX = 300.0
# An index's 401 or 403 taken as absence is logged at most this often (seconds): an
# extra index refuses every project it lacks, a lapsed credential every project.
REFUSAL_WARN_SECONDS = 600.0
# A page that could not be saved (disk full, read-only) is saved again on a use at
# least this long after the failed attempt.
SAVE_RETRY = 5.0
# Offline, a page's saved copy is looked at again after this long: warm, or a newer copy
# of the directory, may have rewritten it (read again only then).
OFFLINE_RECHECK = 2.0

MAX_REFUSALS = 10_000  # pages never fetched whose last fetch failed, in their back-off

class Residency(NamedTuple):
    """Which pages of an index are held in memory now (see ``residence``)."""

    in_memory: frozenset  # keys whose answer is in memory (pages, the list, "no such page")
    dropped: frozenset  # keys whose page left memory, read back from its saved copy when asked


class _Refusal(NamedTuple):
    """The costly failure of a page never fetched (too big, too slow, unparsable),
    answered again without asking upstream until *retry_at*: clients must not each
    repeat the read of a huge page. A cheap failure (refused, 5xx) is retried at once."""

    error: type
    message: str
    failures: int
    retry_at: float

    def raise_again(self) -> None:
        # A new exception: the first one's traceback holds the frames of its fetch.
        raise self.error(self.message)


class _Flight:
    """One upstream fetch in progress; followers wait for its result."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Optional[Lookup] = None
        self.error: Optional[BaseException] = None
        # Set (under the cache's lock) by an invalidation after this fetch began: its
        # answer still goes to the clients that asked before, but is not kept.
        self.superseded = False


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
        background: Optional[Background] = None,
        refusal_is_absence: bool = False,
    ) -> None:
        """*background*: where pages are saved after the answer has gone out (without
        one, they are saved before it). *refusal_is_absence*: a 401 or 403 for a page
        means this index has no such project (an extra index on cloud storage, such as
        PyTorch's, refuses the projects it does not have; pip and uv skip such an index)."""
        self.settings = settings
        self._absent = (401, 403, 404, 410) if refusal_is_absence else (404, 410)
        self._refusal_warned = -float("inf")  # when a 401 or 403 taken as absence was last logged
        self.metrics = metrics or Metrics()
        self._label = settings.display_url
        self._upstream = upstream
        self._store = store
        self._offline = offline
        self._clock = clock
        self._background = background
        self._entries: dict[str, PageEntry] = {}
        self._residence = Residence(self._entries)  # what of them stays in memory
        self._flights: dict[str, _Flight] = {}
        self._failing: set = set()  # keys whose last refresh failed (served stale)
        self._refusals: "collections.OrderedDict[str, _Refusal]" = collections.OrderedDict()
        # For the dashboard: Unix times of the last good and failed answers, and why.
        self._last_success: Optional[float] = None
        self._last_failure: Optional[tuple] = None
        # The index as a whole failing (no HTTP answer: timeouts, refused connections):
        # until this clock time, a page with a copy is served stale without asking, as one
        # in back-off is; else each page past its TTL would wait out a hanging index's
        # read timeout.
        self._index_failures = 0
        self._index_retry_at = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def unreachable(self) -> bool:
        """Whether the index as a whole is failing now (timeouts, refused connections),
        so that its stale pages are served without asking (see _index_retry_at)."""
        return self._clock() < self._index_retry_at

    def project(self, name: NormalizedName) -> Lookup:
        """The project's page from this index (value None if upstream has none).

        :raises UpstreamError: upstream failed and no copy was ever fetched.
        """
        return self._get(name)

    def project_list(self) -> Lookup:
        """This index's project list."""
        return self._get(LIST_KEY)

    def invalidate(self, key: str) -> None:
        """Make the next request for *key* (a project name or LIST_KEY) ask upstream,
        even while a fetch begun before is still under way (its answer is not kept).

        The entry keeps its validators and stays the fallback if upstream fails; the
        index is no longer taken as failing as a whole (asked again now, and at a new
        failure taken so again).
        """
        with self._lock:
            entry = self._entries.get(key)
            self._refusals.pop(key, None)
            self._index_answered()
            flight = self._flights.pop(key, None)
            if flight is not None:  # requests from now on start a fetch of their own
                flight.superseded = True
            if entry is not None:
                entry.fetched = float("-inf")
                entry.retry_at = 0.0

    def invalidate_list(self) -> None:
        self.invalidate(LIST_KEY)

    def saved_projects(self) -> list:
        return self._store.saved_projects() if self._store else []

    def health(self) -> dict:
        """The dashboard's view of this index: last success and failure (Unix times),
        the failure's reason, pages served stale now and those waiting out a back-off
        (stale ones, and new ones whose costly failure is remembered)."""
        now = self._clock()
        with self._lock:
            failing = [self._entries[key] for key in self._failing if key in self._entries]
            last_success, last_failure = self._last_success, self._last_failure
            refused = [refusal.retry_at - now for refusal in self._refusals.values() if refusal.retry_at > now]
        waiting = [entry.retry_at - now for entry in failing if entry.retry_at > now] + refused
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

    def resident(self) -> Residency:
        """The keys whose answers are in memory now, and those dropped from it."""
        with self._lock:
            dropped = frozenset(key for key, entry in self._entries.items() if entry.value is DROPPED)
            return Residency(frozenset(self._entries) - dropped, dropped)

    # ------------------------------------------------------------------ lookup

    def _usable(self, entry: PageEntry, now: float) -> bool:
        if self._offline:
            return now - entry.fetched < OFFLINE_RECHECK
        if now - entry.fetched < self.settings.ttl:
            return True
        # In back-off after a failure: keep serving the stale copy without asking.
        return entry.failures > 0 and now < entry.retry_at

    def _fresh_lookup(self, entry: PageEntry, now: float) -> Lookup:
        """*entry*'s answer at *now*, with how long it stays fresh here."""
        answer = entry.lookup()
        if self._offline or entry.failures or entry.fetched == float("-inf"):
            return answer
        return answer._replace(fresh_for=self.settings.ttl - (now - entry.fetched))

    def _get(self, key: str) -> Lookup:
        unsaved = None
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and entry.value is not DROPPED and self._usable(entry, now):
                self._residence.used(key)
                if 0 < entry.save_at <= now:
                    entry.save_at, unsaved = now + SAVE_RETRY, entry
                answer = self._fresh_lookup(entry, now)
            else:
                answer = None
                refusal = self._refusals.get(key) if entry is None else None
                if refusal is not None and now < refusal.retry_at:
                    refusal.raise_again()
        if answer is not None:
            if unsaved is not None:
                self._save_later(key, unsaved)
            return answer
        with self._lock:
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
            flight.result = self._refresh(key, entry, flight)._replace(cached=False)
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:  # not already taken out by an invalidation
                    del self._flights[key]
            flight.done.set()

    def _refresh(self, key: str, entry: Optional[PageEntry], flight: _Flight) -> Lookup:
        """Bring *key* up to date from its saved copy or upstream, as *flight*; runs
        without the lock."""
        if self._offline:
            return self._reread(key, entry)
        entry, answer = self._load_saved(key, entry)
        if answer is not None:
            return answer
        if entry is not None and entry.held and self.unreachable():
            return entry.lookup()._replace(stale=True)
        return self._fetch(key, entry, flight)

    def _reread(self, key: str, entry: Optional[PageEntry]) -> Lookup:
        """Offline: *key*'s saved copy (none: as if upstream said 404), read again only
        once its file changed since *entry* was read."""
        stamp = self._store.stamp(key) if self._store is not None else None
        now = self._clock()
        if entry is not None and entry.held and entry.stamp == stamp:
            with self._lock:
                entry.fetched = now
            return entry.lookup()
        saved = self._store.load(key) if self._store is not None and stamp is not None else None
        if saved is None:
            entry = PageEntry(None, "", None, None, now)
        else:
            entry = PageEntry(saved.value, saved.url, saved.etag, saved.last_modified, now)
        entry.stamp = stamp
        self._store_entry(key, entry, droppable=saved is not None)
        return entry.lookup()

    def _load_saved(self, key: str, entry: Optional[PageEntry]) -> tuple:
        """(entry, answer): *entry* with its page read back from the saved copy if it was
        dropped, or the saved copy as an expired entry if *key* was never in memory; the
        answer when the page read back is still fresh (else None: ask upstream)."""
        if entry is not None and entry.value is DROPPED:
            saved = self._store.load(key) if self._store is not None else None
            if saved is None or saved.etag != entry.etag:
                return None, None  # gone, or rewritten by another proxy: start afresh
            with self._lock:
                entry.value = saved.value  # the same page, so the same generation
                self._residence.read_back(key, entry)
            now = self._clock()
            return entry, self._fresh_lookup(entry, now) if self._usable(entry, now) else None
        if entry is None and self._store is not None:
            saved = self._store.load(key)
            if saved is not None:
                # Loaded as expired-but-usable: revalidated now, the fallback if that fails.
                entry = PageEntry(saved.value, saved.url, saved.etag, saved.last_modified, float("-inf"))
                entry.ask_again = saved.ask_again
                self._store_entry(key, entry, droppable=True)
        return entry, None

    def _fetch(self, key: str, entry: Optional[PageEntry], flight: _Flight) -> Lookup:
        """Ask upstream for *key*, conditionally when *entry* has validators: a 304 keeps
        *entry*, a 404 or a new page replaces it, a failure serves it stale. If *flight*
        is superseded by the time the answer comes, the answer changes nothing kept."""
        url = self.settings.url if key == LIST_KEY else f"{self.settings.url}{key}/"
        refusal = None
        try:
            response = self._upstream.fetch_page(
                url, UPSTREAM_ACCEPT, entry.etag if entry else None, entry.last_modified if entry else None,
                self._absent,
            )
            now = self._clock()
            if response.status == 304 and entry is not None:
                # RFC 9111 4.3.4: the 304's own Cache-Control, if any, replaces the page's.
                return self._unchanged(key, entry, flight, now, response.ask_again, response.stale)
            # Links resolve against the page's URL without credentials: file URLs, pages
            # and saved copies never carry them (Upstream adds them per host).
            page_url = redact_url(response.url)
            if response.status in self._absent:
                if response.status in (401, 403) and entry is not None and entry.value is not None:
                    # It had the project: a lapsed credential, not its absence (stale, as a 5xx).
                    raise UpstreamError(f"upstream answered {response.status}: {page_url}")
                if response.status in (401, 403):
                    refusal = f"index {self._label} answered {response.status} for {page_url}"
                # Kept for the TTL whatever its headers say: errors say no-store (a proxpi-min's).
                new = PageEntry(None, page_url, None, None, now)
            else:
                try:
                    if key == LIST_KEY:
                        value = parse_project_list(response.body, response.content_type)
                    else:
                        value = self._servable(
                            parse_project_page(response.body, response.content_type, page_url, NormalizedName(key))
                        )
                    check_plausible(value, entry)
                except BadUpstreamPage as exc:  # which index, of several, sent it
                    raise BadUpstreamPage(f"{exc}: {page_url}") from None
                ask_again = bool(response.ask_again)
                if entry is not None and value == entry.value and (response.etag, response.last_modified) == (
                    entry.etag, entry.last_modified
                ):  # the same page again (an index without validators): kept, with its renderings
                    return self._unchanged(key, entry, flight, now, ask_again, response.stale, "ok")
                fetched = fetched_at(ask_again, now, self.settings.ttl)
                new = PageEntry(value, page_url, response.etag, response.last_modified, fetched)
                new.ask_again, new.upstream_stale = ask_again, response.stale
                if key != LIST_KEY:
                    new.raw = RawPage(response.body, response.content_type)
        except Forbidden as refused:  # a proxpi-min index's policy refuses the project
            return self._refused(key, refused, flight)
        except UpstreamError as exc:
            return self._failed(key, entry, exc, flight)
        if refusal is None:
            self._succeeded(key, "ok")
        else:
            self._refusal(key, refusal)
        if self._store_entry(key, new, droppable=False, flight=flight) and self._store is not None:
            self._save_later(key, new)
        return self._fresh_lookup(new, now)._replace(fetched=True)

    def _unchanged(
        self, key: str, entry: PageEntry, flight: _Flight, now: float, ask_again: Optional[bool], stale: bool,
        outcome: str = "not_modified",
    ) -> Lookup:
        """*entry*, confirmed by its index: refreshed without re-rendering; *ask_again*
        (None: unsaid) replaces what its page said."""
        self._succeeded(key, outcome)
        with self._lock:
            if flight.superseded:  # current for the clients waiting; not kept as fresh
                return entry.lookup()._replace(stale=False)
            changed = ask_again is not None and ask_again != entry.ask_again
            if changed:
                entry.ask_again = ask_again
            entry.upstream_stale = stale
            entry.fetched, entry.failures, entry.retry_at = fetched_at(entry.ask_again, now, self.settings.ttl), 0, 0.0
            self._residence.restore(key, entry)
        if self._store is not None:  # the saved copy is as recent: last to be pruned
            self._later(functools.partial(self._save if changed else self._touch, key, entry))
        return self._fresh_lookup(entry, now)

    def _refused(self, key: str, refused: Forbidden, flight: _Flight) -> Lookup:
        """A proxpi-min index's policy refuses *key*: an extra index's refusal but a deny
        is its not having the project (its allow list is its own); else the refusal is
        passed on, and the page kept as absent (its saved copy deleted: an outage later
        must not serve it again), asked again on each use."""
        now = self._clock()
        passed_on = refused.policy == "deny" or 403 not in self._absent
        entry = PageEntry(None, "", None, None, now - self.settings.ttl if passed_on else now)
        if self._store_entry(key, entry, droppable=False, flight=flight) and self._store is not None:
            self._save_later(key, entry)
        if passed_on:
            raise refused
        return self._fresh_lookup(entry, now)

    def _save_later(self, key: str, entry: PageEntry) -> None:
        """Save *entry* after the answer."""
        self._later(functools.partial(self._save, key, entry))

    def _later(self, job: Callable[[], None]) -> None:
        """Run *job* after the answer (or now, without a background)."""
        if self._background is None:
            job()
        else:
            self._background.submit(job)

    def _touch(self, key: str, entry: PageEntry) -> None:
        """*entry*, revalidated unchanged: its saved copy touched, or saved again if gone."""
        if not self._store.touch(key):
            self._save(key, entry)

    def _save(self, key: str, entry: PageEntry) -> None:
        """Save *entry*'s page for a restart (or forget the saved copy of a page upstream
        no longer has). Once saved, the page may leave memory and be read back; if it
        could not be saved, a later use of it tries again (see SAVE_RETRY)."""
        if entry.value is None:
            self._store.delete(key)
            return
        saved = SavedPage(entry.value, entry.url, entry.etag, entry.last_modified, entry.ask_again)
        if self._store.save(key, saved, entry.raw):
            with self._lock:
                entry.save_at, entry.raw = 0.0, None
                if self._entries.get(key) is entry:  # not replaced by a newer page meanwhile
                    self._residence.mark(key, entry)
        else:
            with self._lock:
                # Retried from the parsed page: the bytes sent are not kept all that time.
                entry.save_at, entry.raw = self._clock() + SAVE_RETRY, None

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

    def _store_entry(self, key: str, entry: PageEntry, droppable: bool, flight: Optional[_Flight] = None) -> bool:
        """Store *entry*; a *droppable* one (its saved copy is current) may later leave
        memory and be read back. False: not stored, *flight* (the fetch that made it)
        was superseded by an invalidation."""
        with self._lock:
            if flight is not None and flight.superseded:
                return False
            self._residence.put(key, entry, droppable)
        return True

    def _succeeded(self, key: str, outcome: str) -> None:
        self.metrics.upstream.inc(self._label, "page", outcome)
        with self._lock:
            self._failing.discard(key)
            self._refusals.pop(key, None)
            self._last_success = time.time()
            self._index_answered()

    def _index_answered(self) -> None:
        """The index is not failing as a whole (it answered, or is to be asked anew); lock held."""
        self._index_failures, self._index_retry_at = 0, 0.0

    def _refusal(self, key: str, message: str) -> None:
        """An index's 401 or 403, taken as its not having the project (an extra index):
        counted and shown as what it may also be, a credential that lapsed."""
        self.metrics.upstream.inc(self._label, "page", "refused")
        now = time.time()
        with self._lock:
            self._failing.discard(key)
            self._last_failure = (now, message)
            self._index_answered()
            warn = now - self._refusal_warned >= REFUSAL_WARN_SECONDS
            if warn:
                self._refusal_warned = now
        if warn:
            logger.warning("%s: taken as not having it, as for every project it refuses; a lapsed credential looks "
                           "the same", message)

    def _failed(self, key: str, entry: Optional[PageEntry], error: UpstreamError, flight: _Flight) -> Lookup:
        outcome = "timeout" if isinstance(error, UpstreamTimeout) else "error"
        self.metrics.upstream.inc(self._label, "page", outcome)
        costly = isinstance(error, (BadUpstreamPage, UpstreamTimeout))
        delay = None
        with self._lock:
            self._last_failure = (time.time(), error.message)
            now = self._clock()
            # The index, not this page (as a 500 or a slow page may be); counted once a
            # back-off: pages failing together are one failure of the index.
            silent = isinstance(error, UpstreamUnreachable) and not isinstance(error, AnswerTooSlow)
            if silent and now >= self._index_retry_at:
                self._index_failures += 1
                self._index_retry_at = now + backoff(RETRY_FIRST, RETRY_MAX, self._index_failures)
            # After an invalidation the next request asks upstream: no back-off then.
            backs_off = not flight.superseded
            if backs_off and entry is not None:
                self._failing.add(key)
                entry.failures += 1
                delay = backoff(RETRY_FIRST, RETRY_MAX, entry.failures)
                entry.retry_at = self._clock() + delay
                self._residence.restore(key, entry)
            elif backs_off and costly:  # a page too big, too slow: not repeated at once
                last = self._refusals.pop(key, None)
                failures = last.failures + 1 if last is not None else 1
                delay = backoff(RETRY_FIRST, RETRY_MAX, failures)
                self._refusals[key] = _Refusal(type(error), error.message, failures, self._clock() + delay)
                while len(self._refusals) > MAX_REFUSALS:
                    self._refusals.popitem(last=False)
        if entry is None:
            if delay is None:
                logger.warning("%s (nothing cached to serve instead)", error.message)
            else:
                logger.warning("%s (nothing cached to serve instead; next try in %.0f s)", error.message, delay)
            raise error
        if delay is None:
            logger.warning("%s; serving the stale copy of %s", error.message, key)
        else:
            logger.warning("%s; serving the stale copy of %s, next try in %.0f s", error.message, key, delay)
        return entry.lookup()._replace(stale=True)
