"""core.wheelpick: the wheel a client like the last one will pick."""

from __future__ import annotations

from proxpi_min.core.simple import FileEntry
from proxpi_min.core.wheelpick import (
    LockTime, Tags, client_python, client_tags, joined, lock_time, pick_time, pick_wheels, releases, wheel_tags,
)

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
    assert pick_wheels(releases(files), LINUX)[0].filename == "lib-2.0.post1-py3-none-any.whl"
    assert pick_wheels(releases(_files("lib-1.0.tar.gz")), LINUX) == ()


def test_platform_wheel_like_the_last_one_else_pure():
    files = _files(
        "fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fast-2.0-cp311-cp311-win_amd64.whl", "fast-2.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "fast-2.0-py3-none-any.whl", "fast-1.0-cp311-cp311-manylinux2014_x86_64.whl",
    )
    assert pick_wheels(releases(files), LINUX)[0].filename.startswith("fast-2.0-cp311-cp311-manylinux")
    assert pick_wheels(releases(files), None)[0].filename == "fast-2.0-py3-none-any.whl"
    assert pick_wheels(releases(files[:3]), wheel_tags("x-1.0-py3-none-any.whl")) == ()


def _released(*pairs, yanked=()):
    """FileEntry per (file name, PEP 700 upload time)."""
    return [
        FileEntry(name, "https://x/" + name, upload_time=time, yanked="" if name in yanked else None)
        for name, time in pairs
    ]


# lib's releases: 1.0 in 2023, 1.1 (sdist first) in March 2024, 2.0 in September 2024,
# 2.1 yanked in October, 3.0 in 2025, a pre-release between.
LIB = _released(
    ("lib-1.0-py3-none-any.whl", "2023-01-10T10:00:00.000001Z"),
    ("lib-1.1.tar.gz", "2024-03-01T09:00:00Z"),
    ("lib-1.1-py3-none-any.whl", "2024-03-02T09:00:00.5Z"),
    ("lib-2.0-py3-none-any.whl", "2024-09-01T12:00:00Z"),
    ("lib-2.1-py3-none-any.whl", "2024-10-01T12:00:00Z"),
    ("lib-3.0rc1-py3-none-any.whl", "2024-12-01T12:00:00Z"),
    ("lib-3.0-py3-none-any.whl", "2025-02-01T12:00:00Z"),
    yanked=("lib-2.1-py3-none-any.whl",),
)


def test_a_pick_says_the_lock_came_after_its_release_and_before_the_next():
    assert pick_time(releases(LIB), "lib-1.1-py3-none-any.whl") == LockTime("2024-03-01T09:00:00", "2024-09-01T12:00:00")
    # The yanked 2.1 and the pre-release do not count as a next release; the newest has none.
    assert pick_time(releases(LIB), "lib-2.0-py3-none-any.whl") == LockTime("2024-09-01T12:00:00", "2025-02-01T12:00:00")
    assert pick_time(releases(LIB), "lib-3.0-py3-none-any.whl") == LockTime("2025-02-01T12:00:00", None)
    assert pick_time(releases(LIB), "lib-3.0rc1-py3-none-any.whl") is None
    assert pick_time(releases(_files("lib-1.0-py3-none-any.whl")), "lib-1.0-py3-none-any.whl") is None  # no times (HTML)


def test_the_lock_time_most_picks_agree_on():
    assert lock_time([]) is None
    picks = [
        LockTime("2024-03-01T00:00:00", "2024-11-01T00:00:00"),
        LockTime("2024-06-01T00:00:00", None),
        LockTime("2024-08-01T00:00:00", "2024-10-01T00:00:00"),
        LockTime("2020-01-01T00:00:00", "2021-01-01T00:00:00"),  # a pin held back: outvoted
    ]
    assert lock_time(picks) == LockTime("2024-08-01T00:00:00", "2024-10-01T00:00:00")
    # Picks that never agree: the latest one wins the tie.
    apart = [LockTime("2020-01-01T00:00:00", "2020-02-01T00:00:00"), LockTime("2022-01-01T00:00:00", None)]
    assert lock_time(apart) == LockTime("2022-01-01T00:00:00", None)


