"""Private packages: uploads as twine and uv publish send them, every refusal with nothing
stored, the same file again answered as stored (as on PyPI), the local index served
beside the upstream (alone by default: no dependency confusion), --local-dir, yank and
delete, offline uploads, two workers, a proxy without uploads on the publisher's cache dir."""

from __future__ import annotations

import gzip
import hashlib
import http.client as http_client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.support.cache_dir import sized_wheel
from tests.support.dists import Dist, make_sdist, make_wheel
from tests.support.prometheus import parse, sample
from tests.support.proxy import REPO_ROOT, ProxyProcess, assert_healthy, http, narrow_link, pip_env, raw_request, run_pip
from tests.support.uploads import basic_auth, encode_form, twine_fields

TOKEN = "s3cret-token"
needs_uv = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
needs_twine = pytest.mark.skipif(shutil.which("twine") is None, reason="needs twine on PATH (pip install twine)")


class Answer(NamedTuple):
    status: int
    reason: str  # the status line's reason phrase: what twine and uv show
    headers: Any
    text: str


def _post(url: str, path: str, headers: dict, body: bytes = b"", narrow: bool = False) -> Answer:
    """POST with http.client, which sends the whole body before it reads the answer;
    *narrow*: through a send buffer as small as a real link's."""
    if narrow:
        connection = narrow_link(url)
    else:
        parts = urllib.parse.urlsplit(url)
        connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        return Answer(response.status, response.reason, response.headers, response.read().decode())
    finally:
        connection.close()


def _upload(proxy, dist: Dist, token: str = TOKEN, content: bytes | None = None, filename: str | None = None,
            **fields) -> Answer:
    """POST /upload/ as twine sends it (its form, headers and basic auth)."""
    content_type, body = encode_form(
        twine_fields(dist, **fields), filename or dist.filename, dist.content if content is None else content
    )
    headers = {"Content-Type": content_type, "User-Agent": "twine/6.1.0"}
    if token is not None:
        headers["Authorization"] = basic_auth(token)
    return _post(proxy.url, "/upload/", headers, body)


def _stored(proxy) -> list:
    """Every name under the local index's folder (temp and lock files included)."""
    root = Path(proxy.settings.cache_dir) / "local"
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")) if root.exists() else []


