"""Guard rails: pins, index strategy, release cooldown, deny and allow lists.

Pure decisions over page data, with the time passed in. The only state is a lock-guarded
set of counters (files hidden, requests refused, per policy) and the indices already
warned about, so that pages, file routes and offline pages all ask one object.

Policy names (the ``X-Proxpi-Policy`` header, the counters): ``pin``, ``first-index``,
``cooldown``, ``deny``, ``allow``.
"""

from __future__ import annotations

import calendar
import collections
import fnmatch
import functools
import logging
import re
import threading
import time
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

from .names import NormalizedName, version_from_filename
from .settings import Settings
from .simple import FileEntry, ProjectPage
from .units import format_duration
from .urls import redact_url
from .versions import matches, version_key

__all__ = ["Filtered", "Policy", "Route", "parse_upload_time"]

logger = logging.getLogger(__name__)

# PEP 700: upload-time is ISO 8601 "yyyy-mm-ddThh:mm:ss.ffffffZ"; fraction optional,
# and an explicit UTC offset is accepted too (datetime.fromisoformat takes "Z" only
# from Python 3.11 on).
_UPLOAD_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?\Z", re.ASCII
)
_NEVER = float("inf")


def parse_upload_time(text: Optional[str]) -> Optional[float]:
    """Seconds since the epoch of a PEP 700 ``upload-time``, or None if absent or not
    a time (a missing offset means UTC, as PEP 700 requires UTC)."""
    match = _UPLOAD_TIME.match(text) if text else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        seconds = calendar.timegm(
            (int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0)
        )
    except (ValueError, OverflowError):
        return None
    if offset and offset != "Z":
        sign = -1 if offset[0] == "+" else 1
        digits = offset[1:].replace(":", "")
        seconds += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds + (float("0." + fraction) if fraction else 0.0)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Route(NamedTuple):
    """What the policies say of a project before any index is asked."""

    refusal: Optional[tuple[str, str]]  # (policy, reason) when it is not served at all
    positions: tuple[int, ...]  # the indices to ask, in order (a pin leaves one)
    first_only: bool  # stop at the first that has the project (first-index)


class Filtered(NamedTuple):
    """A project page after the policies, and how long that answer holds."""

    page: ProjectPage
    hidden: dict  # file name -> FileEntry left out
    policies: str  # the policies that changed the page, comma-separated ("" if none)
    since: float  # the instant this answer started to hold (-inf: always)
    until: float  # the instant a hidden file's cooldown ends (inf: never)


