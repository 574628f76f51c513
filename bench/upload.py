"""A large upload: its time against writing the same bytes to disk, and the proxy's RSS.

Standard library only; everything on 127.0.0.1. Builds a wheel of ``--size`` MB (one
stored member of random bytes, so the zip holds the file's size), starts ``python -m
proxpi_min --offline --upload-token`` on a fresh cache dir, and ``--rounds`` times:
writes the wheel's bytes to a file in the same folder with ``fsync`` (the floor), then
POSTs it to ``/upload/`` as twine does (the form streamed from disk, never built in
memory here), a new version each round. A thread samples the proxy's VmRSS every 5 ms
during each upload. Prints the medians and the peak RSS growth over the idle RSS.
Run: ``python bench/upload.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def _wheel(folder: Path, version: str, size: int) -> Path:
    path = folder / f"bench_big-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: bench-big\nVersion: {version}\n\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bench_big.dat", os.urandom(size))
        archive.writestr(f"bench_big-{version}.dist-info/METADATA", metadata)
    return path


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        return int(re.search(r"VmRSS:\s+(\d+)", file.read()).group(1))


def _upload(port: int, path: Path, version: str) -> float:
    """POST *path* as twine does, streaming it; seconds until the answer."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    boundary = uuid.uuid4().hex
    fields = {":action": "file_upload", "protocol_version": "1", "name": "bench-big", "version": version,
              "filetype": "bdist_wheel", "sha256_digest": digest}
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ) + (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    auth = base64.b64encode(f"__token__:{TOKEN}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    connection.putrequest("POST", "/upload/")
    for name, value in (("Content-Type", f"multipart/form-data; boundary={boundary}"),
                        ("Content-Length", str(length)), ("Authorization", f"Basic {auth}")):
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(head)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            connection.send(chunk)
    connection.send(tail)
    response = connection.getresponse()
    response.read()
    seconds = time.perf_counter() - started
    connection.close()
    assert response.status == 200, (response.status, response.reason)
    return seconds


def _write(path: Path, target: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as source, open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50, help="MB of the wheel (default 50)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as temp:
        folder, cache = Path(temp), Path(temp) / "cache"
        command = [sys.executable, "-m", "proxpi_min", "--port", "0", "--offline", "--cache-dir", str(cache),
                   "--index-url", "http://127.0.0.1:9/simple/", "--upload-token", TOKEN]
        proxy = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            port = None
            for line in proxy.stderr:
                found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
                if found:
                    port = int(found.group(1))
                    break
            assert port, "the proxy did not start"
            threading.Thread(target=lambda: [None for _ in proxy.stderr], daemon=True).start()
            idle = _rss_kib(proxy.pid)
            uploads, writes, peaks = [], [], []
            for round_number in range(args.rounds):
                version = f"1.{round_number}"
                wheel = _wheel(folder, version, args.size * 1024 * 1024)
                writes.append(_write(wheel, cache / "local" / "floor.bin"))
                peak, done = [idle], threading.Event()

                def sample() -> None:
                    while not done.wait(0.005):
                        peak[0] = max(peak[0], _rss_kib(proxy.pid))

                sampler = threading.Thread(target=sample)
                sampler.start()
                uploads.append(_upload(port, wheel, version))
                done.set()
                sampler.join()
                peaks.append(peak[0] - idle)
                wheel.unlink()
        finally:
            proxy.terminate()
            proxy.wait(10)
    upload, write = statistics.median(uploads), statistics.median(writes)
    print(f"{args.size} MB, medians of {args.rounds}: upload {upload * 1000:.0f} ms, "
          f"write+fsync {write * 1000:.0f} ms, ratio {upload / write:.2f}x; "
          f"RSS idle {idle / 1024:.1f} MiB, peak growth {max(peaks) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
