"""A Prometheus registry: counters and histograms with labels, families collected at
scrape time, and the text exposition format 0.0.4."""

from __future__ import annotations

import bisect
import math
import threading
from typing import Callable, Iterable, Optional

__all__ = ["CONTENT_TYPE", "Collect", "Counter", "Histogram", "Registry"]

# The text exposition format, version 0.0.4 (Prometheus "Exposition formats").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Collect = Callable[[], Iterable[tuple]]  # yields (labels: mapping, value) pairs

# A registry's state (Registry.state) is plain JSON: lists for tuples. It maps each
# family name to {"kind": ..., "values": [[key, value], ...]}; a key is the label values
# (a collected family's: [name, value] pairs), a histogram's value [bucket counts, sum].


def _escape_label(value: str) -> str:
    # 0.0.4: in label values, backslash, double quote and line feed are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # 0.0.4: in HELP lines, only backslash and line feed are escaped.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as Go's ParseFloat reads it: integers plainly, +Inf/-Inf/NaN."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: tuple, values: tuple, extra: str = "") -> str:
    pairs = [f'{name}="{_escape_label(str(value))}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    """One metric name: its type, help text, label names and values by label tuple."""

    kind = ""
    shared = False  # see Registry.collector

    def __init__(self, lock: threading.Lock, name: str, help_text: str, labels: tuple) -> None:
        self._lock = lock
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict = {} if self.labels else {(): 0.0}

    def _check(self, key: tuple) -> None:
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {key!r}")

    def _state(self) -> list:
        """The values as a state holds them; the lock is held."""
        return [[list(key), value] for key, value in self._values.items()]

    def _lines(self, values: list) -> Iterable[str]:
        """Sample lines of *values*, as :meth:`_state` gives them."""
        for key, value in values:
            yield f"{self.name}{_labels(self.labels, key)} {_number(value)}\n"


class Counter(_Family):
    """A value that only goes up (restarts reset it; Prometheus' rate() copes)."""

    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            if labels in self._values:
                self._values[labels] += amount
            else:
                self._check(labels)
                self._values[labels] = float(amount)


class Histogram(_Family):
    """Observations counted in buckets (each bucket "le" its upper bound), with sum and count."""

    kind = "histogram"

    def __init__(self, lock: threading.Lock, name: str, help_text: str, labels: tuple, buckets: tuple) -> None:
        super().__init__(lock, name, help_text, labels)
        if "le" in self.labels:
            raise ValueError("a histogram cannot have a label named le")
        self.buckets = tuple(sorted(float(bound) for bound in buckets if not math.isinf(bound)))
        self._values = {}

    def observe(self, value: float, *labels: str) -> None:
        # Bucket i holds observations in (bound[i-1], bound[i]]; the last one, +Inf,
        # those above every bound. Stored per bucket, summed up when written out.
        with self._lock:
            state = self._values.get(labels)
            if state is None:
                self._check(labels)
                state = self._values[labels] = [[0] * (len(self.buckets) + 1), 0.0]
            state[0][bisect.bisect_left(self.buckets, value)] += 1
            state[1] += value

    def _state(self) -> list:
        return [[list(key), [list(counts), total]] for key, (counts, total) in self._values.items()]

    def _lines(self, values: list) -> Iterable[str]:
        bounds = [repr(bound) for bound in self.buckets] + ["+Inf"]
        for key, (counts, total) in values:
            running = 0
            for bound, count in zip(bounds, counts):
                running += count
                le = f'le="{bound}"'
                yield f"{self.name}_bucket{_labels(self.labels, key, le)} {running}\n"
            yield f"{self.name}_sum{_labels(self.labels, key)} {_number(total)}\n"
            yield f"{self.name}_count{_labels(self.labels, key)} {running}\n"


class _Collected:
    """A family whose samples a callback gives at scrape time (sizes other objects own)."""

    def __init__(self, name: str, kind: str, help_text: str, collect: Collect, shared: bool) -> None:
        self.name, self.kind, self.help, self._collect = name, kind, help_text, collect
        self.shared = shared

    def _state(self) -> list:
        return [[[[name, value] for name, value in dict(labels).items()], value] for labels, value in self._collect()]

    def _lines(self, values: list) -> Iterable[str]:
        for pairs, value in values:
            names, label_values = zip(*pairs) if pairs else ((), ())
            yield f"{self.name}{_labels(names, label_values)} {_number(value)}\n"


class Registry:
    """Metric families by name, written out in registration order.

    Thread-safe: one lock, held only while a value is updated or copied.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict = {}

    def _add(self, family):
        if family.name in self._families:
            raise ValueError(f"metric {family.name} registered twice")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help_text: str, labels: tuple = ()) -> Counter:
        return self._add(Counter(self._lock, name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: tuple, buckets: tuple) -> Histogram:
        return self._add(Histogram(self._lock, name, help_text, labels, buckets))

    def collector(self, name: str, kind: str, help_text: str, collect: Collect, shared: bool = False) -> None:
        """Register a family whose samples *collect* yields at each scrape, as
        ``(labels mapping, value)`` pairs: for numbers another object keeps anyway
        (cache sizes, policy counts). *collect* runs without our lock.

        *shared*: a number every worker process reads alike (the cache dir's size),
        always read here and never summed across workers (see :meth:`state`)."""
        if kind not in ("counter", "gauge"):
            raise ValueError(f"a collected family is a counter or a gauge, not {kind!r}")
        self._add(_Collected(name, kind, help_text, collect, shared))

    def state(self) -> dict:
        """This process's values of every family but the shared ones, JSON-ready, to be
        summed with other processes' (see :mod:`.aggregate`)."""
        out = {}
        for family in list(self._families.values()):
            if isinstance(family, _Collected):
                if not family.shared:
                    out[family.name] = {"kind": family.kind, "values": family._state()}
                continue
            with self._lock:
                out[family.name] = {"kind": family.kind, "values": family._state()}
        return out

    def exposition(self, state: Optional[dict] = None) -> bytes:
        """Every family in the text format 0.0.4: HELP, TYPE, then the samples: this
        process's, or those of *state* (as :meth:`state` gives it, e.g. summed over
        processes). Shared families are read here either way."""
        if state is None:
            state = self.state()
        lines = []
        for family in list(self._families.values()):
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
            lines.append(f"# TYPE {family.name} {family.kind}\n")
            if family.shared:
                lines.extend(family._lines(family._state()))
            else:
                lines.extend(family._lines(state.get(family.name, {}).get("values", [])))
        return "".join(lines).encode("utf-8")
