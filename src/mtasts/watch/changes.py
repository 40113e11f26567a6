"""Change detection: what the domain's state was, what was seen now -> events. Pure.

The state remembers the last *confirmed* snapshot, the problems now open (each
said once when it opens, again at the reminder interval, and once when it is
resolved), and the certificate-expiry thresholds already announced. Rules that
come from the RFCs and the article:

- A DNS timeout or SERVFAIL is never a removal (RFC 8461 §3.1: a failed lookup
  says nothing about the record); a record that is really gone is confirmed by a
  second run before ``sts-record-removed`` (or ``partner-dropped``) is said.
- A policy whose text changed while the record's id did not will not be fetched
  again by senders that cached the old one (RFC 8461 §3.1, §5.1): an error.
- Every policy change carries its cache horizon: the last time the previous policy
  was served plus its ``max_age`` (§3.3: a sender may apply it until then).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from mtasts.check.findings import Severity

from .events import Event, EventCode, EventStatus
from .snapshot import Snapshot

OWN = "own"
PARTNER = "partner"
EXPIRY_DAYS = (30, 14, 7, 3, 1)
# Problems whose reminders are their own thresholds, not the daily reminder.
_NO_REMINDER = {EventCode.CERTIFICATE_EXPIRING}
_MODE_RANK = {"none": 0, "broken": 0, "testing": 1, "enforce": 2}


@dataclass(frozen=True, slots=True)
class Rules:
    role: str = OWN  # own | partner
    expiry_days: tuple[int, ...] = EXPIRY_DAYS
    remind: dt.timedelta = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OpenProblem:
    code: EventCode
    subject: str
    severity: Severity
    since: dt.datetime
    said: dt.datetime  # when it was last said (opened or reminded)
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "subject": self.subject,
            "severity": str(self.severity),
            "since": self.since.isoformat(),
            "said": self.said.isoformat(),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OpenProblem:
        return cls(
            EventCode(raw["code"]),
            raw["subject"],
            Severity(raw["severity"]),
            dt.datetime.fromisoformat(raw["since"]),
            dt.datetime.fromisoformat(raw["said"]),
            raw["message"],
        )


@dataclass(frozen=True, slots=True)
class DomainState:
    snapshot: Snapshot | None = None  # the last confirmed observation
    policy_served_at: dt.datetime | None = None  # last time snapshot's policy was served
    absent_runs: int = 0  # consecutive runs the record (a partner: its policy) was missing
    open: dict[str, OpenProblem] = field(default_factory=dict)
    horizon: dt.datetime | None = None  # the latest cache horizon
    expiry_said: dict[str, int] = field(default_factory=dict)  # address -> lowest threshold said
    # Reports: (sender|result type) -> day announced; the last spike day; readiness
    announced: dict[str, str] = field(default_factory=dict)
    spike_day: str | None = None
    readiness: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
            "policy_served_at": _iso(self.policy_served_at),
            "absent_runs": self.absent_runs,
            "open": {k: p.to_dict() for k, p in self.open.items()},
            "horizon": _iso(self.horizon),
            "expiry_said": self.expiry_said,
            "announced": self.announced,
            "spike_day": self.spike_day,
            "readiness": self.readiness,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DomainState:
        return cls(
            snapshot=Snapshot.from_dict(raw["snapshot"]) if raw.get("snapshot") else None,
            policy_served_at=_time(raw.get("policy_served_at")),
            absent_runs=int(raw.get("absent_runs", 0)),
            open={k: OpenProblem.from_dict(p) for k, p in raw.get("open", {}).items()},
            horizon=_time(raw.get("horizon")),
            expiry_said={k: int(v) for k, v in raw.get("expiry_said", {}).items()},
            announced=dict(raw.get("announced", {})),
            spike_day=raw.get("spike_day"),
            readiness=raw.get("readiness"),
        )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class _Run:
    """Collects one run's events and the problems open after it."""

    def __init__(self, domain: str, state: DomainState, now: dt.datetime, rules: Rules) -> None:
        self.domain = domain
        self.now = now
        self.rules = rules
        self.events: list[Event] = []
        self.was_open = dict(state.open)
        self.open: dict[str, OpenProblem] = {}

    def change(
        self,
        code: EventCode,
        subject: str,
        severity: Severity,
        message: str,
        before: str | None = None,
        after: str | None = None,
        horizon: dt.datetime | None = None,
    ) -> None:
        self.events.append(
            Event(
                code,
                self.domain,
                subject,
                severity,
                self.now,
                message,
                EventStatus.CHANGED,
                before,
                after,
                horizon,
            )
        )

    def problem(
        self, code: EventCode, subject: str, severity: Severity, message: str, after: str = ""
    ) -> None:
        """The problem is there now: opened if new, reminded when due, else just kept open."""
        key = f"{code}|{subject}"
        old = self.was_open.get(key)
        status = None
        if old is None:
            status, since, said = EventStatus.OPENED, self.now, self.now
        elif code not in _NO_REMINDER and self.now - old.said >= self.rules.remind:
            status, since, said = EventStatus.REMINDER, old.since, self.now
        else:
            since, said = old.since, old.said
        self.open[key] = OpenProblem(code, subject, severity, since, said, message)
        if status is not None:
            self.events.append(
                Event(code, self.domain, subject, severity, self.now, message, status, after=after)
            )

    def keep(self, keys: Iterable[str]) -> None:
        """Problems not looked at this run (their evidence is unavailable) stay as they were."""
        for key in keys:
            if key in self.was_open and key not in self.open:
                self.open[key] = self.was_open[key]

    def resolve_rest(self) -> None:
        for key, old in self.was_open.items():
            if key in self.open:
                continue
            code = EventCode.FINDING_RESOLVED if old.code is EventCode.FINDING_OPENED else old.code
            self.events.append(
                Event(
                    code,
                    self.domain,
                    old.subject,
                    Severity.INFO,
                    self.now,
                    f"resolved: {old.message}",
                    EventStatus.RESOLVED,
                    before=old.message,
                )
            )


