"""One watch pass: gather the due domains, judge, detect changes, store, deliver.

The order matters for "nothing is lost": each domain's observation, new state,
events and outbox rows are committed together before any channel is tried, and
the outbox is then drained (what fails stays for the next pass).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mtasts.check.checker import CheckOptions, gather_domains, judge_all
from mtasts.check.judge import DomainCheck, Expected
from mtasts.reports.analysis import readiness
from mtasts.reports.store import ReportStore

from .changes import OWN, PARTNER, DomainState, Rules, detect
from .config import WatchConfig
from .events import Event
from .outbox import Delivered, deliver
from .report_changes import ReportRules, report_events
from .snapshot import snapshot
from .store import Recorded, Watched, WatchStore

log = logging.getLogger("mtasts.watch")
_REPORT_DAYS = 45  # the report history new-failure-type, spikes and silence look at


@dataclass
class PassResult:
    started: dt.datetime
    finished: dt.datetime | None = None
    checked: list[DomainCheck] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    skipped: int = 0  # watched but not due yet
    errors: int = 0


def watched_set(config: WatchConfig) -> list[tuple[str, str, str]]:
    return [(d, OWN, "") for d in config.own] + [
        (p.domain, PARTNER, p.label) for p in config.partners
    ]


def next_due(config: WatchConfig, role: str, now: dt.datetime, rng: random.Random) -> dt.datetime:
    """The interval, shortened by up to ``jitter`` of it, so runs spread instead of bunching."""
    interval = config.interval if role == OWN else config.partner_interval
    return now + interval * (1 - config.jitter * rng.random())


def routes(
    config: WatchConfig, events: list[Event], labels: Mapping[str, str]
) -> dict[int, list[str]]:
    return {
        i: [
            c.name
            for c in config.channels
            if c.wants(e.severity, e.domain, labels.get(e.domain, ""))
        ]
        for i, e in enumerate(events)
    }


def run_pass(
    store: WatchStore,
    config: WatchConfig,
    options: CheckOptions,
    expected: Mapping[str, Expected] | None = None,
    *,
    everything: bool = False,
    concurrency: int = 50,
    workers: int = 1,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    on_done: Callable[[int], None] | None = None,
) -> PassResult:
    """Watch every due domain once (every domain with ``everything``), then deliver."""
    started = clock()
    result = PassResult(started)
    store.sync_domains(watched_set(config))
    watched = store.watched()
    due = [w for w in watched if everything or w.next_due is None or w.next_due <= started]
    result.skipped = len(watched) - len(due)
    by_name = {w.domain: w for w in due}
    labels = {w.domain: w.label for w in watched}
    facts = gather_domains(list(by_name), options, concurrency, workers, on_done) if due else []
    checks = judge_all(facts, expected)
    rng = random.Random()
    report_store = ReportStore(store.engine)
    recorded: list[Recorded] = []
    for check in checks:
        item = by_name[check.domain]
        try:
            state, found = _detect(store, report_store, config, item, check)
        except Exception:  # one domain's odd facts never stop the pass; it is tried again
            log.exception("watch: change detection for %s failed", check.domain)
            result.errors += 1
            continue
        due_at = next_due(config, item.role, check.facts.observed_at, rng)
        recorded.append(Recorded(check, state, tuple(found), routes(config, found, labels), due_at))
        result.checked.append(check)
        result.events += found
        if check.facts.gather_error:
            result.errors += 1
    store.record_many(recorded)  # every event is durable before any channel is tried
    result.delivered = deliver(store, config.channels, clock(), first_retry=config.retry)
    result.finished = clock()
    store.record_run(started, result.finished, len(checks), len(result.events), result.errors)
    return result


def _detect(
    store: WatchStore,
    report_store: ReportStore,
    config: WatchConfig,
    item: Watched,
    check: DomainCheck,
) -> tuple[DomainState, list[Event]]:
    rules = Rules(item.role, config.expiry_days, config.remind)
    state, events = detect(check.domain, item.state, snapshot(check), rules)
    if item.role == OWN:
        now = check.facts.observed_at
        stats = store.day_stats(check.domain, now.date() - dt.timedelta(days=_REPORT_DAYS))
        verdict = None
        if stats:
            ready = readiness(report_store, check.domain, config.readiness_days, now.date())
            verdict = (str(ready.verdict), ready.reason)
        state, more = report_events(
            check.domain,
            stats,
            verdict,
            state,
            now,
            ReportRules(spike_factor=config.spike_factor, silent_days=config.silent_days),
        )
        events += more
    return state, events
