"""Prefetch: the pages of the projects a served ``.metadata`` requires, fetched in the
background before the client asks for them (pip and uv ask next for exactly those), and
optionally the metadata of the wheel the client will then pick.

One level per metadata served (the client's next metadata drives the next), on a pool
of *jobs* threads; a page is fetched through the catalog as a client's request would
be, so guard rails apply and a client asking meanwhile joins the one fetch.

The wheel a client will pick is guessed per client (its address and User-Agent): the
interpreter and platform its User-Agent and the platform wheels it took say, and a
version released when the versions it picked so far say its pins were chosen
(:mod:`..core.wheelpick`). Once a client has picked, a page it asks for that was not
in memory has the guessed metadata fetched at once too: pip reads a page before asking
for one of its metadata files, and that read is time the fetch needs no more. A client
that has asked for pages in parallel in the last minute (uv) gets no guesses: it asks
for the metadata at once, and its picks are not even read.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from typing import Callable, Optional, Protocol

from ..core.errors import Forbidden, NotFound, ProxpiError
from ..core.names import NormalizedName
from ..core.simple import FileEntry
from ..core.wheelmeta import BrokenWheel, requirements
from ..core.wheelpick import (
    LockTime, Releases, Tags, client_python, client_tags, joined, lock_time, pick_time, pick_wheels, releases, wheel_tags,
)
from ..infra.metrics import Metrics
from ..infra.pool import WorkerPool
from .catalog import LOCAL_ORIGIN, Catalog

__all__ = ["MetadataSource", "Prefetcher"]

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000  # pages waiting for a thread; past this, prefetches are dropped
MAX_REMEMBERED = 10_000  # prefetched pages and metadata remembered until a client asks
MAX_CLIENTS = 256  # clients whose picks are remembered (the oldest dropped first)
MAX_PICKS = 64  # a client's latest picks that say when its pins were chosen
# Picks not read yet, the newest kept: a burst of picks says little more than its last
# few, and each costs a pass over its page's files.
MAX_PENDING = 16
MAX_USER_AGENT = 4096  # longer User-Agents are not read for a platform (pip's is ~400 bytes)
MAX_RELEASE_FILES = 100_000  # files of the pages whose releases are kept (one pass over a page's files)
# A client that had page requests under way at once is taken to ask in parallel for
# this long after: uv asks its late pages one at a time, a run of pip never two at once.
PARALLEL_MEMORY = 60.0


class _Client:
    """What one client's picks say of its next: its platform and Python, when its pins
    were chosen."""

    __slots__ = ("like", "python", "picks", "pending", "asking", "parallel_until")

    def __init__(self, like: Optional[Tags], python: Optional[tuple]) -> None:
        self.like = like  # its User-Agent's platform, and the tags of the platform wheels it asked about
        self.python = python  # its User-Agent's Python version, which Requires-Python is checked against
        self.picks: "collections.deque[LockTime]" = collections.deque(maxlen=MAX_PICKS)
        self.pending: collections.deque = collections.deque(maxlen=MAX_PENDING)  # (project, wheel) not read yet
        self.asking = 0  # its page requests under way
        self.parallel_until = float("-inf")  # PARALLEL_MEMORY after its page requests last overlapped


class MetadataSource(Protocol):
    """Where prefetched metadata comes from (``files.metadata.WheelMetadata``)."""

    def prefetch(self, project: NormalizedName, entry: FileEntry, index: str = "") -> bool:
        """Store *entry*'s metadata; False if it was already stored or cannot be had."""


