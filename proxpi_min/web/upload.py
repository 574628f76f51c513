"""Uploads (``POST /upload/``, the API twine and ``uv publish`` speak): token checks,
the form streamed to a temp file under a size cap and a minimum rate, every refusal
before anything is stored; and the yank and delete of uploaded files."""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import os
import queue
import threading
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Tuple

from ..core.distnames import parse_dist_filename
from ..core.errors import (
    BadRequest,
    BasicUnauthorized,
    ConfigError,
    Forbidden,
    InsufficientStorage,
    LengthRequired,
    PayloadTooLarge,
    ProxpiError,
    RequestTooSlow,
)
from ..core.multipart import END, MultipartParser, PartHead, boundary_of
from ..core.names import NormalizedName, canonicalize_name, check_filename
from ..core.sdists import check_sdist
from ..core.versions import same_version
from ..core.settings import Settings, parse_pattern
from ..core.specifiers import is_valid_specifier
from ..core.units import human_size, parse_decimal
from ..core.wheelmeta import BrokenWheel, metadata_headers
from ..files.local import LocalIndex, Upload
from ..files.wheel_reads import read_wheel_metadata
from ..infra.atomic import temp_path, write_all
from .connection import Connection, MinimumRate

__all__ = ["Grant", "Uploads", "load_grants"]

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024  # bytes read from the socket at a time
_SPOOL_DEPTH = 16  # pieces read ahead of a spool thread (at most 4 MiB in memory)
_SYNC_EVERY = 8 * 1024 * 1024  # bytes written between two fdatasync calls
MAX_FIELDS = 1024 * 1024  # bytes of every form field but the file, together
# Bytes a second an upload body must average after its first client timeout, as a
# download must (PROXPI_DOWNLOAD_MIN_RATE's default): far under any real uploader's
# link, far over a client trickling bytes to hold a request thread.
MIN_UPLOAD_RATE = 1024
# Digests a form may carry (twine: sha256 and blake2_256; older clients: md5), checked.
_DIGESTS = {"sha256_digest": "sha256", "blake2_256_digest": "blake2_256", "md5_digest": "md5"}
_FILETYPES = {True: "bdist_wheel", False: "sdist"}


class Grant(NamedTuple):
    """An upload token and the projects it may publish (none named: every project)."""

    token: bytes
    patterns: Tuple[str, ...]

    def allows(self, project: NormalizedName) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(project, pattern) for pattern in self.patterns)


def load_grants(settings: Settings) -> Tuple[Grant, ...]:
    """The tokens *settings* name: ``--upload-token`` (every project) and the lines of
    ``--upload-tokens FILE`` (``token [project-pattern...]``; ``#`` starts a comment).

    :raises ConfigError: the file cannot be read, or a line is not a token and patterns.
    """
    grants = [Grant(settings.upload_token.encode(), ())] if settings.upload_token else []
    path = settings.upload_tokens_file
    if not path:
        return tuple(grants)
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"--upload-tokens={path!r} cannot be read ({problem})") from None
    lines_of: dict = {grant.token: "--upload-token" for grant in grants}
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        token = words[0].encode()
        if token in lines_of:  # which of its lines would count is no reader's guess
            problem = f"line {number}: a token given already ({lines_of[token]}); list its projects on one line"
            raise ConfigError(f"--upload-tokens={path!r} {problem}")
        lines_of[token] = f"line {number}"
        try:
            grants.append(Grant(token, tuple(parse_pattern(word) for word in words[1:])))
        except ValueError as exc:
            problem = f"line {number}: {exc} is not a project name or pattern"
            raise ConfigError(f"--upload-tokens={path!r} {problem}") from None
    if len(lines_of) == (1 if settings.upload_token else 0):
        raise ConfigError(f"--upload-tokens={path!r} lists no token: no upload could be made with it")
    return tuple(grants)


class _Form:
    """What was read of an upload form: its fields and the file part."""

    def __init__(self) -> None:
        self.fields: dict = {}
        self.field_bytes = 0
        self.filename: Optional[str] = None
        self.size = 0
        self.digests: dict = {}  # form field name -> running hash
        self.spools: tuple = ()  # one writes the file part, one hashes it


