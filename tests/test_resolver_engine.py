"""The engine's decisions that the lab cannot stage: DNSSEC-signed TLSA (DANE) and the clock."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from mtasts.net.dns import Answer
from mtasts.net.https import PolicyFetch
from mtasts.resolver import engine as engine_module
from mtasts.resolver import postfix
from mtasts.resolver.engine import EngineOptions, PolicyEngine
from mtasts.resolver.postfix import policy_reply
from mtasts.resolver.server import ReplySettings, ResolverService, SocketmapProtocol
from mtasts.resolver.store import PolicyStore
from mtasts.sts import Mode

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: mx2.example.net\r\nmax_age: 86400\r\n"


class FakeResolver:
    """Answers from a table: ``tlsa`` says which TLSA owners a validating resolver marks AD,
    ``signed_mx`` whether it marks the MX list AD too."""

    def __init__(self, tlsa: dict[str, bool], signed_mx: bool = True) -> None:
        self.tlsa = tlsa
        self.signed_mx = signed_mx
        self.validates = True  # as a validating resolver once it has set an AD bit
        self.asked: list[tuple[str, str]] = []

    async def txt(self, name: str) -> list[list[bytes]]:
        return [[b"v=STSv1; id=20260101T000000;"]] if name == "_mta-sts.example.net" else []

    async def lookup(self, name: str, rdtype: str) -> Answer:
        self.asked.append((name, rdtype))
        if rdtype == "MX":
            mx = ((10, "mx1.example.net"), (20, "mx2.example.net"))
            return Answer(("10 mx1.example.net.", "20 mx2.example.net."), None, self.signed_mx, mx)
        if rdtype == "TLSA" and name in self.tlsa:
            return Answer(("3 1 1 00",), None, self.tlsa[name])
        return Answer()


def engine_with(
    tlsa: dict[str, bool], monkeypatch: Any, clock: list[float], trust_ad: bool = True
) -> PolicyEngine:
    async def fetch(*_args: object, **_kw: object) -> PolicyFetch:
        return PolicyFetch(
            "https://mta-sts.example.net/.well-known/mta-sts.txt",
            "192.0.2.1",
            200,
            "text/plain",
            POLICY,
        )

    monkeypatch.setattr(engine_module, "fetch_policy", fetch)
    return PolicyEngine(
        FakeResolver(tlsa),
        PolicyStore(None),
        EngineOptions(trust_ad=trust_ad),
        clock=lambda: clock[0],
    )  # type: ignore[arg-type]


def test_signed_tlsa_on_every_mx_defers_to_dane(monkeypatch: Any) -> None:
    clock = [1000.0]
    signed = {"_25._tcp.mx1.example.net": True, "_25._tcp.mx2.example.net": True}
    lookup = asyncio.run(engine_with(signed, monkeypatch, clock).lookup("example.net"))
    assert lookup.dane is True
    # Security review #16: "dane" falls back to opportunistic TLS when Postfix's own TLSA
    # lookup finds nothing secure; under an enforce policy the answer fails closed.
    assert policy_reply(lookup.cached, postfix.TestingAnswer.NONE, dane=lookup.dane) == "dane-only"
    testing = dataclasses.replace(
        lookup.cached, policy=dataclasses.replace(lookup.cached.policy, mode=Mode.TESTING)
    )
    assert policy_reply(testing, postfix.TestingAnswer.NONE, dane=True) == "dane"
    assert policy_reply(testing, postfix.TestingAnswer.SECURE, dane=True) == "dane-only"


def test_the_ad_bit_counts_only_from_a_trusted_resolver(monkeypatch: Any) -> None:
    """A forged AD bit from a remote resolver must not turn enforce into opportunistic TLS."""
    clock = [1000.0]
    signed = {"_25._tcp.mx1.example.net": True, "_25._tcp.mx2.example.net": True}
    lookup = asyncio.run(
        engine_with(signed, monkeypatch, clock, trust_ad=False).lookup("example.net")
    )
    assert lookup.dane is False
    assert policy_reply(lookup.cached, postfix.TestingAnswer.NONE, dane=lookup.dane).startswith(
        "secure match="
    )


def test_an_mx_list_dnssec_did_not_validate_asks_no_tlsa(monkeypatch: Any) -> None:
    """RFC 7672 §2.2.1: DANE for MX hosts from an insecure MX RRset is optional; the
    engine does without it, and without its TLSA questions, which is nearly every domain."""
    signed = {"_25._tcp.mx1.example.net": True, "_25._tcp.mx2.example.net": True}
    engine = engine_with(signed, monkeypatch, [1000.0])
    resolver = FakeResolver(signed, signed_mx=False)
    engine.resolver = resolver  # type: ignore[assignment]
    lookup = asyncio.run(engine.lookup("example.net"))
    assert lookup.dane is False
    assert policy_reply(lookup.cached, postfix.TestingAnswer.NONE).startswith("secure match=")
    assert ("example.net", "MX") in resolver.asked
    assert not [q for q in resolver.asked if q[1] == "TLSA"]


def test_a_dns_server_that_never_validated_is_asked_no_dane_questions(monkeypatch: Any) -> None:
    """Issue #16: without an AD bit from the server, no MX list can be secure (RFC 7672
    §2.2.1), so the MX and TLSA questions are skipped, not asked and found insecure."""
    signed = {"_25._tcp.mx1.example.net": True, "_25._tcp.mx2.example.net": True}
    engine = engine_with(signed, monkeypatch, [1000.0])
    resolver = FakeResolver(signed)
    resolver.validates = False
    engine.resolver = resolver  # type: ignore[assignment]
    lookup = asyncio.run(engine.lookup("example.net"))
    assert lookup.dane is False
    assert lookup.source == "fetched"
    assert not [q for q in resolver.asked if q[1] in ("MX", "TLSA")]


def test_unsigned_or_partial_tlsa_keeps_the_mta_sts_answer(monkeypatch: Any) -> None:
    clock = [1000.0]
    for tlsa in (
        {"_25._tcp.mx1.example.net": False, "_25._tcp.mx2.example.net": False},
        {"_25._tcp.mx1.example.net": True},
    ):
        lookup = asyncio.run(engine_with(tlsa, monkeypatch, clock).lookup("example.net"))
        assert lookup.dane is False
        assert policy_reply(lookup.cached, postfix.TestingAnswer.NONE, dane=lookup.dane) == (
            "secure match=mx1.example.net:mx2.example.net servername=hostname"
        )


def test_answers_come_from_memory_within_grace_and_are_rechecked_after(monkeypatch: Any) -> None:
    clock = [1000.0]
    engine = engine_with({}, monkeypatch, clock)
    assert asyncio.run(engine.lookup("example.net")).source == "fetched"
    clock[0] += 30
    assert engine.remembered("example.net") is not None
    clock[0] += 31
    assert engine.remembered("example.net") is None
    assert asyncio.run(engine.lookup("example.net")).source == "cache"  # same id: no refetch


def test_an_smtputf8_domain_is_looked_up_by_its_a_label(monkeypatch: Any) -> None:
    asked: list[str] = []

    class Recording(FakeResolver):
        async def txt(self, name: str) -> list[list[bytes]]:
            asked.append(name)
            return await super().txt(name)

    engine = engine_with({}, monkeypatch, [1000.0])
    engine.resolver = Recording({})  # type: ignore[assignment]
    lookup = asyncio.run(engine.lookup("Bücher.Example."))
    assert asked == ["_mta-sts.xn--bcher-kva.example"]
    assert lookup.domain == "xn--bcher-kva.example"


class _Wire(asyncio.Transport):
    """What a socketmap connection writes back, reply by reply."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[bytes] = []

    def write(self, data: Any) -> None:
        self.replies.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def _ask(protocol: SocketmapProtocol, wire: _Wire, domain: str) -> bytes:
    """One request as Postfix sends it (a read of exactly one netstring) and its reply."""
    before = len(wire.replies)
    protocol.data_received(postfix.netstring(f"policy {domain}"))
    while len(wire.replies) == before:
        await asyncio.sleep(0)
    return wire.replies[-1]


