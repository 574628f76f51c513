"""Write a pylock.toml (PEP 751) as a hashed requirements file that pip installs through an index.

pip and uv install a pylock.toml from the URLs written in it, which an air-gapped
machine cannot reach. The same pins and hashes as a requirements file go through
``--index-url`` instead, e.g. an ``--offline`` proxpi-min filled by ``warm``:

    python contrib/pylock_requirements.py pylock.toml > requirements.txt
    pip install --no-deps --require-hashes -r requirements.txt --index-url http://127.0.0.1:5000/index/

Each package becomes ``name==version ; marker`` with a ``--hash`` per file (sha256,
sha384 or sha512, the ones pip accepts). Packages from a VCS, a directory or an archive
have no index to come from: each is named on stderr and left out. Exit status: 0, or 2
for a file that cannot be read or names no package. Standard library, Python 3.11+.
"""

from __future__ import annotations

import sys
from typing import Callable

PIP_HASHES = ("sha256", "sha384", "sha512")  # pip's --require-hashes accepts these only
NOT_FROM_AN_INDEX = ("vcs", "directory", "archive")


def requirement_lines(lock: dict, warn: Callable[[str], None]) -> list:
    """The requirements file's lines for the packages of a parsed pylock.toml;
    *warn* is called with one line for each package left out."""
    lines = []
    for package in lock.get("packages", []):
        name, version = package.get("name"), package.get("version")
        source = next((key for key in NOT_FROM_AN_INDEX if key in package), None)
        if source:
            warn(f"{name}: from {'an' if source == 'archive' else 'a'} {source}, not an index: left out")
            continue
        files = list(package.get("wheels", [])) + ([package["sdist"]] if "sdist" in package else [])
        hashes = sorted({
            f"{algorithm}:{digest}"
            for file in files
            for algorithm, digest in file.get("hashes", {}).items()
            if algorithm in PIP_HASHES
        })
        if not name or not version or not hashes:
            warn(f"{name or '(no name)'}: no version or no sha256/sha384/sha512 hash: left out")
            continue
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        lines.append(f"{name}=={version}{marker}" + "".join(f" \\\n    --hash={h}" for h in hashes))
    return lines


def main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: python pylock_requirements.py PYLOCK_TOML > requirements.txt", file=sys.stderr)
        return 2
    try:
        import tomllib
    except ImportError:
        print("pylock_requirements: needs Python 3.11 or newer (tomllib)", file=sys.stderr)
        return 2
    path = argv[0]
    try:
        with open(path, "rb") as stream:
            lock = tomllib.load(stream)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"pylock_requirements: {path}: {exc}", file=sys.stderr)
        return 2
    lines = requirement_lines(lock, lambda text: print(f"pylock_requirements: {path}: {text}", file=sys.stderr))
    if not lines:
        print(f"pylock_requirements: {path}: no package to install from an index", file=sys.stderr)
        return 2
    print(f"# from {path} by contrib/pylock_requirements.py")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
