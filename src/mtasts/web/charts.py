"""Charts as SVG text, drawn on the server: rows in, markup out. Pure.

Sessions per day as stacked bars (successful at the bottom, then each failure result
type), with vertical markers for our own policy changes. Every label is escaped: a
result type or a marker's text may come from a stranger's report. The page shows the
same numbers as a table next to the chart (the fallback for screen readers and for
anyone who wants the figures).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape as _html_escape

from mtasts.text import plain


def escape(text: str) -> str:
    """Text for SVG: control characters dropped (XML forbids them), markup escaped."""
    return _html_escape(plain(text))


WIDTH, HEIGHT = 760, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 12, 34
SUCCESS_COLOUR = "#3b8f4f"
# Failure types in a fixed order of colours; unknown types cycle through the rest.
_PALETTE = ("#c0392b", "#e67e22", "#8e44ad", "#d35400", "#b03a2e", "#7f8c8d", "#2c3e50", "#a04000")


@dataclass(frozen=True, slots=True)
class DayBar:
    day: dt.date
    successful: int
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.successful + sum(self.failures.values())


@dataclass(frozen=True, slots=True)
class Marker:
    day: dt.date
    label: str


def colours(types: Sequence[str]) -> dict[str, str]:
    return {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(sorted(types))}


def _ticks(top: int) -> list[int]:
    if top <= 0:
        return [0]
    step = 10 ** max(len(str(top)) - 1, 0)
    for factor in (1, 2, 5, 10):
        if top / (step * factor) <= 5:
            step *= factor
            break
    return list(range(0, top + step, step))


def sessions_chart(
    bars: Sequence[DayBar],
    markers: Sequence[Marker] = (),
    title: str = "sessions per day",
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> str:
    """Stacked daily bars from ``start`` to ``end`` (default: the days with data); a day
    without reports is a gap, not a zero-height bar."""
    if not bars:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} 40"'
            f' width="{WIDTH}" height="40"><title>{escape(title)}</title>'
            '<text x="8" y="24" font-size="13">no reports in this range</text></svg>'
        )
    first = start or min(b.day for b in bars)
    last = end or max([b.day for b in bars] + [m.day for m in markers])
    bars = [b for b in bars if first <= b.day <= last]
    markers = [m for m in markers if first <= m.day <= last]
    days = (last - first).days + 1
    types = sorted({t for b in bars for t in b.failures})
    palette = colours(types)
    ticks = _ticks(max((b.total for b in bars), default=0))
    top = ticks[-1] or 1
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / days
    bar_w = max(slot * 0.7, 1.0)

    def y(value: float) -> float:
        return _TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="100%" class="chart"><title>{escape(title)}</title>'
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"'
            ' stroke="#ddd" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{tick:,}</text>"
        )
    for bar in bars:
        x = _LEFT + (bar.day - first).days * slot + (slot - bar_w) / 2
        base = 0
        segments = [("successful", bar.successful, SUCCESS_COLOUR)]
        segments += [(t, bar.failures[t], palette[t]) for t in types if bar.failures.get(t)]
        for name, value, colour in segments:
            if value <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y(base + value):.1f}" width="{bar_w:.1f}"'
                f' height="{y(base) - y(base + value):.1f}" fill="{colour}">'
                f"<title>{bar.day}: {escape(name)} {value:,}</title></rect>"
            )
            base += value
    for marker in markers:
        x = _LEFT + (marker.day - first).days * slot + slot / 2
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#1f5fa8"'
            f' stroke-dasharray="4 3" stroke-width="1.5"><title>{marker.day}:'
            f" {escape(marker.label)}</title></line>"
        )
    label_every = max(1, days // 8)
    for n in range(0, days, label_every):
        day = first + dt.timedelta(days=n)
        x = _LEFT + n * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 12}" font-size="11" text-anchor="middle">'
            f"{day:%m-%d}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(types: Sequence[str]) -> list[tuple[str, str]]:
    """(name, colour) for the legend below the chart."""
    palette = colours(types)
    return [("successful", SUCCESS_COLOUR), *((t, palette[t]) for t in sorted(types))]
