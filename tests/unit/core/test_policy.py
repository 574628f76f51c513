"""Unit tests for proxpi_min/core/policy.py: the guard rails' decisions, with time passed in."""

from __future__ import annotations

import logging
import time

import pytest

from proxpi_min.core.settings import parse_settings
from proxpi_min.core.names import NormalizedName
from proxpi_min.core.policy import Policy, parse_upload_time
from proxpi_min.core.simple import FileEntry, ProjectPage

ROOT = "http://root.example/simple/"
INTERNAL = "http://internal.example/simple/"
DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: "now" in these tests


def at(seconds_ago: float) -> str:
    """A PEP 700 upload-time *seconds_ago* before T0."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(T0 - seconds_ago))


def wheel(project: str, version: str, uploaded: "str | None" = None) -> FileEntry:
    filename = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    return FileEntry(filename, f"http://files.example/{filename}", upload_time=uploaded)


def page(project: str, *files: FileEntry, versions: "tuple | None" = None) -> ProjectPage:
    if versions is None:
        versions = tuple(dict.fromkeys(f.filename.split("-")[1] for f in files))
    return ProjectPage(NormalizedName(project), files, versions)


def names(files) -> list:
    return [f.filename for f in files]


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20.000000Z", T0),
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20.5Z", T0 + 0.5),
        ("2023-11-14T22:13:20", T0),  # PEP 700 times are UTC
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14T21:13:20-0100", T0),
        ("", None),
        (None, None),
        ("yesterday", None),
        ("2023-13-14T22:13:20Z", None),
    ],
)
def test_parse_upload_time(text, expected) -> None:
    assert parse_upload_time(text) == expected


# ---------------------------------------------------------------- from settings


def test_Policy_from_settings_and_describe() -> None:
    settings = parse_settings(
        {
            "PROXPI_INDEX_URL": ROOT,
            "PROXPI_EXTRA_INDEX_URLS": INTERNAL,
            "PROXPI_PIN": "Acme_*=http://internal.example/simple",
            "PROXPI_MIN_AGE": "7d",
            "PROXPI_MIN_AGE_EXEMPT": "urgent-fix",
            "PROXPI_MIN_AGE_UNKNOWN": "deny",
            "PROXPI_DENY": "evil-*,alpha==2.0",
            "PROXPI_ALLOW": "acme-*,alpha,evil-twin",
        },
        {},
    )
    policy = Policy.from_settings(settings)
    assert policy.active
    assert policy.describe() == [
        f"pin acme-* to {INTERNAL}",
        "cooldown: files younger than 1w are left out (exempt: urgent-fix); files without an upload time are left out",
        "deny evil-*",
        "deny alpha==2.0",
        "allow only acme-*, alpha, evil-twin",
    ]


def test_Policy_without_settings_is_inactive() -> None:
    policy = Policy.from_settings(parse_settings({}, {}))
    assert not policy.active
    assert policy.describe() == []


# ---------------------------------------------------------------- which indices


@pytest.mark.parametrize(
    ("pins", "first_index", "project", "expected"),
    [
        ((), False, "acme-lib", ((0, 1), False)),
        ((), True, "acme-lib", ((0, 1), True)),
        ((("acme-*", INTERNAL),), False, "acme-lib", ((1,), False)),
        ((("acme-*", INTERNAL),), True, "acme-lib", ((1,), False)),  # a pin beats first-index
        ((("acme-*", INTERNAL),), False, "acme", ((0, 1), False)),
        ((("six", ROOT),), False, "six", ((0,), False)),
    ],
)
def test_Policy_route_indexes(pins, first_index, project, expected) -> None:
    policy = Policy([ROOT, INTERNAL], pins=pins, first_index=first_index)
    route = policy.route(NormalizedName(project))
    assert (route.positions, route.first_only) == expected
    assert route.refusal is None


def test_Policy_not_found_note_names_the_index() -> None:
    pinned = Policy([ROOT, INTERNAL], pins=[("acme-*", INTERNAL)])
    assert pinned.not_found_note(NormalizedName("acme-lib"), (1,)) == (
        "pin",
        f" on {INTERNAL}, the only index asked for it (pin acme-*={INTERNAL})",
    )
    first = Policy([ROOT, INTERNAL], first_index=True)
    assert first.not_found_note(NormalizedName("x"), (0,))[0] == "first-index"
    assert first.not_found_note(NormalizedName("x"), (0, 1)) == (None, "")  # every index asked


# ---------------------------------------------------------------- deny and allow


@pytest.mark.parametrize(
    ("deny", "allow", "project", "refused_by"),
    [
        (["evil"], [], "evil", "deny"),
        (["evil-*"], [], "evil-twin", "deny"),
        (["evil-*"], [], "evil", None),
        ([], ["acme-*"], "acme-lib", None),
        ([], ["acme-*"], "requests", "allow"),
        (["acme-bad"], ["acme-*"], "acme-bad", "deny"),
    ],
)
def test_Policy_route_refusal(deny, allow, project, refused_by) -> None:
    policy = Policy([ROOT], deny=[(p, None) for p in deny], allow=allow)
    refusal = policy.route(NormalizedName(project)).refusal
    if refused_by is None:
        assert refusal is None
    else:
        assert refusal[0] == refused_by
        assert f"project {project!r}" in refusal[1]
        assert ("PROXPI_DENY" if refused_by == "deny" else "PROXPI_ALLOW") in refusal[1]
    # The project list offers exactly the projects whose pages are served.
    assert policy.listed(NormalizedName(project)) is (refused_by is None)


def test_Policy_deny_version_hides_its_files_and_versions() -> None:
    policy = Policy([ROOT], deny=[("alpha", "2.0")])
    source = page("alpha", wheel("alpha", "1.0"), wheel("alpha", "2.0"), versions=("1.0", "2.0", "3.0"))
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert names(result.page.files) == ["alpha-1.0-py3-none-any.whl"]
    assert result.page.versions == ("1.0", "3.0")  # 3.0 has no file at all: not ours to drop
    assert result.policies == "deny"
    assert (result.since, result.until) == (float("-inf"), float("inf"))
    refused = result.hidden["alpha-2.0-py3-none-any.whl"]
    reason = policy.refusal(NormalizedName("alpha"), refused, T0)
    assert reason == "'alpha-2.0-py3-none-any.whl' is denied by the deny-list entry 'alpha==2.0' (PROXPI_DENY)"
    assert policy.counts() == {("hidden", "deny"): 1, ("refused", "deny"): 1}


def test_Policy_deny_version_hides_the_files_whose_name_tells_no_version() -> None:
    """pip installs "alpha-2.0.txz"; an egg or a name of no known shape may be the denied
    version too: with a version of a project denied, a file of unknown version goes."""
    policy = Policy([ROOT], deny=[("alpha", "2.0")])
    files = [FileEntry(name, f"http://x/{name}") for name in ("alpha-2.0.txz", "alpha-2.0-py2.7.egg", "alpha-1.0.tar.gz")]
    source = page("alpha", wheel("alpha", "1.0"), *files)
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert names(result.page.files) == ["alpha-1.0-py3-none-any.whl", "alpha-1.0.tar.gz"]


@pytest.mark.parametrize(
    ("denied", "file_version", "hidden"),
    [
        ("2.0", "2.0.0", True),  # PEP 440: the release is padded with zeros to compare
        ("2.0.0", "2.0", True),
        ("2", "2.0", True),
        ("2.0", "2.0.1", False),
        ("1.0rc1", "1.0.0rc1", True),
        ("1.0-RC1", "1.0rc1", True),
        ("1.0.post1", "1.0post1", True),
        ("v1.0", "1.0", True),
        ("1.0", "1.0rc1", False),
        ("1.0", "1.0.post1", False),
        ("1.0+local", "1.0", False),
        ("1.0", "1.0+local", True),  # PEP 440 "==" without a local label: every local build
        ("01.00", "1", True),
        ("1.010", "1.10", True),
        ("1.01", "1.1", True),
        ("1.01", "1.10", False),
        # Every spelling PEP 440 gives one version: the labels' long forms, their numbers'
        # leading zeros and missing ones, the implicit post-release, epoch 0.
        ("2.0beta1", "2.0b1", True),
        ("2.0b1", "2.0beta1", True),
        ("3.0c1", "3.0rc1", True),
        ("3.0pre1", "3.0rc1", True),
        ("3.0preview1", "3.0rc1", True),
        ("3.0rc01", "3.0rc1", True),
        ("1.0alpha", "1.0a0", True),
        ("1.0-1", "1.0.post1", True),
        ("1.0.post1", "1.0_1", True),  # a file name's "_" for the "-" of "1.0-1" (PEP 427)
        ("1.0rev1", "1.0.post1", True),
        ("1.0r", "1.0.post0", True),
        ("1.0.dev", "1.0.dev0", True),
        ("0!1.0", "1.0", True),
        ("1!1.0", "1.0", False),
        ("1.0a1", "1.0b1", False),
        ("1.0", "1.0.dev0", False),
        ("1.0.post0", "1.0", False),
        ("1.0a1.dev2", "1.0a1dev2", True),
        ("1.0a1.dev2", "1.0a1", False),
        ("1.0+ubuntu-01", "1.0+ubuntu.1", True),  # local segments of digits compare as numbers
        ("1.0+ubuntu.1", "1.0+ubuntu.2", False),
    ],
)
def test_Policy_deny_version_compares_as_pep_440(denied, file_version, hidden) -> None:
    policy = Policy([ROOT], deny=[("alpha", denied)])
    source = page("alpha", wheel("alpha", file_version))
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert bool(result.hidden) is hidden
    if hidden:
        entry = result.hidden[f"alpha-{file_version}-py3-none-any.whl"]
        assert "deny-list entry" in policy.refusal(NormalizedName("alpha"), entry, T0)


def test_Policy_versions_past_what_int_takes_are_compared_too() -> None:
    # int() refuses over 4,300 digits; a page's "versions" list may hold anything.
    huge = "9" * 5000
    policy = Policy([ROOT], deny=[("alpha", "2.0"), ("alpha", huge + ".0")])
    source = page("alpha", wheel("alpha", "1.0"), wheel("alpha", "2.0"), versions=("1.0", "2.0", huge, huge + "1"))
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert names(result.page.files) == ["alpha-1.0-py3-none-any.whl"]
    assert result.page.versions == ("1.0", huge, huge + "1")


# ---------------------------------------------------------------- cooldown


def test_Policy_cooldown_hides_young_files_until_their_time() -> None:
    policy = Policy([ROOT], min_age=7 * DAY)
    old, young = wheel("alpha", "1.0", at(30 * DAY)), wheel("alpha", "2.0", at(2 * DAY))
    source = page("alpha", old, young)
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert names(result.page.files) == [old.filename]
    assert result.page.versions == ("1.0",)
    assert result.policies == "cooldown"
    assert result.since == T0 - 23 * DAY  # when the old file became available
    assert result.until == T0 + 5 * DAY  # when the young one will
    assert policy.refusal(NormalizedName("alpha"), young, T0) == (
        "'alpha-2.0-py3-none-any.whl' was uploaded 2d ago; the minimum age is 1w, so it "
        "becomes available at 2023-11-19T22:13:20Z (PROXPI_MIN_AGE)"
    )
    # Five days on, the same page is complete: nothing refetched, only time passed.
    later = policy.files(source, [(ROOT, source)], T0 + 5 * DAY, cut_short=False)
    assert names(later.page.files) == [old.filename, young.filename]
    assert later.policies == ""
    assert later.since == T0 + 5 * DAY and later.until == float("inf")


@pytest.mark.parametrize(
    ("exempt", "project", "hidden"),
    [((), "alpha", 1), (("alpha",), "alpha", 0), (("alp*",), "alpha", 0), (("beta",), "alpha", 1)],
)
def test_Policy_cooldown_exempt(exempt, project, hidden) -> None:
    policy = Policy([ROOT], min_age=DAY, min_age_exempt=exempt)
    source = page(project, wheel(project, "1.0", at(60)))
    assert len(policy.files(source, [(ROOT, source)], T0, cut_short=False).hidden) == hidden


@pytest.mark.parametrize(("deny_unknown", "kept"), [(False, 2), (True, 1)])
def test_Policy_unknown_upload_times_warn_once_per_index(deny_unknown, kept, caplog) -> None:
    policy = Policy([ROOT, INTERNAL], min_age=DAY, unknown_age_deny=deny_unknown)
    source = page("alpha", wheel("alpha", "1.0", at(2 * DAY)), wheel("alpha", "2.0"))
    with caplog.at_level(logging.WARNING, logger="proxpi_min.core.policy"):
        for _ in range(3):
            result = policy.files(source, [(INTERNAL, source)], T0, cut_short=False)
    assert len(result.page.files) == kept
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert INTERNAL in warnings[0] and "cooldown cannot apply" in warnings[0]
    assert ("left out" if deny_unknown else "served") in warnings[0]
    if deny_unknown:
        reason = policy.refusal(NormalizedName("alpha"), wheel("alpha", "2.0"), T0)
        assert "no upload time" in reason and "PROXPI_MIN_AGE_UNKNOWN=deny" in reason


def test_Policy_cut_short_names_pin_or_first_index() -> None:
    source = page("acme-lib", wheel("acme-lib", "1.0"))
    pinned = Policy([ROOT, INTERNAL], pins=[("acme-*", INTERNAL)])
    assert pinned.files(source, [(INTERNAL, source)], T0, cut_short=True).policies == "pin"
    first = Policy([ROOT, INTERNAL], first_index=True)
    assert first.files(source, [(ROOT, source)], T0, cut_short=True).policies == "first-index"
    assert first.files(source, [(ROOT, source)], T0, cut_short=False).policies == ""


def test_Policy_deny_and_cooldown_together_count_apart() -> None:
    policy = Policy([ROOT], min_age=DAY, deny=[("alpha", "1.0")])
    source = page(
        "alpha", wheel("alpha", "1.0", at(10 * DAY)), wheel("alpha", "2.0", at(60)), wheel("alpha", "3.0", at(5 * DAY))
    )
    result = policy.files(source, [(ROOT, source)], T0, cut_short=False)
    assert names(result.page.files) == ["alpha-3.0-py3-none-any.whl"]
    assert result.policies == "cooldown,deny"
    assert policy.counts() == {("hidden", "deny"): 1, ("hidden", "cooldown"): 1}