def detect(
    domain: str, state: DomainState, now_seen: Snapshot, rules: Rules = Rules()
) -> tuple[DomainState, list[Event]]:
    """The events between ``state`` and the snapshot just taken, and the state after it."""
    run = _Run(domain, state, now_seen.observed_at, rules)
    if rules.role == PARTNER:
        new_state = _partner(run, state, now_seen)
    else:
        new_state = _own(run, state, now_seen)
    run.resolve_rest()
    return replace(new_state, open=run.open), run.events


def _horizon(state: DomainState) -> dt.datetime | None:
    before = state.snapshot
    if before is None or before.max_age is None or state.policy_served_at is None:
        return None
    return state.policy_served_at + dt.timedelta(seconds=before.max_age)


def _own(run: _Run, state: DomainState, seen: Snapshot) -> DomainState:
    before = state.snapshot
    record_owner = f"_mta-sts.{run.domain}"
    effective = seen
    absent_runs = 0
    served_at = state.policy_served_at
    horizon = state.horizon
    if seen.sts == "unavailable":
        absent_runs = state.absent_runs  # a run that learnt nothing neither confirms nor clears
        run.problem(
            EventCode.DNS_UNAVAILABLE,
            record_owner,
            Severity.WARNING,
            "the _mta-sts TXT lookup timed out or failed: the record's state is unknown",
        )
        if before is not None:  # nothing is known about the record or the policy: keep both
            effective = _carry(seen, before, record=True)
        run.keep(k for k in run.was_open if k.startswith(str(EventCode.POLICY_UNREACHABLE)))
    elif before is not None and before.sts == "present" and seen.sts == "absent":
        absent_runs = state.absent_runs + 1
        if absent_runs < 2:  # confirmed only by a second run
            effective = _carry(seen, before, record=True)
        else:
            absent_runs = 0
            horizon = _horizon(state) or horizon
            run.change(
                EventCode.STS_RECORD_REMOVED,
                record_owner,
                Severity.ERROR,
                f"the _mta-sts record is gone (confirmed by two runs); senders that cached the"
                f" {before.mode} policy apply it until {_when(horizon)}",
                before=_record(before),
                after=None,
                horizon=horizon,
            )
    elif before is not None and before.sts == "absent" and seen.sts == "present":
        run.change(
            EventCode.STS_RECORD_ADDED,
            record_owner,
            Severity.INFO,
            f"the _mta-sts record appeared (id {seen.sts_id})",
            after=_record(seen),
        )

    if before is not None and seen.sts == effective.sts == "present":
        horizon = _policy_changes(run, state, seen) or horizon
    if effective.policy_text is None and before is not None and seen.sts == "present":
        # Present but not fetched now (unreachable): the old policy still stands for senders.
        effective = _carry(effective, before, record=False)
    if seen.policy_text is not None and seen.sts == "present":
        served_at = seen.observed_at

    for address, why in seen.unreachable.items():
        run.problem(
            EventCode.POLICY_UNREACHABLE,
            address,
            Severity.ERROR,
            f"mta-sts.{run.domain} on {address}: {why}",
        )
    if seen.inconsistent:
        run.problem(
            EventCode.POLICY_INCONSISTENT,
            f"mta-sts.{run.domain}",
            Severity.ERROR,
            seen.inconsistent,
        )
    _mx_changes(run, before, seen)
    expiry_said = _expiry(run, state, seen)
    for key, message in seen.errors.items():
        code, subject = key.split("|", 1)
        run.problem(EventCode.FINDING_OPENED, f"{code} {subject}", Severity.ERROR, message, code)
    _keep_report_problems(run)
    return replace(
        state,
        snapshot=effective,
        policy_served_at=served_at,
        absent_runs=absent_runs,
        horizon=horizon,
        expiry_said=expiry_said,
    )


