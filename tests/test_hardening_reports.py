"""The security review's report attacks, each reproduced through the CLI or the HTTP endpoint.

See ../shared/reference/security-review.md: nested zips (#1), poisoned batches (#2),
forged reports (#3), stored amplification (#4), terminal and CSV injection (#21, #22),
Maildir symlinks (#23).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import mailbox
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from mtasts.reports.models import FailureRow, Report
from mtasts.reports.store import open_store

from .conftest import MTASTS
from .test_mutation import _zip
from .test_reports_ingest import report, report_mail, run


def _peak_rss_mib(*args: str, db: str) -> tuple[float, str]:
    """Run ``mtasts reports ARGS`` in a child and return its peak RSS, read by the parent."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.stdout + p.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, MTASTS, "reports", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    first, _, rest = done.stdout.partition("\n")
    return int(first) / 1024, rest


def test_nested_zips_share_one_budget(tmp_path: Path) -> None:
    """#1: 300 inner zips of 1 MiB each in a 1 MiB-capped mail once held 300 MiB."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    inner = _zip({"r.json": b"{" + b" " * ((1 << 20) - 100) + b"}"})
    bomb = _zip({f"inner{i}.zip": inner for i in range(300)})
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb)
    assert len(bomb) < 2 << 20
    peak, output = _peak_rss_mib("ingest", "--max-report-size", "1M", str(path), db=db)
    assert "quarantined" in output
    assert "report.too-large" in output or "report.zip-nested" in output
    assert peak < 150, f"peak RSS {peak:.0f} MiB for a 1 MiB cap"


def test_zip_is_expanded_one_level(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    path = tmp_path / "nested.zip"
    path.write_bytes(_zip({"inner.zip": _zip({"a.json": report("a")})}))
    done = run("ingest", str(path), db=db)
    assert "quarantined 1" in done.stdout
    assert "is itself a zip" in done.stdout + done.stderr
    assert "[report.zip-nested]" in done.stdout + done.stderr


def test_budget_is_shared_by_the_zip_members(tmp_path: Path) -> None:
    """Each member is under the cap, together they are over it: the input is refused."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    members = {}
    for i in range(4):
        big = json.loads(report(f"x{i}"))
        big["padding"] = "p" * 400_000
        members[f"m{i}.json.gz"] = gzip.compress(json.dumps(big).encode())
    path = tmp_path / "four.zip"
    path.write_bytes(_zip(members))
    done = run("ingest", "--max-report-size", "1M", str(path), db=db)
    out = done.stdout + done.stderr
    assert "past 1,048,576 bytes of reports in all" in out
    assert "stored 2, duplicates 0, quarantined 2" in out  # the first two fit and are kept


def _poisoned(report_id: str, org: str, **fields: str) -> bytes:
    doc = json.loads(report(report_id, org))
    doc["policies"][0]["failure-details"][0].update(fields)
    return json.dumps(doc).encode()


