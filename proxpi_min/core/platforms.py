"""Wheel platform tags read for what they name: the family (manylinux, musllinux,
macOS, plain linux), the CPU and the libc or OS version (PEP 600, 656, 513, 571, 599),
and whether a wheel of one tag runs on a machine of another; pure."""

from __future__ import annotations

import functools
import re
from typing import Optional

__all__ = ["platform_fits", "platform_parts"]

_PLATFORM = re.compile(r"(manylinux|musllinux|macosx)_([0-9]{1,9})_([0-9]{1,9})_(.+)\Z")  # PEP 600, PEP 656, macOS
_LEGACY = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_(.+)\Z")
_LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}  # PEP 513, 571, 599
# The macOS binary formats a CPU runs besides its own (packaging.tags._mac_binary_formats).
_MAC_FORMATS = {
    "arm64": frozenset({"universal2"}),
    "x86_64": frozenset({"intel", "fat64", "fat32", "universal2", "universal"}),
    "i386": frozenset({"intel", "fat32", "fat", "universal"}),
}


@functools.lru_cache(maxsize=1024)  # a lock repeats a few dozen platform tags
def platform_parts(tag: str) -> Optional[tuple]:
    """(family, architecture, version) of a Linux or macOS platform tag, else None."""
    match = _PLATFORM.match(tag)
    if match is not None:
        return match.group(1), match.group(4), (int(match.group(2)), int(match.group(3)))
    match = _LEGACY.match(tag)
    if match is not None:
        return "manylinux", match.group(2), _LEGACY_GLIBC[match.group(1)]
    if tag.startswith("linux_"):
        return "linux", tag[len("linux_"):], ()
    return None


def platform_fits(tag: str, target: str) -> bool:
    """Whether a wheel of platform *tag* runs on a machine whose own tag is *target*, as
    pip reads the tags (packaging.tags): a glibc no newer than the target's (PEP 600,
    the legacy manylinux1/2010/2014 read as 2.5/2.12/2.17), a musl of the same major
    and no newer minor (PEP 656), a macOS no newer, of the target's CPU or a universal
    format holding it; a plain ``linux_<arch>`` build on either libc; ``any``. Other
    tags (``win_amd64``) fit only themselves."""
    if tag in (target, "any"):
        return True
    wheel, machine = platform_parts(tag), platform_parts(target)
    if wheel is None or machine is None or machine[0] == "linux":
        return False
    family, arch, version = wheel
    if family == "linux":  # packaging.tags._linux_platforms: last, after the libc's own tags
        return machine[0] in ("manylinux", "musllinux") and arch == machine[1]
    if family != machine[0] or version > machine[2]:
        return False
    if family == "musllinux" and version[0] != machine[2][0]:
        return False
    return arch == machine[1] or (family == "macosx" and arch in _MAC_FORMATS.get(machine[1], ()))
