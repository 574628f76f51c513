"""The index's hash of a file: which of its hashes to trust, and checking bytes against it."""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Optional

from ..core.errors import IntegrityError
from ..core import simple
from ..core.simple import Hashes

__all__ = ["FileHash", "Verifier", "best_hash"]

class FileHash(NamedTuple):
    algorithm: str  # a hashlib name
    digest: str  # hex, as the index gives it


def best_hash(hashes: Hashes) -> Optional[FileHash]:
    """The strongest of the index's hashes of a file, or None if it gives none we know."""
    found = simple.best_hash(hashes)
    return FileHash(*found) if found else None


class Verifier:
    """Hashes bytes as they pass, to compare with *expected* at the end (None: there is
    nothing to compare with, and every check passes)."""

    def __init__(self, expected: Optional[FileHash]) -> None:
        self.expected = expected
        self._hasher = hashlib.new(expected.algorithm) if expected is not None else None

    def update(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)

    def matches(self) -> bool:
        """Whether the bytes so far have the expected hash."""
        return self._hasher is None or self._hasher.hexdigest() == self.expected.digest

    def check(self, message: str) -> None:
        """:raises IntegrityError: (with *message*) the bytes do not have the expected hash."""
        if not self.matches():
            raise IntegrityError(message)
