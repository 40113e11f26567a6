"""Where each watched domain stands, from its stored state, and the Prometheus text for it.

Pure: rows in, rows or text out. ``mtasts watch status`` prints the rows;
``/metrics`` (while ``mtasts watch run`` runs) and ``mtasts watch metrics`` print the text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mtasts.check.findings import Severity

from .events import EventCode
from .store import ChannelHealth, Watched

_VERDICT_VALUE = {"ok": 0, "warning": 1, "error": 2, "unknown": 3}


@dataclass(frozen=True, slots=True)
class StatusRow:
    domain: str
    role: str
    label: str
    verdict: str
    mode: str
    readiness: str | None
    first_expiry_days: int | None
    first_expiry_subject: str | None
    open_events: int
    open_errors: int
    horizon: dt.datetime | None
    last_run: dt.datetime | None
    next_due: dt.datetime | None
    certificates: tuple[tuple[str, str, str, float], ...]  # (mx, address, subject, days left)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "role": self.role,
            "label": self.label,
            "verdict": self.verdict,
            "mode": self.mode,
            "readiness": self.readiness,
            "first_expiry_days": self.first_expiry_days,
            "first_expiry": self.first_expiry_subject,
            "open_events": self.open_events,
            "open_errors": self.open_errors,
            "cache_horizon": self.horizon.isoformat() if self.horizon else None,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "next_due": self.next_due.isoformat() if self.next_due else None,
        }


def status_rows(watched: Sequence[Watched], now: dt.datetime) -> list[StatusRow]:
    rows = []
    for item in watched:
        snap = item.state.snapshot
        certificates = []
        if snap is not None:
            for subject, address in sorted(snap.addresses.items()):
                if address.certificate is not None:
                    days = (address.certificate.not_after - now).total_seconds() / 86400
                    certificates.append((address.host, address.address, subject, days))
        first = min(certificates, key=lambda c: c[3]) if certificates else None
        open_ = item.state.open.values()
        horizon = item.state.horizon if item.state.horizon and item.state.horizon > now else None
        rows.append(
            StatusRow(
                domain=item.domain,
                role=item.role,
                label=item.label,
                verdict=snap.verdict if snap else "unknown",
                mode=snap.adoption if snap else "-",
                readiness=item.state.readiness,
                first_expiry_days=int(first[3]) if first else None,
                first_expiry_subject=first[2] if first else None,
                open_events=len(item.state.open),
                open_errors=sum(
                    p.code is EventCode.FINDING_OPENED and p.severity is Severity.ERROR
                    for p in open_
                ),
                horizon=horizon,
                last_run=item.last_run,
                next_due=item.next_due,
                certificates=tuple(certificates),
            )
        )
    return rows


def _label(value: str) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(
    rows: Sequence[StatusRow],
    channels: Sequence[ChannelHealth],
    last_run: dt.datetime | None,
) -> str:
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    family(
        "mtasts_watch_certificate_expiry_days",
        "gauge",
        "Days until the MX certificate on each address expires (negative: expired).",
    )
    for row in rows:
        for host, address, _subject, days in row.certificates:
            out.append(
                f'mtasts_watch_certificate_expiry_days{{domain="{_label(row.domain)}",'
                f'mx="{_label(host)}",address="{_label(address)}"}} {days:.3f}'
            )
    family(
        "mtasts_watch_verdict",
        "gauge",
        "The latest check verdict per domain: 0 ok, 1 warning, 2 error, 3 unknown.",
    )
    for row in rows:
        out.append(
            f'mtasts_watch_verdict{{domain="{_label(row.domain)}",role="{row.role}"}}'
            f" {_VERDICT_VALUE.get(row.verdict, 3)}"
        )
    family("mtasts_watch_open_error_findings", "gauge", "Error findings open per domain.")
    for row in rows:
        out.append(
            f'mtasts_watch_open_error_findings{{domain="{_label(row.domain)}"}} {row.open_errors}'
        )
    family("mtasts_watch_open_events", "gauge", "Problems open per domain (any severity).")
    for row in rows:
        out.append(f'mtasts_watch_open_events{{domain="{_label(row.domain)}"}} {row.open_events}')
    family(
        "mtasts_watch_cache_horizon_timestamp_seconds",
        "gauge",
        "Until when senders may still hold a previous policy (Unix time).",
    )
    for row in rows:
        if row.horizon is not None:
            out.append(
                f'mtasts_watch_cache_horizon_timestamp_seconds{{domain="{_label(row.domain)}"}}'
                f" {row.horizon.timestamp():.0f}"
            )
    family(
        "mtasts_watch_last_success_timestamp_seconds",
        "gauge",
        "When the last watch pass finished (Unix time).",
    )
    if last_run is not None:
        out.append(f"mtasts_watch_last_success_timestamp_seconds {last_run.timestamp():.0f}")
    family("mtasts_watch_outbox_pending", "gauge", "Events waiting to be delivered per channel.")
    for channel in channels:
        out.append(
            f'mtasts_watch_outbox_pending{{channel="{_label(channel.name)}"}} {channel.pending}'
        )
    family(
        "mtasts_watch_channel_last_success_timestamp_seconds",
        "gauge",
        "When each channel last took events (Unix time).",
    )
    for channel in channels:
        if channel.last_success is not None:
            out.append(
                f'mtasts_watch_channel_last_success_timestamp_seconds{{channel="{_label(channel.name)}"}}'
                f" {channel.last_success.timestamp():.0f}"
            )
    return "\n".join(out) + "\n"
