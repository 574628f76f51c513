"""page_store: saved pages round-trip, saved indexes found again, temp files judged."""

from __future__ import annotations

import os

import pytest
import subprocess
import sys
import time

from proxpi_min.infra import atomic as page_store
from proxpi_min.index.page_store import LIST_KEY, OtherFormat, PageStore, RawPage, SavedPage
from proxpi_min.infra.atomic import remove_temp_files, temp_path
from proxpi_min.core.simple import HTML_TYPE, JSON_TYPE, FileEntry, ProjectList, ProjectPage, servable
from proxpi_min.core.simple_parse import parse_project_page


def test_PageStore_round_trip(tmp_path) -> None:
    store = PageStore(str(tmp_path), "https://user:pw@index.example/simple/")
    page = ProjectPage(
        "alpha",
        (
            FileEntry("alpha-1.0.tar.gz", "https://f.example/alpha-1.0.tar.gz", (("sha256", "ab" * 32),)),
            FileEntry("alpha-1.0-py3-none-any.whl", "https://f.example/a.whl", (), ">=3.8", "", ()),
        ),
        ("1.0",),
        True,
        "quarantined",
        "malware",
    )
    assert store.save("alpha", SavedPage(page, "https://index.example/simple/alpha/", '"e"', None))
    assert store.save(LIST_KEY, SavedPage(ProjectList.from_names(["Alpha", "beta"]), "u", None, None))
    again = PageStore(str(tmp_path), "https://user:pw@index.example/simple/")
    assert again.load("alpha") == SavedPage(page, "https://index.example/simple/alpha/", '"e"', None)
    assert list(again.load(LIST_KEY).value) == ["Alpha", "beta"]
    assert again.saved_projects() == ["alpha"]


