"""One end-to-end check of a domain, done the way a sending MTA would (RFC 8461 §3-5).

Gather the facts (DNS, the policy fetch, an SMTP probe of every address of
every MX), then judge them into findings and, per MX, what a sender would do
today. The network work happens in ``mtasts.net``; this module only decides.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mtasts import sts, tlsrpt
from mtasts.net.dns import DnsLookupError, Nameserver, Resolver
from mtasts.net.https import PolicyFetch, fetch_policy
from mtasts.net.smtp import SmtpProbe, probe_mx
from mtasts.sts import Mode, Policy

from .findings import Finding, Severity
from .lint import TIMESTAMP_ID, policy_advice

log = logging.getLogger("mtasts.check")
EXPIRY_WARNING_DAYS = 21
_CHUNK = 100  # domains a worker process checks at a time
_ADVICE = {"advice.max-age-short": "max-age-short", "advice.max-age-long-testing": "max-age-long-testing",
           "advice.mode-none": "mode-none"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckOptions:
    nameservers: tuple[Nameserver, ...] = ()
    ca_file: Path | None = None
    smtp_port: int = 25
    https_port: int = 443
    timeout: float = 10.0
    probes: int = 1
    # Caps on what one domain's DNS can make the checker do (a hostile zone can list
    # thousands of MX hosts or addresses); the excess is reported, never probed.
    max_mx: int = 16
    max_addresses: int = 8


@dataclass
class AddressResult:
    address: str
    probes: list[SmtpProbe]
    result: str | None = None  # a finding code, or None when a sender would succeed
    detail: str = ""

    @property
    def last(self) -> SmtpProbe:
        return self.probes[-1]


@dataclass
class MxResult:
    host: str
    preference: int
    cname: str | None = None
    addresses: list[AddressResult] = field(default_factory=list)
    in_policy: bool | None = None
    tlsa: bool = False
    tlsa_validated: bool = False  # the resolver set AD: DNSSEC-signed, so DANE senders use it
    dns_error: str | None = None
    action: str = ""
    addresses_skipped: int = 0  # past CheckOptions.max_addresses: not probed


@dataclass
class DomainCheck:
    domain: str
    sts_record: sts.StsRecord | None = None
    sts_txt: list[str] = field(default_factory=list)
    fetch: PolicyFetch | None = None
    policy: Policy | None = None
    tlsrpt_record: tlsrpt.TlsRptRecord | None = None
    tlsrpt_txt: list[str] = field(default_factory=list)
    mx: list[MxResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        severities = {f.severity for f in self.findings}
        if Severity.ERROR in severities:
            return "error"
        return "warning" if Severity.WARNING in severities else "ok"

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

    def add(
        self, code: str, severity: Severity, subject: str, message: str, fix: str | None = None
    ) -> None:
        self.findings.append(Finding(code, severity, subject, message, fix))

    def codes(self, *severities: Severity) -> list[str]:
        return sorted({f.code for f in self.findings if f.severity in severities})


def _texts(records: Iterable[Iterable[bytes]]) -> list[str]:
    return ["".join(s.decode("utf-8", "replace") for s in r) for r in records]


async def _txt(resolver: Resolver, name: str) -> list[list[bytes]] | DnsLookupError:
    try:
        return await resolver.txt(name)
    except DnsLookupError as exc:
        return exc


def _judge_record(check: DomainCheck, records: list[list[bytes]] | DnsLookupError) -> None:
    name = f"_mta-sts.{check.domain}"
    if isinstance(records, DnsLookupError):
        check.add("dns-error", Severity.ERROR, name, f"the TXT lookup failed: {records}")
        return
    check.sts_txt = _texts(records)
    try:
        check.sts_record = sts.select_record(records)
    except sts.NoRecordError:
        check.add(
            "sts-not-published", Severity.WARNING, name, f"{check.domain} publishes no MTA-STS record",
            f"publish TXT {name} \"v=STSv1; id=YYYYMMDDTHHMMSS;\" and a policy (mtasts init)",
        )  # fmt: skip
    except sts.MultipleRecordsError as exc:
        check.add(
            "sts-record-multiple",
            Severity.ERROR,
            name,
            exc.message,
            f"delete all but one of the records at {name}",
        )
    except sts.RecordError as exc:
        fix = f"publish: {exc.fix}" if exc.fix else None
        check.add(
            "sts-record-invalid",
            Severity.ERROR,
            name,
            f"{exc.message} (RFC 8461 {exc.section})",
            fix,
        )
    else:
        if not TIMESTAMP_ID.match(check.sts_record.id):
            check.add(
                "id-not-timestamp",
                Severity.INFO,
                name,
                f"id {check.sts_record.id!r} is not a timestamp",
            )


def _judge_fetch(check: DomainCheck, fetch: PolicyFetch) -> None:
    check.fetch = fetch
    subject = fetch.url
    if fetch.error_kind == "webpki":
        names = ", ".join(fetch.leaf.dns_ids) if fetch.leaf else "unknown"
        check.add(
            "sts-webpki-invalid", Severity.ERROR, subject,
            f"the policy host's certificate does not verify: {fetch.error} (certificate names: {names})",
            f"install a certificate valid for mta-sts.{check.domain} from a public CA",
        )  # fmt: skip
        return
    if fetch.error_kind is not None:
        check.add(
            "sts-policy-fetch-error",
            Severity.ERROR,
            subject,
            f"the policy cannot be fetched: {fetch.error}",
        )
        return
    if fetch.status != 200:
        if fetch.status in (301, 302, 303, 307, 308):
            message = f"HTTP {fetch.status} redirect to {fetch.location}; senders must not follow redirects (RFC 8461 §3.3)"
            fix = f"serve the policy directly at {fetch.url} with status 200"
        else:
            message = f"HTTP {fetch.status} instead of 200"
            fix = f"serve the policy file at {fetch.url}"
        check.add("sts-policy-fetch-error", Severity.ERROR, subject, message, fix)
        return
    media = (fetch.content_type or "").split(";")[0].strip().lower()
    if media != "text/plain":
        check.add(
            "sts-policy-invalid", Severity.ERROR, subject,
            f"the policy is served as {fetch.content_type or 'no media type'}, not text/plain (RFC 8461 §3.2)",
            "configure the web server to send Content-Type: text/plain for mta-sts.txt",
        )  # fmt: skip
    diagnosis = sts.diagnose_policy(fetch.body or b"")
    if diagnosis.policy is None:
        first = diagnosis.errors[0]
        more = f" (and {len(diagnosis.errors) - 1} more)" if len(diagnosis.errors) > 1 else ""
        check.add(
            "sts-policy-invalid",
            Severity.ERROR,
            subject,
            f"{first}{more}",
            first.fix and f"write: {first.fix}",
        )
        return
    if media == "text/plain":
        check.policy = diagnosis.policy
    for advice in policy_advice(diagnosis.policy):
        code = _ADVICE.get(advice.rule)
        if code:
            check.add(code, Severity.WARNING, subject, advice.message, advice.fix)


def _judge_tlsrpt(check: DomainCheck, records: list[list[bytes]] | DnsLookupError) -> None:
    name = f"_smtp._tls.{check.domain}"
    if isinstance(records, DnsLookupError):
        check.add("dns-error", Severity.ERROR, name, f"the TXT lookup failed: {records}")
        return
    check.tlsrpt_txt = _texts(records)
    try:
        check.tlsrpt_record = tlsrpt.select_record(records)
    except tlsrpt.NoTlsRptRecordError:
        active = check.policy is not None and check.policy.mode is not Mode.NONE
        severity = Severity.WARNING if active else Severity.INFO
        testing = check.policy is not None and check.policy.mode is Mode.TESTING
        why = " while in testing mode: testing teaches nothing without reports" if testing else ""
        check.add(
            "tlsrpt-missing", severity, name, f"no TLS-RPT record{why}",
            f"publish TXT {name} \"v=TLSRPTv1; rua=mailto:tlsrpt@{check.domain}\"",
        )  # fmt: skip
    except tlsrpt.TlsRptError as exc:
        fix = f"publish: {exc.fix}" if exc.fix else None
        check.add(
            "tlsrpt-invalid", Severity.WARNING, name, f"{exc.message} (RFC 8460 {exc.section})", fix
        )


async def _gather_mx(
    resolver: Resolver, host: str, preference: int, options: CheckOptions
) -> MxResult:
    mx = MxResult(host, preference)
    try:
        v4, v6, tlsa = await asyncio.gather(
            resolver.lookup(host, "A"),
            resolver.lookup(host, "AAAA"),
            resolver.lookup(f"_25._tcp.{host}", "TLSA"),
        )
    except DnsLookupError as exc:
        mx.dns_error = str(exc)
        return mx
    mx.cname = v4.canonical or v6.canonical
    mx.tlsa = bool(tlsa.records)
    mx.tlsa_validated = mx.tlsa and tlsa.authenticated
    # Sorted so reports and JSON are stable whatever order the DNS server rotates.
    addresses = sorted(v4.records, key=ipaddress.ip_address) + sorted(
        v6.records, key=ipaddress.ip_address
    )
    mx.addresses_skipped = max(0, len(addresses) - options.max_addresses)
    addresses = addresses[: options.max_addresses]

    async def probe_address(address: str) -> AddressResult:
        probes = []
        for _ in range(options.probes):
            probes.append(
                await probe_mx(
                    host,
                    address,
                    port=options.smtp_port,
                    ca_file=options.ca_file,
                    timeout=options.timeout,
                )
            )
        return AddressResult(address, probes)

    mx.addresses = list(await asyncio.gather(*(probe_address(a) for a in addresses)))
    return mx


def _classify(host: str, probe: SmtpProbe) -> tuple[str | None, str]:
    """The TLS-RPT result type a sender would record for this session, and why."""
    if probe.error_kind in ("connect", "timeout", "greeting", "protocol") and not probe.starttls:
        return "mx-unreachable", probe.error or "no SMTP session"
    if probe.starttls is False:
        return "starttls-not-supported", "STARTTLS is not offered in the EHLO reply"
    if probe.trust is not None and probe.trust.result_type:
        return probe.trust.result_type, probe.trust.reason or probe.trust.result_type
    if probe.error_kind is not None:
        return "validation-failure", probe.error or probe.error_kind
    if probe.leaf is not None and not sts.cert_matches(probe.leaf.dns_ids, host):
        return (
            "certificate-host-mismatch",
            f"the certificate names {', '.join(probe.leaf.dns_ids)}, not {host}",
        )
    return None, ""


def _judge_mx(check: DomainCheck, mx: MxResult) -> None:
    policy = check.policy  # as hosted: worth judging even while the record is broken
    applied = check.applied
    enforcing = applied is not None and applied.mode is not Mode.NONE
    severity = Severity.ERROR if enforcing else Severity.WARNING
    if mx.dns_error:
        check.add(
            "dns-error", Severity.ERROR, mx.host, f"cannot resolve the MX host: {mx.dns_error}"
        )
    elif not mx.addresses:
        check.add("mx-unreachable", severity, mx.host, f"{mx.host} has no A or AAAA record")
    if policy is not None and policy.mode is not Mode.NONE:
        mx.in_policy = policy.matches_mx(mx.host)
        if not mx.in_policy:
            patterns = ", ".join(str(p) for p in policy.mx)
            check.add(
                "mx-not-in-policy", severity, mx.host, f"MX {mx.host} is not matched by the policy's mx lines ({patterns})",
                f"add the line 'mx: {mx.host}' to the policy (and bump the id)",
            )  # fmt: skip
    if mx.cname:
        check.add("mx-cname", Severity.INFO, mx.host, f"MX {mx.host} is a CNAME to {mx.cname}")
    if mx.tlsa:
        # RFC 7672 §2.2: senders use TLSA records only when DNSSEC validates them; then DANE,
        # not MTA-STS, decides for this MX (RFC 8461 §2).
        validated = (
            "DNSSEC-validated by the resolver used: DANE senders verify this MX with them"
            if mx.tlsa_validated
            else "not marked DNSSEC-validated by the resolver used: DANE senders ignore them"
            " unless the zone is signed (or this resolver does not validate)"
        )
        check.add(
            "dane-tlsa",
            Severity.INFO,
            mx.host,
            f"_25._tcp.{mx.host} publishes TLSA records, {validated}",
        )
    by_code: dict[str, list[AddressResult]] = {}
    for result in mx.addresses:
        for probe in result.probes:
            code, detail = _classify(mx.host, probe)
            if code is not None:
                result.result, result.detail = code, detail
                break
        if result.result:
            by_code.setdefault(result.result, []).append(result)
        elif result.last.leaf is not None and result.last.leaf.days_left() < EXPIRY_WARNING_DAYS:
            days = result.last.leaf.days_left()
            check.add(
                "certificate-expiring",
                Severity.WARNING,
                f"{mx.host} [{result.address}]",
                f"the certificate expires in {days} days",
            )
    for code, results in by_code.items():
        check.add(code, severity, mx.host, _mx_message(mx, results), _mx_fix(code, mx, results))
    mx.action = _action(check, mx)


def _mx_message(mx: MxResult, failed: list[AddressResult]) -> str:
    where = ", ".join(r.address for r in failed)
    share = (
        f"{len(failed)} of {len(mx.addresses)} addresses ({where})"
        if len(mx.addresses) > 1
        else where
    )
    via = f"a CNAME to {mx.cname}; " if mx.cname else ""
    return f"{via}{share}: {failed[0].detail}"


def _mx_fix(code: str, mx: MxResult, failed: list[AddressResult]) -> str | None:
    if code == "certificate-host-mismatch":
        target = f" on {mx.cname}" if mx.cname else ""
        return f"install a certificate whose subjectAltName includes {mx.host}{target}, or list the name the certificate does prove in the policy's mx lines"
    if code == "certificate-expired":
        return f"renew the certificate of {mx.host} on {', '.join(r.address for r in failed)}"
    if code == "certificate-not-trusted":
        return f"serve a certificate from a public CA with its full chain on {mx.host}"
    if code == "starttls-not-supported":
        return f"enable STARTTLS on {mx.host}; if the server offers it, something on the path strips it"
    return None


def _action(check: DomainCheck, mx: MxResult) -> str:
    """What a sender would do today for this MX (RFC 8461 §5)."""
    policy = check.applied
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


def _judge_patterns(check: DomainCheck) -> None:
    if check.policy is None or not check.mx:
        return
    for pattern in check.policy.mx:
        if not any(pattern.matches(m.host) for m in check.mx):
            check.add(
                "mx-pattern-unused", Severity.WARNING, "policy", f"mx pattern {pattern} matches none of the MX hosts",
                f"remove 'mx: {pattern}' if that server is gone (and bump the id)",
            )  # fmt: skip


async def check_domain(
    domain: str, options: CheckOptions, resolver: Resolver | None = None
) -> DomainCheck:
    """Check one domain end to end; network trouble becomes findings, never an exception."""
    domain = domain.strip().lower().rstrip(".")
    resolver = resolver or Resolver(options.nameservers, timeout=options.timeout)
    check = DomainCheck(domain)
    sts_txt, rpt_txt, mx_records = await asyncio.gather(
        _txt(resolver, f"_mta-sts.{domain}"),
        _txt(resolver, f"_smtp._tls.{domain}"),
        _mx(resolver, domain),
    )
    _judge_record(check, sts_txt)
    fetch_task = None
    if check.sts_txt and any(t.startswith("v=STSv1") for t in check.sts_txt):
        fetch_task = asyncio.create_task(
            fetch_policy(
                resolver,
                domain,
                port=options.https_port,
                ca_file=options.ca_file,
                timeout=options.timeout,
            )
        )
    if isinstance(mx_records, DnsLookupError):
        check.add("dns-error", Severity.ERROR, domain, f"the MX lookup failed: {mx_records}")
        mx_records = []
    if len(mx_records) > options.max_mx:
        kept = sorted(mx_records)[: options.max_mx]  # the most preferred, as senders try them
        check.add(
            "mx-too-many",
            Severity.WARNING,
            domain,
            f"{domain} lists {len(mx_records)} MX hosts; only the {options.max_mx} most preferred"
            " were checked",
            f"raise the limit with --max-mx {len(mx_records)} to check all",
        )
        mx_records = kept
    mx_results = await asyncio.gather(
        *(_gather_mx(resolver, host, pref, options) for pref, host in mx_records)
    )
    if fetch_task is not None:
        _judge_fetch(check, await fetch_task)
    _judge_tlsrpt(check, rpt_txt)
    if not mx_records:
        check.add("mx-none", Severity.WARNING, domain, f"{domain} has no MX record")
    for mx in mx_results:
        if mx.host in ("", "."):
            continue  # RFC 7505 null MX: the domain accepts no mail
        check.mx.append(mx)
        _judge_mx(check, mx)
        if mx.addresses_skipped:
            total = len(mx.addresses) + mx.addresses_skipped
            check.add(
                "mx-addresses-too-many",
                Severity.WARNING,
                mx.host,
                f"{mx.host} has {total} addresses; only the first {len(mx.addresses)} were probed",
                f"raise the limit with --max-addresses {total} to probe all",
            )
    _judge_patterns(check)
    return check


async def _mx(resolver: Resolver, domain: str) -> list[tuple[int, str]] | DnsLookupError:
    try:
        return await resolver.mx(domain)
    except DnsLookupError as exc:
        return exc


def smtp_blocked(checks: list[DomainCheck]) -> bool:
    """True when no MX address of any checked domain accepted a TCP connection."""
    probes = [p for c in checks for m in c.mx for a in m.addresses for p in a.probes]
    return bool(probes) and not any(p.connected for p in probes)


def explain_blocked(checks: list[DomainCheck]) -> None:
    """Replace every per-address unreachable finding with one run-level finding (said once)."""
    for check in checks:
        check.findings = [f for f in check.findings if f.code != "mx-unreachable"]
        for mx in check.mx:
            mx.action = "unknown: port 25 unreachable from here"
            for address in mx.addresses:
                address.result, address.detail = None, "port 25 unreachable from here"


async def check_many(
    domains: list[str], options: CheckOptions, concurrency: int = 50, on_done: object = None
) -> list[DomainCheck]:
    resolver = Resolver(options.nameservers, timeout=options.timeout)
    limit = asyncio.Semaphore(concurrency)

    async def one(domain: str) -> DomainCheck:
        async with limit:
            try:
                result = await check_domain(domain, options, resolver)
            except Exception as exc:  # one domain's hostile DNS or servers never stop the batch
                log.error("check of %r failed: %r", domain, exc)
                result = DomainCheck(domain.strip().lower().rstrip("."))
                result.add(
                    "check-failed",
                    Severity.ERROR,
                    domain,
                    f"the check of {domain} stopped: {type(exc).__name__}: {exc!s:.200}",
                    "please report this as a bug in mtasts, with the domain",
                )
        if callable(on_done):
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(d) for d in domains)))


def _advance(on_done: Callable[[int], None], count: int, future: Future[object]) -> None:
    if not future.cancelled() and future.exception() is None:  # a chunk really checked
        on_done(count)


def _check_chunk(domains: list[str], options: CheckOptions, concurrency: int) -> list[DomainCheck]:
    return asyncio.run(check_many(domains, options, concurrency))


def _ignore_sigint() -> None:
    """Ignore further SIGINTs: the caller is now reporting the interrupted run's results."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class CheckInterrupted(Exception):
    """Ctrl-C: ``partial`` holds the domains checked before it, in input order."""

    def __init__(self, partial: list[DomainCheck]) -> None:
        super().__init__(f"interrupted after {len(partial)} domains")
        self.partial = partial