def _json_page(proxy, project: str) -> dict:
    result = proxy.get(f"/index/{project}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    assert result.status == 200, result
    return json.loads(result.body)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def acme() -> Dist:
    """An internal package needing alpha from the upstream."""
    return make_wheel("acme-app", "1.0", requires=["alpha>=1.0"], requires_python=">=3.8")


def test_a_twine_upload_is_served_and_pip_installs_it_with_its_upstream_dependency(proxy, upstream_html, acme, tmp_path):
    p = proxy(upstream_html, upload_token=TOKEN)
    result = _upload(p, acme)
    assert result.status == 200, result.text
    assert acme.sha256 in result.text
    assert "acme-app" in p.get("/index/").text
    (entry,) = _json_page(p, "acme-app")["files"]
    assert entry["filename"] == acme.filename
    assert entry["hashes"] == {"sha256": acme.sha256}
    assert entry["size"] == acme.size and entry["upload-time"].endswith("Z")
    assert entry["requires-python"] == ">=3.8"
    assert entry["core-metadata"] == {"sha256": acme.metadata_sha256}
    metadata = p.get(f"/index/acme-app/{acme.filename}.metadata")
    assert (metadata.status, metadata.body) == (200, acme.metadata)
    assert p.get(f"/index/acme-app/{acme.filename}").body == acme.content
    _ok(run_pip(["install", "--target", str(tmp_path / "t"), "acme-app"], p.index_url))
    installed = sorted(path.name for path in (tmp_path / "t").iterdir())
    assert "acme_app.py" in installed and "alpha.py" in installed
    # Shown apart from the file cache: the home page and /metrics.
    home = json.loads(p.get("/", {"Accept": "application/json"}).body)
    assert "served from it alone" in home["local_index"] and "1 uploaded files" in home["local_index"]
    assert "Local index: " in p.get("/").text
    metrics = p.get("/metrics").text
    assert "proxpi_local_files 1" in metrics and f"proxpi_local_size_bytes {acme.size}" in metrics


def test_an_sdist_upload(proxy, upstream_html):
    p = proxy(upstream_html, upload_token=TOKEN)
    sdist = make_sdist("acme-tool", "0.3")
    assert _upload(p, sdist).status == 200
    (entry,) = _json_page(p, "acme-tool")["files"]
    assert entry["filename"] == "acme_tool-0.3.tar.gz" and "core-metadata" not in entry
    assert p.get(f"/index/acme-tool/{sdist.filename}").body == sdist.content
    assert p.get(f"/index/acme-tool/{sdist.filename}.metadata").status == 404


@needs_uv
def test_uv_publish_then_pip_installs(proxy, upstream_html, acme, tmp_path):
    p = proxy(upstream_html, upload_token=TOKEN)
    wheel = tmp_path / acme.filename
    wheel.write_bytes(acme.content)
    env = {**pip_env(), "UV_NO_CONFIG": "1"}
    published = subprocess.run(
        ["uv", "publish", "--publish-url", f"{p.url}/upload/", "--token", TOKEN, str(wheel)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert published.returncode == 0, published.stderr
    _ok(run_pip(["install", "--target", str(tmp_path / "t"), "acme-app"], p.index_url))
    assert (tmp_path / "t" / "acme_app.py").exists()
    # The same file again (a re-run publish job) succeeds, as on PyPI; other bytes under
    # the name are refused, and uv reports it (PyPI's rule: a file name is never reused).
    command = ["uv", "publish", "--publish-url", f"{p.url}/upload/", "--token", TOKEN, str(wheel)]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    wheel.write_bytes(make_wheel("acme-app", "1.0", module_source="REBUILT = True\n").content)
    other = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and "409" in other.stderr
    assert p.get(f"/index/acme-app/{acme.filename}").body == acme.content


@needs_twine
def test_twine_upload(proxy, upstream_html, acme, tmp_path):
    p = proxy(upstream_html, upload_token=TOKEN)
    wheel = tmp_path / acme.filename
    wheel.write_bytes(acme.content)
    env = {**pip_env(), "TWINE_USERNAME": "__token__", "TWINE_PASSWORD": TOKEN, "TWINE_NON_INTERACTIVE": "1"}
    _ok(subprocess.run(["twine", "upload", "--repository-url", f"{p.url}/upload/", str(wheel)],
                       env=env, capture_output=True, text=True, timeout=120))
    assert _json_page(p, "acme-app")["files"][0]["filename"] == acme.filename


def _not_zip(dist: Dist) -> dict:
    data = b"this is no zip file"
    return {"content": data, "sha256_digest": hashlib.sha256(data).hexdigest(), "blake2_256_digest": None}


def _no_metadata(dist: Dist) -> dict:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("acme_app.py", "")
    data = buffer.getvalue()
    return {"content": data, "sha256_digest": hashlib.sha256(data).hexdigest(), "blake2_256_digest": None}


def _rezipped(dist: Dist, metadata=lambda text: text, encrypted: bool = False) -> dict:
    """*dist*'s wheel with its METADATA passed through *metadata*, and each member
    marked encrypted (general purpose flag bit 0, APPNOTE.TXT 4.4.4) if *encrypted*."""
    buffer = BytesIO()
    with zipfile.ZipFile(BytesIO(dist.content)) as source, zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".dist-info/METADATA"):
                data = metadata(data.decode()).encode()
            archive.writestr(info, data)
    data = bytearray(buffer.getvalue())
    if encrypted:  # zipfile writes no such flag: set in each local and central header
        for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature)
            while at >= 0:
                data[at + flags_at] |= 0x1
                at = data.find(signature, at + 4)
    data = bytes(data)
    return {"content": data, "sha256_digest": hashlib.sha256(data).hexdigest(), "blake2_256_digest": None}


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        (lambda d: {"filename": "acme_app-1.0.whl"}, 400, "not a wheel name"),
        (lambda d: {"filename": "acme-app-1.0.tar.gz"}, 400, "not a project name"),
        (lambda d: {"filename": "../acme_app-1.0-py3-none-any.whl"}, 400, "not a valid file name"),
        (lambda d: {"filetype": "sdist"}, 400, "filetype 'sdist' does not fit"),
        (lambda d: {"name": "other-app"}, 400, "name 'other-app' is not the project"),
        (lambda d: {"version": "2.0"}, 400, "version '2.0' is not the version"),
        (lambda d: {"sha256_digest": "0" * 64}, 400, "sha256_digest does not match"),
        (lambda d: {"sha256_digest": "\u00e9" * 64}, 400, "sha256_digest does not match"),
        (lambda d: {"blake2_256_digest": "0" * 64}, 400, "blake2_256_digest does not match"),
        (_not_zip, 400, "not a readable zip"),
        (_no_metadata, 400, "has no .dist-info/METADATA"),
        (lambda d: _rezipped(d, encrypted=True), 400, "not a valid wheel"),
        (lambda d: _rezipped(d, lambda text: text.replace("Name: acme-app", "Name: acm\u00e9-app")), 400,
         "names another project or version"),
        (lambda d: {":action": "remove_pkg"}, 400, "unsupported :action"),
        (lambda d: {"token": "wrong"}, 403, "Invalid or non-existent authentication"),
        (lambda d: {"token": "team-b"}, 400, "may not publish project 'acme-app'"),
    ],
    ids=["bad-name", "sdist-dashes", "path", "filetype", "name", "version", "sha256", "sha256-non-ascii", "blake2",
         "not-zip", "no-metadata",
         "encrypted", "metadata-non-ascii-name", "action", "wrong-token", "other-team"],
)
def test_refusals_store_nothing(proxy, upstream_html, acme, tmp_path, change, status, reason):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# team b publishes its own projects only\nteam-b  team-b-*  other\n{TOKEN}\n")
    p = proxy(upstream_html, upload_tokens_file=str(tokens))
    overrides = change(acme)
    result = _upload(p, acme, **overrides)
    assert result.status == status, result.text
    # In the plain-text body, and in the status line, which twine and uv show.
    assert reason in result.text and reason in result.reason
    assert _stored(p) == []
    assert p.get("/index/acme-app/").status == 404
    assert_healthy(p)


def test_metadata_in_utf_8_beyond_ascii(proxy, upstream_html, acme):
    """Core metadata is UTF-8: an author's name past ASCII is taken as written; a
    Requires-Python that is no PEP 440 specifier (one written with "\u2265") is refused,
    its reason readable in the body and, as far as a status line carries it, there."""
    p = proxy(upstream_html, upload_token=TOKEN)
    refused = _upload(p, acme, **_rezipped(acme, lambda text: text.replace("Requires-Python: >=3.8", "Requires-Python: \u22653.8")))
    assert refused.status == 400 and "Requires-Python" in refused.reason, refused.text
    assert "'\u22653.8'" in refused.text
    assert _stored(p) == []
    result = _upload(p, acme, **_rezipped(acme, lambda text: text + "Author: Jos\u00e9 M\u00fcller\n"))
    assert result.status == 200, result.text
    assert _json_page(p, "acme-app")["files"][0]["requires-python"] == ">=3.8"
    metadata = p.get(f"/index/acme-app/{acme.filename}.metadata")
    assert metadata.status == 200 and "Jos\u00e9 M\u00fcller" in metadata.body.decode()


