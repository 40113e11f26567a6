"""Judge gathered facts into findings and, per MX, what a sender would do (RFC 8461 §4-5).

Pure: no sockets, no clock (the time is the observation's, or the context's), no
files. The same facts always give the same judgement, so stored observations
can be judged again by a corrected rule, and every rule is table-tested with
facts built by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from mtasts import sts, tlsrpt
from mtasts.net.https import PolicyFetch
from mtasts.net.smtp import SmtpProbe
from mtasts.sts import FetchVerdict, Mode, Policy
from mtasts.tlsrpt import ResultType

from .facts import AddressFacts, DomainFacts, MxFacts, TxtFacts
from .findings import RULES, CheckCode, CheckVerdict, Finding, FindingCode, Severity
from .lint import TIMESTAMP_ID, policy_advice

EXPIRY_WARNING_DAYS = 21
_ADVICE = {
    "advice.max-age-short": CheckCode.MAX_AGE_SHORT,
    "advice.max-age-long-testing": CheckCode.MAX_AGE_LONG_TESTING,
    "advice.mode-none": CheckCode.MODE_NONE,
}
# OpenSSL X509_V_ERR_* codes (x509_vfy.h) and the RFC 8460 §4.3.1 result type each means.
_EXPIRED = frozenset({10})  # CERT_HAS_EXPIRED
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})  # unknown issuer, self-signed, chain incomplete
_HOSTNAME = frozenset({62})
_UNREACHABLE = frozenset({"connect", "timeout", "greeting", "protocol"})
BLOCKED_DETAIL = "port 25 unreachable from here"


def result_type_for(verify_code: int | None) -> ResultType:
    """The RFC 8460 §4.3.1 result type a sender records when the chain fails this way."""
    if verify_code in _EXPIRED:
        return ResultType.CERTIFICATE_EXPIRED
    if verify_code in _UNTRUSTED:
        return ResultType.CERTIFICATE_NOT_TRUSTED
    if verify_code in _HOSTNAME:
        return ResultType.CERTIFICATE_HOST_MISMATCH
    return ResultType.VALIDATION_FAILURE


@dataclass(frozen=True, slots=True)
class Expected:
    """What ``mtasts.toml`` configures for the domain, to report drift from what is served."""

    policy: Policy
    policy_id: str | None  # None: the configured policy was never given an id (not published)


@dataclass(frozen=True, slots=True)
class JudgeContext:
    """What the judge needs besides the facts: the time (default: when they were observed),
    whether port 25 was reachable from where they were gathered (a fact of the whole run)
    and, for a configured domain, what mtasts.toml says."""

    now: dt.datetime | None = None
    smtp_reachable: bool = True
    expected: Expected | None = None


@dataclass(frozen=True, slots=True)
class AddressResult:
    address: str
    probes: tuple[SmtpProbe, ...]
    result: FindingCode | None = None  # None when a sender would succeed
    detail: str = ""

    @property
    def last(self) -> SmtpProbe:
        return self.probes[-1]


@dataclass(frozen=True, slots=True)
class MxResult:
    host: str
    preference: int
    cname: str | None = None
    addresses: tuple[AddressResult, ...] = ()
    in_policy: bool | None = None
    tlsa: bool = False
    tlsa_validated: bool = False
    dns_error: str | None = None
    action: str = ""
    addresses_skipped: int = 0


@dataclass(frozen=True, slots=True)
class PolicyHostResult:
    """One address of the policy host: what it served and what a sender makes of it."""

    fetch: PolicyFetch
    verdict: FetchVerdict


@dataclass(frozen=True, slots=True)
class DomainCheck:
    """The judgement of one domain's facts."""

    domain: str
    facts: DomainFacts
    findings: tuple[Finding, ...] = ()
    sts_record: sts.StsRecord | None = None
    policy: Policy | None = None  # as hosted, when a sender would accept it
    tlsrpt_record: tlsrpt.TlsRptRecord | None = None
    mx: tuple[MxResult, ...] = ()
    policy_hosts: tuple[PolicyHostResult, ...] = ()
    smtp_reachable: bool = True

    @property
    def fetch(self) -> PolicyFetch | None:
        """The first address's fetch: what the JSON's ``policy`` describes."""
        return self.policy_hosts[0].fetch if self.policy_hosts else None

    @property
    def sts_txt(self) -> list[str]:
        return self.facts.sts_txt.texts

    @property
    def tlsrpt_txt(self) -> list[str]:
        return self.facts.tlsrpt_txt.texts

    @property
    def verdict(self) -> CheckVerdict:
        severities = {f.severity for f in self.findings}
        if Severity.ERROR in severities:
            return CheckVerdict.ERROR
        if not self.smtp_reachable and self.mx:
            return CheckVerdict.UNKNOWN
        return CheckVerdict.WARNING if Severity.WARNING in severities else CheckVerdict.OK

    @property
    def applied(self) -> Policy | None:
        """The policy senders apply: none unless the record is valid too (RFC 8461 §3.1, §5)."""
        return self.policy if self.sts_record is not None else None

    @property
    def mode(self) -> str:
        """For the adoption table: none, broken (published but unusable), testing or enforce."""
        if self.applied is not None:
            return str(self.applied.mode)
        return "broken" if any(t.startswith("v=STSv1") for t in self.sts_txt) else "none"

    def codes(self, *severities: Severity) -> list[str]:
        return sorted({str(f.code) for f in self.findings if f.severity in severities})