def test_the_wheels_released_at_either_end_of_the_lock_time():
    def picked(lock):
        return [entry.filename for entry in pick_wheels(releases(LIB), LINUX, lock)]

    assert picked(None) == ["lib-3.0-py3-none-any.whl"]
    assert picked(LockTime("2024-05-01T00:00:00", "2024-10-15T00:00:00")) == [
        "lib-2.0-py3-none-any.whl", "lib-1.1-py3-none-any.whl",
    ]
    # A version counts from its first file, the sdist here: released by the lock's start.
    assert picked(LockTime("2024-03-01T09:00:00", "2024-06-01T00:00:00")) == ["lib-1.1-py3-none-any.whl"]
    assert picked(LockTime("2025-03-01T00:00:00", None)) == ["lib-3.0-py3-none-any.whl"]
    assert picked(LockTime("2022-01-01T00:00:00", "2022-06-01T00:00:00")) == []  # nothing released yet
    # A page without upload times (HTML): the newest, as without a lock time.
    assert [e.filename for e in pick_wheels(releases(_files("lib-1.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl")), LINUX,
                                            LockTime("2024-01-01T00:00:00", None))] == ["lib-2.0-py3-none-any.whl"]


def test_versions_compare_as_pep_440_releases():
    files = _released(("lib-1.0.0-py3-none-any.whl", "2024-01-01T00:00:00Z"), ("lib-1.0.1-py3-none-any.whl", "2024-02-01T00:00:00Z"))
    assert pick_time(releases(files), "lib-1.0-py3-none-any.whl") == LockTime("2024-01-01T00:00:00", "2024-02-01T00:00:00")


def test_the_newest_platform_version_the_client_has_and_the_stable_abi():
    files = _files(
        "fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fast-2.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "fast-2.0-cp311-cp311-manylinux_2_39_x86_64.whl",
        "fast-2.0-cp311-cp311-musllinux_1_2_x86_64.whl",
        "fast-2.0-cp311-cp311-manylinux_2_28_aarch64.whl",
        "fast-2.0-py3-none-any.whl",
    )
    glibc_2_36 = Tags(frozenset({"cp311"}), frozenset({"cp311"}), frozenset({"manylinux_2_36_x86_64"}))
    assert pick_wheels(releases(files), glibc_2_36)[0].filename == "fast-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    # Known only from an older wheel it took: still the newest of what it has.
    assert pick_wheels(releases(files), LINUX)[0].filename.startswith("fast-2.0-cp311-cp311-manylinux_2_17")
    abi3 = _files("ext-1.0-cp38-abi3-manylinux_2_17_x86_64.whl", "ext-1.0-cp312-abi3-manylinux_2_17_x86_64.whl",
                  "ext-1.0.tar.gz")
    assert pick_wheels(releases(abi3), LINUX)[0].filename == "ext-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"  # not cp312's


def test_tags_joined_and_from_the_user_agent():
    both = joined(LINUX, wheel_tags("x-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"))
    assert both.platform == LINUX.platform | {"manylinux_2_28_x86_64"} and joined(None, LINUX) == LINUX
    pip = (
        'pip/26.3 {"ci":null,"cpu":"x86_64","distro":{"id":"bookworm","libc":{"lib":"glibc","version":"2.36"},'
        '"name":"Debian GNU/Linux","version":"12"},"implementation":{"name":"CPython","version":"3.11.2"},'
        '"installer":{"name":"pip","version":"26.3"},"python":"3.11.2","system":{"name":"Linux","release":"6.1"}}'
    )
    assert client_tags(pip) == Tags(frozenset({"cp311"}), frozenset({"cp311"}), frozenset({"manylinux_2_36_x86_64"}))
    musl = pip.replace('"glibc","version":"2.36"', '"musl","version":"1.2.4"')
    assert client_tags(musl).platform == {"musllinux_1_2_x86_64"}
    for told_too_little in ("curl/8.5.0", "pip/26.3 {not json", 'pip/26.3 {"cpu":"x86_64"}',
                            pip.replace("CPython", "PyPy"), pip.replace('"Linux"', '"Plan9"')):
        assert client_tags(told_too_little) is None