def test_credentials_missing_or_off(proxy, upstream_html, acme):
    off = proxy(upstream_html)
    assert _upload(off, acme).status == 404
    p = proxy(upstream_html, upload_token=TOKEN)
    result = _upload(p, acme, token=None)
    assert result.status == 401
    assert result.headers["WWW-Authenticate"].startswith("Basic ")
    assert _stored(p) == []
    assert p.get("/upload/").status == 405
    wrong = _upload(p, acme, token="nope")
    assert wrong.status == 403 and "WWW-Authenticate" not in wrong.headers


def test_any_user_name_and_a_bearer_token_work(proxy, upstream_html):
    p = proxy(upstream_html, upload_token=TOKEN)
    one, two = make_wheel("acme-one", "1.0"), make_wheel("acme-two", "1.0")
    content_type, body = encode_form(twine_fields(one), one.filename, one.content)
    assert p.request("POST", "/upload/", {"Content-Type": content_type,
                                          "Authorization": basic_auth(TOKEN, "ci-bot")}, body).status == 200
    content_type, body = encode_form(twine_fields(two), two.filename, two.content)
    assert p.request("POST", "/upload/", {"Content-Type": content_type,
                                          "Authorization": f"Bearer {TOKEN}"}, body).status == 200


def test_a_second_upload_of_a_name_is_refused_even_racing(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    builds = [make_wheel("acme-app", "1.0", module_source=f"BUILD = {number}\n") for number in range(4)]
    statuses = {}
    threads = [threading.Thread(target=lambda b=b: statuses.update({b.sha256: _upload(p, b).status})) for b in builds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses.values()) == [200, 409, 409, 409]
    (winner,) = [build for build in builds if statuses[build.sha256] == 200]
    again = _upload(p, builds[1] if winner is builds[0] else builds[0])
    assert again.status == 409 and "File already exists" in again.text
    assert p.get(f"/index/acme-app/{acme.filename}").body == winner.content
    assert _json_page(p, "acme-app")["files"][0]["hashes"] == {"sha256": winner.sha256}
    assert not [name for name in _stored(p) if "/.tmp-" in name or name.startswith(".tmp-")]


def test_the_same_file_again_is_answered_as_stored_even_racing(proxy, upstream_html, acme):
    """A re-run publish job: twine (whose --skip-existing is PyPI's only) and uv publish
    fail on a 409; PyPI answers 200 where the name and hashes match, and so do we, with
    the first answer's body and nothing rewritten."""
    p = proxy(upstream_html, upload_token=TOKEN)
    first = _upload(p, acme)
    assert first.status == 200, first.text
    assert _post(p.url, f"/local/acme-app/{acme.filename}?yank=bad", {"Authorization": basic_auth(TOKEN)}).status == 200
    before = _json_page(p, "acme-app")["files"]
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_upload(p, acme))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(answer.status, answer.text) for answer in answers] == [(200, first.text)] * 4
    assert _json_page(p, "acme-app")["files"] == before  # upload time and yank kept
    assert not [name for name in _stored(p) if ".tmp-" in name]


def test_a_file_put_there_by_hand_is_never_listed_under_an_uploads_hash(proxy, upstream_html):
    p = proxy(upstream_html, upload_token=TOKEN)
    by_hand = make_wheel("acme-hand", "1.0", module_source="BY_HAND = True\n")
    folder = Path(p.settings.cache_dir) / "local" / "acme-hand"
    folder.mkdir(parents=True)
    (folder / by_hand.filename).write_bytes(by_hand.content)
    refused = _upload(p, make_wheel("acme-hand", "1.0"))
    assert refused.status == 409 and "File already exists" in refused.reason
    assert _stored(p) == ["acme-hand", f"acme-hand/{by_hand.filename}"]  # no sidecar written
    assert p.get("/index/acme-hand/").status == 404


def _tar_gz(members: dict) -> bytes:
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("acme_app-1.0.tar.gz", b"", "is not a valid sdist"),
        ("acme_app-1.0.tar.gz", b"a text file, not gzip", "is not a valid sdist"),
        ("acme_app-1.0.tar.gz", gzip.compress(b"gzip, but no tar inside"), "is not a valid sdist"),
        ("acme_app-1.0.tar.gz", _tar_gz({"acme_app-1.0/setup.py": b""}), "no PKG-INFO in its top folder"),
        ("acme_app-1.0.tar.gz", _tar_gz({"acme_app-1.0/src/PKG-INFO": b""}), "no PKG-INFO in its top folder"),
        ("acme_app-1.0.zip", _zip({"acme_app-1.0/setup.py": b""}), "no PKG-INFO in its top folder"),
        ("acme_app-1.0.zip", _tar_gz({"acme_app-1.0/PKG-INFO": b""}), "is not a valid sdist"),
    ],
    ids=["empty", "not-gzip", "not-tar", "no-pkg-info", "nested-pkg-info", "zip-no-pkg-info", "tar-named-zip"],
)
def test_an_sdist_that_is_not_an_archive_with_pkg_info_is_refused(proxy, upstream_html, filename, content, reason):
    """As PyPI: listed, it would fail every install that picks it."""
    p = proxy(upstream_html, upload_token=TOKEN)
    result = _upload(p, make_sdist("acme-app", "1.0"), content=content, filename=filename,
                     sha256_digest=hashlib.sha256(content).hexdigest(), blake2_256_digest=None)
    assert result.status == 400 and reason in result.reason, result.text
    assert _stored(p) == [] and p.get("/index/acme-app/").status == 404
    assert_healthy(p)


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("dupname-1.0-py3-none-any.whl", "DupName-1.0-py3-none-any.whl", "spelled otherwise"),
        ("dupname-1.0-py3-none-any.whl", "dupname-1.0.0-py3-none-any.whl", "spelled otherwise"),
        ("dupname-1.0.tar.gz", "dupname-1.0.zip", "Only one sdist may be uploaded per release"),
        ("dupname-1.0.tar.gz", "DupName-1.0.tar.gz", "Only one sdist may be uploaded per release"),
    ],
    ids=["case", "version-spelling", "zip-beside-tar", "sdist-case"],
)
def test_a_release_holds_one_file_per_normalized_name_and_one_sdist(proxy, upstream_html, first, second, reason):
    """As PyPI: names compared normalized (PEP 503 project, PEP 440 version, tags in any
    case), one sdist per release."""
    p = proxy(upstream_html, upload_token=TOKEN)
    dist = (make_wheel if first.endswith(".whl") else make_sdist)("dupname", "1.0")
    assert _upload(p, dist, filename=first).status == 200
    if second.endswith(".zip"):  # the same release as a zip sdist
        content = _zip({"dupname-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: dupname\nVersion: 1.0\n"})
        refused = _upload(p, dist, content=content, filename=second,
                          sha256_digest=hashlib.sha256(content).hexdigest(), blake2_256_digest=None)
    else:
        refused = _upload(p, dist, filename=second)  # the same bytes too: PyPI refuses them as well
    assert refused.status == 409 and reason in refused.reason and repr(first) in refused.text
    assert [entry["filename"] for entry in _json_page(p, "dupname")["files"]] == [first]
    assert sorted(_stored(p)) == sorted(["dupname", f"dupname/{first}", f"dupname/.info-{first}"]
                                        + ([f"dupname/{first}.metadata"] if first.endswith(".whl") else []))


