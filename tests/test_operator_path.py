"""Small things an admin meets on the way (the newcomer walkthrough's leftovers), via the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from .conftest import MTASTS, RunningLab

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, *args], capture_output=True, text=True, timeout=60, env=ENV, cwd=cwd
    )


def test_mode_help_offers_what_works_and_repeats_are_no_ops(tmp_path: Path) -> None:
    assert "DOMAIN {enforce|testing}" in run("mode", "--help").stdout
    run("init", "a.example", "--mx", "mx.a.example", "--mode", "enforce", "--force", cwd=tmp_path)
    again = run("mode", "a.example", "enforce", cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.strip() == "a.example: already enforce; nothing changed"
    none = run("mode", "a.example", "none", cwd=tmp_path)
    assert none.returncode == 2
    assert "mtasts retire" in none.stderr


def test_leaving_retirement_says_so_and_the_retire_date_is_stable(tmp_path: Path) -> None:
    run("init", "b.example", "--mx", "mx.b.example", cwd=tmp_path)
    first = run("retire", "b.example", cwd=tmp_path).stdout.splitlines()[-1]
    second = run("retire", "b.example", cwd=tmp_path).stdout.splitlines()[-1]
    assert first == second
    assert "1 day 0 hours from now" in first  # the one-day max_age of a new domain
    back = run("mode", "b.example", "testing", cwd=tmp_path)
    assert "cancels the retirement" in back.stderr


def test_history_of_an_unconfigured_domain_says_so(tmp_path: Path) -> None:
    run("init", "c.example", "--mx", "mx.c.example", cwd=tmp_path)
    done = run("history", "nosuch.example", cwd=tmp_path)
    assert done.returncode == 2
    assert "no [[domain]] named 'nosuch.example' (configured: c.example)" in done.stderr


def test_init_points_at_the_report_mailbox(tmp_path: Path) -> None:
    done = run("init", "d.example", "--mx", "mx.d.example", cwd=tmp_path)
    assert "reports go to tlsrpt@d.example: that mailbox must exist" in done.stdout
    chosen = run(
        "init", "e.example", "--mx", "mx.e.example", "--rua", "mailto:r@e.example", cwd=tmp_path
    )
    assert "that mailbox must exist" not in chosen.stdout


def test_lab_lists_scenarios_and_domains_in_full() -> None:
    scenarios = run("lab", "scenarios").stdout
    assert "next to healthy enforce and testing domains." in " ".join(scenarios.split())
    listed = run("lab", "explain").stdout.splitlines()
    assert len(listed) == 22  # 21 domains and the hint
    assert listed[0].startswith("good-enforce.example")
    assert any(
        line.startswith("stripped.example") and "starttls-not-supported" in line for line in listed
    )


def test_explain_suggests_the_code_meant_and_knows_the_dane_result_types() -> None:
    typo = run("check", "--explain", "certficate-host-mismatch")
    assert typo.returncode == 2
    assert "did you mean certificate-host-mismatch?" in typo.stderr
    for code in ("tlsa-invalid", "dnssec-invalid", "dane-required"):
        done = run("check", "--explain", code)
        assert done.returncode == 0
        assert done.stdout.startswith(f"{code}: ")
        assert "RFC 8460" in done.stdout


def test_resolver_without_its_config_says_what_one_needs(tmp_path: Path) -> None:
    done = run("resolver", "run", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert "a minimal one: [resolver] with listen" in done.stderr


def test_lint_of_an_unreadable_file_is_a_usage_error() -> None:
    done = run("lint", "policy", "/nonexistent/mta-sts.txt")
    assert done.returncode == 2
    assert "cannot read: No such file or directory" in done.stdout


def test_resolver_query_says_why_testing_is_notfound(lab: RunningLab) -> None:
    done = run(
        "resolver",
        "query",
        "--lab",
        str(lab.state_dir),
        "--cache",
        ":memory:",
        "good-testing.example",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("good-testing.example: NOTFOUND")
    assert 'testing policies are answered NOTFOUND (testing = "none")' in done.stdout
    enforce = run(
        "resolver",
        "query",
        "--lab",
        str(lab.state_dir),
        "--cache",
        ":memory:",
        "good-enforce.example",
    )
    assert "OK secure match=" in enforce.stdout
    assert "testing policies" not in enforce.stdout


def test_resolver_query_with_dns_down_says_so_in_one_answer() -> None:
    """The policy host's address is asked alongside the record; with DNS unreachable both
    fail, and the one not needed must not surface as asyncio's "never retrieved" trace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{closed.getsockname()[1]}"
    done = run(
        "resolver",
        "query",
        "--nameserver",
        nowhere,
        "--timeout",
        "1",
        "--cache",
        ":memory:",
        "nosuch.example",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nosuch.example: NOTFOUND")
    assert "DNS failed (TXT _mta-sts.nosuch.example:" in done.stdout
    assert "never retrieved" not in done.stderr
    assert "Traceback" not in done.stderr


def test_quarantine_show_drop_and_json_and_ingest_says_where_it_stored(tmp_path: Path) -> None:
    import json

    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "broken.json").write_bytes(b'{"report-id": 7, "<script>": 1}')
    done = run("reports", "ingest", str(tmp_path / "broken.json"), "--db", db, "--json")
    counts = json.loads(done.stdout)
    assert (counts["stored"], counts["quarantined"], counts["store"]) == (0, 1, db)
    plain = run("reports", "ingest", str(tmp_path / "broken.json"), "--db", db)
    assert f"store: {db}" in plain.stderr
    (item,) = json.loads(run("reports", "quarantine", "--db", db, "--json").stdout)["quarantine"]
    shown = subprocess.run(
        [MTASTS, "reports", "quarantine", "--db", db, "--show", str(item["id"])],
        capture_output=True,
        timeout=60,
        env=ENV,
    )
    assert shown.stdout == b'{"report-id": 7, "<script>": 1}'  # the bytes as received
    assert run("reports", "quarantine", "--db", db, "--show", "999").returncode == 2
    dropped = run("reports", "quarantine", "--db", db, "--drop", str(item["id"]))
    assert dropped.stdout.strip() == "dropped 1 item(s)"
    assert json.loads(run("reports", "quarantine", "--db", db, "--json").stdout)["quarantine"] == []


