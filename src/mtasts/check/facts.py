"""What a check observed, before any judgement: immutable, serialisable, versioned.

:func:`mtasts.check.gather.gather` fills a :class:`DomainFacts` from DNS, the
policy host (every address) and every address of every MX; the pure
:func:`mtasts.check.judge.judge` turns it into findings. Facts are stored by
``watch`` and ``scan`` and can be judged again later by a corrected rule
(``mtasts check --from-facts FILE``).

The JSON form (``to_dict``/``from_dict``) is documented in ``docs/facts.md``;
``version`` changes only when a field changes meaning or goes away.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mtasts.errors import MtastsError
from mtasts.net.https import PolicyFetch
from mtasts.net.smtp import SmtpProbe
from mtasts.net.tls import Leaf, Trust

FACTS_VERSION = 1


class FactsError(MtastsError, ValueError):
    """A facts document is not one this version can read; the message names the field."""


@dataclass(frozen=True, slots=True)
class TxtFacts:
    """The TXT records at a name, each as its strings (decoded as UTF-8, errors replaced as
    RFC 8461 §3.1 parsers do), or why the lookup failed."""

    records: tuple[tuple[str, ...], ...] = ()
    error: str | None = None

    @classmethod
    def from_wire(cls, records: Iterable[Iterable[bytes]]) -> TxtFacts:
        return cls(tuple(tuple(s.decode("utf-8", "replace") for s in r) for r in records))

    @property
    def texts(self) -> list[str]:
        return ["".join(r) for r in self.records]


@dataclass(frozen=True, slots=True)
class AddressFacts:
    address: str
    probes: tuple[SmtpProbe, ...]


@dataclass(frozen=True, slots=True)
class MxFacts:
    host: str
    preference: int
    cname: str | None = None
    tlsa: bool = False
    tlsa_validated: bool = False  # the resolver set AD: DNSSEC-signed, so DANE senders use it
    dns_error: str | None = None
    addresses: tuple[AddressFacts, ...] = ()
    addresses_skipped: int = 0  # past the probe limit: not probed


@dataclass(frozen=True, slots=True)
class DomainFacts:
    domain: str
    observed_at: dt.datetime
    sts_txt: TxtFacts
    tlsrpt_txt: TxtFacts
    domain_exists: bool = True  # False: NXDOMAIN for the domain itself
    mx_error: str | None = None
    mx_listed: int = 0  # MX records DNS listed
    mx_skipped: int = 0  # the least preferred, past the limit: not checked
    mx: tuple[MxFacts, ...] = ()
    # One fetch per address of mta-sts.<domain>; empty when no record invited a fetch.
    policy: tuple[PolicyFetch, ...] = ()
    # The gatherer itself stopped (an mtasts bug or input it did not expect): the facts
    # above are incomplete, and the judge says so instead of judging them.
    gather_error: str | None = None
    version: int = FACTS_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "domain": self.domain,
            "observed_at": self.observed_at.isoformat(),
            "domain_exists": self.domain_exists,
            "sts_txt": _txt(self.sts_txt),
            "tlsrpt_txt": _txt(self.tlsrpt_txt),
            "mx_error": self.mx_error,
            "mx_listed": self.mx_listed,
            "mx_skipped": self.mx_skipped,
            "mx": [_mx(m) for m in self.mx],
            "policy": [_fetch(f) for f in self.policy],
            "gather_error": self.gather_error,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DomainFacts:
        try:
            version = raw["version"]
            if version != FACTS_VERSION:
                raise FactsError(
                    f"facts version {version!r}: this mtasts reads version {FACTS_VERSION}"
                )
            return cls(
                domain=str(raw["domain"]),
                observed_at=dt.datetime.fromisoformat(raw["observed_at"]),
                sts_txt=_txt_from(raw["sts_txt"]),
                tlsrpt_txt=_txt_from(raw["tlsrpt_txt"]),
                domain_exists=bool(raw.get("domain_exists", True)),
                mx_error=raw.get("mx_error"),
                mx_listed=int(raw.get("mx_listed", 0)),
                mx_skipped=int(raw.get("mx_skipped", 0)),
                mx=tuple(_mx_from(m) for m in raw["mx"]),
                policy=tuple(_fetch_from(f) for f in raw["policy"]),
                gather_error=raw.get("gather_error"),
            )
        except FactsError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FactsError(f"not a facts document: {type(exc).__name__}: {exc}") from None


def read_documents(text: str, source: str) -> tuple[list[DomainFacts], list[str]]:
    """Facts from ``text``: one JSON document, an array, or one document per line; each a
    facts document or a ``check --json --facts`` document holding one under ``facts``.
    A document that cannot be read is one line naming where (``source:line`` or
    ``source[n]``) and why; the others are still returned."""
    items: list[tuple[str, Any]]
    try:
        whole = json.loads(text)
        listed = whole if isinstance(whole, list) else [whole]
        items = [(f"{source}[{n}]", d) for n, d in enumerate(listed)]
    except json.JSONDecodeError:
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"{source}:{number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    items.append((f"{source}:{number}", FactsError(f"not JSON ({exc})")))
    facts, problems = [], []
    for where, item in items:
        try:
            if isinstance(item, FactsError):
                raise item
            if not isinstance(item, dict):
                raise FactsError("not a JSON object")
            facts.append(DomainFacts.from_dict(item.get("facts", item)))
        except FactsError as exc:
            problems.append(f"{where}: {exc}")
    return facts, problems


def _txt(txt: TxtFacts) -> dict[str, Any]:
    return {"records": [list(r) for r in txt.records], "error": txt.error}


def _txt_from(raw: dict[str, Any]) -> TxtFacts:
    return TxtFacts(tuple(tuple(str(s) for s in r) for r in raw["records"]), raw.get("error"))


def _leaf(leaf: Leaf | None) -> dict[str, Any] | None:
    if leaf is None:
        return None
    return {
        "names": list(leaf.names),
        "subject_cn": leaf.subject_cn,
        "issuer": leaf.issuer,
        "not_before": leaf.not_before.isoformat(),
        "not_after": leaf.not_after.isoformat(),
        "sha256": leaf.sha256,
    }


def _leaf_from(raw: dict[str, Any] | None) -> Leaf | None:
    if raw is None:
        return None
    return Leaf(
        tuple(raw["names"]),
        raw.get("subject_cn"),
        raw["issuer"],
        dt.datetime.fromisoformat(raw["not_before"]),
        dt.datetime.fromisoformat(raw["not_after"]),
        raw.get("sha256"),
    )


def _trust(trust: Trust | None) -> dict[str, Any] | None:
    if trust is None:
        return None
    return {"verified": trust.verified, "verify_code": trust.verify_code, "reason": trust.reason}


def _trust_from(raw: dict[str, Any] | None) -> Trust | None:
    if raw is None:
        return None
    return Trust(bool(raw["verified"]), raw.get("verify_code"), raw.get("reason"))


def _probe(probe: SmtpProbe) -> dict[str, Any]:
    return {
        "host": probe.host,
        "address": probe.address,
        "port": probe.port,
        "connected": probe.connected,
        "banner": probe.banner,
        "starttls": probe.starttls,
        "tls_version": probe.tls_version,
        "cipher": probe.cipher,
        "trust": _trust(probe.trust),
        "certificate": _leaf(probe.leaf),
        "error_kind": probe.error_kind,
        "error": probe.error,
        "seconds": round(probe.seconds, 4),
    }


def _probe_from(raw: dict[str, Any]) -> SmtpProbe:
    return SmtpProbe(
        raw["host"],
        raw["address"],
        int(raw["port"]),
        bool(raw["connected"]),
        raw.get("banner"),
        raw.get("starttls"),
        raw.get("tls_version"),
        raw.get("cipher"),
        _trust_from(raw.get("trust")),
        _leaf_from(raw.get("certificate")),
        raw.get("error_kind"),
        raw.get("error"),
        float(raw.get("seconds", 0.0)),
    )


def _mx(mx: MxFacts) -> dict[str, Any]:
    return {
        "host": mx.host,
        "preference": mx.preference,
        "cname": mx.cname,
        "tlsa": mx.tlsa,
        "tlsa_validated": mx.tlsa_validated,
        "dns_error": mx.dns_error,
        "addresses": [
            {"address": a.address, "probes": [_probe(p) for p in a.probes]} for a in mx.addresses
        ],
        "addresses_skipped": mx.addresses_skipped,
    }


def _mx_from(raw: dict[str, Any]) -> MxFacts:
    addresses = tuple(
        AddressFacts(a["address"], tuple(_probe_from(p) for p in a["probes"]))
        for a in raw["addresses"]
    )
    return MxFacts(
        raw["host"],
        int(raw["preference"]),
        raw.get("cname"),
        bool(raw.get("tlsa")),
        bool(raw.get("tlsa_validated")),
        raw.get("dns_error"),
        addresses,
        int(raw.get("addresses_skipped", 0)),
    )


def _body(body: bytes | None) -> dict[str, str] | None:
    """Text when the body is UTF-8 (as a policy must be), else base64, so no byte is lost."""
    if body is None:
        return None
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}


def _body_from(raw: dict[str, str] | None) -> bytes | None:
    if raw is None:
        return None
    if "text" in raw:
        return raw["text"].encode("utf-8")
    return base64.b64decode(raw["base64"], validate=True)


def _fetch(fetch: PolicyFetch) -> dict[str, Any]:
    return {
        "url": fetch.url,
        "address": fetch.address,
        "status": fetch.status,
        "content_type": fetch.content_type,
        "body": _body(fetch.body),
        "location": fetch.location,
        "trust": _trust(fetch.trust),
        "certificate": _leaf(fetch.leaf),
        "error_kind": fetch.error_kind,
        "error": fetch.error,
        "seconds": round(fetch.seconds, 4),
        "tries": fetch.tries,
    }


def _fetch_from(raw: dict[str, Any]) -> PolicyFetch:
    return PolicyFetch(
        raw["url"],
        raw.get("address"),
        raw.get("status"),
        raw.get("content_type"),
        _body_from(raw.get("body")),
        raw.get("location"),
        _trust_from(raw.get("trust")),
        _leaf_from(raw.get("certificate")),
        raw.get("error_kind"),
        raw.get("error"),
        float(raw.get("seconds", 0.0)),
        int(raw.get("tries", 1)),
    )


def probe_to_dict(probe: SmtpProbe) -> dict[str, Any]:
    """One probe in the facts document's form (``scan`` stores shared probes this way)."""
    return _probe(probe)


def probe_from_dict(raw: dict[str, Any]) -> SmtpProbe:
    """The inverse of :func:`probe_to_dict`; FactsError when ``raw`` is not one."""
    try:
        return _probe_from(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FactsError(f"not a probe: {type(exc).__name__}: {exc}") from None
