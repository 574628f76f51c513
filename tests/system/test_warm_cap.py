"""`warm` under a cap the set does not fit, metadata included: what it reports is what
the cache dir holds once it has ended."""

from __future__ import annotations

import io

from proxpi_min.cli.warm import run_warm
from proxpi_min.core.lockmatch import Filters
from proxpi_min.core.settings import parse_settings
from tests.support.dists import make_wheel
from tests.system.test_warm_verify import stored, write_lock


def test_a_wheel_its_metadata_evicted_is_reported_not_fetched(upstream_factory, tmp_path):
    # warm stores each wheel's METADATA too (an offline proxy serves it): the second
    # wheel's metadata leaves no room for the first wheel, one byte short.
    upstream = upstream_factory("html", None)
    one, two = make_wheel("one", "1.0"), make_wheel("two", "1.0")
    for wheel in (one, two):
        upstream.add(wheel, metadata=False)
    cap = one.size + two.size + len(one.metadata) + len(two.metadata) - 1
    settings = parse_settings({}, {"index_url": upstream.url, "cache_dir": str(tmp_path / "c"), "cache_size": str(cap)})
    out, err = io.StringIO(), io.StringIO()
    code = run_warm(settings, [str(write_lock("requirements", tmp_path, [one, two]))], jobs=1, filters=Filters(),
                    out=out, err=err)
    missing = [wheel.filename for wheel in (one, two) if not stored(tmp_path / "c", wheel).exists()]
    assert missing, "the cap was meant to leave one wheel out"
    assert code != 0 and "evicted: the cache size cap is too small" in out.getvalue() + err.getvalue(), out.getvalue()


def _warm(upstream, cache_dir, lock, cap: str = "5G", filters: Filters = Filters()) -> tuple:
    settings = parse_settings({}, {"index_url": upstream.url, "cache_dir": str(cache_dir), "cache_size": cap})
    out, err = io.StringIO(), io.StringIO()
    code = run_warm(settings, [str(lock)], jobs=1, filters=filters, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_later_warm_that_evicts_what_an_earlier_stored_says_so(upstream_factory, tmp_path):
    upstream = upstream_factory("json", None)
    first, second = make_wheel("first", "1.0"), make_wheel("second", "1.0")
    upstream.add(first).add(second)
    cap = str(max(first.size, second.size) + 100)  # one wheel at a time
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, out, err = _warm(upstream, tmp_path / "c", write_lock("requirements", tmp_path / "a", [first]), cap)
    assert code == 0 and "evicted" not in err, out + err
    code, out, err = _warm(upstream, tmp_path / "c", write_lock("requirements", tmp_path / "b", [second]), cap)
    assert code == 0, out + err  # what this run wanted is there
    assert "warning: 1 file evicted for room in this run" in err
    assert not stored(tmp_path / "c", first).exists()


def test_warm_names_the_versions_its_filters_leave_without_a_file(upstream_factory, tmp_path):
    upstream = upstream_factory("json", None)
    wheel = make_wheel("wheeled", "1.0")
    upstream.add(wheel)
    lock = write_lock("requirements", tmp_path, [wheel])
    lock.write_text(lock.read_text() + "wheeled==9.0\n")
    code, out, err = _warm(upstream, tmp_path / "c", lock, filters=Filters(python_version=(2, 7)))
    assert code == 1  # 9.0 is on no index: a failure, not a filter's doing
    assert "warning: wheeled==1.0: no file of it fits the filters; skipped" in err, err
    assert "wheeled==9.0: no file of it fits" not in err and "failed: wheeled==9.0: not on any index" in out


def test_warm_fails_the_files_whose_page_could_not_be_saved(upstream_factory, tmp_path):
    """An offline proxy lists only files of saved pages: a page not saved (a read-only
    or full index/ folder) leaves its files unservable, which warm must say."""
    upstream = upstream_factory("json", None)
    wheel = make_wheel("unsaved", "1.0")
    upstream.add(wheel)
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / "index").write_text("a file where the saved pages' folder should be")
    code, out, err = _warm(upstream, cache_dir, write_lock("requirements", tmp_path, [wheel]))
    assert code == 1, out + err
    assert f"failed: {wheel.filename}: not listed (its page could not be saved" in out, out
    assert "1 file wanted: 0 fetched" in out and "1 failed" in out  # counted once, as failed
