"""Metrics: the registry's text format (read back by a strict 0.0.4 parser), the
per-minute ring, and /metrics moving as a real proxy serves requests."""

from __future__ import annotations

import io
import json
import logging
import re
import time

import pytest

from proxpi_min.infra.logs import JsonFormatter
from proxpi_min.infra.aggregate import merge
from proxpi_min.infra.metrics import MAX_PROJECTS, SNAPSHOT_PROJECTS, Metrics, total
from proxpi_min.infra.prometheus import CONTENT_TYPE, Registry
from tests.support.cache_dir import settled
from tests.support.prometheus import parse, sample

# -- the registry -------------------------------------------------------------------


def test_Registry_exposition_parses_with_types_and_help() -> None:
    registry = Registry()
    counter = registry.counter("x_total", "Things.\nSecond line \\ with a backslash.", ("kind",))
    registry.collector("y", "gauge", "A level.", lambda: [({}, -1.5)])
    counter.inc("a")
    counter.inc("a", amount=2)
    counter.inc("b")
    text = registry.exposition().decode()
    assert "# HELP x_total Things.\\nSecond line \\\\ with a backslash.\n" in text
    types, samples = parse(text)
    assert types == {"x_total": "counter", "y": "gauge"}
    assert sample(samples, "x_total", kind="a") == 3
    assert sample(samples, "x_total", kind="b") == 1
    assert sample(samples, "y") == -1.5


@pytest.mark.parametrize(
    "value",
    ['plain', 'quote " inside', "back\\slash", "new\nline", 'all \\" \n of them\\', "ünïcode ☃", "{},=", ""],
)
def test_Registry_escapes_label_values(value: str) -> None:
    registry = Registry()
    registry.counter("c_total", "c", ("index",)).inc(value)
    _, samples = parse(registry.exposition().decode())
    assert sample(samples, "c_total", index=value) == 1


def test_Histogram_buckets_are_cumulative_and_inclusive() -> None:
    registry = Registry()
    histogram = registry.histogram("d_seconds", "d", ("route",), buckets=(0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 20.0):
        histogram.observe(value, "page")
    _, samples = parse(registry.exposition().decode())
    buckets = {le: sample(samples, "d_seconds_bucket", route="page", le=le) for le in ("0.1", "1.0", "10.0", "+Inf")}
    # "le" is "less than or equal": 0.1 and 1.0 fall in their own buckets.
    assert buckets == {"0.1": 2, "1.0": 4, "10.0": 4, "+Inf": 5}
    assert sample(samples, "d_seconds_count", route="page") == 5
    assert sample(samples, "d_seconds_sum", route="page") == pytest.approx(21.65)


def test_Registry_refuses_mistakes() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "c", ("a", "b"))
    with pytest.raises(ValueError):
        counter.inc("only-one")
    with pytest.raises(ValueError):
        registry.counter("c_total", "again")
    with pytest.raises(ValueError):
        registry.histogram("h", "h", ("le",), buckets=(1.0,))


def test_Registry_collector_samples_come_at_scrape_time() -> None:
    registry = Registry()
    refused = {"deny": 1}
    registry.collector(
        "proxpi_policy_refused_total", "counter", "Refused by policy.", lambda: [({"policy": p}, n) for p, n in refused.items()]
    )
    refused["cooldown"] = 4
    types, samples = parse(registry.exposition().decode())
    assert types == {"proxpi_policy_refused_total": "counter"}
    assert sample(samples, "proxpi_policy_refused_total", policy="cooldown") == 4
    assert sample(samples, "proxpi_policy_refused_total", policy="deny") == 1


def test_Metrics_exposition_has_the_documented_families() -> None:
    metrics = Metrics()
    metrics.request("page", "GET", 200, 0.002, 100, "cache")
    types, samples = parse(metrics.registry.exposition().decode())
    assert types == {
        "proxpi_requests_total": "counter",
        "proxpi_request_duration_seconds": "histogram",
        "proxpi_cache_hits_total": "counter",
        "proxpi_cache_misses_total": "counter",
        "proxpi_upstream_requests_total": "counter",
        "proxpi_stale_responses_total": "counter",
        "proxpi_bytes_sent_total": "counter",
        "proxpi_file_cache_evictions_total": "counter",
        "proxpi_connections_closed_total": "counter",
        "proxpi_prefetch_total": "counter",
        "proxpi_prefetch_used_total": "counter",
    }
    assert sample(samples, "proxpi_requests_total", route="page", method="GET", status="200") == 1
    assert sample(samples, "proxpi_bytes_sent_total", source="cache") == 100
    assert ("proxpi_cache_hits_total", frozenset({("kind", "file")})) in samples  # 0 from the start


