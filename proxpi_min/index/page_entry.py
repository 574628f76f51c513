"""What an index cache keeps of each page (:class:`PageEntry`) and the answer it gives
for it (:class:`Lookup`)."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, Optional, Union

from ..core.errors import BadUpstreamPage
from ..core.simple import ProjectList, ProjectPage
from .page_store import RawPage

__all__ = ["DROPPED", "Lookup", "PageEntry", "Value", "check_plausible", "fetched_at"]

Value = Union[ProjectPage, ProjectList, None]  # None: upstream says there is no such page
DROPPED: Any = object()  # the value of an entry whose page left memory (see ``residence``)
_generations = itertools.count(1)


class Lookup(NamedTuple):
    """One index's answer for a page, as the catalog merges it."""

    value: Value
    generation: int  # changes whenever value does
    stale: bool  # the last refresh failed; value is the last good copy
    cached: bool = True  # answered from memory, without asking upstream or the disk
    # Seconds it stays fresh here (the TTL less its age); None: not counted (offline, stale).
    fresh_for: Optional[float] = None
    fetched: bool = False  # the index sent the page now (not a 304, not a stale copy)


class PageEntry:
    """A page as an index cache keeps it: the page, its validators, when it was fetched,
    and how its last refreshes went."""

    __slots__ = (
        "value", "generation", "fetched", "url", "etag", "last_modified", "failures", "retry_at", "save_at", "raw",
        "stamp", "ask_again", "upstream_stale",
    )

    def __init__(self, value: Value, url: str, etag: Optional[str], last_modified: Optional[str], fetched: float) -> None:
        self.value = value
        self.generation = next(_generations)
        self.fetched = fetched
        self.url = url
        self.etag = etag
        self.last_modified = last_modified
        self.failures = 0
        self.retry_at = 0.0
        self.save_at = 0.0  # not 0: the last save failed; try again from then on
        self.raw: Optional[RawPage] = None  # the page as upstream sent it, until saved
        self.stamp: Optional[tuple] = None  # offline: the saved copy's, when read (PageStore.stamp)
        self.ask_again = False  # its index said not to reuse it unasked (see PageResponse)
        self.upstream_stale = False  # its index served it stale (a proxpi-min in an outage)

    def lookup(self) -> Lookup:
        return Lookup(self.value, self.generation, self.failures > 0 or self.upstream_stale)

    @property
    def held(self) -> bool:
        return self.value is not DROPPED

    def dropped(self) -> "PageEntry":
        """A copy without the page (see ``residence``). A copy, so that a thread holding
        this entry still finds its page in it."""
        copy = PageEntry(DROPPED, self.url, self.etag, self.last_modified, self.fetched)
        copy.generation, copy.failures, copy.retry_at = self.generation, self.failures, self.retry_at
        copy.ask_again, copy.upstream_stale = self.ask_again, self.upstream_stale
        return copy


def fetched_at(ask_again: bool, now: float, ttl: float) -> float:
    """When a page counts as fetched: *now*, or a TTL ago (expired, answered with no
    lifetime left) where its index says to ask again each time (a proxpi-min with
    uploads, or serving a stale copy)."""
    return now - ttl if ask_again else now


def check_plausible(value: Union[ProjectPage, ProjectList], old: Optional[PageEntry]) -> None:
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