def check_domains(
    domains: list[str],
    options: CheckOptions,
    concurrency: int = 50,
    workers: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> list[DomainCheck]:
    """Check many domains, in ``workers`` processes when more than one (results in input order).

    TLS handshakes and DNS parsing are CPU work; one asyncio loop uses one core.
    Must be called with no event loop running (the workers are forked). Ctrl-C stops
    it at once and raises :class:`CheckInterrupted` with what was checked by then.
    """
    if workers <= 1 or len(domains) < 2 * _CHUNK:
        finished: list[DomainCheck] = []

        def done(check: DomainCheck) -> None:
            finished.append(check)
            if on_done:
                on_done(1)

        try:
            return asyncio.run(check_many(domains, options, concurrency, done))
        except KeyboardInterrupt:
            _ignore_sigint()
            order = {name: n for n, name in enumerate(domains)}
            raise CheckInterrupted(sorted(finished, key=lambda c: order.get(c.domain, 0))) from None
    chunks = [domains[i : i + _CHUNK] for i in range(0, len(domains), _CHUNK)]
    per_worker = max(1, concurrency // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_check_chunk, chunk, options, per_worker) for chunk in chunks]
    if on_done is not None:
        for future, chunk in zip(futures, chunks, strict=True):
            future.add_done_callback(functools.partial(_advance, on_done, len(chunk)))
    try:
        results = [check for future in futures for check in future.result()]
    except KeyboardInterrupt:
        _ignore_sigint()  # a second Ctrl-C (or timeout(1)'s second signal) must not lose this
        # Do not wait for the chunks still running: the workers got the same SIGINT.
        partial = [c for f in futures if f.done() and not f.cancelled() and f.exception() is None
                   for c in f.result()]  # fmt: skip
        # No public way to stop running workers before Python 3.14's terminate_workers();
        # without it the interpreter's exit waits for every chunk in flight.
        running = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        raise CheckInterrupted(partial) from None
    pool.shutdown()
    return results
