"""``mtasts scan``: the engine-independent work on procrastinate's in-memory connector, and
the CLI's refusal without PostgreSQL. The multi-worker scan on a real PostgreSQL is not in
the suite yet: under this machine's load it was not reliable (see #15's note)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from procrastinate.testing import InMemoryConnector

from mtasts.check.gather import CheckOptions
from mtasts.lab.runtime import LabClient
from mtasts.reports.store import open_store
from mtasts.scan.engine import ProcrastinateEngine
from mtasts.scan.polite import Limits
from mtasts.scan.store import ScanStore
from mtasts.scan.work import Runtime, ScanOptions

from .conftest import MTASTS, RunningLab

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


def test_in_memory_engine_scans_the_lab_like_check(lab: RunningLab, tmp_path: Path) -> None:
    """The work (phases, shared probes, judging) is the engine's business only through
    engine.py: here procrastinate's in-memory connector and SQLite stand in for PostgreSQL."""
    client = LabClient.from_state(lab.state)
    domains = sorted(d["name"] for d in lab.state["domains"])
    store = ScanStore(open_store(f"sqlite:///{tmp_path / 'scan.sqlite'}").engine)
    engine = ProcrastinateEngine(InMemoryConnector())
    options = ScanOptions(
        CheckOptions(
            nameservers=(client.nameserver,),
            ca_file=client.ca_file,
            smtp_port=client.smtp_port,
            https_port=client.https_port,
            timeout=3,
        ),
        Limits(per_address=2, address_rate=0),
        batch_size=7,
        probe_group=3,
    )
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