def test_Metrics_exposition_reads_with_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is not installed")
    metrics = Metrics()
    metrics.request("file", "GET", 200, 0.3, 5, "upstream")
    metrics.upstream.inc('http://h/"x"\\\n/', "file", "ok")
    families = {family.name: family for family in parser.text_string_to_metric_families(metrics.registry.exposition().decode())}
    # prometheus_client drops "_total" from counter family names.
    assert families["proxpi_requests"].type == "counter"
    assert families["proxpi_request_duration_seconds"].type == "histogram"
    labels = [s.labels for s in families["proxpi_upstream_requests"].samples]
    assert {"index": 'http://h/"x"\\\n/', "kind": "file", "outcome": "ok"} in labels


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_Metrics_minute_ring_keeps_the_last_hour() -> None:
    clock = FakeClock(600_000.0)
    metrics = Metrics(clock)
    metrics.request("page", "GET", 200, 0.001, 1, "cache")
    metrics.hit("page")
    clock.now += 60  # next minute
    for _ in range(3):
        metrics.request("file", "GET", 200, 0.001, 1, "upstream")
    series = metrics.summary().per_minute
    assert len(series) == 60
    assert [(p["requests"], p["hits"]) for p in series[-2:]] == [(1, 1), (3, 0)]
    clock.now += 59 * 60  # the first minute is now an hour old
    series = metrics.summary().per_minute
    assert sum(p["requests"] for p in series) == 3
    clock.now += 60
    assert sum(p["requests"] for p in metrics.summary().per_minute) == 0


def test_Metrics_summary_counts_and_ratios() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.hit("page")
    metrics.miss("page")
    for name in ["b", "a", "b", "c", "b", "a"]:
        metrics.project_requested(name)
    summary = metrics.summary()
    assert summary.cache["page"] == {"hits": 3, "misses": 1, "ratio": 0.75}
    assert summary.cache["file"]["ratio"] is None
    assert summary.top_projects[:2] == [{"project": "b", "requests": 3}, {"project": "a", "requests": 2}]


def test_Metrics_project_counts_stay_bounded() -> None:
    metrics = Metrics()
    metrics.project_requested("popular")
    metrics.project_requested("popular")
    for i in range(MAX_PROJECTS + 5):
        metrics.project_requested(f"made-up-{i}")
    assert len(metrics._projects) <= MAX_PROJECTS
    assert metrics.summary().top_projects[0] == {"project": "popular", "requests": 2}


# -- snapshots and their merge (--workers) ------------------------------------------------


def _worker(clock: FakeClock, pages: int, files: int, projects: list, downloads: int = 0) -> Metrics:
    """A worker's metrics after *pages* page hits and *files* file downloads."""
    metrics = Metrics(clock)
    for _ in range(pages):
        metrics.request("page", "GET", 200, 0.002, 10, "cache")
        metrics.hit("page")
    for _ in range(files):
        metrics.request("file", "GET", 200, 3.0, 1000, "upstream")
        metrics.miss("file")
    for name in projects:
        metrics.project_requested(name)
    metrics.registry.collector("proxpi_downloads_in_progress", "gauge", "d", lambda: [({}, downloads)])
    metrics.registry.collector(
        "proxpi_policy_refused_total", "counter", "r", lambda: [({"policy": "deny"}, pages)]
    )
    metrics.registry.collector("proxpi_file_cache_size_bytes", "gauge", "s", lambda: [({}, 12345)], shared=True)
    return metrics


def _through_json(snapshot: dict, live: bool = True) -> dict:
    """A snapshot as another worker reads it from its file."""
    return {**json.loads(json.dumps(snapshot)), "live": live}


