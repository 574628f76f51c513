"""Build real, deterministic wheels and sdists in memory for the tests.

Every archive is byte-for-byte reproducible: zip and tar entries carry a fixed
timestamp, fixed permissions and a fixed order, and gzip gets ``mtime=0``. So a
``Dist`` built twice has the same ``sha256``, and session-scoped fixtures can be
shared freely.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from typing import Iterable, Sequence

__all__ = [
    "Dist",
    "canonicalize",
    "filename_component",
    "make_sdist",
    "make_wheel",
    "record_hash",
]

# 1980-01-01 is the zip epoch; anything later works, a fixed value is what matters.
_ZIP_DATE_TIME = (2020, 2, 2, 0, 0, 0)
_TAR_MTIME = 1580601600  # the same instant, as a Unix timestamp
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])\Z", re.IGNORECASE)


def canonicalize(name: str) -> str:
    """PEP 503 normalised name: lowercase, runs of ``-_.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def filename_component(name: str) -> str:
    """The distribution-name part of a wheel or sdist filename (PEP 427/625)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def record_hash(data: bytes) -> str:
    """A RECORD hash entry: ``sha256=`` plus the urlsafe base64 digest, unpadded."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class Dist:
    """One distribution file, with what an index needs to know about it."""

    filename: str
    content: bytes
    sha256: str
    metadata: bytes | None
    requires_python: str | None
    project: str
    version: str

    @property
    def normalized(self) -> str:
        """The project's PEP 503 normalised name."""
        return canonicalize(self.project)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def metadata_sha256(self) -> str | None:
        """sha256 hex of the METADATA bytes (what PEP 658 advertises), if any."""
        if self.metadata is None:
            return None
        return hashlib.sha256(self.metadata).hexdigest()


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid project name {name!r}")


def _metadata_text(
    name: str,
    version: str,
    requires: Iterable[str],
    requires_python: str | None,
) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Test distribution {name} {version} built by the proxpi-min tests",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires)
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _default_module_source(name: str, version: str) -> str:
    return (
        f'"""Module of the test distribution {name}."""\n'
        f"NAME = {name!r}\n"
        f"__version__ = {version!r}\n"
    )


def _zip_bytes(entries: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3  # Unix, so the mode bits above mean something
            archive.writestr(info, data)
    return buffer.getvalue()


def make_wheel(
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    module_source: str | None = None,
) -> Dist:
    """A pip-installable pure-Python wheel ``{dist}-{version}-py3-none-any.whl``.

    It holds one top-level module named after the distribution (``Zope.Interface``
    gives ``zope_interface.py``) plus a ``.dist-info`` with METADATA, WHEEL and a
    RECORD whose hashes and sizes are correct.
    """
    _check_name(name)
    dist_part = filename_component(name)
    dist_info = f"{dist_part}-{version}.dist-info"
    module = (module_source if module_source is not None else _default_module_source(name, version))
    metadata = _metadata_text(name, version, requires, requires_python)
    wheel_file = (
        "Wheel-Version: 1.0\n"
        "Generator: proxpi-min-tests (1.0)\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
        "\n"
    ).encode("ascii")
    entries: list[tuple[str, bytes]] = [
        (f"{dist_part}.py", module.encode("utf-8")),
        (f"{dist_info}/METADATA", metadata),
        (f"{dist_info}/WHEEL", wheel_file),
    ]
    record_lines = [f"{path},{record_hash(data)},{len(data)}" for path, data in entries]
    record_lines.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode("utf-8")))
    content = _zip_bytes(entries)
    return Dist(
        filename=f"{dist_part}-{version}-py3-none-any.whl",
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        metadata=metadata,
        requires_python=requires_python,
        project=name,
        version=version,
    )


def _tar_add(archive: tarfile.TarFile, path: str, data: bytes) -> None:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def make_sdist(name: str, version: str, *, requires_python: str | None = None) -> Dist:
    """A ``{dist}-{version}.tar.gz`` sdist with PKG-INFO, pyproject.toml and a module.

    The tests serve and download it; nothing ever builds it, so ``metadata`` is
    None (PyPI offers ``.metadata`` files for wheels only).
    """
    _check_name(name)
    dist_part = filename_component(name)
    root = f"{dist_part}-{version}"
    pkg_info = _metadata_text(name, version, (), requires_python)
    pyproject = (
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
    ).encode("utf-8")
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _tar_add(archive, f"{root}/PKG-INFO", pkg_info)
        _tar_add(archive, f"{root}/pyproject.toml", pyproject)
        _tar_add(archive, f"{root}/{dist_part}.py", _default_module_source(name, version).encode("utf-8"))
    gz_buffer = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything variable.
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0) as gz:
        gz.write(tar_buffer.getvalue())
    content = gz_buffer.getvalue()
    return Dist(
        filename=f"{root}.tar.gz",
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        metadata=None,
        requires_python=requires_python,
        project=name,
        version=version,
    )
