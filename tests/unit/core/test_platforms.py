"""Unit tests for proxpi_min/core/platforms.py: which wheel platform tags run where."""

from __future__ import annotations

import pytest

from proxpi_min.core.platforms import platform_fits, platform_parts


@pytest.mark.parametrize(
    "tag, target, fits",
    [
        # PEP 600: a glibc no newer than the target's, same CPU
        ("manylinux_2_17_x86_64", "manylinux_2_28_x86_64", True),
        ("manylinux_2_28_x86_64", "manylinux_2_28_x86_64", True),
        ("manylinux_2_31_x86_64", "manylinux_2_28_x86_64", False),
        ("manylinux_2_17_aarch64", "manylinux_2_28_x86_64", False),
        # PEP 513, 571, 599: the legacy names are glibc 2.5, 2.12, 2.17, on either side
        ("manylinux1_x86_64", "manylinux_2_28_x86_64", True),
        ("manylinux2010_x86_64", "manylinux2014_x86_64", True),
        ("manylinux2014_x86_64", "manylinux_2_17_x86_64", True),
        ("manylinux2014_x86_64", "manylinux_2_12_x86_64", False),
        ("manylinux_2_24_x86_64", "manylinux2014_x86_64", False),
        # PEP 656: musl of the same major, no newer minor; never a glibc wheel
        ("musllinux_1_1_x86_64", "musllinux_1_2_x86_64", True),
        ("musllinux_1_2_x86_64", "musllinux_1_1_x86_64", False),
        ("musllinux_1_1_x86_64", "manylinux_2_28_x86_64", False),
        ("manylinux_2_17_x86_64", "musllinux_1_2_x86_64", False),
        # packaging.tags: a plain linux_<arch> build runs on either libc of its CPU
        ("linux_x86_64", "manylinux_2_28_x86_64", True),
        ("linux_x86_64", "musllinux_1_2_x86_64", True),
        ("linux_aarch64", "manylinux_2_28_x86_64", False),
        ("manylinux_2_17_x86_64", "linux_x86_64", False),
        # macOS: no newer, the target's CPU or a universal format holding it
        ("macosx_10_9_universal2", "macosx_11_0_arm64", True),
        ("macosx_11_0_arm64", "macosx_14_0_arm64", True),
        ("macosx_10_9_x86_64", "macosx_11_0_arm64", False),
        ("macosx_10_9_intel", "macosx_11_0_arm64", False),
        ("macosx_10_9_x86_64", "macosx_12_0_x86_64", True),
        ("macosx_10_6_intel", "macosx_10_15_x86_64", True),
        ("macosx_10_9_universal", "macosx_10_15_x86_64", True),
        ("macosx_10_9_fat64", "macosx_10_15_x86_64", True),
        ("macosx_12_0_x86_64", "macosx_11_0_x86_64", False),
        ("macosx_12_0_universal2", "macosx_11_0_arm64", False),
        ("macosx_11_0_arm64", "manylinux_2_28_aarch64", False),
        # tags read no other way match exactly; "any" fits everywhere
        ("win_amd64", "win_amd64", True),
        ("win32", "win_amd64", False),
        ("any", "win_amd64", True),
        ("manylinux_2_17_x86_64", "win_amd64", False),
    ],
)
def test_platform_fits_what_runs_on_the_target(tag, target, fits):
    assert platform_fits(tag, target) is fits


def test_platform_parts_reads_the_legacy_names_as_their_glibc():
    assert platform_parts("manylinux2014_aarch64") == ("manylinux", "aarch64", (2, 17))
    assert platform_parts("macosx_10_9_universal2") == ("macosx", "universal2", (10, 9))
    assert platform_parts("win_amd64") is None
