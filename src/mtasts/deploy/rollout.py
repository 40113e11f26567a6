"""Safe changes: the gate before ``enforce``, ramping ``max_age``, and retiring (RFC 8461 §8.3).

The seed article's warnings are the rules here: never enforce before the live
deployment and the TLS-RPT reports are clean, never publish a long max_age on
a policy that may be broken, and withdraw MTA-STS with ``mode: none`` served
for the old max_age before removing anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mtasts.check.checker import DomainCheck
from mtasts.check.findings import CheckCode
from mtasts.check.judge import Expected
from mtasts.check.judge import drift as judge_drift
from mtasts.reports.verdict import Verdict
from mtasts.sts import Mode
from mtasts.tlsrpt import ResultType

from .config import DomainConfig

WEEK = 7 * 86400
# A policy senders cannot fetch, or get differently from each address, is no base for enforce.
_POLICY_BLOCKERS = frozenset(
    {
        ResultType.STS_POLICY_FETCH_ERROR,
        ResultType.STS_POLICY_INVALID,
        ResultType.STS_WEBPKI_INVALID,
        CheckCode.POLICY_INCONSISTENT,
        CheckCode.DNS_ERROR,
    }
)


@dataclass(frozen=True)
class Gate:
    """Whether a change may go ahead; ``blockers`` say why not, ``warnings`` what to keep in mind."""

    blockers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def open(self) -> bool:
        return not self.blockers


@dataclass(frozen=True)
class Readiness:
    """The TLS-RPT verdict over the last days: READY, NOT READY or UNKNOWN, and why."""

    verdict: Verdict
    reason: str


def report_readiness(
    domain: str,
    store_url: str | None = None,
    days: int = 14,
    large_senders: tuple[str, ...] = (),
    trusted: tuple[str, ...] = (),
) -> Readiness:
    """The stored TLS-RPT reports of the last ``days`` days, as the gate's readiness verdict.

    ``large_senders`` (each required; default one of the big three) and ``trusted``
    channels as for ``mtasts reports readiness``.
    """
    from mtasts.reports.analysis import LARGE_SENDERS, readiness
    from mtasts.reports.provenance import Channel
    from mtasts.reports.store import default_url, open_store

    try:
        store = open_store(store_url or default_url())
    except Exception as exc:  # an unreachable store must not look like a clean record
        return Readiness(
            Verdict.UNKNOWN, f"the report store cannot be opened ({str(exc).splitlines()[0]})"
        )
    verdict = readiness(
        store,
        domain,
        days,
        large_senders=large_senders or LARGE_SENDERS,
        trusted=frozenset(Channel(t) for t in trusted),
        require_all=bool(large_senders),
    )
    return Readiness(verdict.verdict, verdict.reason)


def clean_days(domain: str, store_url: str | None = None) -> float | None:
    """How many recent days of reports show nothing enforce would defer (None: no reports)."""
    from mtasts.reports.analysis import clean_window_days
    from mtasts.reports.store import default_url, open_store

    try:
        return clean_window_days(open_store(store_url or default_url()), domain)
    except Exception:  # no store, no window: the caller warns that none is known
        return None


def publication_blockers(
    check: DomainCheck, configured: DomainConfig, configured_id: str | None
) -> list[str]:
    """What keeps the policy in ``mtasts.toml`` from being the one senders would enforce.

    The gate judges the policy about to be published, not only the one served now: a typo
    in ``mx`` that no live MX host matches makes every enforcing sender defer all mail
    (RFC 8461 §4.1). And what is configured must already be what DNS and the policy host
    serve: publish first, then enforce, so the switch changes the mode and nothing else.
    """
    blockers = []
    policy = configured.policy
    patterns = " ".join(str(p) for p in policy.mx) or "none"
    for mx in check.mx:
        if not policy.matches_mx(mx.host):
            blockers.append(
                f"MX {mx.host} is not covered by the mx patterns in mtasts.toml ({patterns}):"
                " under enforce every sender would refuse it"
            )
    return blockers + [
        f"{line}: publish first, then enforce" for line in drift(check, configured, configured_id)
    ]


def drift(check: DomainCheck, configured: DomainConfig, configured_id: str | None) -> list[str]:
    """Where what DNS and the policy host serve differs from ``mtasts.toml`` and its state."""
    expected = Expected(configured.policy, configured_id)
    return judge_drift(configured.name, check.sts_record, check.policy, expected)


def enforce_gate(
    check: DomainCheck,
    readiness: Readiness,
    configured: DomainConfig | None = None,
    configured_id: str | None = None,
) -> Gate:
    """RFC 8461 §5 under enforce defers mail to any MX that fails: every one must pass first."""
    blockers = (
        publication_blockers(check, configured, configured_id) if configured is not None else []
    )
    if not check.mx:
        blockers.append(f"{check.domain} has no MX host that could be checked")
    for mx in check.mx:
        if mx.in_policy is False:
            blockers.append(f"MX {mx.host} is not matched by the policy's mx lines")
        if not mx.addresses:
            blockers.append(f"MX {mx.host} has no address")
        for address in mx.addresses:
            if address.result:
                blockers.append(
                    f"MX {mx.host} [{address.address}]: {address.result}: {address.detail}"
                )
    for finding in check.findings:
        if finding.code in _POLICY_BLOCKERS:
            blockers.append(f"{finding.code}: {finding.message}")
    if readiness.verdict is not Verdict.READY:
        blockers.append(f"TLS-RPT readiness is {readiness.verdict}: {readiness.reason}")
    return Gate(tuple(blockers))


def span(seconds: float) -> str:
    """A lifetime in words a person reads at a glance: ``2 hours``, ``7 days``, ``3.5 days``."""
    if seconds < 86400:
        hours = seconds / 3600
        return f"{hours:g} hour{'s' if hours != 1 else ''}" if hours >= 1 else f"{seconds:g} s"
    days = round(seconds / 86400, 1)
    return f"{days:g} day{'s' if days != 1 else ''}"


def max_age_gate(domain: DomainConfig, new_max_age: int, clean_days: float | None) -> Gate:
    warnings = []
    if domain.mode is Mode.TESTING and new_max_age > domain.max_age:
        warnings.append(
            f"raising max_age while testing: a broken policy would stay cached for"
            f" {span(new_max_age)}; ramp it after moving to enforce"
        )
    if clean_days is None:
        warnings.append(
            "no clean TLS-RPT report window is known, so nothing shows this lifetime is safe yet"
        )
    elif clean_days == 0 and new_max_age > 0:
        warnings.append(
            "the TLS-RPT reports of the last days show failures: no day was clean, so nothing"
            f" shows that {span(new_max_age)} of caching is safe (see mtasts reports readiness)"
        )
    elif new_max_age > clean_days * 86400:
        warnings.append(
            f"{span(new_max_age)} is longer than the {span(clean_days * 86400)} of clean TLS-RPT"
            " reports so far: a mistake found later would stay cached that long"
        )
    if domain.mode is Mode.ENFORCE and new_max_age < 86400:
        warnings.append("under a day in enforce: RFC 8461 recommends weeks")
    return Gate((), tuple(warnings))


@dataclass(frozen=True)
class Retirement:
    """RFC 8461 §8.3: serve ``mode: none`` with a new id for the old max_age, then remove."""

    retired_at: dt.datetime
    old_max_age: int
    notes: list[str] = field(default_factory=list)

    @property
    def removable_at(self) -> dt.datetime:
        return self.retired_at + dt.timedelta(seconds=self.old_max_age)

    def status(self, now: dt.datetime) -> str:
        if now >= self.removable_at:
            return (
                "every cached policy has expired: remove the _mta-sts record, then the policy host"
            )
        # Rounded to the nearest hour, so two runs a second apart say the same.
        hours_left = round((self.removable_at - now).total_seconds() / 3600)
        days, hours = divmod(hours_left, 24)
        span = f"{days} day{'s' if days != 1 else ''} {hours} hour{'s' if hours != 1 else ''}"
        return (
            f"keep serving mode: none until {self.removable_at:%Y-%m-%d %H:%M} UTC"
            f" ({span} from now); then remove the _mta-sts record"
        )
