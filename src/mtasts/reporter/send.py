"""``mtasts tlsrpt send``: build the reports of finished UTC days and deliver the due ones.

A report is built once and stored (its report-id and bytes then never change), first
tried after a random delay past midnight UTC (§4.1's example: up to 4 hours; the delay
is derived from the domain, so every run agrees on it), then retried with a doubling
wait for up to 24 hours (§5.5). A URI that accepted it is never sent it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtasts.net.dns import Resolver
from mtasts.tlsrpt import parse_report
from mtasts.tlsrpt.build import (
    PolicyTally,
    build_report,
    report_filename,
    report_gzip,
    report_id,
)
from mtasts.tlsrpt.model import Report

from .config import TlsrptConfig
from .deliver import DeliveryError, compose, deliver, rua_for
from .relay import Relay
from .store import Outgoing, Pending, ReporterStore, ReportStatus

log = logging.getLogger("mtasts.reporter")
_LONGEST_WAIT = dt.timedelta(hours=6)


@dataclass
class SendSummary:
    built: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    no_rua: int = 0
    relay_connections: int = 0  # SMTP sessions opened with the relay (see .relay)
    relay_not_tried: int = 0  # mails not tried after the relay failed in this run
    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "built": self.built,
            "sent": self.sent,
            "retrying": self.retrying,
            "failed": self.failed,
            "no_rua": self.no_rua,
            "relay_connections": self.relay_connections,
            "relay_not_tried": self.relay_not_tried,
            "written": self.written,
            "errors": self.errors,
        }


def first_attempt(day: dt.date, domain: str, max_delay: dt.timedelta) -> dt.datetime:
    """Midnight UTC after ``day`` plus this domain's share of the random delay."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    if max_delay <= dt.timedelta(0):
        return midnight
    fraction = int(hashlib.sha256(f"{day}/{domain}".encode()).hexdigest()[:8], 16) / 2**32
    return midnight + dt.timedelta(seconds=int(max_delay.total_seconds() * fraction))


def _build(
    config: TlsrptConfig, pending: Pending, tallies: list[PolicyTally]
) -> tuple[Report, str, bytes]:
    rid = report_id(pending.day, pending.policy_domain, pending.record, config.submitter_name)
    report = build_report(
        pending.day,
        organization=config.organization,
        contact=config.contact,
        report_id=rid,
        tallies=tallies,
    )
    return report, rid, report_gzip(report)


def _by_day(pendings: list[Pending]) -> dict[dt.date, list[Pending]]:
    days: dict[dt.date, list[Pending]] = {}
    for pending in pendings:
        days.setdefault(pending.day, []).append(pending)
    return days


def write_dry_run(
    store: ReporterStore, config: TlsrptConfig, day: dt.date, out: Path
) -> SendSummary:
    """The reports of ``day`` (today too) and the messages they would be, written to ``out``."""
    summary = SendSummary()
    out.mkdir(parents=True, exist_ok=True)
    tallies = store.day_tallies(day)
    for pending in store.unreported(day, day=day):
        report, _rid, document = _build(
            config, pending, tallies.get((pending.policy_domain, pending.record_key), [])
        )
        name = report_filename(report, config.submitter_name, pending.policy_domain)
        (out / name.replace(".gz", "")).write_text(report.to_json(indent=2) + "\n")
        (out / name).write_bytes(document)
        summary.written.append(str(out / name))
        if config.organization and config.contact:
            message = compose(
                report, config, pending.policy_domain, f"tlsrpt@{pending.policy_domain}"
            )
            eml = out / (name.removesuffix(".json.gz") + ".eml")
            eml.write_bytes(message)
            summary.written.append(str(eml))
        summary.built += 1
    return summary


def build_due(
    store: ReporterStore,
    config: TlsrptConfig,
    now: dt.datetime,
    *,
    no_delay: bool = False,
    day: dt.date | None = None,
) -> int:
    """Store the reports of every finished day (or of ``day``) that has sessions and no
    report yet: a day's tallies in two queries, its reports in transactions of 1,000."""
    built = 0
    for each_day, pendings in _by_day(store.unreported(now.date(), day=day)).items():
        tallies = store.day_tallies(each_day)
        batch: list[tuple[Pending, str, bytes, dt.datetime]] = []
        for pending in pendings:
            _report, rid, document = _build(
                config, pending, tallies.get((pending.policy_domain, pending.record_key), [])
            )
            when = (
                now
                if no_delay
                else first_attempt(pending.day, pending.policy_domain, config.max_delay)
            )
            batch.append((pending, rid, document, when))
            if len(batch) >= 1000:
                built += store.create_reports(batch, now=now, retry_for=config.retry_for)
                batch = []
        built += store.create_reports(batch, now=now, retry_for=config.retry_for)
    return built


