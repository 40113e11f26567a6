"""DANE against real DNSSEC: Knot signs dane.example, Unbound validates it, the engine decides."""

from __future__ import annotations

import asyncio
from typing import Any

from mtasts.net.dns import Nameserver, Resolver
from mtasts.net.https import PolicyFetch
from mtasts.resolver import engine as engine_module
from mtasts.resolver import postfix
from mtasts.resolver.engine import EngineOptions, PolicyEngine
from mtasts.resolver.postfix import policy_reply
from mtasts.resolver.store import PolicyStore

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: *.dane.example\r\nmax_age: 86400\r\n"


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
    async def fetch(*_args: object, **_kw: object) -> PolicyFetch:
        # HTTPS is not under test here; DNS and DNSSEC are.
        return PolicyFetch(
            "https://mta-sts.dane.example/.well-known/mta-sts.txt",
            "192.0.2.9",
            200,
            "text/plain",
            POLICY,
        )

    monkeypatch.setattr(engine_module, "fetch_policy", fetch)
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

    async def fetch(*_args: object, **_kw: object) -> PolicyFetch:
        return PolicyFetch(
            "https://mta-sts.dane.example/.well-known/mta-sts.txt",
            "192.0.2.9",
            200,
            "text/plain",
            POLICY,
        )

    monkeypatch.setattr(engine_module, "fetch_policy", fetch)

    async def run(server: str) -> tuple[bool, bool, list[str]]:
        resolver = Resolver((Nameserver.parse(server),), timeout=5)
        probed = await resolver.probe_validation()
        asked: list[str] = []
        real = resolver.lookup

        async def lookup(name: str, rdtype: str) -> Any:
            asked.append(rdtype)
            return await real(name, rdtype)

        resolver.lookup = lookup  # type: ignore[method-assign]
        engine = PolicyEngine(resolver, PolicyStore(None), EngineOptions(trust_ad=True))
        return probed, (await engine.lookup("full.dane.example")).dane, asked

    assert asyncio.run(run(validating_resolver["authoritative"])) == (False, False, ["TXT"])
    probed, dane, asked = asyncio.run(run(validating_resolver["nameserver"]))
    assert (probed, dane) == (False, True)
    assert asked[0] == "TXT"
    assert {"MX", "TLSA"} <= set(asked)