def test_a_proxy_without_uploads_serves_those_another_proxy_on_its_cache_dir_makes(proxy, upstream_html, dists):
    """The reader started first, before the local folder existed: it looks for it once a
    second, then serves local projects from it, pages checked on each use."""
    reader = proxy(upstream_html)
    cache = reader.settings.cache_dir
    page = reader.get("/index/alpha/")
    assert dists.alpha_2.filename in page.text and page.headers["Cache-Control"] == "max-age=600, public"
    publisher = proxy(upstream_html, upload_token=TOKEN, cache_dir=cache)
    internal = make_wheel("alpha", "0.5")
    assert _upload(publisher, internal).status == 200
    deadline = time.monotonic() + 3.0
    while internal.filename not in reader.get("/index/alpha/").text and time.monotonic() < deadline:
        time.sleep(0.05)
    page = reader.get("/index/alpha/")
    assert internal.filename in page.text and dists.alpha_2.filename not in page.text
    assert page.headers["X-Proxpi-Policy"] == "local" and page.headers["Cache-Control"] == "no-cache"
    assert reader.get(f"/index/alpha/{internal.filename}").body == internal.content
    assert "alpha" in reader.get("/index/").text


def test_an_upload_past_a_heads_limit_sent_in_one_write(proxy, upstream_html):
    """A client may send the head and the body in one write: the proxy then holds more
    than a head's limit (64 KiB) before the head is parsed, which is the body, not a
    head too long."""
    bulky = sized_wheel("bulky", "1.0", 200_000)
    assert bulky.size > 2 * 65536
    p = proxy(upstream_html, upload_token=TOKEN)
    content_type, body = encode_form(twine_fields(bulky), bulky.filename, bulky.content)
    head = (
        f"POST /upload/ HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Authorization: {basic_auth(TOKEN)}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    answer = raw_request(p.url, head.encode() + body)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert p.get(f"/index/bulky/{bulky.filename}").body == bulky.content


def test_too_large_is_refused_as_it_arrives(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN, max_upload_size=100)
    result = _upload(p, acme)
    assert result.status == 413 and "PROXPI_MAX_UPLOAD_SIZE" in result.text and "100 B" in result.reason
    assert _stored(p) == []
    assert_healthy(p)


def test_too_large_by_its_length_is_refused_before_reading(proxy, upstream_html):
    p = proxy(upstream_html, upload_token=TOKEN, max_upload_size=1000)
    connection = http_client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        connection.putrequest("POST", "/upload/")
        for name, value in (("Content-Type", "multipart/form-data; boundary=b"), ("Authorization", basic_auth(TOKEN)),
                            ("Content-Length", str(50 * 1024 * 1024))):
            connection.putheader(name, value)
        connection.endheaders()  # no body sent: the answer comes from the length alone
        response = connection.getresponse()
        assert response.status == 413 and response.getheader("Connection") == "close"
    finally:
        connection.close()
    assert _stored(p) == []
    assert_healthy(p)


@pytest.mark.parametrize(
    "token, max_upload_size, status",
    [
        (None, 10_000_000, 401),  # refused before a byte of the body is read
        ("nope", 10_000_000, 403),
        (TOKEN, 1000, 413),  # by its Content-Length, before reading
        (TOKEN, 100_000, 413),  # as it arrives: part of the body read, the rest not
    ],
    ids=["no credentials", "wrong token", "too large by its length", "too large as it arrives"],
)
def test_a_refused_upload_sent_whole_before_reading_gets_its_answer(proxy, upstream_html, token, max_upload_size,
                                                                    status):
    """RFC 9112 9.6: a client that sends its whole body before it reads the answer
    (http.client; urllib3 under twine) gets the refusal and its reason, not a reset: the
    proxy reads the rest of the body away before it closes."""
    p = proxy(upstream_html, upload_token=TOKEN, max_upload_size=max_upload_size)
    big = sized_wheel("big", "1.0", 2_000_000)  # about 1.5 MB
    content_type, body = encode_form(twine_fields(big), big.filename, big.content)
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = basic_auth(token)
    answer = _post(p.url, "/upload/", headers, body, narrow=True)
    assert answer.status == status and answer.text.startswith(f"{status} "), answer
    assert answer.headers["Connection"] == "close"
    assert _stored(p) == []
    assert_healthy(p)


def _answer_until_closed(sock: socket.socket) -> bytes:
    """What the proxy sends until it closes the connection (or the socket times out)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return received


def test_an_upload_trickled_under_the_minimum_rate_gets_408_and_frees_the_thread(proxy, upstream_html, acme, caplog):
    """Each byte within the client timeout restarts it, but not the minimum rate: a body
    sent a byte at a time is cut one client timeout after it starts, answered 408, with
    nothing stored, and the only request thread takes the next upload."""
    caplog.set_level(logging.WARNING, logger="proxpi_min")
    p = proxy(upstream_html, upload_token=TOKEN, threads=1, client_timeout=0.5)
    content_type, body = encode_form(twine_fields(acme), acme.filename, acme.content)
    head = (
        f"POST /upload/ HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Authorization: {basic_auth(TOKEN)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", p.port), timeout=4) as sock:
        sock.sendall(head.encode())

        def trickle() -> None:
            for byte in body:  # a byte every 0.1 s: the whole body would take minutes
                if stop.wait(0.1):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        started = time.monotonic()
        sender.start()
        try:
            answer = _answer_until_closed(sock)
            seconds = time.monotonic() - started
        finally:
            stop.set()
            sender.join()
    assert seconds < 1.5, f"the trickled upload held its thread {seconds:.1f} s"
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer, answer
    assert b"under the minimum of 1024 bytes a second" in answer
    assert _stored(p) == []
    assert p.get("/index/acme-app/").status == 404
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("127.0.0.1" in message and "too slow" in message for message in warnings), warnings
    assert _upload(p, acme).status == 200


def test_a_local_project_shadows_the_upstream(proxy, upstream_html, dists, tmp_path):
    # An "internal" alpha 0.5: the upstream's alpha 2.0 must never be installed.
    internal = make_wheel("alpha", "0.5")
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, internal).status == 200
    page = p.get("/index/alpha/")
    assert "alpha-0.5-py3-none-any.whl" in page.text and "alpha-2.0" not in page.text
    assert page.headers["X-Proxpi-Policy"] == "local"
    assert p.get(f"/index/alpha/{dists.alpha_2.filename}").status == 404
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha"], p.index_url))
    assert sorted(os.listdir(tmp_path)) == [internal.filename]


def test_merge_mode_serves_both(proxy, upstream_html, dists, tmp_path):
    internal = make_wheel("alpha", "0.5")
    p = proxy(upstream_html, upload_token=TOKEN, local_merge=True)
    assert _upload(p, internal).status == 200
    names = {entry["filename"] for entry in _json_page(p, "alpha")["files"]}
    assert {internal.filename, dists.alpha_2.filename} <= names
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha==0.5"], p.index_url))
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha"], p.index_url))
    assert sorted(os.listdir(tmp_path)) == [internal.filename, dists.alpha_2.filename]


def test_yank_and_delete(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, acme).status == 200
    auth = {"Authorization": basic_auth(TOKEN)}
    path = f"/local/acme-app/{acme.filename}"
    # A file's metadata goes with it, never alone: pages advertise it while the file stays.
    for method, suffix in (("DELETE", ".metadata"), ("POST", ".metadata?yank=x")):
        assert p.request(method, path + suffix, auth).status == 404
    assert p.get(f"/index/acme-app/{acme.filename}.metadata").status == 200
    assert _post(p.url, path + "?yank=broken%20build", {}).status == 401
    assert _post(p.url, path + "?yank=broken%20build", auth).status == 200
    assert _json_page(p, "acme-app")["files"][0]["yanked"] == "broken build"
    assert _post(p.url, path + "?unyank", auth).status == 200
    assert "yanked" not in _json_page(p, "acme-app")["files"][0]
    assert p.request("DELETE", path, auth).status == 200
    # The name stays the local index's, its page empty, until it is released.
    assert _json_page(p, "acme-app")["files"] == []
    assert "acme-app" not in p.get("/index/").text
    assert p.request("DELETE", path, auth).status == 404
    # The file name is free to reuse once deleted (the file is gone).
    assert _upload(p, acme).status == 200
    still = p.request("DELETE", "/local/acme-app/", auth)
    assert still.status == 409 and "delete each of them first" in still.text
    assert p.request("DELETE", path, auth).status == 200
    assert p.request("DELETE", "/local/acme-app/", {}).status == 401
    assert p.request("DELETE", "/local/acme-app/", auth).status == 200
    assert p.get("/index/acme-app/").status == 404  # no upstream has it
    assert p.request("DELETE", "/local/acme-app/", auth).status == 404


def test_a_private_project_deleted_whole_is_not_served_from_upstream(proxy, upstream_html, dists, tmp_path):
    """Deleting a private project's last file must not hand its name to the public
    index's project of that name (dependency confusion) until the name is released."""
    internal = make_wheel("alpha", "0.5")
    p = proxy(upstream_html, upload_token=TOKEN)
    auth = {"Authorization": basic_auth(TOKEN)}
    assert _upload(p, internal).status == 200
    assert p.request("DELETE", f"/local/alpha/{internal.filename}", auth).status == 200
    page = p.get("/index/alpha/")
    assert page.status == 200 and page.headers["X-Proxpi-Policy"] == "local"
    assert _json_page(p, "alpha")["files"] == []
    result = run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha"], p.index_url)
    assert result.returncode != 0 and "from versions: none" in result.stderr, result.stderr
    assert p.get(f"/index/alpha/{dists.alpha_2.filename}").status == 404
    released = p.request("DELETE", "/local/alpha/", auth)
    assert released.status == 200 and "released alpha" in released.text
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "alpha"], p.index_url))
    assert os.listdir(tmp_path) == [dists.alpha_2.filename]


