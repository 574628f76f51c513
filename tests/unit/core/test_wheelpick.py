"""core.wheelpick: the wheel a client like the last one will pick."""

from __future__ import annotations

from proxpi_min.core.simple import FileEntry
from proxpi_min.core.wheelpick import pick_wheel, wheel_tags

LINUX = wheel_tags("numpy-2.1.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")


def _files(*names, yanked=()):
    return [FileEntry(name, "https://x/" + name, yanked="" if name in yanked else None) for name in names]


def test_tags():
    assert LINUX.python == {"cp311"} and LINUX.platform == {"manylinux_2_17_x86_64", "manylinux2014_x86_64"}
    assert wheel_tags("six-1.16.0-py2.py3-none-any.whl").pure
    assert wheel_tags("pkg-1.0-1build-py3-none-any.whl").python == {"py3"}
    assert wheel_tags("pkg-1.0.tar.gz") is None


def test_newest_final_version_with_a_fitting_wheel():
    files = _files(
        "lib-1.0-py3-none-any.whl", "lib-2.0.tar.gz", "lib-2.0-py3-none-any.whl",
        "lib-3.0rc1-py3-none-any.whl", "lib-2.1.dev0-py3-none-any.whl", "lib-2.0.post1-py3-none-any.whl",
        "lib-9.0-py3-none-any.whl", yanked=("lib-9.0-py3-none-any.whl",),
    )
    assert pick_wheel(files, LINUX).filename == "lib-2.0.post1-py3-none-any.whl"
    assert pick_wheel(_files("lib-1.0.tar.gz"), LINUX) is None


def test_platform_wheel_like_the_last_one_else_pure():
    files = _files(
        "fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fast-2.0-cp311-cp311-win_amd64.whl", "fast-2.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "fast-2.0-py3-none-any.whl", "fast-1.0-cp311-cp311-manylinux2014_x86_64.whl",
    )
    assert pick_wheel(files, LINUX).filename.startswith("fast-2.0-cp311-cp311-manylinux")
    assert pick_wheel(files, None).filename == "fast-2.0-py3-none-any.whl"
    assert pick_wheel(files[:3], wheel_tags("x-1.0-py3-none-any.whl")) is None
