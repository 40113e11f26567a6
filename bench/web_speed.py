"""The dashboard with 1,000,000 stored reports: server-side time of the overview and of a
domain page (p50/p95 over repeated requests to the real server), page weight, and the peak
memory of a year's CSV export while it streams.

``python -m bench.web_speed [REPORTS] [DOMAINS]`` (defaults 1,000,000 and 50). SQLite; set
``MTASTS_BENCH_PG`` to a PostgreSQL URL to run the same on it. Nothing is asserted.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn

from mtasts.reports.store import open_store
from mtasts.web.dashboard import create_dashboard

from .ingest_speed import bulk_store

_PORT = 21825


def _serve(url: str) -> uvicorn.Server:
    server = uvicorn.Server(
        uvicorn.Config(create_dashboard(open_store(url)), port=_PORT, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def _timed(opener: urllib.request.OpenerDirector, url: str, times: int) -> tuple[list[float], int]:
    took, size = [], 0
    for _ in range(times):
        started = time.perf_counter()
        with opener.open(url, timeout=120) as answer:
            size = len(answer.read())
        took.append(time.perf_counter() - started)
    return took, size


def run(url: str, label: str, reports: int, domains: int) -> None:
    started = time.perf_counter()
    bulk_store(url, reports, domains)
    print(
        f"[{label}] bulk-loaded {reports:,} reports for {domains} domains in {time.perf_counter() - started:.0f} s"
    )
    server = _serve(url)
    opener = urllib.request.build_opener()
    base = f"http://127.0.0.1:{_PORT}"
    with opener.open(f"{base}/explain/starttls-not-supported", timeout=60) as answer:  # a cookie
        cookie = answer.headers["set-cookie"].split(";", 1)[0]
    opener.addheaders = [("Cookie", cookie)]
    try:
        for name, path in (("overview", "/"), ("domain page", "/domain/d0007.example")):
            took, size = _timed(opener, base + path, 20)
            cold, warm = took[0], sorted(took[1:])
            print(
                f"[{label}] {name:<12} first {cold * 1000:6.0f} ms, then p50"
                f" {statistics.median(warm) * 1000:6.0f} ms, p95"
                f" {warm[int(len(warm) * 0.95) - 1] * 1000:6.0f} ms, {size / 1024:.0f} KB"
                " (targets: p95 < 200 ms, < 200 KB)"
            )
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        with opener.open(
            f"{base}/domain/d0007.example?since=2000-01-01&table=days&format=csv", timeout=300
        ) as answer:
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: answer.read(65536), b""))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"[{label}] CSV export of every day of d0007.example: {rows:,} lines in"
            f" {time.perf_counter() - started:.1f} s; peak RSS grew {(after - before) / 1024:.0f} MiB"
        )
    finally:
        server.should_exit = True


def main(reports: int = 1_000_000, domains: int = 50) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mtasts-bench-web-"))
    run(f"sqlite:///{folder / 'web.sqlite'}", "SQLite", reports, domains)
    if os.environ.get("MTASTS_BENCH_PG"):
        run(os.environ["MTASTS_BENCH_PG"], "PostgreSQL", reports, domains)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
