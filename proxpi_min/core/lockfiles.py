"""Lock files (requirements.txt, pylock.toml, uv.lock, poetry.lock) read into the files they want."""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import sys
from typing import Any, Callable, NamedTuple, Optional

from .names import NAME_PATTERN, NormalizedName, canonicalize_name
from .simple import is_hex
from .urls import last_segment

__all__ = ["LockFileError", "ParsedLock", "Reader", "Wanted", "detect_format", "load", "parse_requirements", "parse_toml_lock"]

# PEP 751: "pylock.toml", or "pylock.<name>.toml" for one of several lock files.
_PYLOCK_NAME = re.compile(r"^pylock(?:\.[^.]+)?\.toml\Z")
_NAME = re.compile(rf"^({NAME_PATTERN})\s*(\[[^\]]*\])?\s*(.*)\Z", re.DOTALL)
_PIN = re.compile(r"^===?\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\Z")
# A pip comment starts a line or follows whitespace (pip's requirements file format).
_COMMENT = re.compile(r"(^|\s+)#.*\Z")
_INCLUDES = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}
_EDITABLE = ("-e", "--editable")


class LockFileError(ValueError):
    """A lock file that cannot be read or parsed; the message names it."""


class Wanted(NamedTuple):
    """Files a lock file asks for.

    With a *filename*, that one file (its hashes from the lock). Without one (a
    requirements pin), every file of *project* whose hash is in *hashes*, or, when the
    pin lists no hash, every file of *version*.
    """

    project: NormalizedName
    version: Optional[str]
    filename: Optional[str]
    hashes: tuple  # ((algorithm, hex digest), ...), as simple.Hashes
    origin: str  # "file:line" or "file", for messages


class ParsedLock(NamedTuple):
    """A lock file read: the files it wants, and what it names but is skipped."""

    path: str
    format: str  # "requirements", "pylock", "uv", "poetry"
    wanted: tuple  # tuple[Wanted, ...]
    notes: tuple  # tuple[str, ...]: what was skipped or is weak, one line each


def detect_format(path: str, text: str) -> str:
    """The format of a lock file, by name first and content second: ``unknown`` for a
    ``*.toml`` file of none of the lock formats (a ``*.lock`` file may be a
    requirements file, as rye writes them)."""
    name = os.path.basename(path)
    if _PYLOCK_NAME.match(name):
        return "pylock"
    if name == "uv.lock":
        return "uv"
    if name == "poetry.lock":
        return "poetry"
    if name.endswith((".toml", ".lock")):
        # Each TOML format has its one telling top-level key (PEP 751's lock-version,
        # uv's version with [[package]], poetry's [metadata] table, which holds a
        # lock-version of its own: only the keys before the first table count).
        top_level = re.split(r"^\s*\[", text, maxsplit=1, flags=re.MULTILINE)[0]
        if re.search(r"^\s*lock-version\s*=", top_level, re.MULTILINE):
            return "pylock"
        if re.search(r"^\[metadata\]", text, re.MULTILINE) and re.search(r"^\[\[package\]\]", text, re.MULTILINE):
            return "poetry"
        if re.search(r"^\[\[package\]\]", text, re.MULTILINE):
            return "uv"
        if name.endswith(".toml"):
            return "unknown"
    return "requirements"


# Reads a file's bytes (a lock file, or a file a requirements file includes); raises OSError.
Reader = Callable[[str], bytes]


def _text(path: str, read: Reader) -> str:
    try:
        data = read(path)
        # UTF-16 with its byte order mark, as PowerShell 5's ">" writes (pip reads it too).
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        # "utf-8-sig": a byte order mark (Windows editors write one) is not text.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LockFileError(f"{path}: not UTF-8 (or UTF-16 with its byte order mark) text") from None
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path no file can have (a NUL byte)
        raise LockFileError(f"{path!r}: cannot read: {exc}") from None


def load(path: str, read: Reader) -> ParsedLock:
    """Parse the lock file at *path*, its bytes (and those of the files a requirements
    file includes) given by *read*.

    :raises LockFileError: unreadable, or not a lock file of a known format.
    """
    text = _text(path, read)
    kind = detect_format(path, text)
    if kind == "unknown" and os.path.basename(path) == "pyproject.toml":
        raise LockFileError(f"{path}: a project's settings, not a lock file: lock it first (uv lock, pdm lock, poetry lock)")
    if kind == "unknown":
        raise LockFileError(
            f"{path}: not a lock file: no lock-version (pylock.toml) and no [[package]] tables (uv.lock, poetry.lock)"
        )
    if kind == "requirements":
        wanted, notes = parse_requirements(text, path, read)
    else:
        wanted, notes = parse_toml_lock(kind, _load_toml(text, path), path)
    return ParsedLock(path, kind, tuple(wanted), tuple(notes))