def _watch(maildir: Path, db: str, wanted: int) -> str:
    """Run the Maildir watcher until ``wanted`` messages left new/; return its log."""
    process = subprocess.Popen(
        [
            MTASTS,
            "reports",
            "ingest",
            "--maildir",
            str(maildir),
            "--watch",
            "--interval",
            "1",
            "--db",
            db,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while len(list((maildir / "new").iterdir())) > 0 or _moved(maildir) < wanted:
            assert process.poll() is None, "the watcher stopped"
            assert time.monotonic() < deadline, (
                f"still in new/: {list((maildir / 'new').iterdir())}"
            )
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=10)
    return log


def _moved(maildir: Path) -> int:
    return sum(
        len(list((maildir / f".{name}" / "new").iterdir()))
        for name in ("Processed", "Failed")
        if (maildir / f".{name}" / "new").exists()
    )


def test_nul_and_overlong_fields_do_not_poison_the_watcher(db_url: str, tmp_path: Path) -> None:
    """#2: on PostgreSQL a NUL or a 300-character MX name failed the batch, and the watcher
    retried it forever storing nothing. Now each is stored, cleaned, with a warning."""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(report_mail(report("good")))
    box.add(
        report_mail(
            _poisoned("long", "Long Org", **{"receiving-mx-hostname": "m" * 300 + ".example"})
        )
    )
    box.add(
        report_mail(_poisoned("nul", "Nul\u0000Org", **{"failure-reason-code": "bad\u0000code"}))
    )
    box.add(report_mail(_poisoned("x" * 400, "Long Id Org")))
    log = _watch(tmp_path / "Maildir", db_url, 4)
    assert "failed" not in log, log
    store = open_store(db_url)
    assert store.counts() == {"reports": 4, "raw": 4, "quarantined": 0}
    with store.engine.connect() as connection:
        rows = {r.report_id: r for r in connection.execute(select(Report))}
        mx_names = set(connection.execute(select(FailureRow.receiving_mx)).scalars())
    assert rows["nul"].organization == "NulOrg"
    assert "failure-reason-code: control characters removed" in rows["nul"].warnings
    assert "receiving-mx-hostname: cut to fit the store" in rows["long"].warnings
    assert all(len(name or "") <= 255 for name in mx_names)
    long_id = next(key for key in rows if key.startswith("xxx"))
    assert len(long_id) == 255


def test_a_report_the_database_refuses_is_quarantined_alone(db_url: str, tmp_path: Path) -> None:
    """Defence in depth for #2: whatever the database refuses fails one report, not the batch.

    A trigger stands in for any constraint the cleaning does not foresee."""
    store = open_store(db_url)
    with store.engine.begin() as connection:
        if store.engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON reports WHEN NEW.report_id = 'refused' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.report_id = 'refused' THEN RAISE EXCEPTION 'refused by a constraint' "
                    "USING ERRCODE = '22000'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON reports FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    inbox = tmp_path / "in"
    inbox.mkdir()
    for name in ("a", "refused", "b"):
        (inbox / f"{name}.json").write_bytes(report(name))
    done = run("ingest", str(inbox), db=db_url)
    assert "stored 2, duplicates 0, quarantined 1" in done.stdout, done.stdout + done.stderr
    assert "the report store cannot hold this report" in done.stdout
    assert "[report.store]" in done.stdout
    assert open_store(db_url).counts() == {"reports": 2, "raw": 3, "quarantined": 1}


def _lab_signed_mail(lab_state: Path, sender: str, data: bytes, *, tamper: bool = False) -> bytes:
    from mtasts.lab.dkim import LabSigners
    from mtasts.lab.reports import report_mail as lab_mail
    from mtasts.lab.runtime import read_state

    signers = LabSigners.load(Path(read_state(lab_state)["dkim_keys"]))
    mail = signers.sign(
        lab_mail(gzip.compress(data), submitter=sender, domain="victim.example"), sender
    )
    return mail.replace(b"This is an aggregate", b"This is a forged") if tamper else mail


def _post(port: int, data: bytes) -> int:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/tlsrpt",
        gzip.compress(data),
        {"Content-Type": "application/tlsrpt+gzip"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_a_forged_post_cannot_hide_the_real_report(
    lab: Any, tmp_path: Path, free_tcp_port: int
) -> None:
    """#3: a forged "all clean" POST with Google's report-id, sent before the real mail, made
    the real report (1,000 failed sessions) a duplicate, and readiness said READY."""
    from mtasts.lab.runtime import read_state

    from .conftest import wait_for_port
    from .test_reports_analysis import stored_report

    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    nameserver = read_state(lab.state_dir)["nameserver"]
    report_id = "2026-12-01_victim.example"
    forged = stored_report("google.com", "victim.example", ok=1000, report_id=report_id)
    real = stored_report(
        "google.com",
        "victim.example",
        ok=0,
        report_id=report_id,
        failures=[("starttls-not-supported", 1000)],
    )
    (tmp_path / "mtasts.toml").write_text("")
    server = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_tcp_port),
            "--reports",
            db,
        ],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(free_tcp_port, server)
        assert _post(free_tcp_port, forged) == 201
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    (tmp_path / "real.eml").write_bytes(_lab_signed_mail(lab.state_dir, "google.com", real))
    done = run("ingest", "--nameserver", nameserver, str(tmp_path / "real.eml"), db=db)
    assert "stored 0, duplicates 0, quarantined 0" in done.stdout, done.stdout + done.stderr
    assert "conflicting 1" in done.stdout
    listing = run("quarantine", db=db).stdout
    assert "conflicting reports" in listing
    assert listing.count(report_id) == 2
    assert "https" in listing
    assert "google.com" in listing.split("https", 1)[1]  # the mailed one is DKIM-verified
    verdict = run("readiness", "victim.example", "--json", db=db)
    document = json.loads(verdict.stdout)
    assert document["verdict"] == "NOT READY"
    assert document["reason"] == "enforce would have deferred 1000 of 2000 sessions"
    assert document["conflicts"] == 2
    assert document["vouched"] == ["google.com"]
    summary = run("summary", db=db)
    assert "2 stored reports conflict" in summary.stderr


def test_only_a_verified_signature_vouches_for_a_sender(lab: Any, tmp_path: Path) -> None:
    """An unsigned POST, or mail whose signature no longer verifies, claims Google in vain."""
    from mtasts.lab.runtime import read_state

    from .test_reports_analysis import stored_report

    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    nameserver = read_state(lab.state_dir)["nameserver"]
    (tmp_path / "tampered.eml").write_bytes(
        _lab_signed_mail(
            lab.state_dir, "google.com", stored_report("google.com", "victim.example"), tamper=True
        )
    )
    run("ingest", "--nameserver", nameserver, str(tmp_path / "tampered.eml"), db=db)
    verdict = json.loads(run("readiness", "victim.example", "--json", db=db).stdout)
    assert verdict["verdict"] == "UNKNOWN"
    assert verdict["vouched"] == []
    assert verdict["reason"].startswith(
        "the reports claiming to be from google.com are not authenticated"
    )
    trusted = json.loads(
        run("readiness", "victim.example", "--json", "--trust", "file", db=db).stdout
    )
    assert trusted["verdict"] == "READY"
    (tmp_path / "signed.eml").write_bytes(
        _lab_signed_mail(
            lab.state_dir,
            "google.com",
            stored_report("google.com", "victim.example", report_id="r2"),
        )
    )
    run("ingest", "--nameserver", nameserver, str(tmp_path / "signed.eml"), db=db)
    verdict = json.loads(run("readiness", "victim.example", "--json", db=db).stdout)
    assert verdict["verdict"] == "READY"
    assert verdict["vouched"] == ["google.com"]