class _Findings:
    """Collects findings while judging; the result is frozen."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(
        self,
        code: FindingCode,
        subject: str,
        message: str,
        fix: str | None = None,
        severity: Severity | None = None,
    ) -> None:
        rule = RULES[code]
        self.items.append(Finding(code, severity or rule.severity, subject, message, fix))


def judge(facts: DomainFacts, context: JudgeContext | None = None) -> DomainCheck:
    """Every finding about ``facts``, and what a sender would do for each MX."""
    context = context or JudgeContext()
    now = context.now or facts.observed_at
    out = _Findings()
    domain = facts.domain
    if facts.gather_error is not None:
        out.add(
            CheckCode.CHECK_FAILED, domain, f"the check of {domain} stopped: {facts.gather_error}"
        )
        return DomainCheck(domain, facts, tuple(out.items), smtp_reachable=context.smtp_reachable)
    if not facts.domain_exists:
        out.add(
            CheckCode.DOMAIN_NOT_FOUND,
            domain,
            f"{domain} does not exist in DNS (NXDOMAIN)",
            "check the spelling of the domain, or that it is registered and delegated",
        )
        _judge_drift(out, domain, None, None, context.expected)
        return DomainCheck(domain, facts, tuple(out.items), smtp_reachable=context.smtp_reachable)
    record = _judge_record(out, domain, facts.sts_txt)
    hosts = tuple(
        PolicyHostResult(f, sts.judge_response(sts.policy_host(domain), f)) for f in facts.policy
    )
    policy = _judge_policy(out, hosts)
    rpt = _judge_tlsrpt(out, domain, facts.tlsrpt_txt, policy)
    if facts.mx_error:
        out.add(CheckCode.DNS_ERROR, domain, f"the MX lookup failed: {facts.mx_error}")
    elif facts.mx_listed == 0:
        out.add(CheckCode.MX_NONE, domain, f"{domain} has no MX record")
    if facts.mx_skipped:
        kept = facts.mx_listed - facts.mx_skipped
        out.add(
            CheckCode.MX_TOO_MANY,
            domain,
            f"{domain} lists {facts.mx_listed} MX hosts; only the {kept} most preferred were checked",
            f"raise the limit with --max-mx {facts.mx_listed} to check all",
        )
    applied = policy if record is not None else None
    mx = tuple(_judge_mx(out, m, policy, applied, now, context.smtp_reachable) for m in facts.mx)
    if policy is not None and mx:
        _judge_patterns(out, policy, mx)
    if not context.smtp_reachable and mx:
        out.add(
            CheckCode.OUTBOUND_PORT_25_BLOCKED,
            domain,
            "no MX address of any domain checked accepted a TCP connection from here: the SMTP"
            " results are unknown",
        )
    _judge_drift(out, domain, record, policy, context.expected)
    return DomainCheck(
        domain, facts, tuple(out.items), record, policy, rpt, mx, hosts, context.smtp_reachable
    )


def _judge_drift(
    out: _Findings,
    domain: str,
    record: sts.StsRecord | None,
    policy: Policy | None,
    expected: Expected | None,
) -> None:
    """``config-drift``, also for a domain DNS does not know yet (configured, not published)."""
    if expected is None:
        return
    for line in drift(domain, record, policy, expected):
        fix = f"publish what mtasts.toml says: mtasts records {domain} (or --publish SERVER)"
        out.add(CheckCode.CONFIG_DRIFT, domain, line, fix)


def drift(
    domain: str, record: sts.StsRecord | None, policy: Policy | None, expected: Expected
) -> list[str]:
    """Where what DNS and the policy host serve differs from ``mtasts.toml`` and its state."""
    lines = []
    if expected.policy_id is None:
        lines.append(
            f"the policy in mtasts.toml is not published yet (mtasts records {domain} gives it its id)"
        )
    elif record is None:
        lines.append(
            f"DNS serves no valid _mta-sts record; mtasts.toml's policy has id {expected.policy_id}"
        )
    elif record.id != expected.policy_id:
        lines.append(
            f"drift: DNS serves id {record.id}, mtasts.toml's policy has id {expected.policy_id}"
        )
    if policy is not None and policy != expected.policy:
        served = "; ".join(str(policy).splitlines())
        lines.append(
            f"drift: mta-sts.{domain} serves another policy than mtasts.toml (served: {served})"
        )
    return lines


def _judge_record(out: _Findings, domain: str, txt: TxtFacts) -> sts.StsRecord | None:
    name = f"_mta-sts.{domain}"
    if txt.error is not None:
        out.add(CheckCode.DNS_ERROR, name, f"the TXT lookup failed: {txt.error}")
        return None
    try:
        record = sts.select_record(txt.records)
    except sts.NoRecordError:
        out.add(
            CheckCode.STS_NOT_PUBLISHED,
            name,
            f"{domain} publishes no MTA-STS record",
            f'publish TXT {name} "v=STSv1; id=YYYYMMDDTHHMMSS;" and a policy (mtasts init)',
        )
        return None
    except sts.MultipleRecordsError as exc:
        out.add(
            CheckCode.STS_RECORD_MULTIPLE,
            name,
            exc.message,
            f"delete all but one of the records at {name}",
        )
        return None
    except sts.RecordError as exc:
        out.add(
            CheckCode.STS_RECORD_INVALID,
            name,
            f"{exc.message} (RFC 8461 {exc.section})",
            f"publish: {exc.fix}" if exc.fix else None,
        )
        return None
    if not TIMESTAMP_ID.match(record.id):
        out.add(CheckCode.ID_NOT_TIMESTAMP, name, f"id {record.id!r} is not a timestamp")
    return record


def _outcome(host: PolicyHostResult) -> tuple[object, ...]:
    """What a sender takes away from one address: the policy, or the failures."""
    verdict = host.verdict
    return (verdict.policy, tuple((f.kind, f.reason) for f in verdict.failures))


def _judge_policy(out: _Findings, hosts: tuple[PolicyHostResult, ...]) -> Policy | None:
    """RFC 8461 §3.3 per address; every address must serve the same usable policy."""
    if not hosts:
        return None
    every = len({h.fetch.address for h in hosts}) > 1
    said: set[tuple[object, ...]] = set()
    for host in hosts:
        for failure in host.verdict.failures:
            key = (failure.kind, failure.detail)
            if key in said:
                continue
            said.add(key)
            where = [
                h.fetch.address or ""
                for h in hosts
                if any((f.kind, f.detail) == key for f in h.verdict.failures)
            ]
            subject = host.fetch.url
            if every and len(where) < len(hosts):
                subject = f"{subject} [{', '.join(where)}]"
            out.add(ResultType(failure.kind), subject, failure.detail, failure.fix)
    outcomes = {_outcome(h) for h in hosts}
    if len(outcomes) > 1:
        lines = []
        for host in hosts:
            first = host.verdict.first_failure
            answer = (
                f"{first.kind}: {first.detail}"
                if first is not None
                else "; ".join(str(host.verdict.policy).splitlines())
            )
            lines.append(f"{host.fetch.address}: {answer}")
        out.add(
            CheckCode.POLICY_INCONSISTENT,
            hosts[0].fetch.url,
            f"the {len(hosts)} addresses of the policy host serve {len(outcomes)} different"
            f" answers ({' | '.join(lines)})",
            "serve one policy from every address of the policy host, or remove the bad address",
        )
    policy = next((h.verdict.policy for h in hosts if h.verdict.policy is not None), None)
    served = next((h.verdict.served for h in hosts if h.verdict.served is not None), None)
    if served is not None:
        for advice in policy_advice(served):
            code = _ADVICE.get(advice.rule)
            if code:
                out.add(code, hosts[0].fetch.url, advice.message, advice.fix)
    return policy


def _judge_tlsrpt(
    out: _Findings, domain: str, txt: TxtFacts, policy: Policy | None
) -> tlsrpt.TlsRptRecord | None:
    name = f"_smtp._tls.{domain}"
    if txt.error is not None:
        out.add(CheckCode.DNS_ERROR, name, f"the TXT lookup failed: {txt.error}")
        return None
    try:
        return tlsrpt.select_record(txt.records)
    except tlsrpt.NoTlsRptRecordError:
        active = policy is not None and policy.mode is not Mode.NONE
        testing = policy is not None and policy.mode is Mode.TESTING
        why = " while in testing mode: testing teaches nothing without reports" if testing else ""
        out.add(
            CheckCode.TLSRPT_MISSING,
            name,
            f"no TLS-RPT record{why}",
            f'publish TXT {name} "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"',
            None if active else Severity.INFO,
        )
    except tlsrpt.TlsRptError as exc:
        out.add(
            CheckCode.TLSRPT_INVALID,
            name,
            f"{exc.message} (RFC 8460 {exc.section})",
            f"publish: {exc.fix}" if exc.fix else None,
        )
    return None


def classify(host: str, probe: SmtpProbe) -> tuple[FindingCode | None, str]:
    """The TLS-RPT result type a sender would record for this session, and why."""
    if probe.error_kind in _UNREACHABLE and not probe.starttls:
        return CheckCode.MX_UNREACHABLE, probe.error or "no SMTP session"
    if probe.starttls is False:
        return ResultType.STARTTLS_NOT_SUPPORTED, "STARTTLS is not offered in the EHLO reply"
    if probe.trust is not None and not probe.trust.verified:
        code = result_type_for(probe.trust.verify_code)
        return code, probe.trust.reason or str(code)
    if probe.error_kind is not None:
        return ResultType.VALIDATION_FAILURE, probe.error or probe.error_kind
    if probe.leaf is not None and not sts.cert_matches(probe.leaf.dns_ids, host):
        # RFC 8461 §4.2: the certificate must name the MX host as the MX record gives it.
        names = ", ".join(probe.leaf.dns_ids)
        return ResultType.CERTIFICATE_HOST_MISMATCH, f"the certificate names {names}, not {host}"
    return None, ""


def _judge_address(facts: AddressFacts, host: str, reachable: bool) -> AddressResult:
    if not reachable:
        return AddressResult(facts.address, facts.probes, None, BLOCKED_DETAIL)
    for probe in facts.probes:  # the first failing probe tells (a balancer's bad backend)
        code, detail = classify(host, probe)
        if code is not None:
            return AddressResult(facts.address, facts.probes, code, detail)
    return AddressResult(facts.address, facts.probes)


def _judge_mx(
    out: _Findings,
    facts: MxFacts,
    policy: Policy | None,
    applied: Policy | None,
    now: dt.datetime,
    reachable: bool,
) -> MxResult:
    # A failure under a policy (testing reports it, enforce defers mail, RFC 8461 §5) is an
    # error; with no policy in force it is only a warning about opportunistic TLS.
    in_force = applied is not None and applied.mode is not Mode.NONE
    severity = Severity.ERROR if in_force else Severity.WARNING
    host = facts.host
    if facts.dns_error:
        out.add(CheckCode.DNS_ERROR, host, f"cannot resolve the MX host: {facts.dns_error}")
    elif not facts.addresses:
        out.add(CheckCode.MX_UNREACHABLE, host, f"{host} has no A or AAAA record", None, severity)
    in_policy = None
    if policy is not None and policy.mode is not Mode.NONE:
        in_policy = policy.matches_mx(host)
        if not in_policy:
            patterns = ", ".join(str(p) for p in policy.mx)
            out.add(
                CheckCode.MX_NOT_IN_POLICY,
                host,
                f"MX {host} is not matched by the policy's mx lines ({patterns})",
                f"add the line 'mx: {host}' to the policy (and bump the id)",
                severity,
            )
    if facts.cname:
        out.add(CheckCode.MX_CNAME, host, f"MX {host} is a CNAME to {facts.cname}")
    if facts.tlsa:
        # RFC 7672 §2.2: senders use TLSA records only when DNSSEC validates them; then DANE,
        # not MTA-STS, decides for this MX (RFC 8461 §2).
        validated = (
            "DNSSEC-validated by the resolver used: DANE senders verify this MX with them"
            if facts.tlsa_validated
            else "not marked DNSSEC-validated by the resolver used: DANE senders ignore them"
            " unless the zone is signed (or this resolver does not validate)"
        )
        out.add(CheckCode.DANE_TLSA, host, f"_25._tcp.{host} publishes TLSA records, {validated}")
    addresses = tuple(_judge_address(a, host, reachable) for a in facts.addresses)
    by_code: dict[FindingCode, list[AddressResult]] = {}
    for result in addresses:
        if result.result is not None:
            by_code.setdefault(result.result, []).append(result)
            continue
        leaf = result.last.leaf if result.probes else None
        if leaf is not None and leaf.days_left(now) < EXPIRY_WARNING_DAYS:
            out.add(
                CheckCode.CERTIFICATE_EXPIRING,
                f"{host} [{result.address}]",
                f"the certificate expires in {leaf.days_left(now)} days",
                f"renew the certificate of {host} on {result.address}",
            )
    result_mx = MxResult(
        host,
        facts.preference,
        facts.cname,
        addresses,
        in_policy,
        facts.tlsa,
        facts.tlsa_validated,
        facts.dns_error,
        "",
        facts.addresses_skipped,
    )
    for code, failed in by_code.items():
        out.add(
            code, host, _mx_message(result_mx, failed), _mx_fix(code, result_mx, failed), severity
        )
    if facts.addresses_skipped:
        total = len(addresses) + facts.addresses_skipped
        out.add(
            CheckCode.MX_ADDRESSES_TOO_MANY,
            host,
            f"{host} has {total} addresses; only the first {len(addresses)} were probed",
            f"raise the limit with --max-addresses {total} to probe all",
        )
    action = _action(applied, result_mx) if reachable else f"unknown: {BLOCKED_DETAIL}"
    return dataclasses.replace(result_mx, action=action)


def _mx_message(mx: MxResult, failed: list[AddressResult]) -> str:
    where = ", ".join(r.address for r in failed)
    share = (
        f"{len(failed)} of {len(mx.addresses)} addresses ({where})"
        if len(mx.addresses) > 1
        else where
    )
    via = f"a CNAME to {mx.cname}; " if mx.cname else ""
    return f"{via}{share}: {failed[0].detail}"


def _mx_fix(code: FindingCode, mx: MxResult, failed: list[AddressResult]) -> str | None:
    if code is ResultType.CERTIFICATE_HOST_MISMATCH:
        target = f" on {mx.cname}" if mx.cname else ""
        return (
            f"install a certificate whose subjectAltName includes {mx.host}{target}, or list the"
            " name the certificate does prove in the policy's mx lines"
        )
    if code is ResultType.CERTIFICATE_EXPIRED:
        return f"renew the certificate of {mx.host} on {', '.join(r.address for r in failed)}"
    if code is ResultType.CERTIFICATE_NOT_TRUSTED:
        return f"serve a certificate from a public CA with its full chain on {mx.host}"
    if code is ResultType.STARTTLS_NOT_SUPPORTED:
        return f"enable STARTTLS on {mx.host}; if the server offers it, something on the path strips it"
    return RULES[code].fix


def _action(policy: Policy | None, mx: MxResult) -> str:
    """What a sender would do today for this MX (RFC 8461 §5)."""
    failures = [a for a in mx.addresses if a.result]
    if policy is None or policy.mode is Mode.NONE:
        return "opportunistic: no policy applies"
    if mx.in_policy and not failures and mx.addresses:
        return "deliver over verified TLS"
    if policy.mode is Mode.TESTING:
        return "deliver despite the failure (testing), and report it"
    if not mx.in_policy or len(failures) == len(mx.addresses):
        return "defer: enforce forbids delivery"
    return f"defer on {len(failures)} of {len(mx.addresses)} addresses (enforce)"


def _judge_patterns(out: _Findings, policy: Policy, mx: tuple[MxResult, ...]) -> None:
    for pattern in policy.mx:
        if not any(pattern.matches(m.host) for m in mx):
            out.add(
                CheckCode.MX_PATTERN_UNUSED,
                "policy",
                f"mx pattern {pattern} matches none of the MX hosts",
                f"remove 'mx: {pattern}' if that server is gone (and bump the id)",
            )


def smtp_blocked(facts: list[DomainFacts]) -> bool:
    """True when no MX address of any domain accepted a TCP connection: port 25 is blocked
    where the facts were gathered, so no SMTP fact says anything about the domains."""
    probes = [p for f in facts for m in f.mx for a in m.addresses for p in a.probes]
    return bool(probes) and not any(p.connected for p in probes)
