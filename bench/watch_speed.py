"""``mtasts watch``: a pass over 1,000 lab domains with storage, bytes per observation and a
simulated year, and change detection against a store of 1,000,000 observations.

``python -m bench.watch_speed [DOMAINS]``. No peer does this (hosted checkers keep their
history to themselves), so the figures stand alone; nothing here is asserted.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mtasts.check.judge import JudgeContext, judge
from mtasts.reports.store import open_store
from mtasts.watch.changes import OWN, DomainState, Rules, detect
from mtasts.watch.snapshot import snapshot
from mtasts.watch.store import Recorded, WatchStore, insert_many

BIN = Path(sys.executable).parent


def _lab(state: Path, count: int) -> subprocess.Popen[bytes]:
    lab = subprocess.Popen(
        [
            str(BIN / "mtasts"),
            "lab",
            "up",
            "--ports",
            "high",
            "--subnet",
            "127.199",
            "--dns-port",
            "21153",
            "--https-port",
            "21443",
            "--smtp-port",
            "21025",
            "--generate",
            str(count),
            "--no-reports",
            # Certificates made before the clock starts: lazily, the first tool run
            # paid for issuing them, and a second one over the same hosts did not.
            "--warm",
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (state / "lab.json").exists():
        if lab.poll() is not None:
            raise RuntimeError("the lab did not start")
        time.sleep(0.05)
    return lab


def _once(folder: Path, state: Path, db: str) -> tuple[float, float]:
    """Seconds and the child's peak RSS (MiB) of one `watch once --all`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(BIN / "mtasts"),
            "watch",
            "once",
            "--all",
            "--json",
            "--lab",
            str(state),
            "--partners",
            str(folder / "partners.txt"),
            "--timeout",
            "5",
            "--db",
            db,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def main(count: int = 1000) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mtasts-bench-watch-"))
    state = folder / "lab"
    lab = _lab(state, count)
    try:
        names = [d["name"] for d in json.loads((state / "lab.json").read_text())["domains"]]
        (folder / "partners.txt").write_text("\n".join(names) + "\n")
        db = f"sqlite:///{folder / 'watch.sqlite'}"
        first, peak = _once(folder, state, db)
        second, peak2 = _once(folder, state, db)
    finally:
        lab.terminate()
        lab.wait(10)
    store = WatchStore(open_store(db).engine)
    stored = store.storage()
    per = stored["facts_bytes"] / max(stored["observations"], 1)
    print(
        f"watch once over {len(names):,} lab domains, SQLite: first pass {first:.1f} s"
        f" ({len(names) / first:.0f} domains/s), second (unchanged) {second:.1f} s;"
        f" peak RSS {max(peak, peak2):.0f} MiB"
    )
    print(
        f"  {stored['observations']:,} observations for {stored['runs']:,} runs;"
        f" {per:,.0f} bytes of gzip facts per stored observation"
    )
    _year(store, names[:100])
    _million(store, names)


def _year(store: WatchStore, names: list[str]) -> None:
    """100 domains for a year, a run a day through the real code path, the facts changing
    every 60 days (as a certificate renewal does; any change stores one observation of the
    same size). An unchanged run only moves last_seen, so hourly runs store the same rows."""
    db = Path(tempfile.mkdtemp(prefix="mtasts-bench-year-")) / "year.sqlite"
    year = WatchStore(open_store(f"sqlite:///{db}").engine)
    year.sync_domains([(n, OWN, "") for n in names])
    base = {n: store.observations(n, 1)[-1].facts for n in names}
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    started = time.perf_counter()
    runs = 0
    for hour in range(0, 365 * 24, 24):
        at = start + dt.timedelta(hours=hour)
        era = hour // (60 * 24)  # a renewal every 60 days changes the facts
        for name in names:
            facts = replace(base[name], observed_at=at, mx_skipped=era)  # a change per era
            year.record(judge(facts, JudgeContext(now=at)), DomainState(), [], {}, at)
            runs += 1
    elapsed = time.perf_counter() - started
    size = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob("*-wal"))
    stored = year.storage()
    print(
        f"a simulated year, {len(names)} domains, {runs:,} recorded runs ({elapsed:.0f} s):"
        f" {stored['observations']:,} observations, {stored['facts_bytes'] / 1e6:.2f} MB of facts,"
        f" database {size / 1e6:.1f} MB (hourly runs store the same rows)"
    )


def _million(store: WatchStore, names: list[str]) -> None:
    """Detection and recording for every domain against a store of 1,000,000 observations."""
    db = Path(tempfile.mkdtemp(prefix="mtasts-bench-million-")) / "million.sqlite"
    big = WatchStore(open_store(f"sqlite:///{db}").engine)
    big.sync_domains([(n, OWN, "") for n in names])
    facts = {n: store.observations(n, 1)[-1].facts for n in names}
    blob = gzip.compress(json.dumps(facts[names[0]].to_dict()).encode())
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = []
    total = 1_000_000
    filled = time.perf_counter()
    for i in range(total):
        at = start + dt.timedelta(minutes=i)
        rows.append(
            {
                "domain": names[i % len(names)],
                "first_seen": at,
                "last_seen": at,
                "runs": 1,
                "digest": f"{i:064x}",
                "facts": blob,
                "findings": "[]",
                "verdict": "ok",
                "mode": "enforce",
            }
        )
        if len(rows) == 50_000:
            insert_many(big.engine, rows)
            rows = []
    if rows:
        insert_many(big.engine, rows)
    filled = time.perf_counter() - filled
    states = {w.domain: w.state for w in big.watched()}
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    started = time.perf_counter()
    events = 0
    recorded = []
    for name in names:
        check = judge(replace(facts[name], observed_at=now), JudgeContext(now=now))
        state, found = detect(name, states[name], snapshot(check), Rules())
        recorded.append(Recorded(check, state, tuple(found), {}, now))
        events += len(found)
    judged = time.perf_counter() - started
    big.record_many(recorded)
    elapsed = time.perf_counter() - started
    print(
        f"judging + change detection + recording for {len(names):,} domains against"
        f" {total:,} stored observations: {elapsed:.2f} s per run, of which judging and"
        f" detection {judged:.2f} s ({events} events; store filled in {filled:.0f} s)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