class Prefetcher:
    """Fetches the pages a served metadata's ``Requires-Dist`` names, *jobs* at once;
    with a *metadata* source, also the metadata of the wheel each page's client will
    likely pick, and of a page a client asked for that was not in memory."""

    def __init__(
        self, catalog: Catalog, jobs: int, metrics: Metrics, metadata: Optional[MetadataSource] = None
    ) -> None:
        self._catalog = catalog
        self._clock = time.monotonic
        self._metadata = metadata
        self._lock = threading.Lock()
        self._pool = WorkerPool(jobs, MAX_QUEUED, "proxpi-prefetch")
        self._queued: set = set()  # names queued or being fetched
        self._closed = False  # shutting down: nothing more is queued
        self._clients: "collections.OrderedDict[str, _Client]" = collections.OrderedDict()
        self._readers: "collections.OrderedDict[tuple, str]" = collections.OrderedDict()  # (project, wheel) -> client
        self._releases: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()  # project -> (files, Releases)
        self._release_files = 0
        self._storing = threading.local()  # set in a thread storing a prefetched metadata
        self._fetched: "collections.OrderedDict[tuple, None]" = collections.OrderedDict()  # (kind, ...)
        self._total = metrics.prefetched
        self._used = metrics.prefetch_used
        for kind in ("page", "metadata") if metadata is not None else ("page",):
            self._used.inc(kind, amount=0)

    def metadata_read(self, client: str, project: NormalizedName, filename: str) -> None:
        """*client* asks for the metadata of *filename*: its pick, which says what it
        will pick next (read by the next job that guesses for it: the page may have to
        be fetched, which a client's request must not wait for)."""
        if self._metadata is None:
            return  # pages only: no guesses to make
        known = self._record(client)
        with self._lock:
            if self._closed:
                return
            self._readers.pop((project, filename), None)
            self._readers[(project, filename)] = client
            while len(self._readers) > MAX_REMEMBERED:
                self._readers.popitem(last=False)
            if not self._in_parallel(known):
                known.pending.append((project, filename))

    def _released(self, project: NormalizedName, files: tuple) -> Releases:
        """:func:`releases` of *files*, project *project*'s, worked out once per page."""
        with self._lock:
            kept = self._releases.get(project)
        if kept is not None and kept[0] is files:
            return kept[1]
        released = releases(files)
        with self._lock:
            old = self._releases.pop(project, None)
            self._release_files += len(files) - (len(old[0]) if old is not None else 0)
            self._releases[project] = (files, released)
            while self._release_files > MAX_RELEASE_FILES and len(self._releases) > 1:
                self._release_files -= len(self._releases.popitem(last=False)[1][0])
        return released

    def _record(self, client: str) -> _Client:
        """*client*'s record, made the newest; a new one reads its User-Agent, outside
        the lock."""
        with self._lock:
            known = self._clients.pop(client, None)
            if known is not None:
                self._clients[client] = known
                return known
        agent = client.partition(" ")[2]
        readable = len(agent) <= MAX_USER_AGENT
        fresh = _Client(client_tags(agent) if readable else None, client_python(agent) if readable else None)
        with self._lock:
            known = self._clients.pop(client, None) or fresh  # another thread's, if it came first
            self._clients[client] = known
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            return known

    def _guess(self, client: Optional[str]) -> tuple:
        """(tags, lock time, Python version) *client*'s next pick will likely have, each
        None if unknown, once its picks not read yet are (in a job of the pool)."""
        if client is None:
            return None, None, None
        known = self._record(client)
        with self._lock:
            pending = list(known.pending)
            known.pending.clear()
        for project, filename in pending:
            files = self._catalog.files_in_memory(project)  # gone since: the pick is not worth a fetch
            if files is None:
                continue
            picked = pick_time(self._released(project, files), filename)
            tags = wheel_tags(filename)
            with self._lock:
                if picked is not None:
                    known.picks.append(picked)
                if tags is not None and not tags.pure:
                    known.like = joined(known.like, tags)
        with self._lock:
            return known.like, lock_time(known.picks), known.python

    def page_asked(self, client: str) -> Optional[object]:
        """*client* asks for a project page; pass what this returns to :meth:`page_read`."""
        if self._metadata is None:
            return None  # pages only: no guesses to make
        known = self._record(client)
        with self._lock:
            known.asking += 1
            if known.asking > 1:
                known.parallel_until = self._clock() + PARALLEL_MEMORY
                known.pending.clear()
        return known

    def _in_parallel(self, known: _Client) -> bool:
        """Whether the client *known* asks in parallel (see PARALLEL_MEMORY). Such a
        client (uv) asks for a page's metadata as soon as it has the page: a guess has
        no time to win, only CPU time to take from the pages being answered. Lock held."""
        return known.asking > 1 or known.parallel_until > self._clock()

    def _asks_in_parallel(self, client: Optional[str]) -> bool:
        with self._lock:
            known = self._clients.get(client) if client is not None else None
            return known is not None and self._in_parallel(known)

    def page_read(self, client: str, project: NormalizedName, fetched: bool, asked: Optional[object]) -> None:
        """*client* got project *project*'s page, *fetched* from upstream for it or not
        (*asked*: what :meth:`page_asked` returned). Counts a page prefetched for it;
        once it has picked before, fetches the metadata it will likely ask for next, of
        a page new to memory or prefetched (its guess then made before the client's
        picks said as much). Not for a client with other pages under way, nor for one
        that asks in parallel (see :meth:`_in_parallel`)."""
        prefetched = self._count_used(("page", project))
        with self._lock:
            if isinstance(asked, _Client):
                asked.asking -= 1
                if asked.asking > 0:  # still overlapping: the minute counts from its end
                    asked.parallel_until = self._clock() + PARALLEL_MEMORY
            if self._metadata is None or not (fetched or prefetched):
                return
            known = self._clients.get(client)
            if self._closed or project in self._queued or known is None or not (known.picks or known.pending) \
                    or known.asking > 0 or self._in_parallel(known):
                return
            self._queued.add(project)
        self._submit([project], lambda name: functools.partial(self._prefetch, name, client, asked=True), "metadata")

    def metadata_served(self, project: NormalizedName, filename: str, metadata: bytes) -> None:
        """A client got the metadata of wheel *filename*: queue the pages of the
        projects it requires (an extra's left out)."""
        with self._lock:
            if self._closed:
                return
            # Our own prefetch being stored drives no level: the client's request will,
            # unless a client asked meanwhile and waits on this very store.
            if getattr(self._storing, "metadata", False) and (project, filename) not in self._readers:
                return
            client = self._readers.pop((project, filename), None)
        self._count_used(("metadata", project, filename))
        try:
            names = requirements(metadata)
        except (ValueError, UnicodeError):
            return
        with self._lock:
            new = [name for name in names if name != project and name not in self._queued]
            self._queued.update(new)
        self._submit(new, lambda name: functools.partial(self._prefetch, name, client), "page")

    def _submit(self, names: list, job: Callable, kind: str) -> None:
        """Queue ``job(name)`` for each of *names*, already in ``_queued``; a name whose
        job was dropped (counted as a *kind* prefetch dropped) leaves it. Outside the
        lock: a submit may start a thread, which waits for the GIL."""
        for name in names:
            if not self._pool.submit(job(name)):
                self._total.inc(kind, "dropped")
                with self._lock:
                    self._queued.discard(name)

    def _prefetch(self, name: NormalizedName, client: Optional[str], asked: bool = False) -> None:
        """Bring in project *name*'s page (*asked*: *client* has just had it, in memory),
        then with a metadata source, the metadata of the wheels *client* will likely pick."""
        try:
            if asked:
                files = self._catalog.files_in_memory(name)
            else:
                page = self._page(name)
                files = None if page is None else page.files
            if files is None or self._metadata is None or self._asks_in_parallel(client):
                return
            like, lock, python = self._guess(client)
            if asked and lock is None:
                return  # its own page: guessed only once its picks say when it was pinned
            guesses = pick_wheels(self._released(name, files), like, lock, python)
            for entry in guesses[1:]:  # at once, not after the first
                if not self._pool.submit(functools.partial(self._wheel_metadata, name, entry)):
                    self._total.inc("metadata", "dropped")
            for entry in guesses[:1]:
                self._wheel_metadata(name, entry)
        finally:
            with self._lock:
                self._queued.discard(name)

    def _page(self, name: NormalizedName):
        """The page, brought into memory (counted); None if there is none to use."""
        outcome, page = "error", None
        try:
            outcome, page = self._catalog.bring_in(name)
        except NotFound:
            outcome = "not_found"
        except Forbidden:
            outcome = "refused"
        except ProxpiError as exc:
            logger.warning("prefetch of the page of %s failed: %s", name, exc.message)
        except Exception:  # a prefetch must never take a thread of the pool down
            logger.exception("prefetch of the page of %s failed", name)
        self._total.inc("page", outcome)
        if outcome == "fetched":
            self._remember(("page", name))
        return page

    def _wheel_metadata(self, name: NormalizedName, entry: FileEntry) -> None:
        key = (name, entry.filename)
        self._storing.metadata = True
        with self._lock:  # now: a client asking meanwhile is a use
            ours = ("metadata", *key) not in self._fetched
        if ours:
            self._remember(("metadata", *key))
        outcome = "error"
        try:
            # Where the page this job made lists it: at an index TTL of 0, asking anew fetches the page again.
            location = self._catalog.locate_file_in_memory(name, entry.filename)
            if location is None:  # memory has dropped the page since
                location = self._catalog.locate_file(name, entry.filename)
            if location.index == LOCAL_ORIGIN:  # the local index's own wheel: nothing to fetch
                outcome = "fresh"
            else:
                outcome = "fetched" if self._metadata.prefetch(name, location.entry, location.index) else "fresh"
        except BrokenWheel:
            outcome = "broken"
        except (NotFound, Forbidden):
            outcome = "not_found"
        except ProxpiError as exc:
            logger.warning("prefetch of the metadata of %s failed: %s", entry.filename, exc.message)
        except Exception:  # a prefetch must never take a thread of the pool down
            logger.exception("prefetch of the metadata of %s failed", entry.filename)
        finally:
            self._storing.metadata = False
        self._total.inc("metadata", outcome)
        if outcome != "fetched" and ours:
            with self._lock:
                self._fetched.pop(("metadata", *key), None)

    def _remember(self, key: tuple) -> None:
        with self._lock:
            self._fetched[key] = None
            while len(self._fetched) > MAX_REMEMBERED:
                self._fetched.popitem(last=False)

    def _count_used(self, key: tuple) -> bool:
        """Count a prefetched page or metadata a client asked for; True if it was one."""
        if key not in self._fetched:
            return False
        with self._lock:
            used = self._fetched.pop(key, False) is None
        if used:
            self._used.inc(key[0])
        return used

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is queued or being fetched (tests, shutdown)."""
        return self._pool.wait(timeout)

    def close(self, timeout: float) -> None:
        """Queue nothing more, drop what waits, and give the fetches under way *timeout*
        seconds to end, so that none writes to caches being closed."""
        with self._lock:
            self._closed = True
        self._pool.close(timeout)
