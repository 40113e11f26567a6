"""Events from the TLS-RPT reports in the store, per policy domain. Pure: rows in, events out.

Reports describe whole UTC days (RFC 8460 §4.1) and arrive a day or so later, so
"recent" means the last few days with data, and a sender is silent only after
it missed several days it used to report.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace

from mtasts.check.findings import Severity
from mtasts.reports.verdict import Verdict

from .changes import DomainState, OpenProblem
from .events import Event, EventCode, EventStatus


@dataclass(frozen=True, slots=True)
class DayStat:
    """One sender's sessions for one policy domain on one UTC day."""

    day: dt.date
    sender: str
    successful: int
    failed: int
    failures: tuple[tuple[str, int], ...] = ()  # (result type, sessions)


@dataclass(frozen=True, slots=True)
class ReportRules:
    window_days: int = 30  # a failure type unseen this long is new
    recent_days: int = 3  # days counted as "just reported" (reports arrive a day late)
    spike_factor: float = 3.0
    baseline_days: int = 14
    spike_min_sessions: int = 10  # fewer failed sessions than this is never a spike
    silent_days: int = 3
    regular_days: int = 5  # a sender that reported on 5 of the 7 days before is "daily"


def report_events(
    domain: str,
    stats: list[DayStat],
    readiness: tuple[str, str] | None,
    state: DomainState,
    now: dt.datetime,
    rules: ReportRules = ReportRules(),
) -> tuple[DomainState, list[Event]]:
    """new-failure-type, failure-spike, reporter-silent and readiness-changed for ``domain``."""
    today = now.date()
    events: list[Event] = []
    announced = {
        k: v
        for k, v in state.announced.items()
        if dt.date.fromisoformat(v) >= today - dt.timedelta(days=rules.window_days)
    }
    seen: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
    for stat in stats:
        for result_type, sessions in stat.failures:
            if sessions > 0:
                seen[(stat.sender, result_type)].append(stat.day)
    recent_from = today - dt.timedelta(days=rules.recent_days)
    for (sender, result_type), days in sorted(seen.items()):
        latest = max(days)
        if latest < recent_from:
            continue
        key = f"{sender}|{result_type}"
        earlier = [
            d for d in days if latest - dt.timedelta(days=rules.window_days) <= d < recent_from
        ]
        if earlier or key in announced:
            continue
        announced[key] = latest.isoformat()
        if state.readiness is None and not state.announced:
            continue  # the first look at a store: history, not news
        sessions = sum(
            n for s in stats if s.sender == sender for t, n in s.failures if t == result_type
        )
        events.append(
            Event(
                EventCode.NEW_FAILURE_TYPE,
                domain,
                sender,
                Severity.WARNING,
                now,
                f"{sender} reports {result_type} for {domain} ({sessions} sessions since"
                f" {min(d for d in days if d >= recent_from)}), not seen in the"
                f" {rules.window_days} days before",
                after=result_type,
            )
        )
    spike_day = _spike(domain, stats, state, now, rules, events)
    open_ = dict(state.open)
    _silence(domain, stats, open_, now, rules, events)
    verdict = state.readiness
    if readiness is not None:
        verdict_now, reason = readiness
        if verdict is not None and verdict != verdict_now:
            advice = " — you may switch to enforce now" if verdict_now == Verdict.READY else ""
            events.append(
                Event(
                    EventCode.READINESS_CHANGED,
                    domain,
                    domain,
                    Severity.INFO if verdict_now == Verdict.READY else Severity.WARNING,
                    now,
                    f"enforce readiness {verdict} -> {verdict_now}: {reason}{advice}",
                    before=verdict,
                    after=verdict_now,
                )
            )
        verdict = verdict_now
    return (
        replace(state, announced=announced, spike_day=spike_day, readiness=verdict, open=open_),
        events,
    )


def _spike(
    domain: str,
    stats: list[DayStat],
    state: DomainState,
    now: dt.datetime,
    rules: ReportRules,
    events: list[Event],
) -> str | None:
    """failure-spike: the latest day's failed-session rate over ``spike_factor`` times the
    rate of the ``baseline_days`` before it; said once per day."""
    by_day: dict[dt.date, tuple[int, int]] = {}
    for stat in stats:
        ok, bad = by_day.get(stat.day, (0, 0))
        by_day[stat.day] = (ok + stat.successful, bad + stat.failed)
    if not by_day:
        return state.spike_day
    latest = max(by_day)
    if latest < now.date() - dt.timedelta(days=rules.recent_days):
        return state.spike_day
    ok, bad = by_day[latest]
    base_days = [d for d in by_day if latest - dt.timedelta(days=rules.baseline_days) <= d < latest]
    if len(base_days) < 3 or bad < rules.spike_min_sessions:
        return state.spike_day  # too little history to call anything a spike
    base_ok = sum(by_day[d][0] for d in base_days)
    base_bad = sum(by_day[d][1] for d in base_days)
    rate = bad / (ok + bad)
    baseline = base_bad / (base_ok + base_bad) if base_ok + base_bad else 0.0
    if rate <= rules.spike_factor * max(baseline, 0.001) or state.spike_day == latest.isoformat():
        return state.spike_day
    events.append(
        Event(
            EventCode.FAILURE_SPIKE,
            domain,
            domain,
            Severity.ERROR,
            now,
            f"{bad} of {ok + bad} sessions failed on {latest} ({rate:.1%}), against"
            f" {baseline:.2%} over the {len(base_days)} days before",
            before=f"{baseline:.4f}",
            after=f"{rate:.4f}",
        )
    )
    return latest.isoformat()


def _silence(
    domain: str,
    stats: list[DayStat],
    open_: dict[str, OpenProblem],
    now: dt.datetime,
    rules: ReportRules,
    events: list[Event],
) -> None:
    """reporter-silent: a sender that reported (nearly) daily and has missed ``silent_days``."""
    days: dict[str, set[dt.date]] = defaultdict(set)
    for stat in stats:
        days[stat.sender].add(stat.day)
    today = now.date()
    for sender, reported in sorted(days.items()):
        last = max(reported)
        week = {last - dt.timedelta(days=n) for n in range(1, 8)}
        regular = len(week & reported) >= rules.regular_days
        # A report for day D arrives on D+1: the gap counts from the day after that.
        missed = (today - last).days - 1
        key = f"{EventCode.REPORTER_SILENT}|{sender}"
        if regular and missed >= rules.silent_days:
            if key not in open_:
                message = f"{sender} reported daily for {domain} and has sent nothing since {last} ({missed} days)"
                open_[key] = OpenProblem(
                    EventCode.REPORTER_SILENT, sender, Severity.WARNING, now, now, message
                )
                events.append(
                    Event(
                        EventCode.REPORTER_SILENT,
                        domain,
                        sender,
                        Severity.WARNING,
                        now,
                        message,
                        EventStatus.OPENED,
                        before=last.isoformat(),
                    )
                )
        elif key in open_ and missed < rules.silent_days:
            old = open_.pop(key)
            events.append(
                Event(
                    EventCode.REPORTER_SILENT,
                    domain,
                    sender,
                    Severity.INFO,
                    now,
                    f"resolved: {sender} reports again (last report for {last})",
                    EventStatus.RESOLVED,
                    before=old.message,
                )
            )