class _Spool:
    """Each piece of the file part handed to *work* in a helper thread, while the request
    thread reads and splits the next bytes: os.write, fdatasync and hashlib release the
    GIL, so reading, writing and hashing overlap (bench/README.md, "A large upload")."""

    def __init__(self, work: Callable[[bytes], None]) -> None:
        self._work = work
        self._queue: "queue.Queue[Optional[bytes]]" = queue.Queue(_SPOOL_DEPTH)
        self._error: Optional[Exception] = None
        self._thread = threading.Thread(target=self._run, name="upload-spool", daemon=True)
        self._thread.start()

    def put(self, piece: bytes) -> None:
        """:raises ProxpiError: an earlier piece failed (InsufficientStorage: a full disk)."""
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def _run(self) -> None:
        while True:
            piece = self._queue.get()
            if piece is None:
                return
            if self._error is None:
                try:
                    self._work(piece)
                except ProxpiError as exc:
                    self._error = exc

    def finish(self) -> None:
        """Wait for every piece to be done; raise what doing one raised."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Writer:
    """Writes pieces to *fd*, flushing them to disk every _SYNC_EVERY bytes, so that the
    final fsync finds little left to write."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._unsynced = 0

    def __call__(self, piece: bytes) -> None:
        with _disk():
            write_all(self._fd, piece)
            self._unsynced += len(piece)
            if self._unsynced >= _SYNC_EVERY:
                os.fdatasync(self._fd)
                self._unsynced = 0


@contextlib.contextmanager
def _disk(what: str = "the upload") -> Iterator[None]:
    """An OSError of the local index's own files, as the 507 it is to the client (a full
    disk); *what* the cache dir could not take."""
    try:
        yield
    except OSError as exc:
        raise InsufficientStorage(f"the cache dir cannot take {what}: {exc.strerror or exc}") from None