def test_local_files_and_pages_are_checked_by_their_etag_on_each_use(proxy, upstream_html, acme):
    """A delete frees a name for other bytes, and an upload changes a page at once: a
    front cache or a client keeps them, but must ask again (no-cache, RFC 9111 5.2.2.4),
    and the ETag tells the new bytes from the old."""
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, acme).status == 200
    for path in ("/index/", "/index/acme-app/", "/index/alpha/"):  # local, merged or not
        assert p.get(path).headers["Cache-Control"] == "no-cache", path
    file_path = f"/index/acme-app/{acme.filename}"
    first = {suffix: p.get(file_path + suffix) for suffix in ("", ".metadata")}
    for suffix, answer in first.items():
        assert answer.status == 200 and answer.headers["Cache-Control"] == "no-cache"
        assert p.get(file_path + suffix, {"If-None-Match": answer.headers["ETag"]}).status == 304
    assert p.request("DELETE", f"/local/acme-app/{acme.filename}", {"Authorization": basic_auth(TOKEN)}).status == 200
    other = make_wheel("acme-app", "1.0", requires=("alpha>=1",))
    assert other.filename == acme.filename and other.content != acme.content
    assert _upload(p, other).status == 200
    for suffix, answer in first.items():
        again = p.get(file_path + suffix, {"If-None-Match": answer.headers["ETag"]})
        assert again.status == 200 and again.headers["ETag"] != answer.headers["ETag"], suffix
    assert p.get(file_path).body == other.content


