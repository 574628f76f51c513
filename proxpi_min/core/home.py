"""The home page's operator dashboard as HTML fragments (numbers, index health, chart); pure."""

from __future__ import annotations

import time
import urllib.parse
from typing import Mapping, Optional

from .markup import escape as _esc
from .units import human_duration as _duration, human_size

__all__ = ["HEAD", "dashboard_sections"]

# One request, nothing from elsewhere: the style sheet is inline, the chart inline SVG.
# The viewport line makes phones lay the page out at their width instead of zooming out.
HEAD = """<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1rem;max-width:64rem;color:#1d232a;background:#fafbfc;line-height:1.4}
h1{font-size:1.5rem;margin:.2rem 0 .8rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #d8dee4;padding-bottom:.2rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.6rem;margin:0}
.cards div{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.5rem .7rem}
.cards dt{font-size:.8rem;color:#57606a}.cards dd{margin:0;font-size:1.25rem;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem;background:#fff}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td{overflow-wrap:anywhere}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
svg{width:100%;height:auto;background:#fff;border:1px solid #d8dee4;border-radius:6px}
.legend span{display:inline-block;width:.8rem;height:.25rem;margin:0 .3rem .2rem .8rem;vertical-align:middle}
code{overflow-wrap:anywhere}input,button{font:inherit;margin:.1rem 0}
</style>
"""

_REQUESTS_COLOUR = "#0969da"
_HITS_COLOUR = "#1a7f37"
# The chart's drawing box in SVG user units; the SVG scales to the page width.
_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 600, 180, 40, 20, 10


def _when(moment: Optional[float], now: float) -> str:
    """A Unix time as UTC, with how long ago; "never" for None."""
    if moment is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))
    return f'<time datetime="{stamp}Z">{stamp} UTC</time> ({_duration(now - moment)} ago)'


def _ratio(ratio: Optional[float]) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.1f} %"


def _card(key: str, label: str, value: str) -> str:
    return f'<div><dt>{_esc(label)}</dt><dd id="{key}">{value}</dd></div>\n'


def _summary(status: Mapping) -> str:
    cache, sent = status["cache"], status["bytes_sent"]
    total = sent["cache"] + sent["upstream"]
    saved = f" ({sent['cache'] / total * 100:.0f} %)" if total else ""
    files = status["file_cache"]
    cards = [
        _card("mode", "mode", "offline" if status["offline"] else "online"),
        _card("uptime", "uptime", _esc(_duration(status["uptime_seconds"]))),
        _card("requests", "requests", f"{status['requests']:,}"),
        _card("page-hit-ratio", "page hit ratio", _esc(_ratio(cache["page"]["ratio"]))),
        _card("file-hit-ratio", "file hit ratio", _esc(_ratio(cache["file"]["ratio"]))),
        _card("bytes-cache", "sent from cache (upstream traffic saved)", _esc(human_size(sent["cache"]) + saved)),
        _card("bytes-upstream", "sent from upstream", _esc(human_size(sent["upstream"]))),
        _card("cache-used", "cache used", _esc(f"{human_size(files['used_bytes'])} of {human_size(files['limit_bytes'])}")),
        _card("cache-files", "cached files", f"{files['files']:,}"),
        _card("downloads", "downloads in progress", f"{files['downloads_in_progress']:,}"),
    ]
    return '<h2>Since start</h2>\n<dl class="cards">\n' + "".join(cards) + "</dl>\n"


