"""The resolver proven with a real Postfix: enforce delivers over verified TLS or defers.

The stage (``mtasts.lab.sender``) is a network namespace with the lab on standard
ports, the resolver, and a private Postfix whose smtp_tls_policy_maps is the resolver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mtasts.lab.scenario import builtin_scenarios
from mtasts.lab.sender import PostfixStage, unavailable

from .conftest import MTASTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postfix_lab() -> Iterator[PostfixStage]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with PostfixStage(builtin_scenarios()["postfix"], MTASTS) as stage:
        yield stage


def test_enforce_with_healthy_mx_delivers_over_verified_tls(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-good.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-good.example")
    assert "Verified TLS connection established to mx.pf-good.example" in postfix_lab.maillog()
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-good.example>"]]
    assert arrived[0]["tls"] is True


def test_enforce_with_wrong_certificate_is_deferred(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-badcert.example")
    line = postfix_lab.outcome("bob@pf-badcert.example")
    assert "status=deferred (Server certificate not verified)" in line
    assert not [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-badcert.example>"]]


def test_stripping_attacker_defeated_by_enforce_but_not_without_policy(
    postfix_lab: PostfixStage,
) -> None:
    postfix_lab.send("bob@pf-stripped.example")
    postfix_lab.send("bob@pf-nopolicy.example")
    stripped = postfix_lab.outcome("bob@pf-stripped.example")
    assert (
        "status=deferred (TLS is required, but was not offered by host mx.pf-stripped.example"
        in stripped
    )
    # The attack the article describes: without a policy the mail goes through in plaintext.
    assert "status=sent" in postfix_lab.outcome("bob@pf-nopolicy.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-nopolicy.example>"]]
    assert arrived[0]["tls"] is False


def test_testing_domain_receives_mail_despite_the_failure(postfix_lab: PostfixStage) -> None:
    postfix_lab.send("bob@pf-testing.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-testing.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-testing.example>"]]
    assert arrived


BROKEN = ("pf-badcert.example", "pf-stripped.example", "pf-testing.example", "pf-nopolicy.example")


def test_reports_go_from_postfix_log_to_the_rua_mailbox_and_readiness(
    postfix_lab: PostfixStage,
) -> None:
    """The whole loop: Postfix 3.7 sends through the resolver; `tlsrpt collect` reads its log
    and the resolver's answers; `tlsrpt send` mails DKIM-signed reports through Postfix to the
    lab domains' rua mailboxes; `reports ingest` verifies and stores them; readiness judges."""
    import datetime as dt
    import json

    domains = ("pf-good.example", *BROKEN)
    for domain in domains:
        postfix_lab.send(f"loop@{domain}")
    for domain in domains:
        postfix_lab.outcome(f"loop@{domain}")
    root = postfix_lab.root
    lab = str(root / "lab")
    common = postfix_lab.reporter(f"sqlite:///{root}/reporter.sqlite")
    collected = postfix_lab.collect("--json", *common)
    assert collected.returncode == 0, collected.stderr
    today = dt.datetime.now(dt.UTC).date().isoformat()
    dry = postfix_lab.mtasts_inside(
        "tlsrpt", "send", "--dry-run", "--out", str(root / "dry"), "--day", today, *common
    )
    assert dry.returncode == 0, dry.stderr
    built = {
        r["policies"][0]["policy"]["policy-domain"]: r["policies"][0]
        for r in (json.loads(p.read_text()) for p in (root / "dry").glob("*.json"))
    }
    # The resolver's answer log says which policy Postfix applied to each session.
    assert built["pf-good.example"]["policy"]["policy-type"] == "sts"
    assert "mode: enforce" in built["pf-good.example"]["policy"]["policy-string"]
    assert built["pf-good.example"]["policy"]["mx-host"] == "mx.pf-good.example"
    assert built["pf-nopolicy.example"]["policy"]["policy-type"] == "no-policy-found"
    sent = postfix_lab.mtasts_inside(
        "tlsrpt", "send", "--day", today, "--partial-day", "--json", *common
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout)["sent"] == len(domains)
    received = f"sqlite:///{root}/received.sqlite"
    verdicts = {}
    for domain in domains:
        ingested = postfix_lab.ingest_mailbox(domain, received)
        assert "stored 1" in ingested.stdout, ingested.stdout + ingested.stderr
        verdicts[domain] = postfix_lab.mtasts_inside(
            "reports", "readiness", domain, "--db", received
        )
    # The lab's DNS holds sender.example's key: the signature verified on receipt.
    assert all("senders vouched for: sender.example" in v.stdout for v in verdicts.values())
    assert "NOT READY" not in verdicts["pf-good.example"].stdout
    for domain in BROKEN:
        assert "NOT READY" in verdicts[domain].stdout, verdicts[domain].stdout
    for domain in ("pf-badcert.example", "pf-stripped.example", "pf-testing.example"):
        checked = postfix_lab.mtasts_inside("check", domain, "--lab", lab, "--json")
        codes = {f["code"] for f in json.loads(checked.stdout)["findings"]}
        reported = codes & {"certificate-host-mismatch", "starttls-not-supported"}
        assert reported, (domain, codes)
        assert all(code in verdicts[domain].stdout for code in reported), (
            domain,
            codes,
            verdicts[domain].stdout,
        )
    # Our own report mail crossed the log too, and was not counted in the next report.
    again = postfix_lab.collect("--json", *common)
    assert json.loads(again.stdout)["sessions"] == 0