def test_upstream_pages_and_files_without_a_local_index_keep_their_lifetimes(proxy, upstream_html, dists):
    p = proxy(upstream_html)
    assert p.get("/index/alpha/").headers["Cache-Control"] == "max-age=600, public"
    assert p.get(f"/index/alpha/{dists.alpha_1.filename}").headers["Cache-Control"].endswith("immutable")
    assert json.loads(p.get("/", {"Accept": "application/json"}).body)["local_index"] is None


@pytest.mark.parametrize(
    "framing",
    [{"Transfer-Encoding": "chunked"}, {}],
    ids=["chunked", "no length"],
)
def test_an_upload_without_a_content_length_gets_411(proxy, upstream_html, framing):
    p = proxy(upstream_html, upload_token=TOKEN)
    head = "".join(f"{name}: {value}\r\n" for name, value in framing.items())
    body = b"0\r\n\r\n" if framing else b""
    answer = raw_request(
        p.url,
        f"POST /upload/ HTTP/1.1\r\nHost: x\r\nAuthorization: {basic_auth(TOKEN)}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\n{head}Connection: close\r\n\r\n".encode() + body,
    )
    assert answer.startswith(b"HTTP/1.1 411 "), answer
    assert b"an upload needs a Content-Length" in answer
    assert _stored(p) == [] and p.get("/index/").status == 200


def test_a_metadata_file_removed_by_hand_is_not_found(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, acme).status == 200
    (Path(p.settings.cache_dir) / "local" / "acme-app" / (acme.filename + ".metadata")).unlink()
    assert p.get(f"/index/acme-app/{acme.filename}.metadata").status == 404
    assert p.get(f"/index/acme-app/{acme.filename}").body == acme.content


def test_guard_rails_apply_to_local_files(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN, deny=(("acme-app", None),), min_age=3600.0)
    assert _upload(p, acme).status == 200
    assert p.get("/index/acme-app/").status == 403
    cooled = proxy(upstream_html, upload_token=TOKEN, min_age=3600.0, cache_dir=p.settings.cache_dir)
    assert acme.filename in cooled.get("/index/acme-app/").text  # no cooldown for one's own uploads
    strict = proxy(upstream_html, min_age=3600.0, min_age_local=True, cache_dir=p.settings.cache_dir)
    assert acme.filename not in strict.get("/index/acme-app/").text
    # The local file the cooldown hid is counted as any other.
    hidden = parse(strict.get("/metrics").text)[1]
    assert sample(hidden, "proxpi_policy_hidden_files_total", policy="cooldown") == 1


def test_upload_while_offline(proxy, acme, tmp_path):
    p = proxy("http://127.0.0.1:9/simple/", upload_token=TOKEN, offline=True)
    assert _upload(p, make_wheel("alpha", "0.5")).status == 200
    standalone = make_wheel("acme-solo", "1.0")
    assert _upload(p, standalone).status == 200
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path), "acme-solo"], p.index_url))
    assert os.listdir(tmp_path) == [standalone.filename]
    listing = p.get("/index/").text
    assert "acme-solo" in listing and "alpha" in listing


def test_local_dir_is_served_read_only(proxy, upstream_html, tmp_path, caplog):
    folder = tmp_path / "wheels"
    (folder / "acme-lib").mkdir(parents=True)
    flat, nested = make_wheel("acme-flat", "1.0"), make_wheel("acme-lib", "2.0")
    (folder / flat.filename).write_bytes(flat.content)
    (folder / "acme-lib" / nested.filename).write_bytes(nested.content)
    (folder / "README.txt").write_text("not a distribution")
    (folder / "acme-lib-old-1.0.tar.gz").write_bytes(b"an sdist of old setuptools")
    p = proxy(upstream_html, local_dir=str(folder))
    told = [r.getMessage() for r in caplog.records if "is not named as a wheel" in r.getMessage()]
    assert len(told) == 1 and "acme-lib-old-1.0.tar.gz" in told[0], told
    listing = p.get("/index/").text
    assert "acme-flat" in listing and "acme-lib" in listing
    (entry,) = _json_page(p, "acme-lib")["files"]
    assert entry["hashes"] == {"sha256": nested.sha256}
    _ok(run_pip(["download", "--no-deps", "-d", str(tmp_path / "d"), "acme-flat", "acme-lib"], p.index_url))
    assert sorted(os.listdir(tmp_path / "d")) == sorted([flat.filename, nested.filename])


