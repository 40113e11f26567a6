"""The scenario file: which lab domains exist, how they are published, what is broken.

A ``[[domain]]`` table lists its MX hosts and their addresses, each address
with an optional fault; its policy (generated from ``mode``/``max_age``/``mx``
unless ``policy`` gives the text); its ``_mta-sts`` and ``_smtp._tls`` TXT
records (generated unless given); policy-host faults; and ``expect``, the
finding codes a correct checker reports for it at error and warning level.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mtasts.check.findings import FindingCode, finding_code
from mtasts.errors import MtastsError


class ScenarioError(MtastsError, ValueError):
    """The scenario file is unusable; the message names the key and the rule."""


class MxFault(StrEnum):
    """What one MX address does wrong."""

    NONE = "none"
    NO_STARTTLS = "no-starttls"  # EHLO reply lacks STARTTLS
    CERT_NAME = "cert-name"  # certificate for another name (``cert_name``)
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNTRUSTED = "untrusted"  # issued by a CA nobody trusts
    HANDSHAKE = "handshake-failure"  # connection dropped during the TLS handshake
    HANG = "hang"  # accepts the connection, never greets
    TLS10 = "tls1.0-only"
    STRIP = "strip-starttls"  # the attacker sits in front of a healthy MX
    LONG_LINE = "long-line"  # a hostile MX: a 100 KiB line in the EHLO reply
    REPLY_FLOOD = "reply-flood"  # a hostile MX: "250-" continuation lines without end


class HostFault(StrEnum):
    """What the ``mta-sts.<domain>`` policy host does wrong."""

    NONE = "none"
    STATUS_404 = "status-404"
    STATUS_500 = "status-500"
    REDIRECT = "redirect"
    CONTENT_TYPE = "content-type-html"
    OVERSIZED = "oversized"
    SLOW = "slow"
    WRONG_CERT = "wrong-cert"
    EXPIRED_CERT = "expired-cert"
    NO_LISTENER = "no-listener"
    # Two addresses; the second, a forgotten old server, still serves last year's policy.
    BAD_BACKEND = "bad-backend"
    # Every other request goes unanswered (held silent until the client gives up): the
    # lost packet or overloaded moment a checker must not report as a broken policy.
    FLAKY = "flaky"


class DnsFault(StrEnum):
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class MxAddress:
    fault: MxFault = MxFault.NONE
    cert_name: str | None = None


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int = 10
    cname: str | None = None  # the MX name is a CNAME to this provider host
    addresses: tuple[MxAddress, ...] = (MxAddress(),)


@dataclass(frozen=True, slots=True)
class LabDomain:
    name: str
    mx: tuple[MxHost, ...] = ()
    mode: str | None = "enforce"  # None: publish no MTA-STS at all
    max_age: int = 604800
    mx_patterns: tuple[str, ...] | None = None
    policy: str | None = None
    sts_records: tuple[tuple[str, ...], ...] | None = None
    tlsrpt_records: tuple[tuple[str, ...], ...] | None = None
    policy_host: HostFault = HostFault.NONE
    dns_faults: tuple[tuple[str, DnsFault], ...] = ()
    records: tuple[tuple[str, str, str], ...] = ()
    expect: tuple[FindingCode, ...] = ()  # the error and warning findings a check must report
    explain: str = ""

    def policy_text(self, id_hint: str = "") -> str | None:
        """The policy file to serve, generated unless the scenario gives one."""
        if self.policy is not None:
            return self.policy
        if self.mode is None:
            return None
        patterns = self.mx_patterns if self.mx_patterns is not None else [m.name for m in self.mx]
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines += [f"mx: {p}" for p in patterns]
        lines.append(f"max_age: {self.max_age}")
        return "".join(line + "\r\n" for line in lines)

    def sts_txt(self) -> tuple[tuple[str, ...], ...]:
        if self.sts_records is not None:
            return self.sts_records
        if self.mode is None:
            return ()
        return ((f"v=STSv1; id={_stable_id(self.policy_text() or '')};",),)

    def tlsrpt_txt(self) -> tuple[tuple[str, ...], ...]:
        if self.tlsrpt_records is not None:
            return self.tlsrpt_records
        return ((f"v=TLSRPTv1; rua=mailto:tlsrpt@{self.name}",),)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    domains: tuple[LabDomain, ...] = field(default=())


def _stable_id(text: str) -> str:
    # A deterministic id so the lab's records do not change between runs.
    import hashlib

    return "lab" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _codes(values: tuple[str, ...], where: str) -> tuple[FindingCode, ...]:
    """The expected findings, in the checker's vocabulary: a typo is an error, not a test that
    can never pass."""
    try:
        return tuple(finding_code(v) for v in values)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc} (see mtasts check --explain)") from None


def _strings(value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    """TXT records as given: each a string or a list of strings (split TXT)."""
    if not isinstance(value, list):
        raise ScenarioError(
            f"{where}: must be a list of records (each a string or list of strings)"
        )
    out: list[tuple[str, ...]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append((item,))
        elif isinstance(item, list) and all(isinstance(s, str) for s in item):
            out.append(tuple(item))
        else:
            raise ScenarioError(f"{where}[{i}]: must be a string or a list of strings")
    return tuple(out)


def _enum(kind: type[StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ScenarioError(f"{where}: {value!r} is not one of {allowed}") from None


def _get(
    raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any
) -> Any:
    """``raw[key]`` checked against ``kind``; a wrong type names the key and what it must be."""
    if key not in raw:
        return default
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ScenarioError(f"{where}.{key}: {value!r} must be {names}")
    return value


def _str_list(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = _get(raw, key, list, where, None)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{where}.{key}: must be a list of strings")
    return tuple(value)


def _mx(raw: Any, where: str) -> MxHost:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ScenarioError(f"{where}: needs a 'name' (a host name)")
    addresses = []
    for j, addr in enumerate(_get(raw, "addresses", list, where, [{}])):
        at = f"{where}.addresses[{j}]"
        if not isinstance(addr, dict):
            raise ScenarioError(f"{at}: must be a table")
        fault = _enum(MxFault, _get(addr, "fault", str, at, "none"), f"{at}.fault")
        cert_name = _get(addr, "cert_name", str, at, None)
        if fault is MxFault.CERT_NAME and cert_name is None:
            raise ScenarioError(f"{at}: fault cert-name needs 'cert_name'")
        addresses.append(MxAddress(fault, cert_name))
    if not addresses:
        raise ScenarioError(f"{where}.addresses: at least one address is needed")
    preference = _get(raw, "preference", int, where, 10)
    if not 0 <= preference <= 65535:
        raise ScenarioError(f"{where}.preference: {preference} is not 0-65535")
    cname = _get(raw, "cname", str, where, None)
    return MxHost(
        raw["name"].lower(), preference, cname.lower() if cname else None, tuple(addresses)
    )


_DOMAIN_KEYS = {
    "name",
    "mx",
    "mode",
    "max_age",
    "mx_patterns",
    "policy",
    "sts_records",
    "tlsrpt_records",
    "policy_host",
    "dns_faults",
    "records",
    "expect",
    "explain",
}


def _domain(raw: Any, index: int) -> LabDomain:
    where = f"domain[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ScenarioError(f"{where}: needs a 'name'")
    where = f"domain {raw['name']!r}"
    unknown = set(raw) - _DOMAIN_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    mode = raw.get("mode", "enforce")
    if mode not in ("enforce", "testing", "none", False):
        raise ScenarioError(f"{where}.mode: {mode!r} is not enforce, testing, none or false")
    records = []
    for i, record in enumerate(_get(raw, "records", list, where, [])):
        if not (
            isinstance(record, list)
            and len(record) == 3
            and all(isinstance(r, str) for r in record)
        ):
            raise ScenarioError(f"{where}.records[{i}]: each record is [name, type, value]")
        records.append((record[0], record[1], record[2]))
    max_age = _get(raw, "max_age", int, where, 604800)
    if not 0 <= max_age <= 9_999_999_999:
        raise ScenarioError(f"{where}.max_age: {max_age} is not 0 to 10 digits")
    faults = []
    for name, fault in _get(raw, "dns_faults", dict, where, {}).items():
        faults.append((name.lower(), _enum(DnsFault, fault, f"{where}.dns_faults.{name}")))
    sts_records = raw.get("sts_records")
    tlsrpt = raw.get("tlsrpt_records")
    return LabDomain(
        name=raw["name"].lower(),
        mx=tuple(
            _mx(m, f"{where}.mx[{i}]") for i, m in enumerate(_get(raw, "mx", list, where, []))
        ),
        mode=None if mode is False else mode,
        max_age=max_age,
        mx_patterns=_str_list(raw, "mx_patterns", where),
        policy=_get(raw, "policy", str, where, None),
        sts_records=_strings(sts_records, f"{where}.sts_records")
        if sts_records is not None
        else None,
        tlsrpt_records=_strings(tlsrpt, f"{where}.tlsrpt_records") if tlsrpt is not None else None,
        policy_host=_enum(
            HostFault, _get(raw, "policy_host", str, where, "none"), f"{where}.policy_host"
        ),
        dns_faults=tuple(faults),
        records=tuple(records),
        expect=_codes(_str_list(raw, "expect", where) or (), f"{where}.expect"),
        explain=_get(raw, "explain", str, where, "").strip(),
    )


def parse_scenario(text: str, name: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{name}: not valid TOML ({exc})") from None
    tables = raw.get("domain", [])
    if not isinstance(tables, list):
        raise ScenarioError(f"{name}: 'domain' must be an array of tables ([[domain]])")
    domains = tuple(_domain(d, i) for i, d in enumerate(tables))
    seen: set[str] = set()
    for d in domains:
        if d.name in seen:
            raise ScenarioError(f"{name}: domain {d.name!r} is listed twice")
        seen.add(d.name)
    title = raw.get("name", name)
    description = raw.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        raise ScenarioError(f"{name}: 'name' and 'description' must be strings")
    return Scenario(title, description.strip(), domains)


def builtin_scenarios() -> dict[str, Path]:
    folder = resources.files("mtasts.lab") / "scenarios"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def load_scenario(source: str) -> Scenario:
    """A built-in scenario by name, or a scenario file by path."""
    builtin = builtin_scenarios()
    path = builtin.get(source, Path(source))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"{source}: not UTF-8 (byte {exc.start}), which TOML requires"
        ) from None
    except OSError as exc:
        names = ", ".join(sorted(builtin))
        raise ScenarioError(
            f"{source}: cannot read ({exc.strerror}); built-in scenarios: {names}"
        ) from None
    return parse_scenario(text, source)


_RANDOM_FAULTS: tuple[tuple[str, MxFault | HostFault | None], ...] = (
    ("certificate-host-mismatch", MxFault.CERT_NAME),
    ("certificate-expired", MxFault.EXPIRED),
    ("certificate-not-trusted", MxFault.UNTRUSTED),
    ("starttls-not-supported", MxFault.NO_STARTTLS),
    ("sts-policy-fetch-error", HostFault.STATUS_404),
    ("sts-webpki-invalid", HostFault.WRONG_CERT),
)


def generate(count: int, seed: int = 8461, providers: int = 0) -> tuple[LabDomain, ...]:
    """``count`` domains with 2 MX of 2 addresses each; about a third carry one fault.

    With ``providers``, about two thirds of the domains whose MX hosts are healthy are
    hosted by one of that many mail providers: their MX records name the provider's own
    hosts (``mx1.provider007.example``), as a large provider's customers all do, so a scan
    meets the same (MX host, address) pairs again and again (issue #15).
    """
    rng = random.Random(seed)
    out = []
    for n in range(count):
        name = f"gen{n:05d}.example"
        fault_pick = rng.random()
        code, fault = (
            _RANDOM_FAULTS[rng.randrange(len(_RANDOM_FAULTS))] if fault_pick < 0.33 else ("", None)
        )
        hosted = providers > 0 and not isinstance(fault, MxFault) and rng.random() < 0.67
        provider = f"provider{rng.randrange(providers):03d}.example" if hosted else name
        mx = []
        for m in (1, 2):
            addresses = [MxAddress(), MxAddress()]
            if isinstance(fault, MxFault) and m == 2:
                addresses[1] = MxAddress(
                    fault, f"other.{name}" if fault is MxFault.CERT_NAME else None
                )
            mx.append(MxHost(f"mx{m}.{provider}", m * 10, None, tuple(addresses)))
        out.append(
            LabDomain(
                name=name,
                mx=tuple(mx),
                mode=rng.choice(["enforce", "testing"]),
                max_age=86400,
                policy_host=fault if isinstance(fault, HostFault) else HostFault.NONE,
                expect=(finding_code(code),) if code else (),
            )
        )
    return tuple(out)