def test_PageStore_saves_durably(tmp_path, monkeypatch) -> None:
    # A crash of the machine cannot be made here: the files synced are recorded instead.
    synced = []
    monkeypatch.setattr(page_store.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    assert store.save("alpha", SavedPage(ProjectPage("alpha", (), ()), "https://index.example/simple/alpha/", None, None))
    # Each through its temp file: the index's URL, then the page.
    assert [os.path.basename(path).startswith(".tmp") for path in synced] == [True, True]
    assert store.load("alpha") is not None


RAW_JSON = (
    b'{"meta":{"api-version":"1.1"},"name":"alpha","versions":["1.0"],"files":['
    b'{"filename":"alpha-1.0-py3-none-any.whl","url":"../../files/alpha-1.0-py3-none-any.whl",'
    b'"hashes":{"sha256":"' + b"ab" * 32 + b'"},"size":3,"yanked":"bad"},'
    b'{"filename":"evil-1.0-py3-none-any.whl\\"><b>x.whl","url":"x.whl","hashes":{}}]}'
)
RAW_HTML = (
    b'<!DOCTYPE html><html><body><h1>Links for alpha</h1>'
    b'<a href="/files/alpha-1.0.tar.gz#sha256=' + b"cd" * 32 + b'" data-requires-python="&gt;=3.8">alpha-1.0.tar.gz</a>'
    b"</body></html>"
)


@pytest.mark.parametrize("body, media", [(RAW_JSON, JSON_TYPE), (RAW_HTML, HTML_TYPE)])
def test_PageStore_saves_a_project_page_as_the_index_sent_it(tmp_path, body, media) -> None:
    url = "https://index.example/simple/alpha/"
    page = servable(parse_project_page(body, media, url, "alpha"))[0]
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    assert store.save("alpha", SavedPage(page, url, '"e"', "Mon"), RawPage(body, media))
    with open(os.path.join(store.directory, "alpha.json"), "rb") as file:
        assert file.read().partition(b"\n")[2] == body  # the bytes as sent, after the head line
    # Read back as parsed and filtered when it was fetched (the unsafe name left out).
    assert PageStore(str(tmp_path), "https://index.example/simple/").load("alpha") == SavedPage(page, url, '"e"', "Mon")
    assert [entry.filename for entry in page.files] in (
        ["alpha-1.0-py3-none-any.whl"], ["alpha-1.0.tar.gz"])


def test_PageStore_refuses_a_saved_page_cut_off(tmp_path) -> None:
    url = "https://index.example/simple/alpha/"
    page = servable(parse_project_page(RAW_HTML, HTML_TYPE, url, "alpha"))[0]
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    assert store.save("alpha", SavedPage(page, url, '"e"', None), RawPage(RAW_HTML, HTML_TYPE))
    path = os.path.join(store.directory, "alpha.json")
    with open(path, "rb") as file:
        data = file.read()
    for cut in (len(data) - 20, data.index(b"\n") + 1):  # a cut-off page still parses as HTML
        with open(path, "wb") as file:
            file.write(data[:cut])
        with pytest.raises(ValueError, match="cut off"):
            store.read("alpha")
        assert store.load("alpha") is None


def test_PageStore_refuses_a_saved_page_that_no_longer_parses(tmp_path) -> None:
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    assert store.save("alpha", SavedPage(ProjectPage("alpha", (), ()), "u", None, None), RawPage(b"{not", JSON_TYPE))
    with pytest.raises(ValueError, match="JSON"):
        store.read("alpha")
    assert store.load("alpha") is None


def test_PageStore_names_its_directory_without_credentials(tmp_path) -> None:
    with_password = PageStore(str(tmp_path), "https://user:pw@index.example/simple/")
    other_password = PageStore(str(tmp_path), "https://user:other@index.example/simple/")
    assert with_password.directory == other_password.directory
    with_password.save(LIST_KEY, SavedPage(ProjectList.from_names(["a"]), "u", None, None))
    [(url, found)] = PageStore.saved_indexes(str(tmp_path))
    assert url == "https://index.example/simple/"
    assert found.directory == with_password.directory


def test_PageStore_ignores_unreadable_pages(tmp_path) -> None:
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    os.makedirs(store.directory)
    with open(os.path.join(store.directory, "alpha.json"), "w") as file:
        file.write("{not json")
    assert store.load("alpha") is None
    assert store.load("beta") is None


@pytest.mark.parametrize(
    "content",
    [b"[" * 200_000, b'{"format":1,"url":"u","etag":null,"last_modified":null,"value":{"names":"alpha"}}'],
    ids=["nested-past-the-recursion-limit", "a-project-list-saved-as-a-project"],
)
def test_PageStore_refuses_pages_made_by_hand(tmp_path, content) -> None:
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    os.makedirs(store.directory)
    with open(os.path.join(store.directory, "alpha.json"), "wb") as file:
        file.write(content)
    with pytest.raises(ValueError):
        store.read("alpha")
    assert store.load("alpha") is None


def test_saved_indexes_skip_an_index_url_file_that_is_not_utf_8(tmp_path) -> None:
    good = PageStore(str(tmp_path), "https://index.example/simple/")
    assert good.save(LIST_KEY, SavedPage(ProjectList.from_names(["alpha"]), "u", None, None))
    bad = os.path.join(str(tmp_path), "index", "0123")
    os.makedirs(bad)
    with open(os.path.join(bad, "_url"), "wb") as file:
        file.write(b"\xff\xfe")
    assert [url for url, _ in PageStore.saved_indexes(str(tmp_path))] == ["https://index.example/simple/"]


def _named(directory, host, pid) -> str:
    path = os.path.join(directory, f"{page_store.TEMP_PREFIX}{host}-{pid}-abcd1234")
    open(path, "wb").close()
    return os.path.basename(path)


def test_remove_temp_files_judges_each_owner(tmp_path) -> None:
    ours = os.path.basename(temp_path(str(tmp_path)))[len(page_store.TEMP_PREFIX):].rsplit("-", 2)[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        removed = {
            _named(tmp_path, ours, int(dead.stdout)),  # its process is gone
            _named(tmp_path, ours, os.getpid()),  # a previous run with our PID
        }
        kept = {
            _named(tmp_path, ours, live.pid),  # a second proxy on this host, writing
            _named(tmp_path, "otherhost", 1),  # another host's, recently written
        }
        old = _named(tmp_path, "otherhost", 2)
        os.utime(tmp_path / old, (time.time() - 2 * page_store.STALE_TEMP,) * 2)
        removed.add(old)  # another host's, untouched for long: dead
        (tmp_path / "alpha-1.0.tar.gz").write_bytes(b"x")  # not a temp file
        assert remove_temp_files(str(tmp_path)) == len(removed)
        assert set(os.listdir(tmp_path)) == kept | {"alpha-1.0.tar.gz"}
    finally:
        live.kill()
        live.wait()


def test_remove_temp_files_while_running_goes_by_age_only(tmp_path) -> None:
    ours = os.path.basename(temp_path(str(tmp_path)))[len(page_store.TEMP_PREFIX):].rsplit("-", 2)[0]
    writing = _named(tmp_path, ours, os.getpid())  # our own download in progress
    old = _named(tmp_path, "otherhost", 1)
    os.utime(tmp_path / old, (time.time() - 2 * page_store.STALE_TEMP,) * 2)
    assert remove_temp_files(str(tmp_path), at_start=False) == 1
    assert os.listdir(tmp_path) == [writing]


def test_PageStore_read_is_strict_where_load_skips(tmp_path, caplog) -> None:
    store = PageStore(str(tmp_path), "https://index.example/simple/")
    store.save("alpha", SavedPage(ProjectPage("alpha", (), (), True), "u", None, None))
    assert store.read("alpha") == store.load("alpha")
    path = os.path.join(store.directory, "alpha.json")
    for body, error in [(b"{not json", ValueError), (b'{"format": 1}', ValueError), (b'{"format": 99}', OtherFormat)]:
        with open(path, "wb") as file:
            file.write(body)
        with pytest.raises(error):
            store.read("alpha")
        assert store.load("alpha") is None
    with pytest.raises(FileNotFoundError):
        store.read("beta")
    # Only the unreadable pages were worth a warning; another format is skipped quietly.
    assert len([r for r in caplog.records if "unreadable saved page" in r.getMessage()]) == 2