def test_Metrics_snapshot_merge_sums_counters_histograms_and_labels() -> None:
    clock = FakeClock(600_000.0)
    one = _worker(clock, pages=3, files=1, projects=["a", "b", "b"], downloads=1)
    two = _worker(clock, pages=2, files=2, projects=["b", "c"], downloads=2)
    merged = merge([one.snapshot(), _through_json(two.snapshot())])
    _, samples = parse(one.exposition(merged).decode())
    assert sample(samples, "proxpi_requests_total", route="page", method="GET", status="200") == 5
    assert sample(samples, "proxpi_requests_total", route="file", method="GET", status="200") == 3
    assert sample(samples, "proxpi_request_duration_seconds_count", route="file") == 3
    assert sample(samples, "proxpi_request_duration_seconds_bucket", route="page", le="0.0025") == 5
    assert sample(samples, "proxpi_request_duration_seconds_bucket", route="file", le="2.5") == 0
    assert sample(samples, "proxpi_request_duration_seconds_bucket", route="file", le="5.0") == 3
    assert sample(samples, "proxpi_request_duration_seconds_sum", route="file") == pytest.approx(9.0)
    assert sample(samples, "proxpi_bytes_sent_total", source="upstream") == 3000
    assert sample(samples, "proxpi_policy_refused_total", policy="deny") == 5  # a collected counter
    assert sample(samples, "proxpi_downloads_in_progress") == 3
    assert sample(samples, "proxpi_file_cache_size_bytes") == 12345  # shared: read here, not summed
    summary = one.summary(merged)
    assert summary.requests == 8
    assert summary.cache["page"] == {"hits": 5, "misses": 0, "ratio": 1.0}
    assert summary.cache["file"]["misses"] == 3
    assert summary.top_projects[:3] == [  # ties by name, whichever worker merges
        {"project": "b", "requests": 3}, {"project": "a", "requests": 1}, {"project": "c", "requests": 1}
    ]
    assert total(merged, "proxpi_downloads_in_progress") == 3


def test_Metrics_merge_keeps_the_dead_workers_counts_but_not_their_gauges() -> None:
    clock = FakeClock(600_000.0)
    one = _worker(clock, pages=1, files=0, projects=[], downloads=1)
    dead = _worker(clock, pages=4, files=0, projects=["x"], downloads=5)
    merged = merge([one.snapshot(), _through_json(dead.snapshot(), live=False)])
    assert total(merged, "proxpi_requests_total") == 5
    assert total(merged, "proxpi_downloads_in_progress") == 1
    assert one.summary(merged).top_projects == [{"project": "x", "requests": 1}]


def test_Metrics_merge_adds_the_ring_minute_by_minute_and_starts_at_the_first() -> None:
    clock = FakeClock(600_000.0)
    early = Metrics(clock)
    early.request("page", "GET", 200, 0.001, 1, "cache")
    clock.now += 60
    late = Metrics(clock)  # started a minute later (a restarted worker)
    for metrics in (early, late):
        metrics.request("page", "GET", 200, 0.001, 1, "cache")
        metrics.hit("page")
    clock.now += 30
    summary = late.summary(merge([late.snapshot(), _through_json(early.snapshot())]))
    assert [(p["requests"], p["hits"]) for p in summary.per_minute[-2:]] == [(1, 0), (2, 2)]
    assert summary.started == early.started
    assert summary.uptime_seconds == 90
    clock.now += 59 * 60  # the first minute is an hour old
    summary = late.summary(merge([late.snapshot(), _through_json(early.snapshot())]))
    assert sum(p["requests"] for p in summary.per_minute) == 2


def test_Metrics_snapshot_keeps_the_top_projects_only() -> None:
    metrics = Metrics()
    for i in range(SNAPSHOT_PROJECTS + 50):
        metrics.project_requested(f"p{i}")
    metrics.project_requested("popular")
    metrics.project_requested("popular")
    projects = metrics.snapshot()["projects"]
    assert len(projects) == SNAPSHOT_PROJECTS
    assert projects[0] == ("popular", 2)


def test_Metrics_in_process_numbers_are_the_snapshot_of_one() -> None:
    """Without workers nothing is merged; merging one snapshot changes nothing."""
    clock = FakeClock(600_000.0)
    metrics = _worker(clock, pages=2, files=1, projects=["a"], downloads=1)
    alone = merge([metrics.snapshot()])
    assert metrics.exposition() == metrics.registry.exposition()
    assert parse(metrics.exposition(alone).decode()) == parse(metrics.exposition().decode())
    assert metrics.summary() == metrics.summary(alone)


def test_JsonFormatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord("proxpi_min.web.routes", logging.INFO, __file__, 1, 'a "%s"\nline', ("x",), None)
    record.request = {"client": "127.0.0.1", "method": "GET", "path": "/", "status": 200, "bytes": 5,
                      "duration_ms": 1.5, "source": None}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == 'a "x"\nline'
    assert parsed["level"] == "INFO" and parsed["logger"] == "proxpi_min.web.routes"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["time"])
    assert parsed["status"] == 200 and parsed["source"] is None


