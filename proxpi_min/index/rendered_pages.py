"""Rendered pages kept in memory under a byte budget; gzip done after the answer when it can wait."""

from __future__ import annotations

import collections
import functools
import threading
from typing import Callable, Optional

from ..core.render import Rendered, gzipped, render, worth_compressing
from ..infra.background import Background

__all__ = ["RenderedPages", "interim"]

# A rendered page up to this size is answered uncompressed the first time and compressed
# after the answer. A larger one (the root list of a whole index) is compressed first:
# sending it uncompressed over a slow link costs more.
ANSWER_FIRST_MAX = 4 << 20


def interim(page: Rendered, compress: bool) -> bool:
    """Whether *page*, kept for a client that takes gzip, is its identity form answered
    first (see ANSWER_FIRST_MAX): its gzip form, with another ETag, takes its place."""
    return compress and worth_compressing(page)


class RenderedPages:
    """Rendered pages under a byte budget, least recently used dropped first; each kept
    for one *generation* of its content (any value that changes when the content does)."""

    def __init__(self, budget: int, background: Optional[Background] = None) -> None:
        self._budget = budget
        self._background = background
        self._used = 0
        self._pages: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def page(
        self,
        key: tuple,
        generation: tuple,
        make: Callable[[], bytes],
        media: str,
        compress: bool,
        patch: Optional[Callable[[tuple, Rendered], Optional[bytes]]] = None,
    ) -> Rendered:
        """The page kept for *key* and *generation*, else ``make()`` (a page in *media*)
        rendered and kept; *patch*, given the generation and the page kept for *key*
        before, may give the new page's body from it instead (None: it cannot).

        Only the coding a client asked for is kept: pip and uv always take gzip, so the
        much larger identity form of most pages is never held in memory for long.
        """
        with self._lock:
            kept = self._pages.get(key)
            if kept is not None and kept[0] == generation:
                self._pages.move_to_end(key)
                return kept[1]
        body = patch(*kept) if kept is not None and patch is not None else None
        page = render(make() if body is None else body, media, False)
        # Answer first: this client (and any other until it is done) gets the page as it
        # is, which it may take whatever it accepts (RFC 9110 12.5.3), rather than wait
        # for the compression.
        answer_first = (
            compress
            and self._background is not None
            and worth_compressing(page)
            and len(page.body) <= ANSWER_FIRST_MAX
            and len(page.body) <= self._budget
        )
        if compress and not answer_first:
            page = gzipped(page)
        with self._lock:
            self._put(key, generation, page)
        if answer_first:
            self._background.submit(functools.partial(self._compress, key, generation, page))
        return page

    def _compress(self, key: tuple, generation: tuple, page: Rendered) -> None:
        """Put *page* gzipped in its place, unless the page changed (or left) meanwhile."""
        compressed = gzipped(page)
        with self._lock:
            found = self._pages.get(key)
            if found is not None and found[0] == generation and found[1] is page:
                self._put(key, generation, compressed)

    def _put(self, key: tuple, generation: tuple, page: Rendered) -> None:
        """Keep *page*, dropping the least recently used past the budget. Lock held."""
        old = self._pages.pop(key, None)
        if old is not None:
            self._used -= len(old[1].body)
        if len(page.body) > self._budget:
            return
        self._pages[key] = (generation, page)
        self._used += len(page.body)
        while self._used > self._budget:
            _, (_, dropped) = self._pages.popitem(last=False)
            self._used -= len(dropped.body)
