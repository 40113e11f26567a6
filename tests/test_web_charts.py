"""The server-drawn chart: rows in, SVG out; labels from strangers escaped; gaps stay gaps."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from mtasts.web.charts import DayBar, Marker, legend, sessions_chart

D0 = dt.date(2026, 11, 1)
SVG = "{http://www.w3.org/2000/svg}"


def test_bars_stack_successes_under_each_failure_type_and_keep_gaps() -> None:
    bars = [
        DayBar(D0, 90, {"certificate-expired": 10}),
        DayBar(
            D0 + dt.timedelta(days=2), 50, {"starttls-not-supported": 5, "certificate-expired": 5}
        ),
    ]
    svg = ET.fromstring(sessions_chart(bars, [Marker(D0 + dt.timedelta(days=1), "mode-changed")]))
    rects = svg.findall(f"{SVG}rect")
    titles = sorted(r.find(f"{SVG}title").text or "" for r in rects)
    assert titles == [
        "2026-11-01: certificate-expired 10",
        "2026-11-01: successful 90",
        "2026-11-03: certificate-expired 5",
        "2026-11-03: starttls-not-supported 5",
        "2026-11-03: successful 50",
    ]  # no bar for 2026-11-02: a day without reports is a gap
    day_one = [r for r in rects if "2026-11-01" in (r.find(f"{SVG}title").text or "")]
    assert len({r.get("x") for r in day_one}) == 1  # stacked in one column
    assert [
        line.find(f"{SVG}title").text
        for line in svg.findall(f"{SVG}line")
        if line.find(f"{SVG}title") is not None
    ] == ["2026-11-02: mode-changed"]
    assert [name for name, _ in legend(["starttls-not-supported", "certificate-expired"])] == [
        "successful",
        "certificate-expired",
        "starttls-not-supported",
    ]


def test_no_data_says_so() -> None:
    assert "no reports in this range" in sessions_chart([])


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_label_stays_text(result_type: str, marker: str) -> None:
    svg = sessions_chart([DayBar(D0, 1, {result_type: 1})], [Marker(D0, marker)], title=marker)
    ET.fromstring(svg.encode("utf-8", "surrogatepass"))  # well-formed whatever the labels hold
    assert "<script" not in svg.replace("&lt;script", "")
