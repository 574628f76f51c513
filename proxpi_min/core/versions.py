"""PEP 440 versions, read one way: every spelling the PEP accepts (and a wheel file
name's "_" for its "-", PEP 427) to one normal form, which equality (deny entries,
uploads, lock files), ordering (the guesses of :mod:`.wheelpick`) and version specifiers
(:mod:`.specifiers`) all compare; pure."""

from __future__ import annotations

import functools
import re
from typing import NamedTuple, Optional

__all__ = ["Version", "final_key", "matches", "parse_version", "same_version", "version_key"]

# int() refuses over 4,300 digits, and a page's "versions" may hold anything; no real
# version has a number this long, so text with one is no version read here.
_LONG_NUMBER = re.compile(r"[0-9]{65}")

# The public version (PEP 440's "permissive" form, lower case) and a local label.
_VERSION = re.compile(
    r"v?(?:([0-9]+)!)?([0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?([0-9]*))?"
    r"(?:[-_]([0-9]+)|[-_.]?(?:post|rev|r)[-_.]?([0-9]*))?"
    r"(?:[-_.]?(dev)[-_.]?([0-9]*))?"
    r"(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?\Z"
)
_PRE_LABELS = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "c": "rc", "rc": "rc", "pre": "rc", "preview": "rc"}


class Version(NamedTuple):
    """A version's parts in their normal form."""

    epoch: int
    release: tuple  # the numbers as written: "3.0" is (3, 0), which "~=" reads
    pre: Optional[tuple]  # ("a" | "b" | "rc", number)
    post: Optional[int]
    dev: Optional[int]
    local: tuple  # its segments, numbers where digits (PEP 440 compares them so)

    @property
    def public(self) -> tuple:
        """The parts equality compares, the release padded with zeros (1.0 == 1.0.0)."""
        release = self.release
        while len(release) > 1 and release[-1] == 0:
            release = release[:-1]
        return self.epoch, release, self.pre, self.post, self.dev


@functools.lru_cache(maxsize=4096)  # a page repeats each version once per file of it
def parse_version(text: str) -> Optional[Version]:
    """*text* as a PEP 440 version, or None for text that is none."""
    match = None if _LONG_NUMBER.search(text) else _VERSION.match(text.strip().lower())
    if match is None:
        return None
    epoch, release, pre, pre_n, post_implicit, post_n, dev, dev_n, local = match.groups()
    post = post_implicit if post_implicit is not None else post_n
    return Version(
        int(epoch or 0),
        tuple(int(part) for part in release.split(".")),
        (_PRE_LABELS[pre], int(pre_n or 0)) if pre else None,
        None if post is None else int(post or 0),
        int(dev_n or 0) if dev else None,
        tuple(int(part) if part.isdigit() else part for part in re.split(r"[-_.]", local)) if local else (),
    )


def version_key(text: str) -> tuple:
    """(public part, local segments): equal for every spelling of one version. Text that
    is no PEP 440 version is its own key, as written (lower case, "_" read as "-")."""
    version = parse_version(text)
    if version is None:
        return text.strip().lower().replace("_", "-"), None
    return version.public, version.local


def matches(wanted: tuple, key: tuple) -> bool:
    """Whether the version of *key* is the one of *wanted* (keys of :func:`version_key`)
    as PEP 440 "==" compares them: without a local label, every local build of it."""
    return wanted[0] == key[0] and (not wanted[1] or wanted[1] == key[1])


def same_version(wanted: str, version: str) -> bool:
    """Whether *version* (from a file name or a page) is *wanted*, by PEP 440 "=="."""
    return matches(version_key(wanted), version_key(version))


def final_key(text: str) -> Optional[tuple]:
    """A sortable key of a final release (post-releases too: epoch, release, post), or
    None for a pre-release, a dev or local version, or no version at all."""
    version = parse_version(text)
    if version is None or version.pre or version.dev is not None or version.local:
        return None
    epoch, release, _, post, _ = version.public
    return epoch, release, -1 if post is None else post
