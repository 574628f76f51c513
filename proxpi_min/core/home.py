"""The home page: the operator's dashboard (numbers, chart, index health, rankings) and
the invalidation buttons, from the status document; pure."""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Mapping, Optional, Sequence

from .home_style import HEAD, SCRIPT
from .markup import escape as _esc
from .units import human_duration as _duration, human_size

__all__ = ["render_home"]

_REQUESTS_COLOUR = "#0969da"
_HITS_COLOUR = "#1a7f37"
# The chart's drawing box in SVG user units; the SVG scales to the page width.
# The left and bottom margins hold the axis labels, which narrow screens draw larger.
_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 600, 180, 64, 28, 12
# A space after a digit: the one between a number and its unit ("1.5 MiB", "42 s").
_NUMBER_SPACE = re.compile(r"(?<=[0-9]) ")
# The index table's column names, shown beside each value when the table is stacked.
_INDEX_COLUMNS = ("URL", "TTL", "last success", "last failure", "serving stale", "back-off")


def _glued(text: str) -> str:
    """*text* escaped, each number held to its unit by a no-break space so no line
    ends inside "483.3 KiB"."""
    return _NUMBER_SPACE.sub("&nbsp;", _esc(text))


def _when(moment: Optional[float], now: float) -> str:
    """A Unix time as UTC, with how long ago; "never" for None."""
    if moment is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))
    return f'<time datetime="{stamp}Z">{stamp} UTC</time> ({_glued(_duration(now - moment))}&nbsp;ago)'


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
        _card("uptime", "uptime", _glued(_duration(status["uptime_seconds"]))),
        _card("requests", "requests", f"{status['requests']:,}"),
        _card("page-hit-ratio", "page hit ratio", _glued(_ratio(cache["page"]["ratio"]))),
        _card("file-hit-ratio", "file hit ratio", _glued(_ratio(cache["file"]["ratio"]))),
        _card("bytes-cache", "sent from cache (upstream traffic saved)", _glued(human_size(sent["cache"]) + saved)),
        _card("bytes-upstream", "sent from upstream", _glued(human_size(sent["upstream"]))),
        _card("cache-used", "cache used", _glued(f"{human_size(files['used_bytes'])} of {human_size(files['limit_bytes'])}")),
        _card("cache-files", "cached files", f"{files['files']:,}"),
        _card("downloads", "downloads in progress", f"{files['downloads_in_progress']:,}"),
    ]
    if status.get("prefetch"):
        prefetch = status["prefetch"]
        cards.append(_card("prefetch", "fetched ahead, then asked for", f"{prefetch['used']:,} of {prefetch['fetched']:,}"))
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
        f'<text x="{_LEFT - 6}" y="{_TOP}" text-anchor="end" dominant-baseline="central">{peak}</text>\n'
        f'<text x="{_LEFT - 6}" y="{axis_y}" text-anchor="end" dominant-baseline="central">0</text>\n'
        f'<text x="{_LEFT}" y="{_HEIGHT - 4}">-60 min</text>\n'
        f'<text x="{_WIDTH - 4}" y="{_HEIGHT - 4}" text-anchor="end">now</text>\n'
        f'<polyline id="chart-requests" fill="none" stroke="{_REQUESTS_COLOUR}" stroke-width="2" points="{line("requests")}"/>\n'
        f'<polyline id="chart-hits" fill="none" stroke="{_HITS_COLOUR}" stroke-width="2" points="{line("hits")}"/>\n'
        "</svg>\n"
    )


def _cell(label: str, value: str, css_class: str = "") -> str:
    """A table cell that names its column in ``data-label``, shown beside the value when
    the table is stacked; the cell of class "title" heads its row's block instead."""
    classes = f' class="{css_class}"' if css_class else ""
    return f'<td{classes} data-label="{_esc(label)}">{value}</td>'


