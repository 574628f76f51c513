"""The home page as a dashboard: pure rendering (escaping, chart), the same numbers in
HTML and JSON from a real proxy, and the page as headless Chromium renders it."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from proxpi_min.core.home import render_home
from proxpi_min.core.negotiate import wants_json
from tests.support.cache_dir import settled

HOSTILE = '<script>alert("x")</script>&amp;\'"'


def _status(**changes) -> dict:
    per_minute = [{"minute": 60 * i, "requests": i % 7, "hits": i % 3} for i in range(60)]
    status = {
        "version": "0",
        "now": 7200.0,
        "offline": False,
        "started": 0.0,
        "uptime_seconds": 7200.0,
        "requests": 1234,
        "cache": {
            "page": {"hits": 3, "misses": 1, "ratio": 0.75},
            "file": {"hits": 0, "misses": 0, "ratio": None},
        },
        "bytes_sent": {"cache": 3 * 1024**2, "upstream": 1024**2},
        "per_minute": per_minute,
        "top_projects": [{"project": HOSTILE, "requests": 5}],
        "file_cache": {
            "directory": f"/tmp/{HOSTILE}",
            "used_bytes": 2048,
            "limit_bytes": 4096,
            "files": 2,
            "downloads_in_progress": 0,
            "largest": [{"project": HOSTILE, "filename": HOSTILE + ".whl", "size": 2000}],
        },
        "indexes": [
            {
                "url": f"http://example.invalid/{HOSTILE}/",
                "ttl": 1800.0,
                "last_success": 3600.0,
                "last_failure": 7000.0,
                "last_failure_reason": HOSTILE,
                "stale_pages": 2,
                "backoff_pages": 1,
                "next_retry_seconds": 42.0,
            }
        ],
    }
    status.update(changes)
    return status


def test_render_home_escapes_everything() -> None:
    page = render_home(_status(), token_required=False).decode()
    assert "<script>alert" not in page
    assert page.count(html.escape(HOSTILE, quote=True)) >= 5
    assert "<script>\nasync function invalidate" in page  # our own script, nothing else


def test_render_home_writes_a_cache_dir_name_that_is_not_utf_8() -> None:
    status = _status()
    status["file_cache"]["directory"] = os.fsdecode(b"/srv/cache-caf\xe9")  # a Latin-1 name
    assert "/srv/cache-caf?" in render_home(status, token_required=False).decode("utf-8")


def test_render_home_is_well_formed_and_self_contained() -> None:
    page = render_home(_status(), token_required=True).decode()
    assert "<style>" in page and 'name="viewport"' in page
    # Nothing fetched from elsewhere: no src= or stylesheet links at all.
    assert not re.search(r"\ssrc=|<link\b|@import|url\(", page)
    body = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    svg = ET.fromstring(body)
    lines = {element.get("id"): element for element in svg if element.tag.endswith("polyline")}
    assert set(lines) == {"chart-requests", "chart-hits"}
    assert len(lines["chart-requests"].get("points").split()) == 60
    assert 'id="requests">1,234<' in page
    assert 'id="page-hit-ratio">75.0&nbsp;%<' in page  # a number and its unit stay on one line
    assert 'id="file-hit-ratio">n/a<' in page
    assert "next try in 42&nbsp;s" in page
    assert 'type="password"' in page


def test_render_home_prepares_narrow_screens() -> None:
    page = render_home(_status(), token_required=False).decode()
    # Stacked tables name each cell's column; the title cell heads each block.
    indexes = page[page.index('<table id="indexes"') : page.index("</table>", page.index('<table id="indexes"'))]
    assert 'class="stack"' in indexes and "<thead>" in indexes
    for label in ("TTL", "last success", "last failure", "serving stale", "back-off"):
        assert f'data-label="{label}"' in indexes
    assert '<td class="title" data-label="URL"><code>' in indexes
    assert '<td class="n" data-label="TTL">1800&nbsp;s</td>' in indexes
    assert '<td class="title" data-label="file">' in page
    assert '<td class="n" data-label="size">2.0&nbsp;KiB</td>' in page
    # A number is held to its unit; the parts of a longer value may still wrap.
    assert 'id="cache-used">2.0&nbsp;KiB of 4.0&nbsp;KiB<' in page
    assert 'id="bytes-cache">3.0&nbsp;MiB (75&nbsp;%)<' in page
    assert 'id="uptime">2&nbsp;h 0&nbsp;min<' in page
    assert "UTC</time> (1&nbsp;h 0&nbsp;min&nbsp;ago)" in page
    assert "@media (max-width:40rem)" in page


def test_render_home_chart_scales_to_the_busiest_minute() -> None:
    per_minute = [{"minute": 60 * i, "requests": 0, "hits": 0} for i in range(60)]
    per_minute[-1] = {"minute": 3540, "requests": 10, "hits": 5}
    page = render_home(_status(per_minute=per_minute), False).decode()
    requests = re.search(r'id="chart-requests"[^>]*points="([^"]*)"', page).group(1).split()
    hits = re.search(r'id="chart-hits"[^>]*points="([^"]*)"', page).group(1).split()
    top, bottom = float(requests[-1].split(",")[1]), float(requests[0].split(",")[1])
    middle = float(hits[-1].split(",")[1])
    assert top < middle < bottom
    assert middle == pytest.approx((top + bottom) / 2)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json, text/html;q=0.5", True),
        ("text/html, application/json", False),
        ("application/json;q=0", False),
    ],
)
def test_wants_json(accept, expected) -> None:
    assert wants_json(accept) is expected


# -- the real proxy ---------------------------------------------------------------------


def _numbers(page: str) -> dict:
    return {key: html.unescape(value) for key, value in re.findall(r'<dd id="([a-z-]+)">([^<]*)<', page)}


def _home_once_counted(p, counted: int, accept: str) -> tuple:
    """``GET /`` as *accept* once the proxy has counted the *counted* requests before it,
    and how many that makes. A request is counted just after its answer goes out, so the
    next one may overtake the count; each ask is counted too, so a retry expects one more."""
    deadline = time.monotonic() + 10
    while True:
        result = p.get("/", {"Accept": accept})
        if accept == "application/json":
            seen = json.loads(result.body)["requests"]
        else:
            seen = int(_numbers(result.text)["requests"].replace(",", ""))
        if seen >= counted or time.monotonic() > deadline:
            return result, counted
        counted += 1
        time.sleep(0.02)


def test_home_page_and_json_agree(proxy, upstream_html, dists, tmp_path) -> None:
    cache_dir = tmp_path / HOSTILE.replace("/", "_")
    p = proxy(upstream_html, cache_dir=str(cache_dir))
    for _ in range(3):
        p.get("/index/alpha/")
    p.get("/index/beta/")
    p.get(f"/index/alpha/{dists.alpha_1.filename}")
    assert settled(cache_dir)  # stored: the next request is a hit
    p.get(f"/index/alpha/{dists.alpha_1.filename}")
    assert p.get("/index/%3Cscript%3E/").status == 400

    answer, counted = _home_once_counted(p, 7, "application/json")  # the six above and the 400
    data = json.loads(answer.body)
    page, shown = _home_once_counted(p, counted + 1, "text/html")  # and the JSON request
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert "<script>alert" not in text and html.escape(str(cache_dir)) in text
    assert data["requests"] == counted
    assert data["cache"]["page"] == {"hits": 2, "misses": 2, "ratio": 0.5}
    assert data["cache"]["file"] == {"hits": 1, "misses": 1, "ratio": 0.5}
    assert data["top_projects"] == [{"project": "alpha", "requests": 5}, {"project": "beta", "requests": 1}]
    assert data["file_cache"]["largest"] == [
        {"project": "alpha", "filename": dists.alpha_1.filename, "size": len(dists.alpha_1.content)}
    ]
    assert data["file_cache"]["files"] == 1
    assert data["indexes"][0]["url"] == upstream_html.url
    assert data["indexes"][0]["last_success"] is not None and data["indexes"][0]["last_failure"] is None
    assert sum(point["requests"] for point in data["per_minute"]) == counted
    assert sum(point["hits"] for point in data["per_minute"]) == 3

    numbers = _numbers(text)
    assert numbers["requests"] == str(shown)
    assert numbers["page-hit-ratio"] == numbers["file-hit-ratio"] == "50.0\xa0%"
    assert numbers["cache-files"] == "1"
    assert re.search(r'<a href="/index/alpha/">alpha</a></td><td class="n">5<', text)
    assert dists.alpha_1.filename in text


def test_home_page_shows_index_failures(proxy, upstream_html) -> None:
    p = proxy((upstream_html, 0.05))
    assert p.get("/index/alpha/").status == 200
    upstream_html.fail("/simple/alpha/", "500")
    time.sleep(0.1)
    assert p.get("/index/alpha/").headers["X-Proxpi-Stale"] == "1"
    health = json.loads(p.get("/", {"Accept": "application/json"}).body)["indexes"][0]
    assert "500" in health["last_failure_reason"]
    assert health["stale_pages"] == 1 and health["backoff_pages"] == 1
    assert 0 < health["next_retry_seconds"] <= 2.0
    text = p.get("/").text
    assert html.escape(health["last_failure_reason"]) in text
    assert "yes, 1 page(s)" in text and "in back-off" in text


# -- in a real browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_dashboard_in_headless_chromium(proxy, upstream_html, dists, tmp_path) -> None:
    p = proxy(upstream_html)
    for _ in range(4):
        p.get("/index/alpha/")
    p.get(f"/index/alpha/{dists.alpha_1.filename}")
    dumped = _chromium(tmp_path, "--dump-dom", p.url + "/")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert re.search(r'<svg id="chart"', dom)
    assert len(re.findall(r"<polyline", dom)) == 2
    numbers = _numbers(dom)
    assert numbers["requests"] == "5"
    assert numbers["page-hit-ratio"] == "75.0\xa0%"
    assert "alpha" in dom and dists.alpha_1.filename in dom
    shot = tmp_path / "dashboard.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1400", p.url + "/")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Appended to the page before </body>: measures the layout as drawn and writes what it
# found, as JSON, into <pre id="layout"> of the page around it, which --dump-dom prints.
_MEASURE = r"""<script>
(() => {
  const width = window.innerWidth;
  // A number with any unit held to it by a no-break space: "483.3 KiB", "2026-12-04".
  const number = /\d(?:[\d.,:-]*\d)?(?:\u00a0[^\s\u00a0]+)*/g;
  const texts = new Set();
  for (const element of document.querySelectorAll("dd, td.n, time, #indexes td")) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      if (!walker.currentNode.parentElement.closest("code, span.bad")) texts.add(walker.currentNode);
    }
  }
  const wrapped = [];
  for (const node of texts) {
    for (const match of node.data.matchAll(number)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((box) => Math.round(box.top)));
      if (lines.size > 1) wrapped.push(match[0]);
    }
  }
  const hidden = [];
  for (const cell of document.querySelectorAll("td")) {
    const box = cell.getBoundingClientRect();
    const room = cell.closest("div").getBoundingClientRect();
    if (box.width <= 0 || box.height <= 0 || box.left < room.left - 0.5 || box.right > room.right + 0.5
        || cell.scrollWidth > cell.clientWidth + 1) {
      hidden.push(cell.textContent.slice(0, 60));
    }
  }
  const rows = (table) => [...document.querySelectorAll(`#${table} tbody tr`)].map((row) => ({
    lines: new Set([...row.cells].map((cell) => Math.round(cell.getBoundingClientRect().top))).size,
    labels: [...row.cells].map((cell) => getComputedStyle(cell, "::before").content),
  }));
  const chartLabels = [...document.querySelectorAll("#chart text")].map((text) => text.getBoundingClientRect().height);
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({
    width, scrollWidth: document.documentElement.scrollWidth, wrapped, hidden, chartLabels,
    indexRows: rows("indexes"), fileRows: rows("largest-files"), projectRows: rows("top-projects"),
  });
  parent.document.body.append(out);
})();
</script>
"""


def _busy_status() -> dict:
    """A long-running proxy's numbers at their widest: long URLs and file names, sizes in
    every unit, two indices of which one is failing."""
    wheel = "tensorflow-2.18.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    mirror = "https://artifactory.example.com/artifactory/api/pypi/pypi-remote/simple/"
    healthy = {
        "url": "https://pypi.org/simple/",
        "ttl": 1800.0,
        "last_success": 7000.0,
        "last_failure": None,
        "last_failure_reason": None,
        "stale_pages": 0,
        "backoff_pages": 0,
        "next_retry_seconds": 0.0,
    }
    failing = dict(
        healthy,
        url=mirror,
        ttl=86400.0,
        last_failure=7190.0,
        last_failure_reason=f"upstream answered 503: {mirror}tensorflow/",
        stale_pages=12,
        backoff_pages=3,
        next_retry_seconds=3599.0,
    )
    return _status(
        uptime_seconds=1_000_000.0,
        requests=12_345_678,
        bytes_sent={"cache": int(483.3 * 1024**3), "upstream": int(1.5 * 1024**4)},
        top_projects=[{"project": "nvidia-cudnn-cu12", "requests": 1_234_567}, {"project": "numpy", "requests": 98}],
        file_cache={
            "directory": "/var/cache/proxpi-min/" + "a-rather-long-directory-name" * 3,
            "used_bytes": int(483.3 * 1024**3),
            "limit_bytes": 500 * 1024**3,
            "files": 123_456,
            "downloads_in_progress": 12,
            "largest": [
                {"project": "tensorflow", "filename": wheel, "size": int(615.2 * 1024**2)},
                {"project": "nvidia-cudnn-cu12", "filename": "nvidia_cudnn_cu12-9.1.0.70-py3-none-any.whl",
                 "size": int(483.3 * 1024**2)},
            ],
        },
        indexes=[healthy, failing],
        policies=[f"pin acme-* to {mirror}", "files younger than 1w are left out"],
        upstream_route="through http://proxy.example.com:3128 (from HTTPS_PROXY)",
        index_url="http://proxpi.example.com:5000/index/",
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize(("width", "stacked"), [(390, True), (1280, False)])
def test_dashboard_layout_in_headless_chromium(tmp_path, width, stacked) -> None:
    """Measured as drawn: nothing wider than the screen, no number broken over two lines,
    every cell inside its table's box; on a phone each index a block of label/value lines
    and the chart's labels still readable, on a wide screen the indices a table."""
    page = render_home(_busy_status(), token_required=True).decode().replace("</body>", _MEASURE + "</body>")
    # Headless Chromium lays a window out at least 500 px wide: the page is drawn in a
    # frame of the screen's size, which is its viewport (media queries, innerWidth).
    frame = f'<iframe width="{width}" height="844" style="border:0" srcdoc="{html.escape(page)}"></iframe>'
    document = tmp_path / "frame.html"
    document.write_text(f"<!DOCTYPE html>\n<body style=\"margin:0\">{frame}</body>\n", encoding="utf-8")
    # Scroll bars hidden, as on a phone (which draws them over the page).
    dumped = _chromium(tmp_path, "--window-size=1400,900", "--hide-scrollbars", "--dump-dom", document.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    found = re.search(r'<pre id="layout">([^<]*)</pre>', dumped.stdout)
    assert found, dumped.stdout[-2000:]
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["width"] == width
    assert layout["scrollWidth"] <= width
    assert layout["wrapped"] == []
    assert layout["hidden"] == []
    assert len(layout["indexRows"]) == len(layout["fileRows"]) == len(layout["projectRows"]) == 2
    for row in layout["indexRows"]:
        if stacked:  # one line per column, each after the URL led by its column's name
            assert row["lines"] == 6
            assert row["labels"] == ["none", '"TTL"', '"last success"', '"last failure"', '"serving stale"', '"back-off"']
        else:
            assert row == {"lines": 1, "labels": ["none"] * 6}
    for row in layout["fileRows"]:
        if stacked:  # headed by the file's name
            assert row == {"lines": 3, "labels": ['"project"', "none", '"size"']}
        else:
            assert row == {"lines": 1, "labels": ["none"] * 3}
    for row in layout["projectRows"]:  # two columns fit a phone: a table on every screen
        assert row == {"lines": 1, "labels": ["none"] * 2}
    # Drawn at least as tall as an 11 px font (the SVG is scaled to the screen's width).
    assert min(layout["chartLabels"]) >= 13