class Uploads:
    """Checks and stores uploads into *local*, for the tokens *grants*."""

    def __init__(
        self, local: LocalIndex, grants: Tuple[Grant, ...], max_size: int, make_room: Callable[[int], None]
    ) -> None:
        assert local.root is not None
        self.local = local
        self._grants = grants
        self._max_size = max_size
        self._make_room = make_room  # frees disk space from cached files for an upload
        self._temps: set = set()  # the temp files of the uploads being received
        self._temps_lock = threading.Lock()

    # ------------------------------------------------------------------ tokens

    def authorize(self, authorization: Optional[str], client: str) -> Grant:
        """The grant of the token in an ``Authorization`` header: HTTP basic with the
        token as password (twine: user ``__token__``), or ``Bearer <token>``.

        :raises BasicUnauthorized: no credentials (twine then asks for them).
        :raises Forbidden: wrong ones (one WARNING, without the token).
        """
        if not authorization:
            raise BasicUnauthorized("uploads need a token: user __token__, the token as password")
        scheme, _, credentials = authorization.strip().partition(" ")
        given = b""
        if scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, ValueError):
                given = base64.b64decode(credentials.strip(), validate=True).partition(b":")[2]
        elif scheme.lower() == "bearer":
            given = credentials.strip().encode("utf-8", "replace")
        found = None
        for grant in self._grants:  # every token compared, in constant time (no early exit)
            if hmac.compare_digest(given, grant.token) and found is None:
                found = grant
        if found is None:
            logger.warning("upload refused: wrong credentials from %s", client)
            raise Forbidden("Invalid or non-existent authentication information")
        return found

    @staticmethod
    def check_project(grant: Grant, project: NormalizedName) -> None:
        """:raises BadRequest: *grant*'s token may not publish *project* (a refusal of the
        upload, as a bad name is; wrong credentials are the 403)."""
        if not grant.allows(project):
            patterns = " ".join(grant.patterns)
            raise BadRequest(f"this token may not publish project {project!r} (its patterns: {patterns})")

    # ------------------------------------------------------------------ uploads

    def receive(
        self, body: Connection, headers: Mapping[str, str], grant: Grant, client: str, go_ahead: Callable[[], None]
    ) -> str:
        """Read an upload form from *body*, sent by *client*, check it, store its file;
        the line to answer. *go_ahead* is called once the request's head is accepted,
        before the body is read (a client that sent ``Expect: 100-continue`` waits for
        it, RFC 9110 10.1.1).

        :raises BadRequest: the form or the file is refused (the message says why).
        :raises LengthRequired: no Content-Length (a chunked body).
        :raises PayloadTooLarge: past PROXPI_MAX_UPLOAD_SIZE.
        :raises Conflict: the project has that file with other bytes, or its release
            has it spelled otherwise (LocalIndex.store); the same bytes again are a 200.
        :raises BadRequest: the token may not publish the project.
        :raises RequestTooSlow: the body came under MIN_UPLOAD_RATE.
        :raises ConnectionError: the body stopped short.
        """
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise LengthRequired("an upload needs a Content-Length (chunked bodies are not taken)")
        length = parse_decimal(headers["content-length"].strip())
        if length is None:
            raise BadRequest(f"the Content-Length is not a number: {headers['content-length'][:40]!r}")
        if length > self._max_size + MAX_FIELDS:
            raise PayloadTooLarge(self._too_large())
        parser = MultipartParser(boundary_of(headers.get("content-type")))
        assert self.local.root is not None
        # Cached files can be fetched again, an upload is the only copy: they make room
        # (where the cache's bookkeeping cannot be had now, the write below tells).
        with contextlib.suppress(OSError):
            self._make_room(length)
        go_ahead()
        with _disk():
            os.makedirs(self.local.root, exist_ok=True)  # again: the cache dir may have been removed
            temp = temp_path(self.local.root)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with self._temps_lock:
            self._temps.add(temp)
        try:
            try:
                form = self._read(_body(body, length, client), parser, fd)
                with _disk():
                    os.fsync(fd)
            finally:
                os.close(fd)
            upload = self._check(form, temp, grant)
            with _disk():
                stored = self.local.store(upload)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            with self._temps_lock:
                self._temps.discard(temp)
        if stored:
            logger.info("stored upload %s/%s (%d bytes)", upload.project, upload.filename, upload.size)
        else:  # a re-run publish job: answered as PyPI does, as if stored
            logger.info("upload %s/%s is stored already, the same bytes: kept", upload.project, upload.filename)
        return f"stored {upload.project}/{upload.filename} ({upload.size} bytes, sha256 {upload.sha256})"

    def _too_large(self) -> str:
        return f"the file is larger than the upload limit of {human_size(self._max_size)} (PROXPI_MAX_UPLOAD_SIZE)"

    def _read(self, chunks: Iterable[bytes], parser: MultipartParser, fd: int) -> _Form:
        """Feed the body's *chunks* to *parser*: the file part into *fd* (hashed on the
        way), the other fields into memory."""
        form = _Form()
        try:
            self._feed(chunks, parser, form, fd)
        finally:
            for spool in form.spools:
                spool.finish()
        parser.close()
        return form

    def _feed(self, chunks: Iterable[bytes], parser: MultipartParser, form: _Form, fd: int) -> None:
        field: Optional[bytearray] = None
        in_file = False
        for chunk in chunks:
            for piece in parser.feed(chunk):
                if isinstance(piece, PartHead):
                    in_file = piece.name == "content" and piece.filename is not None
                    if in_file:
                        if form.filename is not None:
                            raise BadRequest("the form has more than one file")
                        form.filename = piece.filename
                        form.digests = {name: _hasher(_DIGESTS[name]) for name in _DIGESTS if name in form.fields}
                        form.digests.setdefault("sha256_digest", hashlib.sha256())
                        digests = tuple(form.digests.values())
                        form.spools = (_Spool(_Writer(fd)), _Spool(lambda piece: _update(digests, piece)))
                    else:
                        field = bytearray()
                        form.fields.setdefault(piece.name, field)  # a repeated field keeps its first value
                elif piece is END:
                    in_file, field = False, None
                elif in_file:
                    form.size += len(piece)
                    if form.size > self._max_size:
                        raise PayloadTooLarge(self._too_large())
                    for spool in form.spools:
                        spool.put(piece)
                elif field is not None:
                    form.field_bytes += len(piece)
                    if form.field_bytes > MAX_FIELDS:
                        raise PayloadTooLarge(f"the form's fields pass {human_size(MAX_FIELDS)}")
                    field += piece

    def _check(self, form: _Form, temp: str, grant: Grant) -> Upload:
        """Every check of an upload but against the files stored (LocalIndex.store makes
        those under the project's lock, racing uploads too); the upload to store."""
        fields = {name: bytes(value).decode("utf-8", "replace").strip() for name, value in form.fields.items()}
        if fields.get(":action", "file_upload") != "file_upload":
            raise BadRequest(f"unsupported :action {fields[':action']!r} (only file_upload)")
        if fields.get("protocol_version", "1") != "1":
            raise BadRequest(f"unsupported protocol_version {fields['protocol_version']!r} (only 1)")
        if form.filename is None:
            raise BadRequest("the form has no file (a 'content' part with a file name)")
        filename = form.filename
        dist = parse_dist_filename(check_filename(filename))  # one safe path segment, never a path
        name, version = fields.get("name", ""), fields.get("version", "")
        if not name or canonicalize_name(name) != dist.project:
            raise BadRequest(f"the form's name {name!r} is not the project of {filename!r}")
        if not version or not same_version(version, dist.version):
            raise BadRequest(f"the form's version {version!r} is not the version of {filename!r}")
        filetype = fields.get("filetype")
        if filetype and filetype != _FILETYPES[dist.wheel]:
            raise BadRequest(f"filetype {filetype!r} does not fit {filename!r} ({_FILETYPES[dist.wheel]})")
        digests = dict(form.digests)
        late = [field for field in _DIGESTS if fields.get(field) and field not in digests]
        if late:  # sent after the file part: its bytes are hashed again from the disk
            digests.update(_file_digests(temp, late))
        for field, digest in digests.items():
            wanted = fields.get(field, "").lower().encode("utf-8", "replace")
            if wanted and not hmac.compare_digest(wanted, digest.hexdigest().encode("ascii")):
                raise BadRequest(f"the {field} does not match the file's bytes: the upload is damaged")
        self.check_project(grant, dist.project)
        metadata, requires_python = None, fields.get("requires_python") or None
        if dist.wheel:
            metadata = _wheel_metadata(temp, filename)
            headers = metadata_headers(metadata)
            if canonicalize_name(headers.get("Name", "")) != dist.project or not same_version(
                headers.get("Version", ""), dist.version
            ):
                raise BadRequest(f"the METADATA of {filename!r} names another project or version")
            requires_python = headers.get("Requires-Python") or None
        else:
            with open(temp, "rb") as file:
                check_sdist(file, filename)
        if requires_python is not None and not is_valid_specifier(requires_python):
            raise BadRequest(f"the Requires-Python of {filename!r} is not a version specifier: {requires_python[:80]!r}")
        sha256 = form.digests["sha256_digest"].hexdigest()
        return Upload(dist.project, filename, temp, sha256, form.size, metadata, requires_python)

    def close(self) -> None:
        """Remove the temp files of uploads still being received (a stop cuts them)."""
        with self._temps_lock:
            temps, self._temps = self._temps, set()
        for temp in temps:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    # ------------------------------------------------------------------ yank, delete

    def yank(self, grant: Grant, project: NormalizedName, filename: str, reason: Optional[str]) -> str:
        self.check_project(grant, project)
        with _disk("the yank"):
            self.local.yank(project, filename, reason)
        logger.info("yanked %s/%s", project, filename)
        return f"yanked {project}/{filename}" if reason is not None else f"un-yanked {project}/{filename}"

    def delete(self, grant: Grant, project: NormalizedName, filename: str) -> str:
        self.check_project(grant, project)
        with _disk("the delete"):
            self.local.delete(project, filename)
        logger.info("deleted %s/%s", project, filename)
        return f"deleted {project}/{filename}"

    def release(self, grant: Grant, project: NormalizedName) -> str:
        self.check_project(grant, project)
        with _disk("the release"):
            self.local.release(project)
        if self.local.page(project) is not None:  # a --local-dir folder still has its files
            logger.info("released the name %s; the --local-dir folder still serves it", project)
            return f"released {project}: the --local-dir folder still serves it"
        logger.info("released the name %s: the upstreams' project of that name is served", project)
        return f"released {project}: its name is the upstreams' again"