def _load_toml(text: str, path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: no TOML parser in the standard library
        raise LockFileError(
            f"{path}: reading TOML lock files needs Python 3.11 or newer "
            f"(this is {sys.version_info[0]}.{sys.version_info[1]}); use a requirements file"
        ) from None
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer past what int() takes
        raise LockFileError(f"{path}: not valid TOML: {exc}") from None


# ---------------------------------------------------------------------- requirements


def _logical_lines(text: str):
    """(first line number, text) of each logical line: comments removed, lines ending
    in a backslash joined with the next (pip's requirements file format)."""
    pending: list = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", line)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(pending).strip()
        pending = []
        if joined:
            yield start, joined
    if pending and " ".join(pending).strip():
        yield start, " ".join(pending).strip()


def _option_value(tokens: list, index: int, long: str) -> tuple:
    """The value of the option at tokens[index] (``--x=v``, ``--x v``, ``-xv``) and the
    index after it."""
    token = tokens[index]
    if "=" in token and token.startswith("--"):
        return token.partition("=")[2], index + 1
    if token.startswith("-") and not token.startswith("--") and len(token) > 2:
        return token[2:], index + 1
    if index + 1 < len(tokens):
        return tokens[index + 1], index + 2
    raise ValueError(f"{long} needs a value")


def _hash(text: str, origin: str) -> tuple:
    algorithm, sep, digest = text.partition(":")
    algorithm = algorithm.lower()
    if not sep or algorithm not in hashlib.algorithms_guaranteed or not is_hex(digest):
        raise LockFileError(f"{origin}: not a hash: {text!r}")
    return algorithm, digest.lower()


def _hash_options(options: list, origin: str) -> list:
    """The ``--hash`` values among a requirement's options (the others are ignored)."""
    hashes = []
    index = 0
    while index < len(options):
        if options[index].split("=", 1)[0] == "--hash":
            try:
                value, index = _option_value(options, index, "--hash")
            except ValueError as exc:
                raise LockFileError(f"{origin}: {exc}") from None
            hashes.append(_hash(value, origin))
        else:
            index += 1
    return hashes


def parse_requirements(
    text: str, path: str, read: Reader, _seen: Optional[set] = None
) -> tuple:
    """(wanted, notes) of a requirements file (``pip-compile --generate-hashes`` or
    ``uv pip compile --generate-hashes`` output, or any pinned file).

    ``-r``/``-c`` files are read relative to *path*: the pins of a constraints file are
    fetched too, since pip may install them. Environment markers are ignored: a file
    for another platform or Python is still wanted. Anything but ``name==version``
    (ranges, URLs, editables, options) is named in a note and skipped.
    """
    seen = _seen if _seen is not None else {os.path.abspath(path)}
    wanted: list = []
    notes: list = []
    for number, line in _logical_lines(text):
        origin = f"{path}:{number}"
        tokens = line.split()
        first = tokens[0].split("=", 1)[0] if tokens[0].startswith("--") else tokens[0][:2]
        if tokens[0].startswith("-") and first in _INCLUDES:
            try:
                target = _option_value(tokens, 0, first)[0]
            except ValueError as exc:
                raise LockFileError(f"{origin}: {exc}") from None
            if "://" in target:
                notes.append(f"{origin}: skipped {first} {target}: only local files are read")
                continue
            included = os.path.join(os.path.dirname(path), target)
            key = os.path.abspath(included)
            if key in seen:
                continue
            seen.add(key)
            more, more_notes = parse_requirements(_text(included, read), included, read, seen)
            wanted += more
            notes += more_notes
            continue
        if tokens[0].startswith("-"):
            what = "editable requirement" if first in _EDITABLE else "option"
            notes.append(f"{origin}: skipped {what} {line!r}: the proxy's own indices are used")
            continue
        # Options begin at the first token starting with "-" (as pip splits a line).
        split = next((i for i, token in enumerate(tokens) if token.startswith("-")), len(tokens))
        requirement, hashes = " ".join(tokens[:split]), _hash_options(tokens[split:], origin)
        spec = requirement.split(";", 1)[0].strip()  # markers ignored, see above
        match = _NAME.match(spec)
        pin = _PIN.match(match.group(3).strip()) if match else None
        if pin is None:
            notes.append(f"{origin}: skipped {requirement!r}: not pinned to one version with ==")
            continue
        project = canonicalize_name(match.group(1))
        if not hashes:
            notes.append(f"{origin}: {requirement!r} has no hash: every file of that version is fetched")
        wanted.append(Wanted(project, pin.group(1), None, tuple(hashes), origin))
    return wanted, notes


# ---------------------------------------------------------------------- TOML lock files


def parse_toml_lock(kind: str, data: dict, path: str) -> tuple:
    """(wanted, notes) of a parsed pylock.toml, uv.lock or poetry.lock.

    :raises LockFileError: the data is not of that format.
    """
    parse = {"pylock": _pylock, "uv": _uv_lock, "poetry": _poetry_lock}[kind]
    wanted: list = []
    notes: list = []
    try:
        parse(data, path, wanted, notes)
    except KeyError as exc:
        raise LockFileError(f"{path}: not a valid {kind} lock file: {exc.args[0]!r} is missing") from None
    except (TypeError, AttributeError):
        raise LockFileError(f"{path}: not a valid {kind} lock file: a table or value of the wrong type") from None
    except LockFileError:
        raise
    except ValueError as exc:
        raise LockFileError(f"{path}: not a valid {kind} lock file: {exc}") from None
    return wanted, notes


def _table_list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{what} is not an array of tables")
    return value


def _project(package: dict) -> NormalizedName:
    name = package["name"]
    if not isinstance(name, str) or not _NAME.match(name) or _NAME.match(name).group(3):
        raise ValueError(f"bad package name {name!r}")
    return canonicalize_name(name)


def _wanted(project: NormalizedName, version: Any, filename: Any, hashes: tuple, origin: str) -> Wanted:
    """A file to fetch, its name and its version (if given) checked to be text."""
    if version is not None and not isinstance(version, str):
        raise ValueError(f"the version of {project}, {version!r}, is not a string")
    if not isinstance(filename, str):
        raise ValueError(f"a file name of {project}, {filename!r}, is not a string")
    return Wanted(project, version, filename, hashes, origin)


def _hash_table(hashes: Any, origin: str) -> tuple:
    if not isinstance(hashes, dict) or not hashes:
        raise LockFileError(f"{origin}: no hashes")
    return tuple(_hash(f"{algorithm}:{digest}", origin) for algorithm, digest in hashes.items())


def _pylock(data: dict, path: str, wanted: list, notes: list) -> None:
    # PEP 751: a reader must refuse a major lock-version it does not know.
    version = data["lock-version"]
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise LockFileError(f"{path}: unsupported lock-version {version!r} (PEP 751 version 1 is read)")
    for package in _table_list(data.get("packages"), "packages"):
        project = _project(package)
        origin = f"{path}: {package['name']}"
        files = _table_list(package.get("wheels"), "wheels")
        if package.get("sdist") is not None:
            files = files + [package["sdist"]]
        if not files:
            kinds = [kind for kind in ("vcs", "directory", "archive") if kind in package]
            notes.append(f"{origin}: skipped: {' / '.join(kinds) or 'no'} source, not files of an index")
            continue
        for file in files:
            filename = file.get("name") or last_segment(file.get("url") or file.get("path") or "")
            if not filename:
                raise LockFileError(f"{origin}: a file with neither name, url nor path")
            wanted.append(_wanted(project, package.get("version"), filename, _hash_table(file.get("hashes"), origin), origin))


def _uv_lock(data: dict, path: str, wanted: list, notes: list) -> None:
    for package in _table_list(data["package"], "package"):
        project = _project(package)
        origin = f"{path}: {package['name']}"
        source = package.get("source") or {}
        if "registry" not in source:
            # git, path, directory, url, and the project itself or a workspace member
            # (editable, virtual): not files an index lists.
            kind = next(iter(source), "unknown")
            if kind in ("editable", "virtual"):
                notes.append(f"{origin}: skipped: the project itself or a workspace member ({kind}), not files of an index")
            else:
                notes.append(f"{origin}: skipped: a {kind} source, not files of an index")
            continue
        files = _table_list(package.get("wheels"), "wheels")
        if package.get("sdist") is not None:
            files = files + [package["sdist"]]
        for file in files:
            filename = last_segment(file.get("url") or file.get("path") or "")
            if not filename or not file.get("hash"):
                raise LockFileError(f"{origin}: a file without url or hash")
            wanted.append(_wanted(project, package.get("version"), filename, (_hash(file["hash"], origin),), origin))


def _poetry_lock(data: dict, path: str, wanted: list, notes: list) -> None:
    # Lock files of Poetry before 1.2 keep the files in [metadata.files], by name.
    old_files = (data.get("metadata") or {}).get("files") or {}
    for package in _table_list(data["package"], "package"):
        project = _project(package)
        origin = f"{path}: {package['name']}"
        source = package.get("source") or {}
        if source.get("type") not in (None, "legacy"):
            notes.append(f"{origin}: skipped: a {source['type']} source, not files of an index")
            continue
        files = package.get("files")
        if files is None:
            files = old_files.get(package["name"], [])
        for file in _table_list(files, "files"):
            wanted.append(_wanted(project, package.get("version"), file["file"], (_hash(file["hash"], origin),), origin))