def _carry(seen: Snapshot, before: Snapshot, record: bool) -> Snapshot:
    """``seen`` with the confirmed policy (and record) of ``before``: what senders still act
    on while this run could not tell (unreachable, DNS unavailable, removal unconfirmed)."""
    kept = replace(
        seen,
        policy_text=before.policy_text,
        mode=before.mode,
        max_age=before.max_age,
        mx_patterns=before.mx_patterns,
    )
    return replace(kept, sts=before.sts, sts_id=before.sts_id) if record else kept


def _keep_report_problems(run: _Run) -> None:
    # Judged from the report store by report_changes, not from this observation.
    run.keep(k for k in run.was_open if k.startswith(str(EventCode.REPORTER_SILENT)))


def _record(snap: Snapshot) -> str:
    return f"v=STSv1; id={snap.sts_id};"


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "their cache expires"


def _policy_changes(run: _Run, state: DomainState, seen: Snapshot) -> dt.datetime | None:
    """Events for a policy that differs from the confirmed one; the new cache horizon."""
    before = state.snapshot
    assert before is not None
    if before.policy_text is None or seen.policy_text is None:
        return None
    text_changed = before.policy_text != seen.policy_text
    id_changed = before.sts_id != seen.sts_id and before.sts_id and seen.sts_id
    if not text_changed and not id_changed:
        return None
    horizon = _horizon(state) if text_changed else None
    until = f"; senders that cached the old policy may apply it until {_when(horizon)}"
    if id_changed:
        run.change(
            EventCode.POLICY_ID_CHANGED,
            f"_mta-sts.{run.domain}",
            Severity.INFO,
            f"the policy id changed from {before.sts_id} to {seen.sts_id}"
            + (until if text_changed else " (the policy text is the same)"),
            before=before.sts_id,
            after=seen.sts_id,
            horizon=horizon,
        )
    elif text_changed:
        run.change(
            EventCode.POLICY_CHANGED_WITHOUT_ID,
            f"mta-sts.{run.domain}",
            Severity.ERROR,
            f"the policy text changed but the id is still {seen.sts_id}: senders that cached"
            f" the old policy will not fetch the new one (RFC 8461 §3.1); publish a new id",
            before=before.policy_text,
            after=seen.policy_text,
            horizon=horizon,
        )
    if before.mode != seen.mode:
        stricter = _MODE_RANK.get(seen.mode or "none", 0) > _MODE_RANK.get(before.mode or "none", 0)
        run.change(
            EventCode.MODE_CHANGED,
            f"mta-sts.{run.domain}",
            Severity.INFO if stricter else Severity.WARNING,
            f"mode {before.mode} -> {seen.mode} ({'stricter' if stricter else 'weaker'})",
            before=before.mode,
            after=seen.mode,
            horizon=horizon,
        )
    if before.mx_patterns != seen.mx_patterns:
        run.change(
            EventCode.POLICY_MX_CHANGED,
            f"mta-sts.{run.domain}",
            Severity.INFO,
            f"policy mx patterns {', '.join(before.mx_patterns)} -> {', '.join(seen.mx_patterns)}",
            before=" ".join(before.mx_patterns),
            after=" ".join(seen.mx_patterns),
            horizon=horizon,
        )
    if before.max_age != seen.max_age:
        run.change(
            EventCode.MAX_AGE_CHANGED,
            f"mta-sts.{run.domain}",
            Severity.INFO,
            f"max_age {before.max_age} -> {seen.max_age}",
            before=str(before.max_age),
            after=str(seen.max_age),
            horizon=horizon,
        )
    return horizon


