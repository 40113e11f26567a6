"""DANE against real DNSSEC: Knot signs dane.example, Unbound validates it, the engine decides."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

from mtasts.net.dns import Nameserver, Resolver
from mtasts.net.https import PolicyFetch
from mtasts.resolver import engine as engine_module
from mtasts.resolver import postfix
from mtasts.resolver.answers import AnswerLog
from mtasts.resolver.engine import EngineOptions, PolicyEngine
from mtasts.resolver.postfix import policy_reply
from mtasts.resolver.server import ReplySettings, ResolverService
from mtasts.resolver.store import PolicyStore

from .conftest import MTASTS

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: *.dane.example\r\nmax_age: 86400\r\n"


def _policy_host_answers(monkeypatch: Any) -> None:
    """The policy fetch answers POLICY: HTTPS is not under test here; DNS and DNSSEC are."""

    async def fetch(*_args: object, **_kw: object) -> PolicyFetch:
        return PolicyFetch(
            "https://mta-sts.dane.example/.well-known/mta-sts.txt",
            "192.0.2.9",
            200,
            "text/plain",
            POLICY,
        )

    monkeypatch.setattr(engine_module, "fetch_policy", fetch)


def test_only_a_validating_resolver_marks_the_signed_tlsa_authentic(
    validating_resolver: dict[str, str],
) -> None:
    async def ask(server: str) -> tuple[bool, bool]:
        answer = await Resolver((Nameserver.parse(server),), timeout=5).lookup(
            "_25._tcp.mx1.dane.example", "TLSA"
        )
        return bool(answer.records), answer.authenticated

    assert asyncio.run(ask(validating_resolver["nameserver"])) == (True, True)
    # The authoritative server holds the same signed records, but only a validator sets AD.
    assert asyncio.run(ask(validating_resolver["authoritative"])) == (True, False)


def test_dane_answers_only_when_every_mx_has_signed_tlsa(
    validating_resolver: dict[str, str], monkeypatch: Any
) -> None:
    _policy_host_answers(monkeypatch)
    resolver = Resolver((Nameserver.parse(validating_resolver["nameserver"]),), timeout=5)
    # The validating Unbound is on loopback: its AD bit is trusted (RFC 7672 §2).
    engine = PolicyEngine(resolver, PolicyStore(None), EngineOptions(trust_ad=True))

    async def both() -> tuple[Any, Any]:
        return await engine.lookup("full.dane.example"), await engine.lookup("partial.dane.example")

    full, partial = asyncio.run(both())
    assert full.dane is True
    # An enforce policy fails closed: Postfix's "dane" would fall back to opportunistic TLS.
    assert policy_reply(full.cached, postfix.TestingAnswer.NONE, dane=full.dane) == "dane-only"
    # mx3 has no TLSA: Postfix's answer covers the whole domain, so MTA-STS stays in charge.
    assert partial.dane is False
    assert policy_reply(partial.cached, postfix.TestingAnswer.NONE, dane=partial.dane).startswith(
        "secure match="
    )


def test_check_says_which_tlsa_records_dnssec_validates(
    validating_resolver: dict[str, str],
) -> None:
    import json
    import os
    import subprocess

    from .conftest import MTASTS

    def check(server: str) -> dict[str, Any]:
        out = subprocess.run(
            [
                MTASTS,
                "check",
                "--nameserver",
                server,
                "--timeout",
                "2",
                "--json",
                "partial.dane.example",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=60,
        )
        document: dict[str, Any] = json.loads(out.stdout)
        return document

    validated = check(validating_resolver["nameserver"])
    assert [(m["host"], m["tlsa"], m["tlsa_validated"]) for m in validated["mx"]] == [
        ("mx1.dane.example", True, True),
        ("mx3.dane.example", False, False),
    ]
    dane = [f["message"] for f in validated["findings"] if f["code"] == "dane-tlsa"]
    assert dane == [
        "_25._tcp.mx1.dane.example publishes TLSA records, DNSSEC-validated by the resolver used: DANE senders verify this MX with them"
    ]
    # Asked straight at the authoritative server, nothing validates the same records.
    unvalidated = check(validating_resolver["authoritative"])
    assert [m["tlsa_validated"] for m in unvalidated["mx"]] == [False, False]


def test_dane_questions_wait_for_a_server_that_validates(
    validating_resolver: dict[str, str], monkeypatch: Any
) -> None:
    """The authoritative Knot never sets AD: the engine asks it no MX or TLSA question.
    Unbound cannot validate the root here (it has no root trust anchor), so its probe says
    no, yet its first validated answer (the signed _mta-sts TXT) turns DANE on."""

    _policy_host_answers(monkeypatch)

    async def run(server: str) -> tuple[bool, bool, list[str], str]:
        resolver = Resolver((Nameserver.parse(server),), timeout=5)
        probed = await resolver.probe_validation()
        asked: list[str] = []
        real = resolver.lookup

        async def lookup(name: str, rdtype: str) -> Any:
            asked.append(rdtype)
            return await real(name, rdtype)

        resolver.lookup = lookup  # type: ignore[method-assign]
        engine = PolicyEngine(resolver, PolicyStore(None), EngineOptions(trust_ad=True))
        dane = (await engine.lookup("full.dane.example")).dane
        gauge = next(
            line
            for line in ResolverService(engine, ReplySettings()).metrics().splitlines()
            if line.startswith("mtasts_resolver_dane_questions ")
        )
        return probed, dane, asked, gauge

    probed, dane, asked, gauge = asyncio.run(run(validating_resolver["authoritative"]))
    assert (probed, dane) == (False, False)
    assert gauge == "mtasts_resolver_dane_questions 0"
    assert set(asked) == {"TXT", "A"}  # the record, and (at once) the policy host's address
    probed, dane, asked, gauge = asyncio.run(run(validating_resolver["nameserver"]))
    assert (probed, dane) == (False, True)
    assert gauge == "mtasts_resolver_dane_questions 1"
    assert {"TXT", "A", "MX", "TLSA"} == set(asked)


def test_sessions_under_dane_are_reported_with_the_mx_hosts_tlsa_records(
    validating_resolver: dict[str, str], monkeypatch: Any, tmp_path: Path
) -> None:
    """The resolver's DANE answer reaches the report: RFC 8460 §4.4 policy-type tlsa, the
    MX host as policy domain (its TLSA base domain), its records as the policy strings,
    and a certificate no TLSA record matches as tlsa-invalid (§4.3.2.1), not no-policy-found."""

    _policy_host_answers(monkeypatch)
    answers = tmp_path / "answers.sqlite"
    resolver = Resolver((Nameserver.parse(validating_resolver["nameserver"]),), timeout=5)
    engine = PolicyEngine(
        resolver, PolicyStore(None), EngineOptions(trust_ad=True), answers=AnswerLog(answers)
    )
    assert asyncio.run(engine.lookup("full.dane.example")).dane is True
    # What Postfix 3.7 logs for one verified DANE session and one whose certificate no
    # TLSA record matched (OpenSSL's X509_V_ERR_DANE_NO_MATCH, 65), a second after.
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    stamp = at.isoformat(timespec="microseconds")
    smtp = f"{stamp} sender postfix/smtp"
    (tmp_path / "maillog").write_text(
        f"{smtp}[301]: Verified TLS connection established to mx1.dane.example[127.0.0.81]:25:"
        " TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
        f"{smtp}[301]: AB12: to=<bob@full.dane.example>, relay=mx1.dane.example[127.0.0.81]:25,"
        " delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)\n"
        f"{smtp}[302]: server certificate verification failed for"
        " mx2.dane.example[127.0.0.82]:25: num=65:No matching DANE TLSA records\n"
        f"{smtp}[302]: CD34: to=<carol@full.dane.example>, relay=mx2.dane.example[127.0.0.82]:25,"
        " delay=0.1, delays=0/0/0.1/0, dsn=4.7.5, status=deferred (Server certificate not verified)\n"
    )
    config = tmp_path / "mtasts.toml"
    config.write_text(
        '[tlsrpt]\norganization = "Sender Example"\ncontact = "mailto:postmaster@sender.example"\n'
        "confirm = false\n"
    )
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    common = ("--db", db, "--config", str(config))

    def mtasts(*args: str) -> str:
        done = subprocess.run([MTASTS, *args, *common], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    collect = ("tlsrpt", "collect", "--log", str(tmp_path / "maillog"), "--answers", str(answers))
    assert json.loads(mtasts(*collect, "--once", "--json"))["sessions"] == 2
    mtasts(
        "tlsrpt",
        "send",
        "--dry-run",
        "--out",
        str(tmp_path / "out"),
        "--day",
        at.date().isoformat(),
    )
    # RFC 8460 §3: a report goes to its policy domain, here each MX host (which publishes
    # the TLSA records, so owns what they cause), as Postfix's own libtlsrpt datagrams say.
    reports = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    policies = {r["policies"][0]["policy"]["policy-domain"]: r["policies"][0] for r in reports}
    assert sorted(policies) == ["mx1.dane.example", "mx2.dane.example"]
    tlsa = "3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"
    assert policies["mx1.dane.example"]["policy"] == {
        "policy-type": "tlsa",
        "policy-string": [tlsa],
        "policy-domain": "mx1.dane.example",
    }
    assert policies["mx1.dane.example"]["summary"]["total-successful-session-count"] == 1
    failed = policies["mx2.dane.example"]
    assert failed["policy"]["policy-type"] == "tlsa"
    assert failed["failure-details"][0]["result-type"] == "tlsa-invalid"
    assert failed["failure-details"][0]["failure-reason-code"] == "No matching DANE TLSA records"
