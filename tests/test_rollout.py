"""The guarded rollout, driven through the CLI against the lab: enforce, max-age, retire."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from mtasts.deploy.config import set_domain_value
from mtasts.deploy.rollout import Retirement

from .conftest import MTASTS, RunningLab


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The report store lives beside the test's files, never in the user's data folder.
    env = {**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{cwd / 'reports.sqlite'}"}
    return subprocess.run(
        [MTASTS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    for domain in ("good-testing.example", "expired-mx.example"):
        assert run("init", domain, "--mx", f"mx.{domain}", cwd=tmp_path).returncode == 0
    run("records", cwd=tmp_path)
    return tmp_path


def mode_of(folder: Path, domain: str) -> str:
    config = tomllib.loads((folder / "mtasts.toml").read_text())
    return str(next(d["mode"] for d in config["domain"] if d["name"] == domain))


def test_enforce_is_refused_while_an_mx_fails(lab: RunningLab, admin: Path) -> None:
    result = run("mode", "expired-mx.example", "enforce", "--lab", str(lab.state_dir), cwd=admin)
    assert result.returncode == 1
    assert "expired-mx.example: enforce refused:" in result.stdout
    assert "certificate-expired: certificate has expired" in result.stdout
    assert mode_of(admin, "expired-mx.example") == "testing"


def test_enforce_needs_a_ready_report_verdict_or_force(lab: RunningLab, admin: Path) -> None:
    refused = run("mode", "good-testing.example", "enforce", "--lab", str(lab.state_dir), cwd=admin)
    assert refused.returncode == 1
    assert (
        "TLS-RPT readiness is UNKNOWN: no TLS-RPT reports for good-testing.example"
        in refused.stdout
    )
    assert "MX mx.good-testing.example" not in refused.stdout  # the live check itself passed
    forced = run(
        "mode", "good-testing.example", "enforce", "--lab", str(lab.state_dir), "--force", cwd=admin
    )
    assert forced.returncode == 0
    assert "enforce skipped (--force)" in forced.stdout
    assert mode_of(admin, "good-testing.example") == "enforce"
    history = run("history", "good-testing.example", cwd=admin).stdout
    assert "+mode: enforce (mode enforce (forced))" in " ".join(history.split())


def test_max_age_ramp_warns_while_testing(admin: Path) -> None:
    result = run("max-age", "good-testing.example", "604800", cwd=admin)
    assert result.returncode == 0
    assert "raising max_age while testing" in result.stderr
    assert "max_age = 604800" in (admin / "mtasts.toml").read_text()


def test_retire_publishes_mode_none_and_says_when_to_remove(admin: Path) -> None:
    first = run("retire", "expired-mx.example", cwd=admin)
    assert first.returncode == 0
    assert "_mta-sts.expired-mx.example." in first.stdout  # a new id to publish
    assert "keep serving mode: none until" in first.stdout
    assert mode_of(admin, "expired-mx.example") == "none"
    again = run("retire", "expired-mx.example", cwd=admin)
    assert "_mta-sts.expired-mx.example." not in again.stdout  # no second id
    assert "keep serving mode: none until" in again.stdout


def test_retirement_status_after_the_old_max_age() -> None:
    retired = Retirement(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 86400)
    assert "until 2026-01-02 00:00 UTC (0 days 12 hours" in retired.status(
        dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    )
    assert retired.status(dt.datetime(2026, 1, 2, tzinfo=dt.UTC)).startswith(
        "every cached policy has expired"
    )


def test_config_edits_keep_comments_and_other_domains(tmp_path: Path) -> None:
    config = tmp_path / "mtasts.toml"
    config.write_text(
        '# ours\n[[domain]]\nname = "a.example"\nmx = ["mx.a.example"]\n\n[[domain]]\nname = "b.example"\nmx = ["mx.b.example"]\nmode = "testing"\n'
    )
    set_domain_value(config, "b.example", "mode", '"enforce"')
    set_domain_value(config, "a.example", "max_age", "3600")
    text = config.read_text()
    assert text.startswith("# ours\n")
    assert 'name = "b.example"\nmx = ["mx.b.example"]\nmode = "enforce"' in text
    assert 'name = "a.example"\nmax_age = 3600\nmx = ["mx.a.example"]' in text


def _clean_reports(folder: Path, domain: str) -> None:
    from mtasts.reports.store import open_store

    from .test_reports_analysis import stored_report

    store = open_store(f"sqlite:///{folder / 'reports.sqlite'}")
    for sender in ("google.com", "microsoft.com"):
        store.ingest(stored_report(sender, domain, ok=500), "test")


def test_the_gate_judges_the_policy_about_to_be_published(tmp_path: Path) -> None:
    """The blocker of the newcomer walkthrough: a mistyped --mx passed the gate (exit 0), and
    once published that policy makes every enforcing sender defer all inbound mail."""
    import json

    from .conftest import start_lab, stop_lab

    admin = tmp_path / "admin"
    admin.mkdir()
    assert (
        run("init", "published.example", "--mx", "mx.published.example", cwd=admin).returncode == 0
    )
    assert run("init", "typo.example", "--mx", "mx.tpyo.example", cwd=admin).returncode == 0
    records = json.loads(run("records", "--format", "json", cwd=admin).stdout)
    ids = {d["domain"]: d["id"] for d in records}
    scenario = tmp_path / "published.toml"
    # The lab serves what was published: published.example's configured policy and id; for
    # typo.example, the old, correct policy (the typo is only in mtasts.toml so far).
    scenario.write_text(f"""
