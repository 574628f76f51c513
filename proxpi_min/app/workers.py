"""Pre-fork supervisor: worker processes sharing one listening socket and a run dir,
restarted when they die, stopped together on SIGTERM, SIGINT or SIGHUP."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import tempfile
import threading
import time
from typing import Callable, Optional

from ..core.units import backoff

__all__ = ["Supervisor", "mark_serving"]

# The parent opens the socket and forks; every worker accepts from that one socket. This
# rather than one SO_REUSEPORT socket per worker: it works wherever fork does;
# connections waiting in the queue survive a worker's death (a SO_REUSEPORT socket
# takes its own queue down with it, resetting those clients); and no other process can
# bind the port beside us. The kernel does not balance the load across workers then,
# but an idle worker is the one waiting in select() and so the first to accept. The
# parent does nothing else: no thread, no cache, no request.

logger = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is restarted after a back-off
# (doubling from BACKOFF_FIRST up to BACKOFF_MAX), so a crash loop cannot spin a core.
HEALTHY_UPTIME = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# Workers get this long beyond their own drain to exit before they are killed.
EXIT_GRACE = 5.0
# When every worker has failed to start this many times in a row (died before it said it
# serves, see mark_serving) and none runs, the supervisor gives up: exit status 1, for the
# service manager to act on, rather than a port that takes connections nobody answers.
GIVE_UP_FAILURES = 5
# How often a worker checks that its supervisor still lives (seconds): killed outright,
# it leaves its workers to stop themselves rather than hold the port as orphans.
PARENT_CHECK = 1.0

# SIGHUP too: the terminal that started it was closed; stopping unattended is the way out.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Slot:
    """One worker position: the process in it and its crash history."""

    __slots__ = ("number", "pid", "started", "failures", "failed_starts", "restart_at")

    def __init__(self, number: int) -> None:
        self.number = number
        self.pid: Optional[int] = None
        self.started = 0.0
        self.failures = 0  # deaths in a row within HEALTHY_UPTIME of a start: the back-off
        self.failed_starts = 0  # deaths in a row before serving: the give-up rule
        self.restart_at: Optional[float] = 0.0  # None: running or not to restart


class Supervisor:
    """Runs *count* workers, each ``work(number, run_dir)`` in a forked child, until a
    signal.

    ``work`` runs in the child and returns its exit status; it must install its own
    handlers for STOP_SIGNALS and, on SIGTERM, drain within *drain_seconds*. *on_stop*
    runs at a stop signal (closing the listening socket the parent holds, so that new
    connections are refused once the workers close theirs). *run_dir* is a directory
    of this run for the workers to share what they know (their numbers, invalidations,
    whether they serve): a new temp dir, local (never the cache dir, which other proxies
    may share), removed when the supervisor returns.
    """

    def __init__(
        self,
        count: int,
        work: Callable[[int, str], int],
        drain_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        self._slots = [_Slot(number) for number in range(1, count + 1)]
        self._work = work
        self._drain_seconds = drain_seconds
        self._on_stop = on_stop  # at a stop signal, before the workers are told
        self._clock = clock
        self._wakeup_read = self._wakeup_write = -1
        self._run_dir = ""

    def run(self) -> int:
        """Supervise until a stop signal (STOP_SIGNALS) and every worker has exited:
        returns 0; or 1 when no worker can be started (see GIVE_UP_FAILURES)."""
        self._run_dir = tempfile.mkdtemp(prefix="proxpi-run-")
        try:
            return self._supervise()
        finally:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def _supervise(self) -> int:
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        # The C-level handler writes each signal's number to the pipe, which wakes the
        # select() below; the Python handlers have nothing left to do.
        previous_fd = signal.set_wakeup_fd(self._wakeup_write)
        previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGCHLD, *STOP_SIGNALS)}
        try:
            return self._loop()
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)

    def _loop(self) -> int:
        deadline: Optional[float] = None
        while True:
            now = self._clock()
            if deadline is None:
                for slot in self._slots:
                    if slot.restart_at is not None and slot.restart_at <= now:
                        self._start(slot)
            waits = [slot.restart_at - now for slot in self._slots if slot.restart_at is not None]
            if deadline is not None:
                waits.append(deadline - now)
            timeout = max(0.0, min(waits)) if waits else None
            select.select([self._wakeup_read], [], [], timeout)
            received = self._signals()
            if deadline is None and received & set(STOP_SIGNALS):
                name = signal.Signals(min(received & set(STOP_SIGNALS))).name
                logger.info("%s: stopping %d workers", name, self._running())
                self._on_stop()
                deadline = self._clock() + self._drain_seconds + EXIT_GRACE
                for slot in self._slots:
                    slot.restart_at = None
                    self._signal(slot, signal.SIGTERM)
            self._reap(stopping=deadline is not None)
            if deadline is None and self._hopeless():
                logger.error("no worker could be started %d times in a row: giving up", GIVE_UP_FAILURES)
                return 1
            if deadline is not None:
                if not self._running():
                    logger.info("stopped")
                    return 0
                if self._clock() >= deadline:
                    for slot in self._slots:
                        if slot.pid is not None:
                            logger.warning("worker %d (pid %d) did not stop: killed", slot.number, slot.pid)
                            self._signal(slot, signal.SIGKILL)
                    deadline = self._clock() + EXIT_GRACE

    def _signals(self) -> set:
        received = set()
        with contextlib.suppress(BlockingIOError):
            while True:
                data = os.read(self._wakeup_read, 64)
                if not data:
                    break
                received.update(data)
        return received

    def _running(self) -> int:
        return sum(slot.pid is not None for slot in self._slots)

    def _hopeless(self) -> bool:
        return all(slot.pid is None and slot.failed_starts >= GIVE_UP_FAILURES for slot in self._slots)

    @staticmethod
    def _signal(slot: _Slot, signum: int) -> None:
        if slot.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signum)

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started = self._clock()
        # The stop signals stay blocked in the child until its server has installed its
        # handlers (cli._serve unblocks them): one sent meanwhile then drains it, instead
        # of killing it by the default action.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # a process limit or no memory: as a worker that died at once
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._failed(slot, f"could not be started ({exc.strerror})", served=False)
            return
        if pid == 0:
            self._child(slot.number, supervisor)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        slot.pid = pid
        logger.info("worker %d started (pid %d)", slot.number, pid)

    def _child(self, number: int, supervisor: int) -> None:
        """Run the work in the forked child and exit, never returning into the caller's
        stack (whose cleanup, such as removing the temp cache dir, is the parent's)."""
        status = 1
        try:
            _watch_parent(supervisor)
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for sig in STOP_SIGNALS:  # blocked until the work installs its own handlers
                signal.signal(sig, signal.SIG_DFL)
            status = self._work(number, self._run_dir)
        except BaseException:
            logger.exception("worker %d failed", number)
        finally:
            logging.shutdown()  # flush the log before leaving without cleanup
            os._exit(status)

    def _reap(self, stopping: bool) -> None:
        """Collect exited workers; schedule restarts (with back-off) unless *stopping*."""
        for slot in self._slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid = None
            how = _describe(os.waitstatus_to_exitcode(status))
            if stopping:
                if status != 0:
                    logger.warning("worker %d (pid %d) %s", slot.number, pid, how)
                continue
            self._failed(slot, f"(pid {pid}) {how}", served=self._served(pid))

    def _served(self, pid: int) -> bool:
        """Whether the worker *pid*, gone, had said it serves (its mark is removed)."""
        try:
            os.unlink(_serving_mark(self._run_dir, pid))
        except OSError:
            return False
        return True

    def _failed(self, slot: _Slot, how: str, served: bool) -> None:
        """Schedule *slot*'s restart, after a back-off if it did not run long."""
        now = self._clock()
        slot.failed_starts = 0 if served else slot.failed_starts + 1
        slot.failures = slot.failures + 1 if now - slot.started < HEALTHY_UPTIME else 0
        delay = backoff(BACKOFF_FIRST, BACKOFF_MAX, slot.failures)
        slot.restart_at = now + delay
        logger.warning("worker %d %s; restarting it in %.1f s", slot.number, how, delay)


def _describe(code: int) -> str:
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def mark_serving(run_dir: str) -> None:
    """In a worker: say it serves (its start did not fail), for the give-up rule."""
    with contextlib.suppress(OSError):  # the run dir going away: the supervisor is stopping
        open(_serving_mark(run_dir, os.getpid()), "wb").close()


def _serving_mark(run_dir: str, pid: int) -> str:
    return os.path.join(run_dir, f"serving-{pid}")


def _watch_parent(parent: int) -> None:
    """In a worker: once its supervisor is gone (killed outright), stop as on SIGTERM."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        logger.warning("the supervisor (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="proxpi-parent-watch", daemon=True).start()


def _ignore(signum: int, frame) -> None:
    """The signal was written to the wakeup pipe; the loop handles it there."""