def test_stranger_text_cannot_break_or_drive_the_terminal(tmp_path: Path) -> None:
    """#21, #22: an organization-name of ``[/]`` crashed summary and readiness (Rich markup),
    escape sequences reached the terminal, and CSV cells could hold spreadsheet formulas."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    doc = json.loads(report("markup", "[/]\x1b]8;;http://evil/\x07\x1b[2J=cmd|' /c calc'!a0"))
    doc["policies"][0]["failure-details"][0]["receiving-ip"] = '=HYPERLINK("http://evil")'
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    doc["date-range"] = {
        "start-datetime": f"{yesterday}T00:00:00Z",
        "end-datetime": f"{yesterday}T23:59:59Z",
    }
    (tmp_path / "r.json").write_bytes(json.dumps(doc).encode())
    assert run("ingest", str(tmp_path / "r.json"), db=db).returncode == 0
    domain = doc["policies"][0]["policy"]["policy-domain"]
    for args in (("summary",), ("summary", "--by", "mx"), ("readiness", domain)):
        done = run(*args, db=db)
        assert "Traceback" not in done.stderr, done.stderr
        assert "[/]" in done.stdout  # shown as text, not read as markup
        assert "\x1b" not in done.stdout
    run("summary", "--by", "mx", "--csv", str(tmp_path / "mx.csv"), db=db)
    import csv

    rows = list(csv.DictReader((tmp_path / "mx.csv").open()))
    assert '\'=HYPERLINK("http://evil")' in {row["receiving_ip"] for row in rows}
    assert not any(value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values())
    assert all("\x1b" not in value for row in rows for value in row.values())


def test_a_markup_mx_name_is_shown_not_parsed(capsys: Any) -> None:
    """#21: DNS labels may hold any byte; an MX named ``[/]`` crashed ``render_detail``."""
    import datetime as dt

    from mtasts.check.facts import AddressFacts, DomainFacts, MxFacts, TxtFacts
    from mtasts.check.findings import Severity
    from mtasts.check.judge import judge
    from mtasts.cli.check import render_detail
    from mtasts.net.smtp import SmtpProbe

    host = "[/]\x1b[2J.victim.example"
    probe = SmtpProbe(host, "192.0.2.1", 25, connected=True, banner="[bold]x [red]", starttls=False)
    facts = DomainFacts(
        "victim.example",
        dt.datetime.now(dt.UTC),
        TxtFacts(),
        TxtFacts(),
        mx_listed=1,
        mx=(MxFacts(host, 10, addresses=(AddressFacts("192.0.2.1", (probe,)),)),),
    )
    check = judge(facts)
    assert "starttls-not-supported" in check.codes(*Severity)
    render_detail(check)
    out = capsys.readouterr().out
    assert "[/][2J.victim.example" in out
    assert "starttls-not-supported [/][2J.victim.example: 192.0.2.1" in out
    assert "\x1b" not in out


def test_an_unreachable_dns_costs_one_key_lookup_per_run_not_one_per_message(lab: Any) -> None:
    """DKIM keys come from DNS; with none reachable every message waited for its own timeout."""
    from mtasts.lab.dkim import LabSigners
    from mtasts.lab.reports import report_mail as lab_mail
    from mtasts.lab.runtime import read_state
    from mtasts.net.dns import Nameserver
    from mtasts.reports.provenance import DkimVerifier

    signers = LabSigners.load(Path(read_state(lab.state_dir)["dkim_keys"]))
    mails = [
        signers.sign(lab_mail(gzip.compress(report(f"k{n}")), submitter="google.com"), "google.com")
        for n in range(3)
    ]
    asked: list[str] = []
    verifier = DkimVerifier((Nameserver("127.0.0.1", 9),), timeout=0.5)
    real = verifier._ask

    async def counted(name: str) -> bytes | None:
        asked.append(name)
        return await real(name)

    verifier._ask = counted  # type: ignore[method-assign]
    assert [verifier.verify(m) for m in mails] == [("temperror", None)] * 3
    assert asked == ["tlsrpt._domainkey.google.com"]
    verifier.retry_after = 0  # later (a watcher runs for months), the key is asked again
    verifier.verify(mails[0])
    assert len(asked) == 2