SECURE = postfix.netstring("OK secure match=mx1.example.net:mx2.example.net servername=hostname")
NOTFOUND = postfix.netstring("NOTFOUND ")


def test_a_prepared_reply_stands_only_while_its_answer_does(monkeypatch: Any) -> None:
    """The cached path answers from ready-made bytes; a new answer, the end of the grace
    period, a reload or the domain leaving memory each retire them."""
    clock = [1000.0]
    policy = [POLICY]
    engine = engine_with({}, monkeypatch, clock, trust_ad=False)

    async def fetch(*_args: object, **_kw: object) -> PolicyFetch:
        url = "https://mta-sts.example.net/.well-known/mta-sts.txt"
        return PolicyFetch(url, "192.0.2.1", 200, "text/plain", policy[0])

    async def txt(name: str) -> list[list[bytes]]:
        return [[b"v=STSv1; id=20260202T000000;"]] if name == "_mta-sts.example.net" else []

    monkeypatch.setattr(engine_module, "fetch_policy", fetch)
    service = ResolverService(engine, ReplySettings())
    formatted: list[str] = []  # requests whose reply was decoded and formatted
    answer_now = service.answer_now

    def counting(frame: bytes, zone: str, key: str) -> bytes | None:
        formatted.append(key)
        return answer_now(frame, zone, key)

    service.answer_now = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        wire = _Wire()
        protocol = SocketmapProtocol(service)
        protocol.connection_made(wire)
        try:
            assert await _ask(protocol, wire, "example.net") == SECURE  # fetched
            memory = engine.metrics.lookups["memory"]
            assert await _ask(protocol, wire, "example.net") == SECURE  # formatted, prepared
            assert await _ask(protocol, wire, "example.net") == SECURE  # the prepared bytes
            assert engine.metrics.lookups["memory"] == memory + 2
            assert service.requests["ok"] == 3
            assert formatted == ["example.net"] * 2  # the third came from the prepared bytes

            # The domain moves to testing under a new id; within the grace period the old
            # answer stands (RFC 8461 §5.1 checks the record, not every mail), after it not.
            policy[0] = POLICY.replace(b"mode: enforce", b"mode: testing")
            engine.resolver.txt = txt  # type: ignore[method-assign]
            clock[0] += 59
            assert await _ask(protocol, wire, "example.net") == SECURE
            clock[0] += 2
            assert await _ask(protocol, wire, "example.net") == NOTFOUND
            assert await _ask(protocol, wire, "example.net") == NOTFOUND

            # A reload that maps testing to "secure" applies at the next request.
            service.reconfigure(ReplySettings(testing=postfix.TestingAnswer.SECURE), {})
            assert await _ask(protocol, wire, "example.net") == SECURE

            # The domain leaves memory (max_domains): its prepared reply goes with it, so
            # the next request asks DNS again and sees the policy that replaced it.
            engine.options = dataclasses.replace(engine.options, max_domains=1)
            assert await _ask(protocol, wire, "other.example") == NOTFOUND
            assert engine.remembered("example.net") is None
            policy[0] = POLICY.replace(b"mx2.example.net", b"mx3.example.net")
            engine.resolver.txt = FakeResolver({}).txt  # type: ignore[method-assign]
            assert await _ask(protocol, wire, "example.net") == SECURE.replace(b"mx2", b"mx3")
        finally:
            protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_new_domains_record_and_policy_host_are_asked_at_once(monkeypatch: Any) -> None:
    """Issue #16: independent DNS questions in parallel. The TXT answer here waits until
    the policy host's A question has been asked: asked one after the other, it never comes."""
    engine = engine_with({}, monkeypatch, [1000.0])
    resolver = FakeResolver({})
    address_asked = asyncio.Event()
    plain_txt = resolver.txt
    plain_lookup = resolver.lookup

    async def txt(name: str) -> list[list[bytes]]:
        await address_asked.wait()
        return await plain_txt(name)

    async def lookup(name: str, rdtype: str) -> Answer:
        if (name, rdtype) == ("mta-sts.example.net", "A"):
            address_asked.set()
        return await plain_lookup(name, rdtype)

    resolver.txt = txt  # type: ignore[method-assign]
    resolver.lookup = lookup  # type: ignore[method-assign]
    engine.resolver = resolver  # type: ignore[assignment]

    async def guarded() -> Any:
        return await asyncio.wait_for(engine.lookup("example.net"), 5)  # not a deadlock

    assert asyncio.run(guarded()).source == "fetched"
    assert ("mta-sts.example.net", "A") in resolver.asked
