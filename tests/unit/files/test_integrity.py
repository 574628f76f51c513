"""integrity: which of the index's hashes a file is checked against, and the check."""

from __future__ import annotations

import hashlib

import pytest

from proxpi_min.core.errors import IntegrityError
from proxpi_min.files.integrity import FileHash, Verifier, best_hash

DATA = b"wheel bytes"


@pytest.mark.parametrize(
    "hashes, expected",
    [
        ((("md5", "1"), ("sha256", "2"), ("sha512", "3")), FileHash("sha256", "2")),
        ((("md5", "1"), ("sha512", "3")), FileHash("sha512", "3")),
        ((("md5", "1"),), FileHash("md5", "1")),
        ((("whirlpool", "1"),), None),
        ((), None),
    ],
)
def test_best_hash_is_the_strongest_known(hashes, expected) -> None:
    assert best_hash(hashes) == expected


def test_Verifier_matches_bytes_fed_in_pieces() -> None:
    verifier = Verifier(FileHash("sha256", hashlib.sha256(DATA).hexdigest()))
    for piece in (DATA[:3], DATA[3:], b""):
        verifier.update(piece)
    assert verifier.matches()
    verifier.check("never raised")


def test_Verifier_check_raises_with_the_message_given() -> None:
    verifier = Verifier(FileHash("sha256", hashlib.sha256(DATA).hexdigest()))
    verifier.update(DATA[:-1])
    assert not verifier.matches()
    with pytest.raises(IntegrityError, match="^a-1.0.whl: bad$"):
        verifier.check("a-1.0.whl: bad")


def test_Verifier_without_a_hash_passes_anything() -> None:
    verifier = Verifier(None)
    verifier.update(DATA)
    assert verifier.matches()
    verifier.check("never raised")
