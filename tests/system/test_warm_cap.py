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