def _mx_changes(run: _Run, before: Snapshot | None, seen: Snapshot) -> None:
    for subject, address in seen.addresses.items():
        if address.starttls is False:
            old = before.addresses.get(subject) if before else None
            if old is not None and old.starttls:
                run.change(
                    EventCode.STARTTLS_DROPPED,
                    subject,
                    Severity.ERROR,
                    "STARTTLS is no longer offered: senders without a policy fall back to plaintext",
                    before="STARTTLS",
                    after="no STARTTLS",
                )
    if before is None or before.mx_hosts is None or seen.mx_hosts is None:
        return
    if before.mx_hosts != seen.mx_hosts:
        run.change(
            EventCode.MX_CHANGED,
            run.domain,
            Severity.WARNING,
            f"MX hosts {', '.join(before.mx_hosts) or '-'} -> {', '.join(seen.mx_hosts) or '-'}",
            before=" ".join(before.mx_hosts),
            after=" ".join(seen.mx_hosts),
        )
    common = set(before.mx_hosts) & set(seen.mx_hosts)
    for host in sorted(common):
        had = {a.address for a in before.addresses.values() if a.host == host}
        has = {a.address for a in seen.addresses.values() if a.host == host}
        for added in sorted(has - had):
            run.change(
                EventCode.MX_ADDRESS_ADDED,
                f"{host} [{added}]",
                Severity.INFO,
                f"{host} gained address {added}",
                after=added,
            )
        for removed in sorted(had - has):
            run.change(
                EventCode.MX_ADDRESS_REMOVED,
                f"{host} [{removed}]",
                Severity.INFO,
                f"{host} lost address {removed}",
                before=removed,
            )
    for subject, address in seen.addresses.items():
        old_address = before.addresses.get(subject)
        was = old_address.certificate if old_address else None
        now = address.certificate
        if was and now and was.sha256 and now.sha256 and was.sha256 != now.sha256:
            run.change(
                EventCode.CERTIFICATE_CHANGED,
                subject,
                Severity.INFO,
                f"a new certificate: {now.describe()}",
                before=was.describe(),
                after=now.describe(),
            )


