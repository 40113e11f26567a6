"""``mtasts scan``: the engine-independent work on procrastinate's in-memory connector, and
a 10,000-domain scan on a real PostgreSQL with three workers, one killed mid-scan."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate.testing import InMemoryConnector
from sqlalchemy import create_engine, text

from mtasts.check.gather import CheckOptions
from mtasts.lab.control import Change, read_stats, send_change
from mtasts.lab.runtime import LabClient
from mtasts.reports.store import open_store
from mtasts.scan.engine import ProcrastinateEngine
from mtasts.scan.polite import Limits
from mtasts.scan.store import ScanStore
from mtasts.scan.work import Runtime, ScanOptions

from .conftest import MTASTS, RunningLab, start_lab, stop_lab

ENV = {**os.environ, "NO_COLOR": "1"}


def _essence(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between a scan and `mtasts check`: verdict, mode, TLS-RPT and every
    finding's code and severity (messages carry times and addresses)."""
    return (
        doc["verdict"],
        doc["summary"]["mta_sts"],
        doc["summary"]["tlsrpt"],
        sorted((f["code"], f["severity"]) for f in doc["findings"]),
    )


def _check(lab_dir: Path, domains: list[str], tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    listed = tmp_path / "check-sample.txt"
    listed.write_text("\n".join(domains) + "\n")
    done = subprocess.run(
        [MTASTS, "check", "--file", str(listed), "--lab", str(lab_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) == len(domains), done.stderr[-2000:]
    return {d["domain"]: _essence(d) for d in docs}


def _lab_options(lab: RunningLab, batch_size: int, probe_group: int = 8) -> ScanOptions:
    """A scan of the session lab: its nameserver, CA and ports, 2 probes per address at once."""
    client = LabClient.from_state(lab.state)
    return ScanOptions(
        CheckOptions(
            nameservers=(client.nameserver,),
            ca_file=client.ca_file,
            smtp_port=client.smtp_port,
            https_port=client.https_port,
            timeout=3,
        ),
        Limits(per_address=2, address_rate=0),
        batch_size=batch_size,
        probe_group=probe_group,
    )


def test_in_memory_engine_scans_the_lab_like_check(lab: RunningLab, tmp_path: Path) -> None:
    """The work (phases, shared probes, judging) is the engine's business only through
    engine.py: here procrastinate's in-memory connector and SQLite stand in for PostgreSQL."""
    domains = sorted(d["name"] for d in lab.state["domains"])
    store = ScanStore(open_store(f"sqlite:///{tmp_path / 'scan.sqlite'}").engine)
    engine = ProcrastinateEngine(InMemoryConnector())
    options = _lab_options(lab, batch_size=7, probe_group=3)
    info = store.create("mem", domains, options.to_dict(), options.batch_size)

    async def scan() -> None:
        async with engine.open():
            await engine.defer_gather("mem", range(info.batches))
            runtime = Runtime(store, engine.defer_probes)
            await asyncio.wait_for(
                engine.run_worker(runtime, 4, once=True, signals=False, poll=0.2), 120
            )

    asyncio.run(scan())
    assert store.get("mem").status == "done"
    results = {doc["domain"]: _essence(doc) for doc, _ in store.results(info.id)}
    assert sorted(results) == domains
    expected = _check(lab.state_dir, domains, tmp_path)
    assert results == expected
    progress = store.progress(info.id)
    assert progress.pairs == Counter({"done": progress.linked})  # every needed pair probed


def test_work_orphaned_by_a_crash_is_queued_again(lab: RunningLab, tmp_path: Path) -> None:
    """A worker killed between storing a batch's new pairs and queueing their probes leaves
    pairs no job will ever probe; a gather job given up by the engine leaves a batch. The
    idle sweep queues both again, and the scan finishes like an uninterrupted one."""
    from mtasts.scan.work import gather_batch

    domains = sorted(d["name"] for d in lab.state["domains"])
    store = ScanStore(open_store(f"sqlite:///{tmp_path / 'scan.sqlite'}").engine)
    engine = ProcrastinateEngine(InMemoryConnector())
    options = _lab_options(lab, batch_size=11)
    info = store.create("orphans", domains, options.to_dict(), options.batch_size)
    assert info.batches == 2

    async def lost(scan: str, jobs: Any) -> None:
        """The crash: the probes are never queued."""

    async def scan() -> None:
        # Batch 0 gathered, its probes lost; batch 1 never queued at all.
        await gather_batch(Runtime(store, lost), "orphans", 0)
        async with engine.open():
            runtime = Runtime(store, engine.defer_probes)
            await asyncio.wait_for(
                engine.run_worker(runtime, 4, once=True, signals=False, poll=0.2), 120
            )

    asyncio.run(scan())
    assert store.get("orphans").status == "done"
    progress = store.progress(info.id)
    assert progress.domains == Counter({"judged": len(domains)})
    assert progress.pairs == Counter({"done": sum(progress.pairs.values())})


def test_scan_needs_postgres_and_says_so(tmp_path: Path) -> None:
    domains = tmp_path / "d.txt"
    domains.write_text("example.com\n")
    done = subprocess.run(
        [MTASTS, "scan", "submit", str(domains), "--name", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENV, "MTASTS_DB": f"sqlite:///{tmp_path / 'x.sqlite'}"},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "needs PostgreSQL" in done.stderr


# -- a real scan on PostgreSQL ------------------------------------------------------------

GENERATED = 10_000
PER_ADDRESS = 2


@pytest.fixture(scope="module")
def scan_db(postgres_url: str) -> Iterator[str]:
    """A database of its own in the session's PostgreSQL, dropped afterwards."""
    name = f"mtasts_scan_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def big_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = start_lab(
        tmp_path_factory.mktemp("lab10k"),
        "127.96",
        "--generate",
        str(GENERATED),
        "--providers",
        "40",
        "--mx-addresses",
        "200",
    )
    yield running
    stop_lab(running)


def _scan(db: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, "scan", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, "MTASTS_DB": db},
    )


def _status(db: str, name: str) -> dict[str, Any]:
    done = _scan(db, "status", name, "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _judged(db: str, name: str) -> int:
    """Domains judged so far, read straight from the database (cheaper than a CLI call)."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM scan_domains d JOIN scans s ON s.id = d.scan_id"
            " WHERE s.name = %s AND d.state = 'judged'",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


def _worker(db: str, log: Path) -> subprocess.Popen[str]:
    """A worker writing to a file (a pipe nobody reads until the end could fill and stall it)."""
    with log.open("a") as out:
        return subprocess.Popen(
            # 10 s: a worker whose loop is starved of CPU for a few seconds on this busy
            # 2-core machine (three workers, the lab and PostgreSQL) must not be taken for dead.
            [
                MTASTS,
                "scan",
                "worker",
                "--concurrency",
                "8",
                "--batches",
                "2",
                "--once",
                "--stalled-after",
                "10",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**ENV, "MTASTS_DB": db},
        )


@pytest.mark.timeout(900)
def test_ten_thousand_domains_three_workers_one_killed(
    big_lab: RunningLab, scan_db: str, tmp_path: Path
) -> None:
    names = sorted(d["name"] for d in big_lab.state["domains"] if d["name"].startswith("gen"))
    assert len(names) == GENERATED
    listed = tmp_path / "domains.txt"
    listed.write_text("# generated lab domains\n" + "\n".join(names) + "\n")
    submitted = _scan(
        scan_db,
        "submit",
        str(listed),
        "--name",
        "lab-10k",
        "--lab",
        str(big_lab.state_dir),
        "--per-address",
        str(PER_ADDRESS),
        "--address-rate",
        "0",
        "--timeout",
        "5",
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "10,000 domains in 200 batches queued" in submitted.stdout
    read_stats(big_lab.state_dir, reset=True)

    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    workers = [_worker(scan_db, log) for log in logs]
    try:
        deadline = time.monotonic() + 300
        while _judged(scan_db, "lab-10k") < 2_000:
            assert time.monotonic() < deadline, "no progress"
            assert all(w.poll() is None for w in workers), logs[0].read_text()[-3000:]
            time.sleep(1)
        workers[0].send_signal(signal.SIGKILL)  # mid-scan, jobs in hand, no goodbye
        for worker, log in zip(workers[1:], logs[1:], strict=True):
            assert worker.wait(480) == 0, log.read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(10)

    # What the MX hosts saw, read before `mtasts check` below adds connections of its own.
    stats = read_stats(big_lab.state_dir)
    status = _status(scan_db, "lab-10k")
    assert status["status"] == "done"
    assert (status["domains"], status["gathered"], status["judged"]) == (10_000,) * 3
    assert status["jobs"].get("todo", 0) == status["jobs"].get("doing", 0) == 0
    # Shared providers: far fewer probes than a check per domain would make.
    assert status["pairs"] == status["pairs_probed"]
    assert status["per_domain_probes"] > 2 * status["pairs"]

    # Every domain exactly once, each equal to what `mtasts check` says for it.
    lines = _scan(scan_db, "results", "lab-10k", "--json").stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert sorted(d["domain"] for d in docs) == names
    sample = names[::25]  # 400 domains, every fault kind among them
    expected = _check(big_lab.state_dir, sample, tmp_path)
    by_domain = {d["domain"]: _essence(d) for d in docs}
    differ = {d: by_domain[d] for d in sample if by_domain[d] != expected[d]}
    full = {d["domain"]: d["findings"] for d in docs if d["domain"] in differ}
    assert not differ, (differ, {d: expected[d] for d in differ}, full)
    assert Counter(e[0] for e in expected.values())["error"] > 50

    # The MX hosts saw each (host, address) pair probed once: a probe is one connection,
    # two when the certificate fails verification (a second, unverified look at it).
    # Pairs in the killed worker's hands were probed again after recovery.
    engine = create_engine(scan_db.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT p.address, p.probe, p.attempts FROM scan_pairs p JOIN scans s"
                " ON s.id = p.scan_id WHERE s.name = 'lab-10k'"
            )
        ).all()
    engine.dispose()
    expected_connections: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    for address, probe, attempts in rows:
        (only,) = json.loads(probe)
        trust = only.get("trust")
        count = 2 if trust is not None and not trust["verified"] else 1
        expected_connections[address] += count
        if attempts > 1:
            retried[address] += count
    assert sum(retried.values()) <= 8 * 8 * 2  # at most the killed worker's probe jobs in hand
    assert set(stats) == set(expected_connections)
    for address, seen in stats.items():
        want = expected_connections[address]
        assert want <= seen["connections"] <= want + retried[address], address
        if not retried[address]:
            assert seen["connections"] == want, address
        assert seen["peak"] <= PER_ADDRESS, (address, seen)

    # Adoption statistics and CSV from the stored results.
    stats_out = _scan(scan_db, "results", "lab-10k", "--stats", "--json")
    totals = json.loads(stats_out.stdout)
    assert totals["domains"] == 10_000
    assert sum(totals["mta_sts"].values()) == 10_000
    # The text form names every mode, "broken" (a record without a usable policy) too.
    broken = totals["mta_sts"]["broken"]
    text_stats = _scan(scan_db, "results", "lab-10k", "--stats").stdout
    assert broken > 0
    assert f"broken {broken:,} (" in text_stats
    assert len(totals["top_providers"]) == 10
    csv_path = tmp_path / "adoption.csv"
    _scan(scan_db, "results", "lab-10k", "--csv", str(csv_path))
    assert len(csv_path.read_text().splitlines()) == 10_001

    # A second scan after the lab changed: diff names who downgraded, dropped and broke.
    changed = names[:30]
    send_change(big_lab.state_dir, Change(changed[0], mode="testing"))
    send_change(big_lab.state_dir, Change(changed[1], sts_record="remove"))
    healthy = next(
        d for d in changed[2:] if by_domain[d][0] == "ok" and by_domain[d][1] == "enforce"
    )
    address = big_lab.domain(healthy)["mx"][0]["address"]
    send_change(big_lab.state_dir, Change(healthy, mx_fault="no-starttls", address=address))
    few = tmp_path / "few.txt"
    few.write_text("\n".join(changed) + "\n")
    assert (
        _scan(
            scan_db, "submit", str(few), "--name", "lab-30", "--lab", str(big_lab.state_dir)
        ).returncode
        == 0
    )
    assert _worker(scan_db, tmp_path / "again.log").wait(300) == 0
    result = json.loads(_scan(scan_db, "diff", "lab-10k", "lab-30", "--json").stdout)
    if by_domain[changed[0]][1] == "enforce":
        assert changed[0] in result["downgraded"]
    assert changed[1] in result["dropped"]
    assert "starttls-not-supported" in result["newly_broken"][healthy]
    assert len(result["only_in_first"]) == GENERATED - 30


@pytest.mark.timeout(300)
def test_cancel_then_resume(big_lab: RunningLab, scan_db: str, tmp_path: Path) -> None:
    listed = tmp_path / "d.txt"
    listed.write_text("\n".join(f"gen{n:05d}.example" for n in range(9000, 9200)) + "\n")
    lab = ("--lab", str(big_lab.state_dir))
    assert _scan(scan_db, "submit", str(listed), "--name", "c1", *lab).returncode == 0
    again = _scan(scan_db, "submit", str(listed), "--name", "c1", *lab)
    assert again.returncode == 2
    assert "exists" in again.stderr
    cancelled = _scan(scan_db, "cancel", "c1")
    assert cancelled.returncode == 0
    assert "4 queued jobs dropped" in cancelled.stdout
    assert _worker(scan_db, tmp_path / "w1.log").wait(120) == 0
    status = _status(scan_db, "c1")
    assert (status["status"], status["judged"]) == ("cancelled", 0)
    resumed = _scan(scan_db, "resume", "c1")
    assert "4 batches" in resumed.stdout
    assert _worker(scan_db, tmp_path / "w2.log").wait(300) == 0
    status = _status(scan_db, "c1")
    assert (status["status"], status["judged"]) == ("done", 200)
    missing = _scan(scan_db, "status", "nope")
    assert missing.returncode == 2
    assert "no scan named 'nope'" in missing.stderr