class Policy:
    """The guard rails of one proxy; build with :meth:`from_settings`."""

    def __init__(
        self,
        index_urls: Sequence[str],
        pins: Sequence[tuple[str, str]] = (),
        first_index: bool = False,
        min_age: float = 0.0,
        min_age_exempt: Sequence[str] = (),
        unknown_age_deny: bool = False,
        deny: Sequence[tuple[str, Optional[str]]] = (),
        allow: Sequence[str] = (),
    ) -> None:
        self._index_urls = tuple(index_urls)
        self._pins = tuple(pins)
        self._pin_patterns = tuple(pattern for pattern, _ in self._pins)
        self._pin_urls: dict = {}  # pattern -> index URL of its first pin
        for pattern, url in self._pins:
            self._pin_urls.setdefault(pattern, url)
        self._first_index = first_index
        self._min_age = min_age
        self._exempt = tuple(min_age_exempt)
        self._unknown_deny = unknown_age_deny
        self._deny_projects = tuple(pattern for pattern, version in deny if version is None)
        self._deny_versions = tuple((p, version_key(v), v) for p, v in deny if v is not None)
        self._allow = tuple(allow)
        # Whether anything can change a page: with no policy, callers skip all of this.
        self.active = bool(pins or first_index or min_age or deny or allow)
        self._counts: "collections.Counter[tuple[str, str]]" = collections.Counter()
        self._warned: set = set()
        self._lock = threading.Lock()
        # Asked on every request for a project: kept per project (per instance).
        self.route: Callable[[NormalizedName], Route] = functools.lru_cache(maxsize=4096)(self._route)

    @classmethod
    def from_settings(cls, settings: Settings, index_urls: Optional[Sequence[str]] = None) -> "Policy":
        """The policy *settings* describe; *index_urls* are the indices in the order the
        proxy asks them (offline mode adds saved ones), the configured ones by default."""
        return cls(
            index_urls if index_urls is not None else [index.url for index in settings.indexes],
            settings.pins,
            settings.index_strategy == "first-index",
            settings.min_age,
            settings.min_age_exempt,
            settings.min_age_unknown_deny,
            settings.deny,
            settings.allow,
        )

    # ------------------------------------------------------------------ projects

    def _match(self, patterns: tuple, project: NormalizedName) -> Optional[str]:
        for pattern in patterns:
            if fnmatch.fnmatchcase(project, pattern):
                return pattern
        return None

    def pin(self, project: NormalizedName) -> Optional[tuple[str, str]]:
        """(pattern, index URL) of the first pin naming *project*, or None."""
        pattern = self._match(self._pin_patterns, project)
        return None if pattern is None else (pattern, self._pin_urls[pattern])

    def _route(self, project: NormalizedName) -> Route:
        refusal = None
        entry = self._match(self._deny_projects, project)
        if entry is not None:
            refusal = "deny", f"project {project!r} is denied by the deny-list entry {entry!r} (PROXPI_DENY)"
        elif self._allow and self._match(self._allow, project) is None:
            refusal = "allow", f"project {project!r} is not in the allow list (PROXPI_ALLOW)"
        pinned = self.pin(project)
        if pinned is not None:
            return Route(refusal, tuple(i for i, url in enumerate(self._index_urls) if url == pinned[1]), False)
        return Route(refusal, tuple(range(len(self._index_urls))), self._first_index)

    @property
    def filters_list(self) -> bool:
        """Whether the deny or allow list takes names out of the project list."""
        return bool(self._deny_projects or self._allow)

    @property
    def list_policies(self) -> str:
        """The guard rails that take names out of the project list, comma-separated, as
        a page's X-Proxpi-Policy names them."""
        return ",".join(name for name, on in (("allow", self._allow), ("deny", self._deny_projects)) if on)

    def listed(self, project: NormalizedName) -> bool:
        """Whether *project* stays in the project list: the deny and allow lists refuse
        its page, so it is not offered (not counted: nobody asked for it)."""
        if self._match(self._deny_projects, project) is not None:
            return False
        return not self._allow or self._match(self._allow, project) is not None

    def not_found_note(self, project: NormalizedName, asked: Sequence[int]) -> tuple[Optional[str], str]:
        """(policy, text to add to a 404 for *project* or its file): which index a pin
        or first-index kept it to; (None, "") when no policy did."""
        pinned = self.pin(project) if self._pins else None
        if pinned is not None:
            url = redact_url(pinned[1])
            return "pin", f" on {url}, the only index asked for it (pin {pinned[0]}={url})"
        if self._first_index and asked and len(asked) < len(self._index_urls):
            url = redact_url(self._index_urls[asked[-1]])
            return "first-index", f" on {url}, the first index that has it (index strategy first-index)"
        return None, ""

    # ------------------------------------------------------------------ files

    def files(
        self, page: ProjectPage, sources: Iterable[tuple[str, ProjectPage]], now: float, cut_short: bool
    ) -> Filtered:
        """*page* (merged from *sources*, pairs of index URL and that index's page) with
        the files the policies refuse left out, at time *now*. *cut_short*: first-index
        or a pin left other indices unasked. Hidden files are counted per call."""
        project = page.name
        policies = []
        if cut_short:
            policies.append("pin" if self._pins and self.pin(project) else "first-index")
        cooldown = self._min_age > 0 and (not self._exempt or self._match(self._exempt, project) is None)
        if cooldown:
            for url, source in sources:
                self._warn_unknown_ages(url, source)
        denied_versions = self._deny_versions_of(project)
        if not cooldown and not denied_versions:
            return Filtered(page, {}, ",".join(policies), -_NEVER, _NEVER)
        kept, hidden = [], {}
        since, until = -_NEVER, _NEVER
        hidden_by = collections.Counter()
        for entry in page.files:
            why = None
            if denied_versions and self._denied_version(entry, project, denied_versions) is not None:
                why = "deny"
            elif cooldown:
                uploaded = parse_upload_time(entry.upload_time)
                if uploaded is None:
                    why = "cooldown" if self._unknown_deny else None
                else:
                    available = uploaded + self._min_age
                    if available > now:
                        why = "cooldown"
                        until = min(until, available)
                    else:
                        since = max(since, available)
            if why is None:
                kept.append(entry)
            else:
                hidden[entry.filename] = entry
                hidden_by[why] += 1
        if not hidden:
            return Filtered(page, {}, ",".join(policies), since, until)
        with self._lock:
            for why, count in hidden_by.items():
                self._counts["hidden", why] += count
        policies += sorted(hidden_by)
        return Filtered(
            page._replace(files=tuple(kept), versions=_kept_versions(page, kept, hidden.values())),
            hidden,
            ",".join(policies),
            since,
            until,
        )

    def refusal(self, project: NormalizedName, entry: FileEntry, now: float) -> str:
        """The one-line reason a hidden file is refused at time *now*; counted."""
        denied = self._denied_version(entry, project, self._deny_versions_of(project))
        if denied is not None:
            self.count_refused("deny")
            return f"{entry.filename!r} is denied by the deny-list entry '{denied[0]}=={denied[2]}' (PROXPI_DENY)"
        self.count_refused("cooldown")
        uploaded = parse_upload_time(entry.upload_time)
        if uploaded is None:
            return (
                f"{entry.filename!r} has no upload time (or none that is a time), so its age is unknown "
                f"(PROXPI_MIN_AGE_UNKNOWN=deny)"
            )
        return (
            f"{entry.filename!r} was uploaded {format_duration(max(now - uploaded, 0))} ago; the "
            f"minimum age is {format_duration(self._min_age)}, so it becomes available at "
            f"{_utc(uploaded + self._min_age)} (PROXPI_MIN_AGE)"
        )

    def _deny_versions_of(self, project: NormalizedName) -> list:
        """The deny-list entries (pattern, version key, version as written) for *project*."""
        return [denied for denied in self._deny_versions if fnmatch.fnmatchcase(project, denied[0])]

    @staticmethod
    def _denied_version(entry: FileEntry, project: NormalizedName, denied_versions: list) -> Optional[tuple]:
        """The first of *denied_versions* (see :meth:`_deny_versions_of`) naming
        *entry*'s version, or None; the first of them for a file whose name tells no
        version (it may be one of those: a name the installer reads otherwise)."""
        version = version_from_filename(entry.filename, project)
        if version is None:
            return denied_versions[0] if denied_versions else None
        key = version_key(version)
        return next((denied for denied in denied_versions if matches(denied[1], key)), None)

    # ------------------------------------------------------------------ reporting

    def _warn_unknown_ages(self, url: str, page: ProjectPage) -> None:
        if url in self._warned or all(entry.upload_time for entry in page.files):
            return
        with self._lock:
            if url in self._warned:
                return
            self._warned.add(url)
        logger.warning(
            "index %s gives no upload time for some files (e.g. %s/): the cooldown cannot "
            "apply to them; they are %s",
            redact_url(url),
            page.name,
            "left out (PROXPI_MIN_AGE_UNKNOWN=deny)" if self._unknown_deny else "served",
        )

    def count_refused(self, policy: str) -> None:
        """Count one request refused by *policy*."""
        with self._lock:
            self._counts["refused", policy] += 1

    def counts(self) -> dict:
        """``{("hidden", policy): n, ("refused", policy): n}`` so far: files left out of
        pages each time a page was built (once per upstream change or cooldown step), and
        requests refused (403 pages and files, 404s of files a pin kept out)."""
        with self._lock:
            return dict(self._counts)

    def describe(self) -> list:
        """One line per policy in force, for the home page."""
        lines = [f"pin {pattern} to {redact_url(url)}" for pattern, url in self._pins]
        if self._first_index:
            lines.append("index strategy first-index: a project comes from the first index that has it")
        if self._min_age:
            line = f"cooldown: files younger than {format_duration(self._min_age)} are left out"
            if self._exempt:
                line += f" (exempt: {', '.join(self._exempt)})"
            unknown = "left out" if self._unknown_deny else "served"
            lines.append(f"{line}; files without an upload time are {unknown}")
        lines += [f"deny {pattern}" for pattern in self._deny_projects]
        lines += [f"deny {pattern}=={version}" for pattern, _, version in self._deny_versions]
        if self._allow:
            lines.append(f"allow only {', '.join(self._allow)}")
        return lines


def _kept_versions(page: ProjectPage, kept: list, hidden: Iterable[FileEntry]) -> tuple:
    """PEP 700 ``versions`` without the versions whose files were all left out."""
    project = page.name
    keep = {version_key(v) for v in (version_from_filename(e.filename, project) for e in kept) if v}
    gone = {version_key(v) for v in (version_from_filename(e.filename, project) for e in hidden) if v}
    gone -= keep
    return tuple(version for version in page.versions if version_key(version) not in gone)
