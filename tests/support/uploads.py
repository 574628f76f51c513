"""Upload forms built as twine builds them (requests_toolbelt's MultipartEncoder over
twine's metadata dictionary), and the headers twine sends with them."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Optional, Sequence

from tests.support.dists import Dist


def twine_fields(dist: Dist, **overrides: Optional[str]) -> list:
    """The form fields twine sends for *dist*, in twine's order; a field overridden
    with None is left out."""
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": dist.project,
        "version": dist.version,
        "filetype": "bdist_wheel" if dist.is_wheel else "sdist",
        "pyversion": "py3" if dist.is_wheel else "source",
        "metadata_version": "2.1",
        "summary": f"Test distribution {dist.project}",
        "description_content_type": "text/plain",
        "sha256_digest": hashlib.sha256(dist.content).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(dist.content, digest_size=32).hexdigest(),
        "requires_python": dist.requires_python or "",
    }
    fields.update(overrides)
    pairs = [(key, value) for key, value in fields.items() if value is not None]
    # twine sends a list-valued field (classifiers, requires_dist) once per value.
    pairs += [("classifiers", "Programming Language :: Python :: 3"), ("classifiers", "Private :: Do Not Upload")]
    return pairs


def encode_form(fields: Sequence[tuple], filename: str, content: bytes, boundary: Optional[str] = None) -> tuple:
    """(Content-Type, body) of a multipart/form-data form with *fields* and the file
    part ``content``, byte for byte as requests_toolbelt encodes it."""
    boundary = boundary or uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def basic_auth(token: str, user: str = "__token__") -> str:
    """The Authorization header twine sends for an API token."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