def test_prune_gives_the_space_back(tmp_path: Path) -> None:
    import gzip
    import json

    from .test_reports_analysis import stored_report

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(200):
        data = json.loads(stored_report("google.com", "example.org"))
        data["report-id"] = f"old-{i}"
        data["policies"][0]["policy"]["policy-string"] = ["x" * 2000]
        (folder / f"{i}.json.gz").write_bytes(gzip.compress(json.dumps(data).encode()))
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert "stored 200" in run("reports", "ingest", str(folder), "--db", db).stdout
    done = json.loads(
        run("reports", "prune", "--older-than", "2100-01-01", "--db", db, "--json").stdout
    )
    assert done["reports"] == 200
    assert done["file_bytes"]["after"] < done["file_bytes"]["before"]


def test_lint_report_reads_mail_and_zip_as_ingest_does(tmp_path: Path) -> None:
    import datetime as dt
    import zipfile

    from mtasts.tlsrpt.build import PolicyTally, build_report, report_mail
    from mtasts.tlsrpt.model import PolicyType, ReportPolicy

    report = build_report(
        dt.date(2026, 12, 5),
        organization="Sender Example",
        contact="mailto:postmaster@sender.example",
        report_id="r-1",
        tallies=[PolicyTally(ReportPolicy(PolicyType.NO_POLICY_FOUND, "a.example"), 3, 0)],
    )
    (tmp_path / "one.eml").write_bytes(
        report_mail(
            report,
            policy_domain="a.example",
            submitter="sender.example",
            sender="r@sender.example",
            recipients=["tlsrpt@a.example"],
            date_header="Sat, 05 Dec 2026 00:00:00 +0000",
            message_id="<1@sender.example>",
        )
    )
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as bundle:
        bundle.writestr("r.json", report.to_json())
    done = run("lint", "report", str(tmp_path / "one.eml"), str(tmp_path / "bundle.zip"))
    assert done.returncode == 0, done.stdout
    assert "one.eml (sender.example!a.example!" in done.stdout
    assert "bundle.zip!r.json: valid report" in done.stdout