# -- the real proxy ---------------------------------------------------------------------


def _scrape(proxy) -> dict:
    result = proxy.get("/metrics")
    assert result.status == 200
    assert result.headers["Content-Type"] == CONTENT_TYPE
    return parse(result.text)[1]


def test_metrics_move_as_requests_are_served(proxy, upstream_html, dists) -> None:
    p = proxy(upstream_html)
    index = upstream_html.url
    before = _scrape(p)
    assert sample(before, "proxpi_requests_total", route="page", method="GET", status="200") == 0
    assert sample(before, "proxpi_file_cache_limit_bytes") == p.settings.cache_size

    assert p.get("/index/alpha/").status == 200  # miss: asks upstream
    assert p.get("/index/alpha/").status == 200  # hit: from memory
    wheel = dists.alpha_1
    first = p.get(f"/index/alpha/{wheel.filename}")
    assert settled(p.settings.cache_dir)  # stored: the next request is a hit
    second = p.get(f"/index/alpha/{wheel.filename}")
    assert first.body == second.body == wheel.content
    assert p.get("/index/no-such-project/").status == 404

    after = _scrape(p)
    assert sample(after, "proxpi_requests_total", route="page", method="GET", status="200") == 2
    assert sample(after, "proxpi_requests_total", route="file", method="GET", status="200") == 2
    assert sample(after, "proxpi_requests_total", route="page", method="GET", status="404") == 1
    assert sample(after, "proxpi_request_duration_seconds_count", route="file") == 2
    assert sample(after, "proxpi_cache_hits_total", kind="page") == 1
    assert sample(after, "proxpi_cache_misses_total", kind="page") == 2  # alpha once, no-such-project
    assert sample(after, "proxpi_cache_hits_total", kind="file") == 1
    assert sample(after, "proxpi_cache_misses_total", kind="file") == 1
    assert sample(after, "proxpi_upstream_requests_total", index=index, kind="page", outcome="ok") == 2
    assert sample(after, "proxpi_upstream_requests_total", index=index, kind="file", outcome="ok") == 1
    assert sample(after, "proxpi_bytes_sent_total", source="cache") >= len(second.body)
    assert sample(after, "proxpi_bytes_sent_total", source="upstream") >= len(first.body)
    assert sample(after, "proxpi_file_cache_files") == 1
    assert sample(after, "proxpi_file_cache_size_bytes") == len(first.body)
    assert sample(after, "proxpi_downloads_in_progress") == 0


def test_metrics_count_upstream_failures_and_stale_pages(proxy, upstream_html) -> None:
    p = proxy((upstream_html, 0.05))
    assert p.get("/index/alpha/").status == 200
    upstream_html.fail("/simple/alpha/", "500")
    time.sleep(0.1)  # past the TTL
    stale = p.get("/index/alpha/")
    assert stale.headers["X-Proxpi-Stale"] == "1"
    samples = _scrape(p)
    index = upstream_html.url
    assert sample(samples, "proxpi_upstream_requests_total", index=index, kind="page", outcome="error") == 1
    assert sample(samples, "proxpi_stale_responses_total", index=index) == 1


def test_metrics_index_label_has_no_credentials(proxy, upstream_html) -> None:
    with_credentials = upstream_html.url.replace("http://", "http://user:s3cret@")
    p = proxy(with_credentials)
    assert p.get("/index/alpha/").status == 200
    text = p.get("/metrics").text
    assert "s3cret" not in text
    assert sample(parse(text)[1], "proxpi_upstream_requests_total", index=upstream_html.url, kind="page", outcome="ok") == 1


def test_metrics_not_guarded_by_the_admin_token(proxy, upstream_html) -> None:
    p = proxy(upstream_html, admin_token="secret")
    assert p.get("/metrics").status == 200
    assert p.request("POST", "/metrics").status == 405


def test_json_log_lines_parse(proxy, upstream_html) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("proxpi_min")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        p = proxy(upstream_html)
        p.get("/index/alpha/")
        # The line is written once the response is out: wait for it.
        deadline = time.monotonic() + 10
        while '"status": 200' not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if "status" in line]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    page = next(line for line in requests if line["path"] == "/index/alpha/")
    assert page["method"] == "GET" and page["status"] == 200 and page["source"] == "upstream"
    assert page["client"] == "127.0.0.1" and page["bytes"] > 0 and page["duration_ms"] > 0
