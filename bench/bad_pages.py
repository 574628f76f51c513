"""What refused 10 GiB pages cost a proxy process: its resident size (VmRSS) and peak
(VmHWM) before and after each, and how long each refusal takes.

    python bench/bad_pages.py [--pages 12]

Starts ``python -m proxpi_min`` in front of a scripted upstream on 127.0.0.1 whose
pages never end, in turn: chunked, sent to the close without a length, and announced
as 10 GiB by Content-Length. Linux only (reads /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.proxy import ProxyProcess  # noqa: E402
from tests.support.scripted import Scripted  # noqa: E402
from tests.system.test_bad_upstreams import GIB, _endless, _json_page  # noqa: E402

KINDS = ("chunked", "to the close", "announced 10 GiB")


def _memory(pid: int) -> str:
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) // 1024
    return f"RSS {found['VmRSS']} MB, peak {found['VmHWM']} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=12)
    args = parser.parse_args()
    upstream = Scripted()
    upstream.routes["/simple/small/"] = _json_page("small")
    for number in range(args.pages):
        kind = number % len(KINDS)
        announce = 10 * GIB if kind == 2 else None
        upstream.routes[f"/simple/huge{number}/"] = _endless(upstream.release, chunked=kind == 0, announce=announce)
    try:
        with tempfile.TemporaryDirectory() as cache, ProxyProcess(["--index-url", upstream.url, "--cache-dir", cache]) as proxy:
            proxy.get("/index/small/")
            print(f"started: {_memory(proxy.process.pid)}")
            for number in range(args.pages):
                started = time.monotonic()
                result = proxy.get(f"/index/huge{number}/", timeout=300)
                took = time.monotonic() - started
                kind = KINDS[number % len(KINDS)]
                print(f"page {number + 1} ({kind}): {result.status} in {took:.2f} s; {_memory(proxy.process.pid)}")
            time.sleep(2)
            print(f"idle 2 s: {_memory(proxy.process.pid)}")
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
