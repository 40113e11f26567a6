"""`mtasts watch` end to end: a lab that changes while it runs, `watch once` between the
changes, and the events as a user receives them — on a real local webhook receiver
(signature checked), on /metrics, and through the CLI."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MTASTS, RunningLab, port, start_lab, stop_lab

SECRET = "webhook-secret-for-tests"
OWN = "good-enforce.example"


class Receiver:
    """A webhook receiver that verifies each request's signature the way docs/watch.md says."""

    def __init__(self, listen_port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.down = False
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                fields = dict(
                    part.split("=", 1) for part in self.headers["X-Mtasts-Signature"].split(",")
                )
                expected = hmac.new(
                    SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                fresh = abs(time.time() - int(fields["t"])) < 300
                if not (hmac.compare_digest(expected, fields["v1"]) and fresh):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.events += json.loads(body)["events"]
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def watch_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = start_lab(tmp_path_factory.mktemp("watch-lab"), "127.88")
    yield running
    stop_lab(running)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver(port(40))
    yield hook
    hook.server.shutdown()


def mtasts(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [MTASTS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{cwd / 'store.sqlite'}"},
    )
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def change(lab: RunningLab, domain: str, *args: str) -> None:
    done = subprocess.run(
        [MTASTS, "lab", "change", domain, "--state-dir", str(lab.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def once(cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    done = mtasts("watch", "once", "--all", "--json", cwd=cwd)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)["events"]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return sorted((e["code"], e["status"], e["severity"], e["subject"]) for e in events)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, watch_lab: RunningLab, receiver: Receiver
) -> Path:
    folder = tmp_path_factory.mktemp("watch-site")
    mtasts(
        "init",
        OWN,
        "--mx",
        "mx1.good-enforce.example",
        "--mx",
        "mx2.good-enforce.example",
        cwd=folder,
        check=True,
    )
    (folder / "partners.txt").write_text(
        "# who we exchange mail with\ngood-testing.example bank\nmode-none.example\nbad..example\n"
    )
    (folder / "hook.secret").write_text(SECRET + "\n")
    with (folder / "mtasts.toml").open("a") as config:
        config.write(f"""
[watch]
partners = ["partners.txt"]
lab = "{watch_lab.state_dir}"
timeout = 3
retry = "1s"

[[watch.channel]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{port(40)}/mtasts"
secret_file = "hook.secret"
""")
    return folder


def test_watch_catches_each_lab_change_and_delivers_it_exactly_once(
    site: Path, watch_lab: RunningLab, receiver: Receiver
) -> None:
    rc, baseline = once(site)
    assert (rc, baseline) == (0, [])  # a first pass is the baseline: nothing has changed yet
    first = mtasts("watch", "once", "--all", cwd=site)
    assert (
        "partners.txt:4: 'bad..example' is not a domain name" in first.stderr
    )  # said; the rest is watched
    assert "watched 3 domain(s): 0 event(s)" in first.stdout

    mx1 = watch_lab.mx_address(OWN, 0)
    change(watch_lab, OWN, "--certificate", "expires-in:5", "--address", mx1)
    change(watch_lab, OWN, "--max-age", "86400", "--keep-id")
    change(watch_lab, "good-testing.example", "--mode", "enforce")
    rc, events = once(site)
    subject = f"mx1.good-enforce.example [{mx1}]"
    assert summary(events) == [
        ("certificate-changed", "changed", "info", subject),
        ("certificate-expiring", "opened", "error", subject),
        ("max-age-changed", "changed", "info", f"mta-sts.{OWN}"),
        ("partner-adopted", "changed", "info", "good-testing.example"),
        ("policy-changed-without-id", "changed", "error", f"mta-sts.{OWN}"),
    ]
    assert rc == 1  # an error event: cron mails the output
    without_id = next(e for e in events if e["code"] == "policy-changed-without-id")
    assert "max_age: 604800" in without_id["before"]
    assert "max_age: 86400" in without_id["after"]
    assert without_id["horizon"] is not None  # last served + the old max_age of a week
    assert summary(receiver.events) == summary(events)
    assert receiver.bad_signatures == 0

    # The receiver goes down; DNS for the record times out: never a removal.
    receiver.down = True
    change(watch_lab, OWN, "--dns", "timeout")
    rc, events = once(site)
    assert summary(events) == [("dns-unavailable", "opened", "warning", f"_mta-sts.{OWN}")]
    channels = json.loads(mtasts("watch", "channels", "--json", cwd=site, check=True).stdout)
    (hook,) = channels["channels"]
    assert hook["pending"] == 1
    assert "503" in hook["last_error"]
    assert rc == 1  # a channel failed

    # DNS answers again, but the record is gone: said only after a second run confirms it.
    change(watch_lab, OWN, "--dns", "none", "--remove-record")
    time.sleep(1.1)  # the channel's first retry wait (retry = "1s")
    rc, events = once(site)
    assert summary(events) == [("dns-unavailable", "resolved", "info", f"_mta-sts.{OWN}")]
    receiver.down = False
    time.sleep(2.1)  # the second wait doubles
    rc, events = once(site)
    assert summary(events) == [("sts-record-removed", "changed", "error", f"_mta-sts.{OWN}")]
    assert events[0]["horizon"] is not None

    # Everything the store holds reached the receiver, once each, in order, after the outage.
    stored = json.loads(mtasts("watch", "events", "--json", cwd=site, check=True).stdout)["events"]
    assert [(e["code"], e["status"], e["at"]) for e in receiver.events] == [
        (e["code"], e["status"], e["at"]) for e in stored
    ]
    (hook,) = json.loads(mtasts("watch", "channels", "--json", cwd=site, check=True).stdout)[
        "channels"
    ]
    assert hook["pending"] == 0
    assert hook["sent"] == len(stored)

    # Where things stand, in the commands a user reads.
    status = json.loads(mtasts("watch", "status", "--json", cwd=site, check=True).stdout)
    own = next(d for d in status["domains"] if d["domain"] == OWN)
    assert own["first_expiry_days"] in (4, 5)
    assert own["first_expiry"] == subject
    assert own["cache_horizon"] is not None
    partner = next(d for d in status["domains"] if d["domain"] == "good-testing.example")
    assert (partner["role"], partner["label"], partner["mode"]) == ("partner", "bank", "enforce")
    assert status["storage"]["observations"] < status["storage"]["runs"]  # unchanged runs share

    history = json.loads(mtasts("watch", "history", OWN, "--json", cwd=site, check=True).stdout)
    diffs = [e["policy_diff"] for e in history["timeline"] if e.get("policy_diff")]
    assert len(diffs) == 1
    assert "-max_age: 604800" in diffs[0]
    assert "+max_age: 86400" in diffs[0]
    text = mtasts("watch", "history", OWN, cwd=site, check=True).stdout
    assert "policy-changed-without-id" in text
    assert "unchanged until" in text

    metrics = mtasts("watch", "metrics", cwd=site, check=True).stdout
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith(
            f'mtasts_watch_certificate_expiry_days{{domain="{OWN}",mx="mx1.good-enforce.example"'
        )
    )
    assert 4 <= float(line.split()[-1]) <= 5.1  # the lab adds an hour to "5 days"
    assert 'mtasts_watch_outbox_pending{channel="hook"} 0' in metrics

    pruned = json.loads(
        mtasts("watch", "prune", "--older-than", "1d", "--json", cwd=site, check=True).stdout
    )
    assert pruned["removed"] == {"observations": 0, "events": 0, "outbox": 0, "runs": 0}
    bad = mtasts("watch", "prune", "--older-than", "soon", cwd=site)
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1)
    assert "--older-than: 'soon' is not a duration" in bad.stderr

    # Put the lab back for the daemon test below.
    change(watch_lab, OWN, "--restore-record", "--certificate", "renew")


def test_watch_run_serves_metrics_and_reloads_on_sighup(
    site: Path, watch_lab: RunningLab, receiver: Receiver
) -> None:
    listen = f"127.0.0.1:{port(41)}"
    process = subprocess.Popen(
        [MTASTS, "watch", "run", "--metrics", listen],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{site / 'store.sqlite'}"},
    )
    try:
        metrics = _scrape(f"http://{listen}/metrics", process)
        assert "# TYPE mtasts_watch_verdict gauge" in metrics
        assert f'mtasts_watch_verdict{{domain="{OWN}",role="own"}}' in metrics
        # A new partner file line is picked up on SIGHUP, without a restart.
        with (site / "partners.txt").open("a") as partners:
            partners.write("no-tlsrpt.example\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while 'domain="no-tlsrpt.example"' not in metrics:
            assert time.monotonic() < deadline, "the reloaded partner was never watched"
            time.sleep(0.5)
            metrics = _scrape(f"http://{listen}/metrics", process)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "configuration reloaded" in err


def _scrape(url: str, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_watch_refuses_a_secret_written_into_the_config(tmp_path: Path) -> None:
    (tmp_path / "partners.txt").write_text("example.com\n")
    (tmp_path / "mtasts.toml").write_text(
        '[watch]\npartners = ["partners.txt"]\n\n[[watch.channel]]\ntype = "webhook"\n'
        'url = "https://hooks.example/x"\nsecret = "in the clear"\n'
    )
    done = mtasts("watch", "once", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "secret_file" in done.stderr
    assert "[[watch.channel]] #1" in done.stderr


def test_watch_with_nothing_to_watch_says_so(tmp_path: Path) -> None:
    done = mtasts("watch", "once", cwd=tmp_path)
    assert done.returncode == 2
    assert "nothing to watch" in done.stderr


def test_watch_mails_a_digest_through_real_submission_into_a_real_mailbox(
    tmp_path: Path, watch_lab: RunningLab, submission: dict[str, Any], dovecot: dict[str, Any]
) -> None:
    """STARTTLS and SASL on a private Postfix, delivered into Dovecot, read back over IMAP."""
    import imaplib
    import ssl
    from email import message_from_bytes, policy

    (tmp_path / "partners.txt").write_text("good-testing.example\nexpired-mx.example\n")
    (tmp_path / "smtp.password").write_text(str(submission["password"]))
    (tmp_path / "mtasts.toml").write_text(f"""
[watch]
partners = ["partners.txt"]
lab = "{watch_lab.state_dir}"
timeout = 3

[[watch.channel]]
name = "postmaster"
type = "email"
host = "127.0.0.1"
port = {submission["port"]}
username = "{submission["user"]}"
password_file = "smtp.password"
ca_file = "{submission["ca_file"]}"
from = "mtasts@watch.test"
to = ["postmaster@watch.test"]
digest = "run"
""")
    assert once(tmp_path) == (0, [])
    change(watch_lab, "good-testing.example", "--mode", "none")
    change(watch_lab, "expired-mx.example", "--mode", "testing")
    _, downgraded = once(tmp_path)
    _, dropped = once(tmp_path)  # a partner's policy that disappears is confirmed by a second run
    assert [e["code"] for e in downgraded] == ["partner-downgraded"]
    assert [e["code"] for e in dropped] == ["partner-dropped"]
    change(watch_lab, "good-testing.example", "--mode", "testing")
    change(watch_lab, "expired-mx.example", "--mode", "enforce")
    codes = sorted(
        e["code"]
        for e in json.loads(mtasts("watch", "events", "--json", cwd=tmp_path, check=True).stdout)[
            "events"
        ]
    )
    assert codes == ["partner-downgraded", "partner-dropped"]

    context = ssl.create_default_context(cafile=str(dovecot["ca_file"]))
    deadline = time.monotonic() + 60
    while True:
        with imaplib.IMAP4(dovecot["host"], dovecot["port"]) as imap:
            imap.starttls(context)
            imap.login("alerts", "alerts-secret-2")
            imap.select("INBOX")
            _, found = imap.search(None, "ALL")
            numbers = found[0].split()
            if numbers or time.monotonic() > deadline:
                assert numbers, (
                    f"nothing arrived; Postfix said: {submission['maillog'].read_text()[-2000:]}"
                )
                messages = []
                for number in numbers:
                    _, data = imap.fetch(number, "(RFC822)")
                    messages.append(message_from_bytes(data[0][1], policy=policy.default))
                break
        time.sleep(0.5)
    # digest = "run": one mail per pass that had events, each with its events as JSON too
    bodies = sorted(m.get_body(("plain",)).get_content() for m in messages)
    assert len(bodies) == 2
    assert "partner-downgraded" in bodies[0]
    assert "expired-mx.example" in bodies[0]
    assert "partner-dropped" in bodies[1]
    assert all(m["Auto-Submitted"] == "auto-generated" for m in messages)
    attached = [json.loads(next(m.iter_attachments()).get_content()) for m in messages]
    assert sorted(e["code"] for a in attached for e in a["events"]) == codes
    maillog = submission["maillog"].read_text()
    assert (
        "sasl_username=alerts" in maillog
    )  # authenticated, over the STARTTLS the channel asked for
    (channel,) = json.loads(mtasts("watch", "channels", "--json", cwd=tmp_path, check=True).stdout)[
        "channels"
    ]
    assert (channel["sent"], channel["pending"]) == (2, 0)


def test_watch_reads_the_reports_in_the_store(tmp_path: Path, watch_lab: RunningLab) -> None:
    """Three weeks of the lab's reports are history; a new sender's failures the next day are news."""
    import datetime as dt

    (tmp_path / "mtasts.toml").write_text(
        f'[watch]\npartners = ["partners.txt"]\nlab = "{watch_lab.state_dir}"\ntimeout = 3\n'
    )
    (tmp_path / "partners.txt").write_text("placeholder.example\n")
    mtasts(
        "init",
        OWN,
        "--mx",
        "mx1.good-enforce.example",
        "--mx",
        "mx2.good-enforce.example",
        cwd=tmp_path,
        check=True,
    )
    mtasts(
        "lab",
        "reports",
        "--state-dir",
        str(watch_lab.state_dir),
        "--out",
        "mail",
        cwd=tmp_path,
        check=True,
    )
    mtasts("reports", "ingest", "mail", cwd=tmp_path, check=True)
    assert once(tmp_path)[1] == []  # the first look at a store: history, not news
    status = json.loads(mtasts("watch", "status", "--json", cwd=tmp_path, check=True).stdout)
    before = next(d for d in status["domains"] if d["domain"] == OWN)["readiness"]
    assert before in ("READY", "NOT READY", "UNKNOWN")

    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    report = {
        "organization-name": "Tardy Sender",
        "date-range": {
            "start-datetime": f"{yesterday}T00:00:00Z",
            "end-datetime": f"{yesterday}T23:59:59Z",
        },
        "contact-info": "tlsrpt@tardy-sender.example",
        "report-id": f"{yesterday}-tardy",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-domain": OWN,
                    "mx-host": ["mx1.good-enforce.example"],
                },
                "summary": {
                    "total-successful-session-count": 50,
                    "total-failure-session-count": 40,
                },
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": "198.51.100.7",
                        "receiving-mx-hostname": "mx1.good-enforce.example",
                        "failed-session-count": 40,
                    }
                ],
            }
        ],
    }
    (tmp_path / "tardy.json").write_text(json.dumps(report))
    mtasts("reports", "ingest", "tardy.json", cwd=tmp_path, check=True)
    _, events = once(tmp_path)
    found = {(e["code"], e["subject"]) for e in events}
    assert ("new-failure-type", "tardy sender") in found
    new_type = next(e for e in events if e["code"] == "new-failure-type")
    assert new_type["after"] == "certificate-expired"
    if before != "NOT READY":
        readiness = next(e for e in events if e["code"] == "readiness-changed")
        assert (readiness["before"], readiness["after"]) == (before, "NOT READY")
    assert once(tmp_path)[1] == []  # said once


def test_slack_text_cannot_mention_or_link(tmp_path: Path) -> None:
    """A stranger's MX name like '<!channel>' arrives as text, not as a mention of everyone."""
    import datetime as dt

    from mtasts.check.findings import Severity
    from mtasts.watch.channels import DeliveryError, send_slack
    from mtasts.watch.config import Channel
    from mtasts.watch.events import Event, EventCode

    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if len(received) == 1 else 500)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port(44)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        channel = Channel("chat", "slack", url=f"http://127.0.0.1:{port(44)}/hook")
        event = Event(
            EventCode.MX_CHANGED,
            "example.com",
            "<!channel> <http://evil.example|click>",
            Severity.WARNING,
            dt.datetime.now(dt.UTC),
            "MX hosts a -> b & c",
        )
        send_slack(channel, [event])
        with pytest.raises(DeliveryError, match="answered 500"):
            send_slack(channel, [event])  # only a 2xx counts as delivered
    finally:
        server.shutdown()
    text = received[0]["text"]
    assert received[0]["mrkdwn"] is False
    assert "&lt;!channel&gt;" in text
    assert "<" not in text
    assert "b &amp; c" in text