def _expiry(run: _Run, state: DomainState, seen: Snapshot) -> dict[str, int]:
    """certificate-expiring per address, once per threshold crossed (30/14/7/3/1 days):
    a load balancer's backends renew separately, so each address counts alone."""
    said: dict[str, int] = {}
    thresholds = sorted(run.rules.expiry_days)
    for subject, address in seen.addresses.items():
        cert = address.certificate
        if cert is None:
            continue
        days = (cert.not_after - run.now).total_seconds() / 86400
        if days < 0:
            continue  # expired: the certificate-expired finding says so
        crossed = next((t for t in thresholds if days <= t), None)
        if crossed is None:
            continue
        key = f"{EventCode.CERTIFICATE_EXPIRING}|{subject}"
        previous = state.expiry_said.get(subject)
        message = f"the certificate expires in {int(days)} days ({cert.not_after:%Y-%m-%d})"
        severity = Severity.ERROR if crossed <= 7 else Severity.WARNING
        if previous is not None and crossed < previous and key in run.was_open:
            # a lower threshold: said again, as a reminder of the same open problem
            old = run.was_open[key]
            run.open[key] = replace(old, said=run.now, message=message, severity=severity)
            run.events.append(
                Event(
                    EventCode.CERTIFICATE_EXPIRING,
                    run.domain,
                    subject,
                    severity,
                    run.now,
                    message,
                    EventStatus.REMINDER,
                    after=cert.not_after.isoformat(),
                )
            )
        else:
            run.problem(
                EventCode.CERTIFICATE_EXPIRING,
                subject,
                severity,
                message,
                cert.not_after.isoformat(),
            )
        said[subject] = min(crossed, previous) if previous is not None else crossed
    return said


def _partner(run: _Run, state: DomainState, seen: Snapshot) -> DomainState:
    before = state.snapshot
    if seen.sts == "unavailable":
        return replace(state, snapshot=before or seen)  # unknown: nothing changed, nothing said
    if before is None:
        return replace(state, snapshot=seen)
    was = _MODE_RANK.get(before.adoption, 0)
    now = _MODE_RANK.get(seen.adoption, 0)
    effective = seen
    absent_runs = 0
    if was > 0 and now == 0:
        absent_runs = state.absent_runs + 1
        if absent_runs < 2:
            effective = replace(seen, adoption=before.adoption, mode=before.mode)
        else:
            absent_runs = 0
            run.change(
                EventCode.PARTNER_DROPPED,
                run.domain,
                Severity.WARNING,
                f"{run.domain} no longer has a usable MTA-STS policy (was {before.adoption}; now"
                f" {seen.adoption}, confirmed by two runs)",
                before=before.adoption,
                after=seen.adoption,
            )
    elif now > was:
        run.change(
            EventCode.PARTNER_ADOPTED,
            run.domain,
            Severity.INFO,
            f"{run.domain} now publishes MTA-STS in {seen.adoption} mode (was {before.adoption})",
            before=before.adoption,
            after=seen.adoption,
        )
    elif 0 < now < was:
        run.change(
            EventCode.PARTNER_DOWNGRADED,
            run.domain,
            Severity.WARNING,
            f"{run.domain} went from {before.adoption} to {seen.adoption}",
            before=before.adoption,
            after=seen.adoption,
        )
    if before.tlsrpt != seen.tlsrpt:
        run.change(
            EventCode.PARTNER_TLSRPT_CHANGED,
            run.domain,
            Severity.INFO,
            f"{run.domain}'s TLS-RPT rua {_rua(before.tlsrpt)} -> {_rua(seen.tlsrpt)}",
            before=_rua(before.tlsrpt),
            after=_rua(seen.tlsrpt),
        )
    return replace(state, snapshot=effective, absent_runs=absent_runs)


def _rua(rua: tuple[str, ...] | None) -> str:
    return ",".join(rua) if rua else "none"