async def _attempt(
    store: ReporterStore,
    config: TlsrptConfig,
    resolver: Resolver,
    outgoing: Outgoing,
    now: dt.datetime,
    summary: SendSummary,
    relay: Relay,
) -> None:
    rua = await rua_for(resolver, outgoing.policy_domain, outgoing.record)
    uris, note = rua.uris, rua.note
    wait = min(config.retry * (2**outgoing.attempts), _LONGEST_WAIT)
    if not uris:
        if rua.dns_failed:
            # Nothing is known about the endpoints: try again later, blaming none of them.
            status = store.record_attempt(
                outgoing,
                {},
                now=now,
                next_attempt=now + wait,
                suppress_after=0,
                suppress_for=config.suppress_for,
                error=note,
            )
            summary.failed += status == ReportStatus.FAILED
            summary.retrying += status == ReportStatus.PENDING
            summary.errors.append(f"{outgoing.policy_domain}: {note}")
            return
        store.set_status(outgoing, ReportStatus.NO_RUA, note)
        summary.no_rua += 1
        log.info(
            "report not sent domain=%s report_id=%s: %s",
            outgoing.policy_domain,
            outgoing.report_id,
            note,
        )
        return
    done = store.accepted_uris(outgoing.id)
    suppressed = store.suppressed(uris, now)
    results: dict[str, str | None] = {}
    ours: set[str] = set()  # failed on our side (relay, sendmail): not the endpoint's fault
    not_tried: set[str] = set()  # the relay failed earlier in this run: said once, not per mail
    skipped: list[str] = []
    report = parse_report(gzip.decompress(outgoing.document))
    for uri in uris:
        if uri in done:
            continue
        if uri in suppressed:
            # Not tried, so not another failure of the endpoint: its suppression ends on time.
            skipped.append(f"{uri}: suppressed after {config.suppress_after} failures in a row")
            continue
        if relay.broken is not None and not config.sendmail and uri.lower().startswith("mailto:"):
            results[uri] = f"{relay.broken} (not tried again in this run)"
            ours.add(uri)
            not_tried.add(uri)
            continue
        try:
            await asyncio.to_thread(
                deliver, config, uri, report, outgoing.policy_domain, outgoing.document, relay
            )
            results[uri] = None
        except DeliveryError as exc:
            results[uri] = str(exc)
            if exc.ours:
                ours.add(uri)
        except Exception as exc:  # a DKIM key or a relay bug must cost one report, not the run
            results[uri] = f"{uri}: {type(exc).__name__}: {exc}"[:300]
    status = store.record_attempt(
        outgoing,
        results,
        now=now,
        next_attempt=now + wait,
        suppress_after=config.suppress_after,
        suppress_for=config.suppress_for,
        error="; ".join(skipped) or None,
        ours=frozenset(ours),
    )
    errors = [e for uri, e in results.items() if e and uri not in not_tried] + skipped
    summary.errors.extend(errors)  # also when another URI took it: the admin should know
    summary.relay_not_tried += len(not_tried)
    if status == ReportStatus.SENT:
        summary.sent += 1
        log.info("report sent domain=%s report_id=%s", outgoing.policy_domain, outgoing.report_id)
    elif status == ReportStatus.FAILED:
        summary.failed += 1
    else:
        summary.retrying += 1
    for error in errors:
        log.warning("report delivery failed domain=%s: %s", outgoing.policy_domain, error)


async def send_due(
    store: ReporterStore,
    config: TlsrptConfig,
    resolver: Resolver,
    now: dt.datetime,
    *,
    day: dt.date | None = None,
    no_delay: bool = False,
) -> SendSummary:
    summary = SendSummary()
    summary.built = build_due(store, config, now, no_delay=no_delay or day is not None, day=day)
    # One relay session carries the run's report mail (see .relay); deliveries run one at
    # a time, each in a worker thread, so the session is never used by two at once.
    with Relay(config) as relay:
        for outgoing in store.due(now, day):
            await _attempt(store, config, resolver, outgoing, now, summary, relay)
    summary.relay_connections = relay.connections
    return summary