def _chart(per_minute: list) -> str:
    """Requests and hits per minute as two inline SVG lines, oldest minute left."""
    width, height = _WIDTH - _LEFT, _HEIGHT - _BOTTOM - _TOP
    peak = max([point["requests"] for point in per_minute] + [point["hits"] for point in per_minute] + [1])
    step = width / max(len(per_minute) - 1, 1)

    def line(field: str) -> str:
        return " ".join(
            f"{_LEFT + i * step:.1f},{_TOP + height - point[field] / peak * height:.1f}"
            for i, point in enumerate(per_minute)
        )

    axis_y = _TOP + height
    return (
        '<h2>Requests and hits per minute, last hour</h2>\n'
        f'<p class="legend"><span style="background:{_REQUESTS_COLOUR}"></span>requests'
        f'<span style="background:{_HITS_COLOUR}"></span>cache hits</p>\n'
        f'<svg id="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">\n'
        "<title>requests and cache hits per minute over the last hour</title>\n"
        f'<line x1="{_LEFT}" y1="{axis_y}" x2="{_WIDTH}" y2="{axis_y}" stroke="#8c959f"/>\n'
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{axis_y}" stroke="#8c959f"/>\n'
        f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end" font-size="11">{peak}</text>\n'
        f'<text x="{_LEFT - 4}" y="{axis_y}" text-anchor="end" font-size="11">0</text>\n'
        f'<text x="{_LEFT}" y="{_HEIGHT - 4}" font-size="11">-60 min</text>\n'
        f'<text x="{_WIDTH}" y="{_HEIGHT - 4}" text-anchor="end" font-size="11">now</text>\n'
        f'<polyline id="chart-requests" fill="none" stroke="{_REQUESTS_COLOUR}" stroke-width="2" points="{line("requests")}"/>\n'
        f'<polyline id="chart-hits" fill="none" stroke="{_HITS_COLOUR}" stroke-width="2" points="{line("hits")}"/>\n'
        "</svg>\n"
    )


def _index_rows(indexes: list, now: float) -> str:
    rows = []
    for index in indexes:
        if index["backoff_pages"]:
            state = (
                f'<span class="warn">{index["backoff_pages"]} page(s) in back-off, '
                f'next try in {_esc(_duration(index["next_retry_seconds"]))}</span>'
            )
        else:
            state = '<span class="ok">none</span>'
        stale = index["stale_pages"]
        failure = _when(index["last_failure"], now)
        if index["last_failure_reason"]:
            failure += f'<br><span class="bad">{_esc(index["last_failure_reason"])}</span>'
        rows.append(
            f"<tr><td><code>{_esc(index['url'])}</code></td><td class=\"n\">{index['ttl']:g} s</td>"
            f"<td>{_when(index['last_success'], now)}</td><td>{failure}</td>"
            f'<td class="{"bad" if stale else "ok"}">{"yes, " + str(stale) + " page(s)" if stale else "no"}</td>'
            f"<td>{state}</td></tr>\n"
        )
    return (
        '<h2>Indices</h2>\n<div class="wide"><table id="indexes">\n'
        "<tr><th>URL</th><th class=\"n\">TTL</th><th>last success</th><th>last failure</th>"
        "<th>serving stale</th><th>back-off</th></tr>\n" + "".join(rows) + "</table></div>\n"
    )


def _ranking(title: str, table_id: str, head: str, rows: list, columns: int) -> str:
    """A titled table of *rows* (HTML ``<tr>`` lines) under the header cells *head*."""
    body = "".join(rows) or f'<tr><td colspan="{columns}">none yet</td></tr>\n'
    return (
        f'<div class="wide"><h2>{title}</h2>\n<table id="{table_id}">\n'
        f"<tr>{head}</tr>\n{body}</table></div>\n"
    )


def _top_projects(projects: list) -> str:
    rows = [
        f'<tr><td><a href="/index/{_esc(urllib.parse.quote(item["project"]))}/">{_esc(item["project"])}</a></td>'
        f'<td class="n">{item["requests"]:,}</td></tr>\n'
        for item in projects
    ]
    return _ranking("Most requested projects", "top-projects", '<th>project</th><th class="n">requests</th>', rows, 2)


def _largest_files(files: list) -> str:
    rows = [
        f'<tr><td>{_esc(item["project"])}</td><td>{_esc(item["filename"])}</td>'
        f'<td class="n">{_esc(human_size(item["size"]))}</td></tr>\n'
        for item in files
    ]
    return _ranking(
        "Largest cached files", "largest-files", '<th>project</th><th>file</th><th class="n">size</th>', rows, 3
    )


def dashboard_sections(status: Mapping) -> list:
    """The dashboard's HTML fragments from *status*, the dict ``GET /`` also answers as
    JSON (so both show the same numbers). Every text from outside is escaped."""
    now = status["now"]
    files = status["file_cache"]
    return [
        _summary(status),
        _chart(status["per_minute"]),
        _index_rows(status["indexes"], now),
        _top_projects(status["top_projects"]),
        _largest_files(files["largest"]),
        f"<p>Cache directory: <code>{_esc(files['directory'])}</code></p>\n",
    ]
