"""A strict parser of the Prometheus text exposition format 0.0.4, for tests that read /metrics."""

from __future__ import annotations

import math
import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def _labels(text: str) -> dict:
    """Label pairs; values may hold only the escapes \\\\, \\" and \\n."""
    labels, i = {}, 0
    while i < len(text):
        match = re.compile(rf'({_LABEL})="').match(text, i)
        assert match, f"bad label at {text[i:]!r}"
        i, value = match.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                escaped = {"\\": "\\", '"': '"', "n": "\n"}.get(text[i + 1])
                assert escaped is not None, f"bad escape in {text!r}"
                value.append(escaped)
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        name = match.group(1)
        assert name not in labels, f"label {name} twice"
        labels[name] = "".join(value)
        i += 1
        if i < len(text):
            assert text[i] == ",", f"expected a comma in {text!r}"
            i += 1
    return labels


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse(text: str) -> tuple:
    """(types by family, samples as {(name, frozenset of label pairs): value}); asserts
    the format's rules: one TYPE per family, before its samples, samples grouped by
    family, no sample twice, histograms' buckets cumulative and ending in +Inf."""
    assert text.endswith("\n")
    types, samples, done, current = {}, {}, set(), None
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            match = _HELP.match(line) or _TYPE.match(line)
            if not match:
                continue  # a comment
            family = match.group(1)
            if line.startswith("# TYPE"):
                assert family not in types and family not in done, f"TYPE of {family} late or twice"
                types[family] = match.group(2)
            if family != current:
                assert family not in done
                if current:
                    done.add(current)
                current = family
            continue
        match = _SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        name, labels, value = match.group(1), _labels(match.group(2) or ""), _value(match.group(3))
        family = next(
            (f for f, kind in types.items() for suffix in _SUFFIXES.get(kind, ("",)) if name == f + suffix), name
        )
        assert family == current, f"{name} outside its family's group"
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"{key} twice"
        samples[key] = value
    for family, kind in types.items():
        if kind == "histogram":
            _check_histogram(family, samples)
    return types, samples


def _check_histogram(family: str, samples: dict) -> None:
    series: dict = {}
    for (name, labels), value in samples.items():
        if name == family + "_bucket":
            rest = frozenset(pair for pair in labels if pair[0] != "le")
            series.setdefault(rest, []).append((_value(dict(labels)["le"]), value))
    for rest, buckets in series.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), "buckets are not cumulative"
        assert math.isinf(buckets[-1][0]), "no +Inf bucket"
        assert samples[(family + "_count", rest)] == counts[-1]
        assert (family + "_sum", rest) in samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