[[domain]]
name = "published.example"
mode = "testing"
max_age = 86400
mx = [{{ name = "mx.published.example" }}]
sts_records = ["v=STSv1; id={ids["published.example"]};"]

[[domain]]
name = "typo.example"
mode = "testing"
max_age = 86400
mx = [{{ name = "mx.typo.example" }}]
""")
    lab = start_lab(tmp_path / "lab", "127.84", "--scenario", str(scenario))
    try:
        _clean_reports(admin, "published.example")
        _clean_reports(admin, "typo.example")
        flags = ("--lab", str(lab.state_dir), "--trust", "file")
        typo = run("mode", "typo.example", "enforce", *flags, cwd=admin)
        assert typo.returncode == 1
        out = " ".join(typo.stdout.split())
        assert (
            "MX mx.typo.example is not covered by the mx patterns in mtasts.toml (mx.tpyo.example)"
            in out
        )
        assert "drift: DNS serves id" in out
        assert "drift: mta-sts.typo.example serves another policy than mtasts.toml" in out
        assert mode_of(admin, "typo.example") == "testing"
        unproven = run(
            "mode", "published.example", "enforce", "--lab", str(lab.state_dir), cwd=admin
        )
        assert unproven.returncode == 1
        assert "are not authenticated (no verified DKIM signature" in " ".join(
            unproven.stdout.split()
        )
        allowed = run("mode", "published.example", "enforce", *flags, cwd=admin)
        assert allowed.returncode == 0, allowed.stdout
        assert "refused" not in allowed.stdout
        assert mode_of(admin, "published.example") == "enforce"
        # The enforce policy is configured but not yet published: a month-long max_age waits.
        step = run("max-age", "published.example", "2592000", *flags, cwd=admin)
        assert step.returncode == 1
        assert "published.example: max_age 2592000 refused:" in step.stdout
        assert "drift: mta-sts.published.example serves another policy" in " ".join(
            step.stdout.split()
        )
    finally:
        stop_lab(lab)


def test_init_does_not_start_in_enforce_or_with_a_long_max_age(tmp_path: Path) -> None:
    for args in (("--mode", "enforce"), ("--max-age", "31557600")):
        refused = run("init", "new.example", "--mx", "mx.new.example", *args, cwd=tmp_path)
        assert refused.returncode == 2
        assert "a new domain starts in testing with a short max_age" in refused.stderr
        assert not (tmp_path / "mtasts.toml").exists()
    forced = run(
        "init",
        "new.example",
        "--mx",
        "mx.new.example",
        "--mode",
        "enforce",
        "--force",
        cwd=tmp_path,
    )
    assert forced.returncode == 0
    assert "skipped (--force): the enforce gate" in forced.stderr
    assert mode_of(tmp_path, "new.example") == "enforce"
