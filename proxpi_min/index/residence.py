"""Which of one index's pages an ``IndexCache`` holds in memory, each bounded: parsed
pages up to a count of files, the least recently used dropped first (read back from
their saved copy when asked); what is kept of dropped pages; the names upstream does
not have."""

from __future__ import annotations

import collections
from typing import Protocol

from ..core.simple import ProjectPage

__all__ = ["MAX_ABSENT", "MAX_DROPPED", "MAX_RESIDENT_FILES", "Entry", "Residence"]

# Parsed project pages kept in memory, counted in files (about a kilobyte each, parsed).
# Past this, the least recently used are dropped and read back from their saved copy.
MAX_RESIDENT_FILES = 100_000
MAX_ABSENT = 10_000  # names upstream said it does not have, remembered for their TTL
# Pages dropped from memory whose validators and fetch time are kept (~0.5 KB each); past
# this the least recently used are forgotten: read back from the saved copy as expired
# when asked again, one conditional request.
MAX_DROPPED = 100_000


class Entry(Protocol):
    """What is read here of an index cache's entry."""

    value: object  # a page, a project list, None ("no such project") or the dropped marker
    failures: int  # refreshes failed in a row (its stale copy is in back-off)

    @property
    def held(self) -> bool:
        """Whether its page is in memory (not dropped)."""

    def dropped(self) -> "Entry":
        """A copy without the page."""


class Residence:
    """The bookkeeping over an index cache's *entries* (its dict, changed here): every
    method is called with that cache's lock held."""

    def __init__(self, entries: dict) -> None:
        self._entries = entries
        self._resident: "collections.OrderedDict[str, int]" = collections.OrderedDict()  # LRU first: files
        self._files = 0
        self._dropped: "collections.OrderedDict[str, None]" = collections.OrderedDict()  # LRU first
        self._absent: "collections.OrderedDict[str, None]" = collections.OrderedDict()

    def used(self, key: str) -> None:
        """*key*'s page was answered from memory: the most recently used."""
        if key in self._resident:
            self._resident.move_to_end(key)

    def put(self, key: str, entry: Entry, droppable: bool) -> None:
        """*entry* is *key*'s now; a *droppable* one (its saved copy is current) may leave
        memory later."""
        self._entries[key] = entry
        self._files -= self._resident.pop(key, 0)
        self._dropped.pop(key, None)
        if droppable:
            self.mark(key, entry)
        if entry.value is None:  # "no such project": remembered, but not for ever
            self._absent[key] = None
            self._absent.move_to_end(key)
            while len(self._absent) > MAX_ABSENT:
                forgotten = self._absent.popitem(last=False)[0]
                if self._entries.get(forgotten) is not None and self._entries[forgotten].value is None:
                    del self._entries[forgotten]

    def mark(self, key: str, entry: Entry) -> None:
        """Count *entry*'s page as resident (its saved copy is current) and drop the
        least recently used pages past MAX_RESIDENT_FILES."""
        if not isinstance(entry.value, ProjectPage):
            return
        self._files -= self._resident.pop(key, 0)
        self._resident[key] = len(entry.value.files) + 1
        self._files += self._resident[key]
        self._dropped.pop(key, None)
        while self._files > MAX_RESIDENT_FILES and len(self._resident) > 1:
            dropped, count = self._resident.popitem(last=False)
            self._files -= count
            self._entries[dropped] = self._entries[dropped].dropped()
            self._dropped[dropped] = None
        for _ in range(len(self._dropped) - MAX_DROPPED):
            forgotten = self._dropped.popitem(last=False)[0]
            kept = self._entries.get(forgotten)
            if kept is not None and not kept.held:
                if kept.failures:  # its stale copy's back-off is kept: forgotten later
                    self._dropped[forgotten] = None
                else:
                    del self._entries[forgotten]

    def restore(self, key: str, entry: Entry) -> None:
        """Put back *entry* (with its page) if it was dropped meanwhile."""
        if self._entries.get(key) is not entry:
            self._entries[key] = entry
            self.mark(key, entry)

    def read_back(self, key: str, entry: Entry) -> None:
        """*entry*, dropped, has its page again from its saved copy: resident, unless a
        newer entry took its place meanwhile (kept again if it was forgotten)."""
        current = self._entries.get(key)
        if current is None or current is entry:
            self._entries[key] = entry
            self.mark(key, entry)
