"""The file cache's accounting: its view of a cache dir's stored files (size and
recency, least recently used first), kept in step with the ledger that every process
on the directory shares, and the cap it holds them to.

Recency is the file's mtime (touched on each hit), so LRU order survives restarts. The
total and a journal of stores and evictions are kept in the ledger (``ledger.Ledger``),
written by every store and eviction under its lock. Each process keeps its own view
and, before it evicts, reads what the others journaled since, so only the first
process to start on the directory walks it. Hits do not write the journal: a victim
whose mtime shows a hit in another process is kept and moved to the recent end
instead. Downloads in progress reserve their size in the ledger before they start, so
that bytes in flight count against the cap too. A file is stored only once recorded;
a failed ledger write, or a ledger that disagrees with its journal, is healed by a
walk of the directory.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import os
import threading
import time
from typing import Callable, Optional

from ..core.units import human_size
from ..infra.atomic import remove_temp_files, temp_in_use
from ..infra.metrics import Metrics
from .layout import Target, parse_stored, remove_empty_folders
from .ledger import JournalEntry, Ledger, LedgerHandle, scan

__all__ = ["TOUCH_INTERVAL", "Accounting"]

logger = logging.getLogger(__name__)

# A hit moves a file's mtime (its recency) at most this often: a busy file is not
# worth a metadata write per request.
TOUCH_INTERVAL = 1.0
# The journal is rewritten as a snapshot past twice the size of one (about this many
# bytes a line), and never below this size: a small cache keeps a short history.
JOURNAL_LINE = 150
JOURNAL_MIN = 1 << 20
# After a failed ledger write (a full disk), the accounting is recounted from the disk
# at the next store or eviction, but at most this often (seconds): a walk is not free.
RECOUNT_INTERVAL = 5.0
# How often (seconds, at most) the ledger is checked to be still in the directory: a
# cache dir deleted or replaced while serving is noticed within this long.
ROOT_CHECK_INTERVAL = 1.0
# At a stop, how long the start's sweep (told to end) may take to finish its folder.
SWEEP_JOIN_SECONDS = 1.0
# How long the status pages wait for the ledger (seconds) before they show it as last
# read: a process frozen while it holds the lock must not freeze /metrics with it.
STATUS_PATIENCE = 1.0
# How long a download waits for the ledger (seconds) to reserve its room or be stored
# before its file is passed through, not stored: a living process holds the lock for a
# walk of the directory at most, a frozen one for ever.
DOWNLOAD_PATIENCE = 10.0
# Room left free on the cache dir's disk for pages, metadata and the journal, as a share
# of the disk (1/20), at most this many bytes, when the disk holds less than the cap.
DISK_MARGIN_MAX = 256 << 20


class Accounting:
    """The stored files under *root*, at most *cap* bytes in all, as this process and
    the ledger know them. ``lock`` guards ``files`` and ``generation``; it is never
    held across disk I/O (the ledger's lock is, being the directory's)."""

    def __init__(
        self, root: str, cap: int, metrics: Metrics, mine: Optional[Callable[[str], bool]] = None, evicts: bool = True
    ) -> None:
        self.root = root
        self.cap = cap
        # Offline nothing evicted could be fetched again: what warm stored stays, over the
        # cap or not, and a file that does not fit under it is not stored. A cap of 0
        # stores nothing, so it has no room to make: it never evicts what others stored.
        self._evicts = evicts and cap > 0
        self.metrics = metrics
        self._mine = mine  # the lock files this process may hold (see remove_temp_files)
        self._sweeping: Optional[threading.Thread] = None  # the sweep at a start beside other processes
        self._stopping = threading.Event()
        self.lock = threading.Lock()
        # path -> [size, mtime as we last knew it], least recently used first
        self.files: "collections.OrderedDict[str, list]" = collections.OrderedDict()
        self.generation = 0  # changes whenever a file is stored or evicted
        self._ledger = Ledger(root)
        self._position: Optional[tuple] = None  # how far into the journal our view is
        self._recount = False  # the ledger or journal may disagree with the disk: walk it
        self._next_recount = 0.0
        self._next_root_check = 0.0
        self._scan()
        self._check_disk_size()

    def check_root(self) -> None:
        """Notice a cache dir deleted or replaced under us (a cheap fstat and stat, at
        most every ROOT_CHECK_INTERVAL): one ERROR naming it, the directory made
        again, and the accounting recounted from what is on disk."""
        now = time.monotonic()
        with self.lock:
            if now < self._next_root_check:
                return
            self._next_root_check = now + ROOT_CHECK_INTERVAL
        if self._ledger.in_place():
            return
        logger.error("the cache dir %s was deleted or replaced while serving: making it again and recounting "
                     "the files on disk", self.root)
        try:
            os.makedirs(self.root, exist_ok=True)
            self._ledger.reopen()
            with self._ledger.locked() as ledger:
                self._walk(ledger)
        except OSError as exc:
            logger.error("cannot make the cache dir %s again: %s", self.root, exc.strerror or exc)

    def stats(self) -> tuple:
        """(bytes used, file count), by every process sharing the directory (as last
        read, if another process holds the ledger for longer than a status may wait)."""
        self.check_root()
        record = self._ledger.read(STATUS_PATIENCE)
        return record.used, record.count

    def largest(self, count: int) -> list:
        """The *count* largest stored files as (project, file name, size), from the
        view in memory (no directory walk), brought up to date with what other
        processes on the directory stored and evicted (if the ledger can be had soon)."""
        self.catch_up(STATUS_PATIENCE)
        with self.lock:
            found = heapq.nlargest(count, self.files.items(), key=lambda item: item[1][0])
        out = []
        for path, (size, _) in found:
            stored = parse_stored(os.path.relpath(path, self.root))
            out.append((stored.project, stored.filename, size))
        return out

    def catch_up(self, patience: Optional[float] = None) -> None:
        """Bring the view up to date with what other processes stored and evicted; with
        *patience*, only if the ledger can be had within that many seconds."""
        # OSError: closed (a stop meanwhile), or not had in time: the view as it is.
        with contextlib.suppress(OSError):
            with self._ledger.locked(patience) as ledger:
                self._sync(ledger)

    def paths(self) -> list:
        """The path of every stored file, from the view in memory (no directory walk)."""
        with self.lock:
            return list(self.files)

    def knows(self, path: str) -> bool:
        with self.lock:
            return path in self.files

    def size_of(self, path: str) -> Optional[int]:
        """The size *path* had when this process counted it; None if it counts none."""
        with self.lock:
            known = self.files.get(path)
        return None if known is None else known[0]

    def hit(self, path: str, size: int, mtime: float, touched: bool) -> None:
        """A stored file was opened: most recently used now (*mtime* its new one if
        *touched*); one stored by another process joins the view."""
        with self.lock:
            known = self.files.get(path)
            if known is None:
                self.files[path] = [size, mtime]
                self.generation += 1
            else:
                self.files.move_to_end(path)
                if touched:
                    known[1] = mtime

    def forget(self, path: str) -> None:
        """A file found gone (evicted by another process, removed by hand): out of our
        view and, unless another process's eviction took it out already, out of the
        ledger, so that a new copy of it is not counted twice."""
        with self._ledger.locked() as ledger:
            self._sync(ledger)
            with self.lock:
                known = self.files.get(path)
            if known is None or os.path.exists(path):  # evicted, or stored again meanwhile
                return
            with self.lock:
                self.files.pop(path, None)
                self.generation += 1
            used, count = ledger.record.used - known[0], ledger.record.count - 1
            self._record(ledger, [JournalEntry(self._relative(path))], used, count)

    def missed(self, path: str) -> None:
        """A file looked for and not found: :meth:`forget` it if this process counted it.
        Every cold request misses a file nobody stored, and must not queue on the
        directory-wide lock for it; one only another process counted, removed by hand,
        is taken out of the count when it is stored again (see :meth:`store`)."""
        with self.lock:
            if path not in self.files:
                return
        self.forget(path)

    def stop(self) -> None:
        """Take no more reservations nor stores: the cache is closing."""
        self._stopping.set()

    def close(self) -> None:
        self._stopping.set()
        if self._sweeping is not None:
            self._sweeping.join(SWEEP_JOIN_SECONDS)
        self._ledger.close()

    def _scan(self) -> None:
        """Adopt the files already under root: from a walk when no other process uses
        the directory (healing any drift a crash left, rewriting the journal), else
        from the journal those processes keep; oldest access first. Under the
        directory-wide lock, so that no process stores or evicts meanwhile."""
        alone = self._ledger.register_user()
        if alone:
            self.sweep(at_start=True)  # before the walk, which then counts stored files only
        else:
            # Beside other processes (a worker restarted after a kill) too, but without
            # holding up the start: the sweep walks the whole tree, the join does not.
            self._sweeping = threading.Thread(target=self.sweep, args=(False,), name="proxpi-sweep", daemon=True)
            self._sweeping.start()
        victims: list = []
        with self._ledger.locked() as ledger:
            if alone:
                self._walk(ledger, drop_changed=True)
                # A cap lowered since the last run applies at once; beside others (a
                # rolling restart with another cap), only as this process stores.
                used, count, victims, _ = self._make_room(ledger, 0)
                self._record(ledger, [JournalEntry(self._relative(path)) for path in victims], used, count)
            else:
                self._sync(ledger)
        self._evicted(victims)

    def sweep(self, at_start: bool) -> None:
        """Remove what dead writers left (``remove_temp_files``), then the room their
        downloads had reserved."""
        removed = remove_temp_files(self.root, at_start, self._mine, folders=True, stop=self._stopping.is_set)
        if removed:
            logger.info("removed %d leftover temp files", removed)
        with contextlib.suppress(OSError):  # closed meanwhile: a stop while it ran
            with self._ledger.locked() as ledger:
                self._unreserve(ledger, None)

    def _walk(self, ledger: LedgerHandle, drop_changed: bool = False) -> None:
        """Take the files on disk as they are: our view, the journal (a snapshot of it)
        and the total (under the ledger's lock); *drop_changed*: but for those of
        another size than the journal recorded, which are removed."""
        entries = scan(self.root)
        if drop_changed:
            entries = self._without_changed(ledger, entries)
        with self.lock:
            self.files.clear()
            for entry in entries:
                self.files[os.path.join(self.root, entry.path)] = [entry.size, entry.mtime]
            self.generation += 1
        used, count = sum(entry.size for entry in entries), len(entries)
        self._recount = False
        try:
            self._position = ledger.snapshot(entries, used, count)
        except OSError as exc:
            logger.warning("cannot write the cache journal: %s", exc.strerror)
            self._record(ledger, [], used, count)
            self._recount = True  # the journal still tells the old story

    def _without_changed(self, ledger: LedgerHandle, entries: list) -> list:
        """*entries* (the disk's) without the files whose size is not the one the
        journal recorded when they were stored (whole and verified): cut or changed
        while no process ran, e.g. a copy of the cache dir cut short. Removed: an index
        that gives no size could not tell, and they would be served as they are."""
        try:
            recorded = ledger.recorded_sizes()
        except OSError:
            return entries
        kept = []
        for entry in entries:
            size = recorded.get(entry.path, entry.size)
            if size != entry.size:
                path = os.path.join(self.root, entry.path)
                try:
                    os.unlink(path)
                except OSError as exc:  # a read-only disk: it stays, counted as it is
                    logger.warning("%s is %d bytes on disk, not the %d stored, and stays: %s", path, entry.size,
                                   size, exc.strerror)
                else:
                    logger.warning("%s is %d bytes on disk, not the %d stored: removed", path, entry.size, size)
                    continue
            kept.append(entry)
        return kept

    def _relative(self, path: str) -> str:
        return path[len(self.root) + 1 :]

    def _entries(self) -> list:
        """Our view as journal entries, least recently used first."""
        with self.lock:
            return [JournalEntry(self._relative(path), size, mtime) for path, (size, mtime) in self.files.items()]

    def _sync(self, ledger: LedgerHandle) -> None:
        """Bring our view up to date with what other processes stored and evicted
        (under the ledger's lock): the journal's new lines, or its new snapshot."""
        now = time.monotonic()
        if self._recount and now >= self._next_recount:
            self._next_recount = now + RECOUNT_INTERVAL
            self._walk(ledger)
            return
        whole = self._position is None
        try:
            entries, position, snapshot = ledger.changes(self._position)
        except OSError as exc:
            logger.warning("cannot read the cache journal: %s", exc.strerror)
            return
        with self.lock:
            if snapshot:
                self.files.clear()
            for entry in entries:
                path = os.path.join(self.root, entry.path)
                if entry.size < 0:
                    self.files.pop(path, None)
                else:
                    self.files[path] = [entry.size, entry.mtime]
                    self.files.move_to_end(path)
            if entries or snapshot:
                self.generation += 1
            journaled = sum(size for size, _ in self.files.values()), len(self.files)
        self._position = position
        recorded = ledger.record.used, ledger.record.count
        if (whole or snapshot) and journaled != recorded:
            logger.warning(
                "the cache ledger (%d bytes, %d files) disagrees with its journal (%d bytes, %d files): "
                "recounting from the disk", *recorded, *journaled,
            )
            self._walk(ledger)

    def _record(self, ledger: LedgerHandle, entries: list, used: int, count: int) -> bool:
        """Journal *entries* and the new total (under the ledger's lock, synced); False
        if they could not be written (a full disk): the next store or eviction
        recounts from the disk."""
        try:
            if entries:
                self._position = ledger.append(entries, self._position)
            ledger.write(used, count)
        except OSError as exc:
            logger.warning("cannot update the cache size ledger: %s", exc.strerror)
            self._position = None  # read the journal whole next time
            self._recount = True
            return False
        return True

    def store(self, target: Target, temp: str, size: int) -> bool:
        """Move a verified download's temp file to its final name, if it fits under the
        cap; False if it was not moved (the download removes it).

        :raises OSError: the ledger cannot be had in DOWNLOAD_PATIENCE (TimeoutError).
        """
        path = target.path
        if size > self.cap or self._stopping.is_set():  # closed: a download outlived its cache (warm's Ctrl-C)
            return False
        self.check_root()
        stored = False
        # Under the directory-wide lock, so that downloads finishing together (here or
        # in other processes) cannot each find room for themselves and overrun the cap.
        with self._ledger.locked(DOWNLOAD_PATIENCE) as ledger:
            self._sync(ledger)
            reserved = sum(self._unreserve(ledger, temp).values())  # ours becomes the stored file
            if os.path.exists(path):  # stored meanwhile by a writer that took no lock
                return False
            with self.lock:
                known = self.files.pop(path, None)
                if known is not None:
                    self.generation += 1
            if known is not None:  # counted, yet not on disk (removed by hand): out of the count first
                record = ledger.record
                self._record(ledger, [JournalEntry(self._relative(path))], record.used - known[0], record.count - 1)
            used, count, victims, _ = self._make_room(ledger, reserved + size)
            if not self._evicts and used + reserved + size > self.cap:
                return False
            entries = [JournalEntry(self._relative(victim)) for victim in victims]
            # Counted before it appears: a crash in between over-counts (evicting a
            # little early) rather than over-fills; the next start corrects it.
            now = time.time()
            # Stored only if recorded: a file the ledger does not know would escape the cap.
            if self._record(ledger, entries + [JournalEntry(self._relative(path), size, now)], used + size, count + 1):
                stored = self._rename(target, temp, size, now, ledger, used, count)
            self._compact(ledger)
        self._evicted(victims)
        return stored

    def reserve(self, target: Target, temp: str, size: int) -> bool:
        """Make room for a download of *size* bytes into *temp* before it starts, so
        that downloads in flight (in every process) count against the cap; False if
        it does not fit beside those, or is over the cap: it is not stored.

        :raises OSError: the ledger cannot be had in DOWNLOAD_PATIENCE (TimeoutError).
        """
        if size > self.cap or self._stopping.is_set():
            return False
        self.check_root()
        victims: list = []
        with self._ledger.locked(DOWNLOAD_PATIENCE) as ledger:
            self._sync(ledger)
            live = self._unreserve(ledger, temp)
            reserved = sum(live.values())
            cap = self._cap_now(ledger.record.used, live)
            fits = reserved + size <= cap and (self._evicts or ledger.record.used + reserved + size <= cap)
            if fits:
                used, count, victims, cap = self._make_room(ledger, reserved + size, cap)
                recorded = not victims or self._record(ledger, [JournalEntry(self._relative(v)) for v in victims], used, count)
                fits = recorded and used + reserved + size <= cap  # files counted but gone freed no room
            if fits:
                live[self._relative(temp)] = size
                try:
                    ledger.reserve(live)
                except OSError as exc:
                    logger.warning("cannot reserve room for %s: %s", target.filename, exc.strerror)
                    fits = False
        self._evicted(victims)
        return fits

    def make_room_beside(self, path: str, size: int) -> None:
        """Evict least recently used files until the disk has *size* bytes free beside
        its margin, for a file written at *path* outside the cache (an upload); nothing
        where *path* is on another disk, or room enough is free."""
        try:
            same_disk = os.stat(path).st_dev == os.stat(self.root).st_dev
        except OSError:
            return
        total, free = _disk(self.root)
        short = size - free
        if not total or not same_disk or short <= 0 or self._stopping.is_set():
            return
        self.check_root()
        with self._ledger.locked(DOWNLOAD_PATIENCE) as ledger:
            self._sync(ledger)
            if short > ledger.record.used:  # evicting every file would not make the room
                return
            used, count, victims, _ = self._make_room(ledger, 0, ledger.record.used - short)
            if victims:
                self._record(ledger, [JournalEntry(self._relative(victim)) for victim in victims], used, count)
        self._evicted(victims)

    def release(self, temp: str) -> None:
        """Drop the reservation of the download into *temp* (if the ledger cannot be had,
        the next reservation drops it: its temp file is gone)."""
        with self._ledger.locked(DOWNLOAD_PATIENCE) as ledger:
            self._unreserve(ledger, temp)

    def _unreserve(self, ledger: LedgerHandle, temp: Optional[str]) -> dict:
        """Drop *temp*'s reservation (None: none in particular), and those of downloads
        no longer in progress (a process killed); returns the others (under the ledger
        lock)."""
        reservations = ledger.reservations()
        leaving = None if temp is None else self._relative(temp)
        live = {
            name: size for name, size in reservations.items()
            if name != leaving and temp_in_use(os.path.join(self.root, name))
        }
        if live != reservations:
            with contextlib.suppress(OSError):  # else they go with the next write
                ledger.reserve(live)
        return live

    def _rename(self, target: Target, temp: str, size: int, now: float, ledger: LedgerHandle, used: int, count: int) -> bool:
        """Give the recorded temp file its final name; if that fails, record it gone
        again (*used* and *count*: the total without it)."""
        try:
            os.replace(temp, target.path)
        except OSError as exc:
            logger.warning("cannot store %s: %s", target.filename, exc.strerror)
            self._record(ledger, [JournalEntry(self._relative(target.path))], used, count)
            return False
        with self.lock:
            self.files[target.path] = [size, now]
            self.generation += 1
        return True

    def _check_disk_size(self) -> None:
        """One WARNING at the start if the cap is more than the cache dir's disk holds."""
        total, _ = _disk(self.root)
        if total and total < self.cap:
            logger.warning(
                "the cache cap (%s) is more than the disk of %s holds (%s): files are stored as far as it has room",
                human_size(self.cap), self.root, human_size(total),
            )

    def _cap_now(self, used: int, live: dict) -> int:
        """The cap, or less where the disk has less room (a cap larger than the disk,
        or other data filling it): the *used* bytes stored, what the downloads in flight
        (*live*) have written, and the disk's free space, less a margin. Else, once the
        disk is full, every file would pass through and none be stored again."""
        total, free = _disk(self.root)
        room = used + free
        if not total or room >= self.cap:  # room enough (what is written only adds), or a disk that tells no size
            return self.cap
        for name in live:
            with contextlib.suppress(OSError):  # done meanwhile
                room += os.stat(os.path.join(self.root, name)).st_size
        return min(self.cap, room)

    def _make_room(self, ledger: LedgerHandle, incoming: int, cap: Optional[int] = None) -> tuple:
        """Evict least recently used files (whoever stored them) until *incoming* more
        bytes fit under *cap* (None: the cap); returns (used, count, evicted paths, the
        cap as it turned out). Called under the ledger lock, with our view synced."""
        disk_bound = cap is not None and cap < self.cap
        cap = self.cap if cap is None else cap
        used, count = ledger.record.used, ledger.record.count
        victims, stuck = [], []
        while self._evicts and used + incoming > cap:
            with self.lock:
                if not self.files:
                    break
                path, (size, mtime) = self.files.popitem(last=False)
                self.generation += 1
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # gone without the ledger knowing (e.g. removed by hand)
                used, count = used - size, count - 1
                if disk_bound:  # not on the disk: taking it out of the count frees none of it
                    cap -= size
                victims.append(path)
                continue
            if stat.st_mtime > mtime + TOUCH_INTERVAL:  # a hit in another process
                with self.lock:
                    self.files.setdefault(path, [stat.st_size, stat.st_mtime])
                continue
            try:
                # Clients still sending this file keep their open handle: unlink is safe.
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # it stays, and so stays counted
                logger.warning("cannot evict %s: %s", path, exc.strerror)
                stuck.append((path, size, mtime))
                continue
            used, count = used - size, count - 1
            victims.append(path)
        with self.lock:  # back in the view, most recently used: tried again at a later eviction
            for path, size, mtime in stuck:
                self.files[path] = [size, mtime]
        return used, count, victims, cap

    def _compact(self, ledger: LedgerHandle) -> None:
        """Rewrite the journal as a snapshot of our (synced) view once it has grown to
        about twice the size of one, so that it stays proportional to the files."""
        if ledger.journal_size() <= max(JOURNAL_MIN, 2 * JOURNAL_LINE * ledger.record.count):
            return
        try:
            self._position = ledger.snapshot(self._entries(), ledger.record.used, ledger.record.count)
        except OSError as exc:
            logger.warning("cannot rewrite the cache journal: %s", exc.strerror)

    def _evicted(self, paths: list) -> None:
        """Count and log evictions, and remove the folders they left empty (after the
        ledger lock: a writer whose folder goes makes it again, see ``LockFile``)."""
        if paths:
            self.metrics.evictions.inc(amount=len(paths))
        for path in paths:
            logger.info("evicted %s", path)
            remove_empty_folders(self.root, path)


def _disk(path: str) -> tuple:
    """(size, free bytes less the margin kept free) of the disk of *path*; (0, 0) where
    it tells none."""
    try:
        disk = os.statvfs(path)
    except OSError:
        return 0, 0
    total = disk.f_blocks * disk.f_frsize
    return total, disk.f_bavail * disk.f_frsize - min(DISK_MARGIN_MAX, total // 20)
