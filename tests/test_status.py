"""``mtasts status``: one view of where each configured domain stands, driven through the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mtasts.reports.store import open_store

from .conftest import start_lab, stop_lab
from .test_reports_analysis import stored_report
from .test_rollout import run


def test_status_says_where_each_domain_stands_and_what_comes_next(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    admin.mkdir()
    for name in ("ready.example", "early.example", "unpublished.example"):
        assert run("init", name, "--mx", f"mx.{name}", cwd=admin).returncode == 0
    records = [
        json.loads(run("records", name, "--format", "json", cwd=admin).stdout)[0]
        for name in ("ready.example", "early.example")
    ]
    ids = {d["domain"]: d["id"] for d in records}
    domains = "".join(
        f"""
[[domain]]
name = "{name}"
mode = "testing"
max_age = 86400
mx = [{{ name = "mx.{name}" }}]
sts_records = ["v=STSv1; id={ids[name]};"]
"""
        for name in ("ready.example", "early.example")
    )
    (tmp_path / "scenario.toml").write_text(domains)
    store = open_store(f"sqlite:///{admin / 'reports.sqlite'}")
    today = dt.datetime.now(dt.UTC).date()
    for back in range(1, 16):
        store.ingest(
            stored_report("google.com", "ready.example", day=today - dt.timedelta(days=back)), "t"
        )
    for back in range(1, 6):
        store.ingest(
            stored_report("google.com", "early.example", day=today - dt.timedelta(days=back)), "t"
        )
    lab = start_lab(tmp_path / "lab", "127.85", "--scenario", str(tmp_path / "scenario.toml"))
    try:
        done = run("status", "--lab", str(lab.state_dir), "--trust", "file", "--json", cwd=admin)
        shown = run("status", "--lab", str(lab.state_dir), "--trust", "file", cwd=admin)
        checked = run("check", "--lab", str(lab.state_dir), "--json", "--timeout", "3", cwd=admin)
        (admin / "mtasts.toml").write_text(
            (admin / "mtasts.toml").read_text().replace("max_age = 86400", "max_age = 3600", 1)
        )
        drifted = run("check", "--lab", str(lab.state_dir), "--json", "--timeout", "3", cwd=admin)
    finally:
        stop_lab(lab)
    status = {d["domain"]: d for d in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 1  # one domain is not published
    ready, early, unpublished = (
        status["ready.example"],
        status["early.example"],
        status["unpublished.example"],
    )
    assert ready["published"] == f"id {ids['ready.example']}"
    assert ready["readiness"] == "READY"
    assert ready["clean_days"] >= 14
    assert ready["next_step"] == "enforce possible now: mtasts mode ready.example enforce"
    assert ready["certificate_expires"] is not None
    assert early["clean_days"] == 5
    after = (today + dt.timedelta(days=9)).isoformat()
    assert early["next_step"].startswith(f"enforce possible after {after}: 14 clean days (5 so far")
    assert ready["in_sync"] is True
    assert unpublished["in_sync"] is False
    assert unpublished["published"] == "not published yet"
    assert unpublished["next_step"].startswith("publish: serve the policy of mtasts.toml")
    text = " ".join(shown.stdout.split())
    assert f"ready.example testing, max_age 1 day, id {ids['ready.example']}" in text
    assert "next: enforce possible now: mtasts mode ready.example enforce" in text

    # check with no DOMAIN checks every configured one, and says what differs from mtasts.toml.
    def findings(stdout: str) -> dict[str, dict[str, str]]:
        """Per domain: each code with its messages, one per line."""
        out: dict[str, dict[str, str]] = {}
        for document in map(json.loads, stdout.splitlines()):
            codes = out.setdefault(document["domain"], {})
            for f in document["findings"]:
                codes[f["code"]] = (codes.get(f["code"], "") + "\n" + f["message"]).strip()
        return out

    found = findings(checked.stdout)
    assert sorted(found) == ["early.example", "ready.example", "unpublished.example"]
    assert "config-drift" not in found["ready.example"]
    assert found["unpublished.example"]["config-drift"].startswith(
        "the policy in mtasts.toml is not published yet"
    )
    # An edit not yet published: its policy has no id, and what is served is now the old one.
    edited = findings(drifted.stdout)["ready.example"]["config-drift"].splitlines()
    assert edited[0].startswith("the policy in mtasts.toml is not published yet")
    assert (
        "serves another policy than mtasts.toml (served: version: STSv1; mode: testing" in edited[1]
    )


def test_a_retired_domain_says_when_its_records_can_go(tmp_path: Path) -> None:
    assert run("init", "old.example", "--mx", "mx.old.example", cwd=tmp_path).returncode == 0
    assert run("retire", "old.example", cwd=tmp_path).returncode == 0
    done = run("status", "--json", "--nameserver", "127.0.0.1:9", "--timeout", "0.5", cwd=tmp_path)
    (status,) = map(json.loads, done.stdout.splitlines())
    removable = dt.datetime.fromisoformat(status["records_removable"])
    assert abs((removable - dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)) < dt.timedelta(
        minutes=5
    )
    assert status["next_step"].startswith("keep serving mode: none until")