def _body(body: Connection, length: int, client: str) -> Iterator[bytes]:
    """The *length* bytes of an upload body, in pieces as they come; the first client
    timeout is free, after it the body must average MIN_UPLOAD_RATE (see MinimumRate).

    :raises RequestTooSlow: the body fell behind that rate.
    :raises ConnectionError: the client closed, or sent nothing for a client timeout.
    """
    rate = MinimumRate(MIN_UPLOAD_RATE, body.client_timeout)
    remaining = length
    while remaining:
        chunk = body.read(min(_CHUNK, remaining), rate.time_left())
        if not rate.count(len(chunk)):
            received, seconds = rate.received, rate.elapsed()
            logger.warning("upload from %s too slow: %d of %d bytes in %.1f s, cut", client, received, length, seconds)
            raise RequestTooSlow(
                f"the upload came too slowly: {received} bytes in {seconds:.1f} s, under the minimum of "
                f"{MIN_UPLOAD_RATE} bytes a second"
            )
        if not chunk:
            raise ConnectionError("the upload stopped short")
        remaining -= len(chunk)
        yield chunk


def _update(digests: tuple, piece: bytes) -> None:
    for digest in digests:
        digest.update(piece)


def _hasher(name: str):
    return hashlib.blake2b(digest_size=32) if name == "blake2_256" else hashlib.new(name)


def _file_digests(path: str, fields: list) -> dict:
    """Form field name -> the hash it names of the file at *path*, for *fields*."""
    digests = {field: _hasher(_DIGESTS[field]) for field in fields}
    with _disk(), open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            _update(tuple(digests.values()), chunk)
    return digests


def _wheel_metadata(path: str, filename: str) -> bytes:
    """The METADATA of the wheel at *path*.

    :raises BadRequest: not a zip, no METADATA, or one too large to read.
    """
    try:
        with open(path, "rb") as file:
            return read_wheel_metadata(file, filename)
    except (BrokenWheel, OSError) as exc:
        raise BadRequest(f"{filename!r} is not a valid wheel: {exc}") from None