def test_two_workers_see_uploads_yanks_and_deletes(upstream_html, acme, tmp_path):
    cache = tmp_path / "cache"
    with ProxyProcess(["--index-url", upstream_html.url, "--workers", "2", "--cache-dir", str(cache)],
                      env={"PROXPI_UPLOAD_TOKEN": TOKEN}) as p:
        content_type, body = encode_form(twine_fields(acme), acme.filename, acme.content)
        headers = {"Content-Type": content_type, "Authorization": basic_auth(TOKEN)}
        assert _post(p.url, "/upload/", headers, body).status == 200
        # Each request is a new connection: either worker may answer it.
        for _ in range(8):
            assert acme.filename in p.get("/index/acme-app/").text
        assert _post(p.url, f"/local/acme-app/{acme.filename}?yank=bad", headers).status == 200
        for _ in range(8):
            assert 'data-yanked="bad"' in p.get("/index/acme-app/").text
        assert http("DELETE", f"{p.url}/local/acme-app/{acme.filename}", headers).status == 200
        for _ in range(8):
            assert acme.filename not in p.get("/index/acme-app/").text
        assert http("DELETE", f"{p.url}/local/acme-app/", headers).status == 200
        for _ in range(8):
            assert p.get("/index/acme-app/").status == 404


def test_warm_and_verify_know_the_local_files(proxy, upstream_html, acme, dists, tmp_path):
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, acme).status == 200
    cache = p.settings.cache_dir
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"acme-app==1.0 --hash=sha256:{acme.sha256}\nalpha==1.0 --hash=sha256:{dists.alpha_1.sha256}\n")
    env = {**pip_env(), "PROXPI_UPLOAD_TOKEN": TOKEN}
    warm = subprocess.run(
        [sys.executable, "-m", "proxpi_min", "warm", "--cache-dir", cache, "--index-url", upstream_html.url,
         str(requirements)],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120,
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "1 fetched" in warm.stdout and "1 already cached" in warm.stdout
    verify = [sys.executable, "-m", "proxpi_min", "verify", "--cache-dir", cache, "--repair"]
    good = subprocess.run(verify, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    stored = Path(cache) / "local" / "acme-app" / acme.filename
    stored.write_bytes(acme.content + b"tampered")
    bad = subprocess.run(verify, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and f"bad: {stored}" in bad.stdout
    assert stored.exists()  # never removed: nothing could fetch an upload again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upload-tokens", "/nonexistent/tokens"], "--upload-tokens='/nonexistent/tokens' cannot be read"),
        (["--local-dir", "/nonexistent/wheels"], "--local-dir='/nonexistent/wheels' is not a directory"),
    ],
)
def test_a_bad_token_file_or_local_dir_stops_the_start(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "proxpi_min", *args, "--cache-dir", str(tmp_path), "--check-config"],
                            cwd=str(REPO_ROOT), env=pip_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr


def test_a_token_file_line_with_a_bad_pattern_stops_the_start(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("good-token acme-*\nbad-token acme/..\n")
    command = [sys.executable, "-m", "proxpi_min", "--upload-tokens", str(tokens), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run([*command, "--check-config"], cwd=str(REPO_ROOT), env=pip_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "line 2" in result.stderr and "bad-token" not in result.stderr


def test_merge_mode_a_local_file_its_policy_hides_leaves_the_name_to_the_upstream(proxy, upstream_html, dists):
    """Merged, a local file the cooldown hides does not claim its file name: the upstream
    file of that name is listed and served, its own bytes under its own hash."""
    same_name = make_wheel("alpha", "2.0", module_source="BUILT_HERE = True\n")
    assert same_name.filename == dists.alpha_2.filename and same_name.content != dists.alpha_2.content
    p = proxy(upstream_html, upload_token=TOKEN, local_merge=True)
    assert _upload(p, same_name).status == 200
    strict = proxy(upstream_html, local_merge=True, min_age=3600.0, min_age_local=True, cache_dir=p.settings.cache_dir)
    listed = {entry["filename"]: entry for entry in _json_page(strict, "alpha")["files"]}
    assert listed[dists.alpha_2.filename]["hashes"]["sha256"] == dists.alpha_2.sha256
    assert strict.get(f"/index/alpha/{dists.alpha_2.filename}").body == dists.alpha_2.content


def test_a_regional_proxy_asks_a_central_one_with_uploads_on_each_use(proxy, upstream_html, acme):
    # The central's pages say no-cache (an upload changes them at once): the regional,
    # whose index it is, asks again each time rather than keep them for its own TTL.
    central = proxy(upstream_html, upload_token=TOKEN)
    regional = proxy(central.url + "/index/")
    assert _upload(central, acme).status == 200
    page = regional.get("/index/acme-app/")
    assert page.status == 200 and acme.filename in page.text and "max-age=0" in page.headers["Cache-Control"]
    newer = make_wheel("acme-app", "2.0")
    assert _upload(central, newer).status == 200
    assert newer.filename in regional.get("/index/acme-app/").text


def test_a_digest_sent_after_the_file_is_checked_too(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    fields = twine_fields(acme, sha256_digest=None, blake2_256_digest=None)
    content_type, body = encode_form(fields, acme.filename, acme.content)
    boundary = content_type.partition("boundary=")[2]
    for md5, status in (("0" * 32, 400), (hashlib.md5(acme.content).hexdigest(), 200)):
        late = (f'--{boundary}\r\nContent-Disposition: form-data; name="md5_digest"\r\n\r\n{md5}\r\n'
                f"--{boundary}--\r\n").encode()
        answer = _post(p.url, "/upload/", {"Content-Type": content_type, "Authorization": basic_auth(TOKEN)},
                       body[: -len(f"--{boundary}--\r\n")] + late)
        assert answer.status == status, answer.text
        if status == 400:
            assert "md5_digest does not match" in answer.reason and _stored(p) == []


def test_an_sdist_whose_requires_python_is_no_specifier_is_refused(proxy, upstream_html):
    sdist = make_sdist("acme-src", "1.0")
    p = proxy(upstream_html, upload_token=TOKEN)
    answer = _upload(p, sdist, requires_python='"><script>x</script>')
    assert answer.status == 400 and "is not a version specifier" in answer.reason, answer.text
    assert _stored(p) == []
    assert _upload(p, sdist, requires_python=">=3.8, !=3.9.*").status == 200
    assert _json_page(p, "acme-src")["files"][0]["requires-python"] == ">=3.8, !=3.9.*"


def _head_then_wait(url: str, head: bytes) -> tuple:
    """Send an upload's head with ``Expect: 100-continue``; (socket, what came back)."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(head)
    return sock, sock.recv(65536)


def test_the_100_continue_comes_after_the_token_and_the_length_are_checked(proxy, upstream_html, acme):
    """RFC 9110 10.1.1: a client that waits for 100 before its body learns of a refusal
    the head already earns without sending the body."""
    p = proxy(upstream_html, upload_token=TOKEN, max_upload_size=100_000)
    content_type, body = encode_form(twine_fields(acme), acme.filename, acme.content)

    def head(token: str, length: int) -> bytes:
        return (f"POST /upload/ HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Authorization: {basic_auth(token)}\r\nContent-Length: {length}\r\n"
                "Expect: 100-continue\r\n\r\n").encode()

    for token, length, status in (("wrong", len(body), 403), (TOKEN, 10_000_000, 413)):
        sock, answer = _head_then_wait(p.url, head(token, length))
        with sock:
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    sock, answer = _head_then_wait(p.url, head(TOKEN, len(body)))
    with sock:
        assert answer == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _answer_until_closed_or_whole(sock).startswith(b"HTTP/1.1 200 ")
    assert _stored(p) != []


def _answer_until_closed_or_whole(sock: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_a_post_elsewhere_says_where_uploads_go(proxy, upstream_html):
    p = proxy(upstream_html, upload_token=TOKEN)
    for path, status in (("/", 405), ("/index/", 405), ("/legacy/", 404)):
        answer = _post(p.url, path, {"Authorization": basic_auth(TOKEN)}, b"x")
        assert answer.status == status and "uploads go to /upload/" in answer.text, (path, answer)
    assert "uploads go" not in p.get("/legacy/").text


def test_an_upload_whose_store_fails_leaves_no_metadata_behind(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    blocker = Path(p.settings.cache_dir) / "local" / "acme-app" / f".info-{acme.filename}"
    blocker.mkdir(parents=True)  # the info file cannot take its name: the store fails half-way
    answer = _upload(p, acme)
    assert answer.status == 507, answer.text
    assert [name for name in _stored(p) if ".lock-" not in name] == ["acme-app", f"acme-app/.info-{acme.filename}"]
    blocker.rmdir()
    assert _upload(p, acme).status == 200
    assert p.get(f"/index/acme-app/{acme.filename}.metadata").body == acme.metadata


def test_metadata_and_info_of_an_upload_that_did_not_finish_are_removed_at_start(proxy, upstream_html, acme):
    p = proxy(upstream_html, upload_token=TOKEN)
    assert _upload(p, acme).status == 200
    folder = Path(p.settings.cache_dir) / "local" / "acme-app"
    p.stop()
    # What a kill between an upload's sidecars and its file leaves.
    (folder / "acme_app-2.0-py3-none-any.whl.metadata").write_text("Name: acme-app\nVersion: 2.0\n")
    (folder / ".info-acme_app-2.0-py3-none-any.whl").write_text("{}")
    again = proxy(upstream_html, upload_token=TOKEN, cache_dir=p.settings.cache_dir)
    assert [name for name in _stored(again) if ".lock-" not in name] == [
        "acme-app", f"acme-app/.info-{acme.filename}", f"acme-app/{acme.filename}", f"acme-app/{acme.filename}.metadata"
    ]
    assert again.get(f"/index/acme-app/{acme.filename}").body == acme.content


def test_the_same_bytes_as_a_local_dir_file_are_answered_as_stored(proxy, upstream_html, acme, tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / acme.filename).write_bytes(acme.content)
    p = proxy(upstream_html, upload_token=TOKEN, local_dir=str(folder))
    assert _upload(p, acme).status == 200
    other = make_wheel("acme-app", "1.0", module_source="CHANGED = True\n")
    assert other.filename == acme.filename and other.content != acme.content
    assert _upload(p, other).status == 409
    assert not [name for name in _stored(p) if acme.filename in name]  # a folder's file is never copied


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("team-a acme-*\nteam-a other-*\n", "line 2: a token given already (line 1)"),
        ("# nobody yet\n\n", "lists no token"),
    ],
    ids=["a token twice", "no token"],
)
def test_a_token_file_with_a_token_twice_or_none_stops_the_start(tmp_path, text, message):
    tokens = tmp_path / "tokens"
    tokens.write_text(text)
    command = [sys.executable, "-m", "proxpi_min", "--upload-tokens", str(tokens), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run([*command, "--check-config"], cwd=str(REPO_ROOT), env=pip_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "team-a" not in result.stderr


def test_a_stop_during_an_upload_leaves_no_temp_file(upstream_html, tmp_path):
    """SIGTERM while an upload body is still arriving (to a worker: each closes as one
    process would): the proxy stops after its drain, and the part received is not left
    in the local index's folder."""
    workers = ["--workers", "2"]
    cache = tmp_path / "cache"
    big = sized_wheel("big", "1.0", 2_000_000)
    content_type, body = encode_form(twine_fields(big), big.filename, big.content)
    head = (f"POST /upload/ HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Authorization: {basic_auth(TOKEN)}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with ProxyProcess(["--index-url", upstream_html.url, "--cache-dir", str(cache), *workers],
                      env={"PROXPI_UPLOAD_TOKEN": TOKEN}) as p:
        sock = socket.create_connection(("127.0.0.1", int(p.url.rsplit(":", 1)[1])), timeout=10)
        sock.sendall(head + body[: len(body) // 2])  # and the rest never comes
        local = cache / "local"
        deadline = time.monotonic() + 10
        while not [n for n in os.listdir(local) if n.startswith(".tmp-")] if local.exists() else True:
            assert time.monotonic() < deadline, "no temp file for the upload"
            time.sleep(0.05)
        p.terminate()
        assert p.wait(30) == 0
        sock.close()
    assert [n for n in os.listdir(local) if n.startswith(".tmp-")] == []