def test_a_fix_to_an_older_series_says_nothing_of_the_lock_end():
    files = _released(
        ("d-4.2.0-py3-none-any.whl", "2023-04-01T00:00:00Z"),
        ("d-5.0-py3-none-any.whl", "2023-12-01T00:00:00Z"),
        ("d-4.2.16-py3-none-any.whl", "2024-09-01T00:00:00Z"),
    )
    assert pick_time(releases(files), "d-4.2.16-py3-none-any.whl") == LockTime("2024-09-01T00:00:00", None)
    assert pick_time(releases(files), "d-4.2.0-py3-none-any.whl") == LockTime("2023-04-01T00:00:00", "2023-12-01T00:00:00")


def test_odd_versions_epochs_and_build_numbers():
    odd = _files("x-1..2-py3-none-any.whl", "x-.1.tar.gz", "x-1.-py3-none-any.whl", "x-\u00b2-py3-none-any.whl",
                 "x-1.0+local-py3-none-any.whl", "x-1.0-py3-none-any.whl")
    assert [e.filename for e in pick_wheels(releases(odd), None)] == ["x-1.0-py3-none-any.whl"]
    epoch = _files("x-2.0-py3-none-any.whl", "x-1!1.0-py3-none-any.whl")
    assert pick_wheels(releases(epoch), None)[0].filename == "x-1!1.0-py3-none-any.whl"
    builds = _files("x-1.0-1-py3-none-any.whl", "x-1.0-2-py3-none-any.whl", "x-1.0-py3-none-any.whl")
    assert pick_wheels(releases(builds), None)[0].filename == "x-1.0-2-py3-none-any.whl"


def test_picks_all_of_the_newest_guess_the_newest_once():
    lock = LockTime("2024-03-01T09:00:00", None)  # every pick the newest of its project
    assert [e.filename for e in pick_wheels(releases(LIB), LINUX, lock)] == ["lib-3.0-py3-none-any.whl"]


def test_no_wheel_newer_than_the_clients_glibc():
    files = _files("fast-2.0-cp311-cp311-manylinux_2_28_x86_64.whl", "fast-2.0-py3-none-any.whl")
    glibc_2_17 = Tags(frozenset({"cp311"}), frozenset({"cp311"}), frozenset({"manylinux_2_17_x86_64"}))
    assert pick_wheels(releases(files), glibc_2_17)[0].filename == "fast-2.0-py3-none-any.whl"


def test_user_agents_of_any_shape():
    mac = ('pip/26.3 {"cpu":"arm64","distro":{"name":"macOS","version":"14.5"},'
           '"implementation":{"name":"CPython","version":"3.12.1"},"system":{"name":"Darwin","release":"23.5.0"}}')
    assert client_tags(mac) == Tags(frozenset({"cp312"}), frozenset({"cp312"}),
                                    frozenset({"macosx_14_0_arm64", "macosx_14_0_universal2"}))
    files = _files("m-1.0-cp312-cp312-macosx_11_0_arm64.whl", "m-1.0-cp312-cp312-macosx_15_0_arm64.whl",
                   "m-1.0-cp312-cp312-macosx_10_9_universal2.whl")
    assert pick_wheels(releases(files), client_tags(mac))[0].filename == "m-1.0-cp312-cp312-macosx_11_0_arm64.whl"
    base = '"implementation":{"name":"CPython","version":"3.11"},"system":{"name":"Linux"},"cpu":"x86_64"'
    for hostile in (
        "pip/26.3 {" + base + ',"distro":"x"}',
        "pip/26.3 {" + base + ',"distro":{"libc":["glibc"]}}',
        "pip/26.3 {" + base + ',"distro":{"libc":{"lib":"glibc","version":2.36}}}',
        "pip/26.3 {" + base.replace("3.11", "3.\u00b2") + "}",
        "pip/26.3 {" + base.replace('"x86_64"', '"x86 64; rm"') + "}",
        "pip/26.3 " + "[" * 5000,
        "pip/26.3 " + "{\"a\":" * 5000,
        "pip/26.3 [1, 2]",
        "pip/26.3 {}",
    ):
        assert client_tags(hostile) is None, hostile