def _index_rows(indexes: list, now: float) -> str:
    url, ttl, success, failed, serving_stale, backoff = _INDEX_COLUMNS
    rows = []
    for index in indexes:
        if index["backoff_pages"]:
            state = (
                f'<span class="warn">{index["backoff_pages"]} page(s) in back-off, '
                f'next try in {_glued(_duration(index["next_retry_seconds"]))}</span>'
            )
        else:
            state = '<span class="ok">none</span>'
        stale = index["stale_pages"]
        failure = _when(index["last_failure"], now)
        if index["last_failure_reason"]:
            failure += f'<br><span class="bad">{_esc(index["last_failure_reason"])}</span>'
        cells = (
            _cell(url, f"<code>{_esc(index['url'])}</code>", "title"),
            _cell(ttl, f"{index['ttl']:g}&nbsp;s", "n"),
            _cell(success, _when(index["last_success"], now)),
            _cell(failed, failure),
            _cell(serving_stale, f"yes, {stale} page(s)" if stale else "no", "bad" if stale else "ok"),
            _cell(backoff, state),
        )
        rows.append("<tr>" + "".join(cells) + "</tr>\n")
    head = "".join(f'<th class="n">{name}</th>' if name == ttl else f"<th>{name}</th>" for name in _INDEX_COLUMNS)
    return _table("Indices", "indexes", head, rows, len(_INDEX_COLUMNS), stack=True)


def _table(title: str, table_id: str, head: str, rows: list, columns: int, stack: bool = False) -> str:
    """A titled table of *rows* (HTML ``<tr>`` lines) under the header cells *head*;
    one block per row on a narrow screen if *stack*."""
    body = "".join(rows) or f'<tr><td colspan="{columns}">none yet</td></tr>\n'
    classes = ' class="stack"' if stack else ""
    return (
        f'<div class="wide"><h2>{title}</h2>\n<table id="{table_id}"{classes}>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>\n"
    )


def _top_projects(projects: list) -> str:
    rows = [
        f'<tr><td><a href="/index/{_esc(urllib.parse.quote(item["project"]))}/">{_esc(item["project"])}</a></td>'
        f'<td class="n">{item["requests"]:,}</td></tr>\n'
        for item in projects
    ]
    return _table("Most requested projects", "top-projects", '<th>project</th><th class="n">requests</th>', rows, 2)


def _largest_files(files: list) -> str:
    rows = [
        f'<tr>{_cell("project", _esc(item["project"]))}{_cell("file", _esc(item["filename"]), "title")}'
        f'{_cell("size", _glued(human_size(item["size"])), "n")}</tr>\n'
        for item in files
    ]
    head = '<th>project</th><th>file</th><th class="n">size</th>'
    return _table("Largest cached files", "largest-files", head, rows, 3, stack=True)


def _sections(status: Mapping) -> list:
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


def _policies(policies: Sequence[str]) -> str:
    """The "Policies in force" section (guard rails, one line each)."""
    items = "".join(f"<li>{_esc(line)}</li>\n" for line in policies) or "<li>none</li>\n"
    return f"<h2>Policies in force</h2>\n<ul>\n{items}</ul>\n"


def render_home(status: Mapping, token_required: bool) -> bytes:
    """The home page for a person, from the status document *status*: the operator's
    dashboard, the policies, links, and the invalidation buttons (with a field for the
    admin token if *token_required*)."""
    token = '<p>Admin token: <input id="token" type="password"></p>\n' if token_required else ""
    route = status.get("upstream_route")
    body = [
        *_sections(status),
        _policies(status.get("policies", ())),
        f"<p>Upstream connections: {_esc(route)}</p>\n" if route else "",
        f"<p>Local index: {_esc(status['local_index'])}</p>\n" if status.get("local_index") else "",
        f'<p>Package index: <a href="/index/">{_esc(status.get("index_url", "/index/"))}</a> &middot; '
        '<a href="/metrics">/metrics</a> (Prometheus) &middot; this page as JSON: '
        "<code>Accept: application/json</code></p>\n",
        "<h2>Invalidate</h2>\n",
        token,
        '<p><button onclick="invalidate(\'list\')">Invalidate the project list</button></p>\n',
        '<p><input id="project" placeholder="project name"> ',
        "<button onclick=\"invalidate(document.getElementById('project').value)\">"
        "Invalidate project</button></p>\n",
        '<p id="result"></p>\n',
        SCRIPT,
    ]
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{HEAD}<title>proxpi-min</title>\n</head>\n<body>\n<h1>proxpi-min</h1>\n"
    )
    # "replace": a cache dir's name may hold bytes that are not UTF-8 (os.fsdecode's surrogates).
    return "".join([head, *body, "</body>\n</html>\n"]).encode("utf-8", "replace")
