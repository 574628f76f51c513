"""Unit tests for proxpi_min/core/distnames.py: wheel (PEP 427) and sdist (PEP 625) names."""

from __future__ import annotations

import pytest

from proxpi_min.core.distnames import DistName, is_dist_filename, parse_dist_filename
from proxpi_min.core.errors import BadRequest


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("acme_lib-1.0-py3-none-any.whl", DistName("acme-lib", "1.0", True)),
        ("Acme.Lib-2.0rc1-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
         DistName("acme-lib", "2.0rc1", True)),
        ("acme-1!2.0.post3.dev4+local.7-py2.py3-none-any.whl", DistName("acme", "1!2.0.post3.dev4+local.7", True)),
        ("acme_lib-1.0.tar.gz", DistName("acme-lib", "1.0", False)),
        ("acme_lib-1.0.zip", DistName("acme-lib", "1.0", False)),
        ("zope.interface-5.4.0.tar.gz", DistName("zope-interface", "5.4.0", False)),
    ],
)
def test_valid_names(filename, expected):
    assert parse_dist_filename(filename) == expected
    assert is_dist_filename(filename)


@pytest.mark.parametrize(
    ("filename", "why"),
    [
        ("acme-1.0-py3-none.whl", "not a wheel name"),
        ("acme-1.0-x-py3-none-any.whl", "build tag"),
        ("acme-1.0-py3-none-a/b.whl", "compatibility tag"),
        ("acme-1.0-py3-none-any.egg", "neither a wheel"),
        ("acme.tar.gz", "not an sdist name"),
        ("acme-lib-1.0.tar.gz", "not a project name"),
        ("-1.0.tar.gz", "not a project name"),
        ("acme-one.tar.gz", "not a valid version"),
        ("acme-1.0..2-py3-none-any.whl", "not a valid version"),
        ("acme-1.0.tar.bz2", "neither a wheel"),
    ],
)
def test_invalid_names(filename, why):
    with pytest.raises(BadRequest, match=why):
        parse_dist_filename(filename)
    assert not is_dist_filename(filename)