def test_a_pin_to_an_older_series_is_dated_by_that_series_only():
    files = _released(
        ("d-4.2.15-py3-none-any.whl", "2024-08-01T00:00:00Z"),
        ("d-5.0-py3-none-any.whl", "2023-12-01T00:00:00Z"),
        ("d-4.2.16-py3-none-any.whl", "2024-09-03T00:00:00Z"),
        ("d-5.1.2-py3-none-any.whl", "2024-10-08T00:00:00Z"),
        ("d-4.2.17-py3-none-any.whl", "2024-12-04T00:00:00Z"),
    )
    # 5.1.2 came after 4.2.16 but says nothing: a client on 4.2 keeps below 5.0.
    assert pick_time(releases(files), "d-4.2.16-py3-none-any.whl") == LockTime("2024-09-03T00:00:00", "2024-12-04T00:00:00")


def test_pips_order_of_interpreter_tags():
    files = _files("e-1.0-cp39-abi3-manylinux_2_28_x86_64.whl", "e-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    took_abi3 = joined(LINUX, wheel_tags("f-1.0-cp39-abi3-manylinux_2_17_x86_64.whl"))
    assert pick_wheels(releases(files), took_abi3)[0].filename == "e-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    tool = _files("ruff-0.8.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "ruff-0.8.0.tar.gz",
                  "ruff-0.8.0-py3-none-win_amd64.whl")
    assert pick_wheels(releases(tool), LINUX)[0].filename.startswith("ruff-0.8.0-py3-none-manylinux")


def test_numbers_past_any_version():
    huge = "9" * 5000
    files = _files(f"x-{huge}-py3-none-any.whl", f"x-1.0-{huge}-py3-none-any.whl", f"x-{huge}!1.0.tar.gz",
                   f"x-1.0-cp3{huge}-abi3-manylinux_2_17_x86_64.whl", f"x-1.0-cp311-cp311-manylinux_{huge}_17_x86_64.whl",
                   "x-1.0-cp3\u00b9-abi3-manylinux_2_17_x86_64.whl", "x-0.9-py3-none-any.whl")
    # Nothing raises; 1.0 has a pure wheel, of a build number read from its first digits.
    assert pick_wheels(releases(files), LINUX)[0].filename == f"x-1.0-{huge}-py3-none-any.whl"


def test_wheels_whose_requires_python_the_client_lacks_are_passed_over():
    files = [
        FileEntry("lib-1.0-py3-none-any.whl", "https://x/1", requires_python=">=3.8"),
        FileEntry("lib-1.5-py3-none-any.whl", "https://x/1.5"),
        FileEntry("lib-2.0-py3-none-any.whl", "https://x/2", requires_python=">=3.99"),
    ]
    released = releases(files)
    assert pick_wheels(released, LINUX, python=(3, 11, 4))[0].filename == "lib-1.5-py3-none-any.whl"
    assert pick_wheels(released, LINUX)[0].filename == "lib-2.0-py3-none-any.whl"  # Python unknown
    assert pick_wheels(releases(files[2:]), LINUX, python=(3, 11, 4)) == ()


def test_the_python_of_a_user_agent():
    assert client_python('pip/26.3 {"python":"3.11.4","implementation":{"name":"PyPy","version":"7.3.17"}}') == (3, 11, 4)
    assert client_python('uv/0.9.0 {"python":"3.13.0rc2"}') == (3, 13, 0)
    assert client_python('pip/26.3 {"python":"3.9"}') == (3, 9)
    for hostile in ('pip/26.3 {"python":3.11}', 'pip/26.3 {"python":"3.11.4.5"}', "pip/26.3", "pip/26.3 [1]", "x {"):
        assert client_python(hostile) is None, hostile