def test_ingest_names_what_it_skipped_and_why(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "README.txt").write_text("hi\n")
    (extra / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0JFIF")
    (extra / "empty.json").write_bytes(b"")
    (extra / "dangling").symlink_to(tmp_path / "nowhere")
    (extra / ".hidden").write_text("From: a@b.example\nSubject: hi\n\nhello\n")
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    quiet = run("reports", "ingest", str(extra), "--db", db)
    assert "unrelated mail skipped 5" in quiet.stdout
    assert "-v names every skipped input" in quiet.stderr
    loud = run("reports", "ingest", str(extra), "--db", db, "-v").stdout
    assert f"skipped: {extra}/dangling: a symbolic link to nothing" in loud
    assert f"skipped: {extra}/empty.json: empty" in loud
    assert f"skipped: {extra}/.hidden: mail without a report part" in loud
    assert f"skipped: {extra}/photo.jpg: 8 bytes that are not a report" in loud


def test_max_age_warnings_speak_in_hours_and_days(tmp_path: Path) -> None:
    run("init", "f.example", "--mx", "mx.f.example", cwd=tmp_path)
    done = run(
        "max-age", "f.example", "129600", "--db", f"sqlite:///{tmp_path / 'r.sqlite'}", cwd=tmp_path
    )
    assert "a broken policy would stay cached for 1.5 days" in done.stderr


def test_init_history_retire_speak_json(tmp_path: Path) -> None:
    import json

    made = json.loads(
        run("init", "g.example", "--mx", "mx.g.example", "--json", cwd=tmp_path).stdout
    )
    assert (made["domain"], made["mode"], made["max_age"], made["mx"]) == (
        "g.example",
        "testing",
        86400,
        ["mx.g.example"],
    )
    # The history starts at init, which gives no id (walkthrough #10).
    (init,) = json.loads(run("history", "g.example", "--json", cwd=tmp_path).stdout)["changes"]
    assert (init["note"], init["policy_id"]) == ("init (not published yet)", "")
    retired = json.loads(run("retire", "g.example", "--json", cwd=tmp_path).stdout)
    assert retired["mode"] == "none"
    assert retired["records_removable_at"] > retired["retired_at"]
    _, change = json.loads(run("history", "g.example", "--json", cwd=tmp_path).stdout)["changes"]
    assert change["note"] == "retire: mode none"
    assert "mode: none" in change["new_policy"]
    assert change["policy_id"]


def test_init_takes_u_label_names_as_their_a_labels(tmp_path: Path) -> None:
    done = run(
        "init",
        "bücher.example",
        "--mx",
        "mx.bücher.example",
        "--mx",
        "*.bücher.example",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "mtasts.toml").read_text()
    assert 'name = "xn--bcher-kva.example"' in text
    assert 'mx = ["mx.xn--bcher-kva.example", "*.xn--bcher-kva.example"]' in text
    assert 'rua = ["mailto:tlsrpt@xn--bcher-kva.example"]' in text


def test_narrow_terminals_get_lists_not_cut_tables(lab: RunningLab) -> None:
    env = {**ENV, "COLUMNS": "60"}
    done = subprocess.run(
        [MTASTS, "check", "--lab", str(lab.state_dir), "load-balancer.example"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "…" not in done.stdout  # nothing cut to "certifi…"
    assert "- MX: 10 mx.load-balancer.example" in done.stdout
    assert "  certificate: old-backend.load-balancer.example" in done.stdout
    wide = run("check", "--lab", str(lab.state_dir), "load-balancer.example")
    lines = wide.stdout.splitlines()
    assert any(line.startswith("MX") and "a sender would" in line for line in lines)
    assert all(line == line.rstrip() for line in lines)  # no padding to 160 columns


def test_mode_and_max_age_speak_json_refusals_included(tmp_path: Path) -> None:
    import json

    run("init", "h.example", "--mx", "mx.h.example", cwd=tmp_path)
    refused = run(
        "mode",
        "h.example",
        "enforce",
        "--json",
        "--nameserver",
        "127.0.0.1:9",
        "--timeout",
        "1",
        "--db",
        f"sqlite:///{tmp_path / 'r.sqlite'}",
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    document = json.loads(refused.stdout)
    assert document["change"] == "enforce"
    assert document["refused"]
    ramp = run(
        "max-age",
        "h.example",
        "2d",
        "--json",
        "--db",
        f"sqlite:///{tmp_path / 'r.sqlite'}",
        cwd=tmp_path,
    )
    changed = json.loads(ramp.stdout)
    assert (changed["mode"], changed["max_age"]) == ("testing", 172800)
    assert changed["records"][0]["value"] == f"v=STSv1; id={changed['policy_id']};"
    assert any("raising max_age while testing" in w for w in changed["warnings"])


def test_resolver_query_and_lab_explain_speak_json(lab: RunningLab) -> None:
    import json

    answer = json.loads(
        run(
            "resolver",
            "query",
            "--lab",
            str(lab.state_dir),
            "--cache",
            ":memory:",
            "good-enforce.example",
            "--json",
        ).stdout
    )
    assert answer["reply"].startswith("OK secure match=")
    assert answer["policy"]["mode"] == "enforce"
    (domain,) = json.loads(run("lab", "explain", "stripped.example", "--json").stdout)
    assert domain["expect"] == ["starttls-not-supported"]


def test_tables_name_senders_as_their_reports_do(tmp_path: Path) -> None:
    import gzip
    import json

    from .test_reports_analysis import stored_report

    data = json.loads(stored_report("microsoft.com", "example.org"))
    data["organization-name"] = "Microsoft Corporation"
    (tmp_path / "r.json.gz").write_bytes(gzip.compress(json.dumps(data).encode()))
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    run("reports", "ingest", str(tmp_path / "r.json.gz"), "--db", db)
    table = run("reports", "summary", "--since", "2000-01-01", "--db", db).stdout
    assert "Microsoft Corporation" in table
    exported = json.loads(
        run("reports", "summary", "--since", "2000-01-01", "--db", db, "--json").stdout
    )
    assert exported[0]["submitter"] == "microsoft corporation"  # the key stays as stored
