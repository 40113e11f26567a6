"""Pure statistics over a scan's results (``check --json`` documents), and the difference
between two scans: who adopted MTA-STS, who dropped it, who downgraded, who broke."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mtasts.check.findings import Severity
from mtasts.sts.policy import Mode

# The documents are read back from JSON, so their values are strings; StrEnum members
# compare equal to them. "none" and no policy rank 0.
_RANK: dict[str, int] = {Mode.ENFORCE: 2, Mode.TESTING: 1}


def _mode(doc: Mapping[str, Any]) -> str | None:
    mode = (doc.get("summary") or {}).get("mta_sts")
    return str(mode) if mode else None


def _errors(doc: Mapping[str, Any]) -> set[str]:
    return {
        str(f.get("code"))
        for f in doc.get("findings") or ()
        if isinstance(f, Mapping) and f.get("severity") == Severity.ERROR
    }


@dataclass
class Adoption:
    """Counts over a scan's domains; ``providers`` holds the same counts per MX provider."""

    domains: int = 0
    modes: Counter[str] = field(default_factory=Counter)  # enforce | testing | none | absent
    tlsrpt: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # error finding codes
    providers: dict[str, Adoption] = field(default_factory=dict)

    def add(self, doc: Mapping[str, Any], provider: str | None, nested: bool = True) -> None:
        self.domains += 1
        self.modes[_mode(doc) or "absent"] += 1
        self.tlsrpt += bool((doc.get("summary") or {}).get("tlsrpt"))
        self.verdicts[str(doc.get("verdict"))] += 1
        self.failures.update(_errors(doc))
        if nested and provider:
            self.providers.setdefault(provider, Adoption()).add(doc, None, nested=False)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        biggest = sorted(self.providers.items(), key=lambda i: (-i[1].domains, i[0]))[:top]
        return {
            "domains": self.domains,
            "mta_sts": dict(self.modes.most_common()),
            "tlsrpt": self.tlsrpt,
            "verdicts": dict(self.verdicts.most_common()),
            "failures": dict(self.failures.most_common()),
            "top_providers": {name: a.to_dict() for name, a in biggest},
        }


def adoption(rows: Iterable[tuple[Mapping[str, Any], str | None]]) -> Adoption:
    """From (result document, provider of its most preferred MX) pairs."""
    total = Adoption()
    for doc, provider in rows:
        total.add(doc, provider)
    return total


@dataclass
class Diff:
    adopted: list[str] = field(default_factory=list)  # no policy before, a policy now
    dropped: list[str] = field(default_factory=list)  # a policy before, none now
    downgraded: list[str] = field(default_factory=list)  # enforce -> testing (or lower)
    upgraded: list[str] = field(default_factory=list)  # testing -> enforce
    newly_broken: list[str] = field(default_factory=list)  # an error finding not there before
    fixed: list[str] = field(default_factory=list)  # errors before, none now
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)
    new_failures: dict[str, list[str]] = field(default_factory=dict)  # domain -> codes

    def to_dict(self) -> dict[str, Any]:
        return {
            "adopted": self.adopted,
            "dropped": self.dropped,
            "downgraded": self.downgraded,
            "upgraded": self.upgraded,
            "newly_broken": {d: self.new_failures[d] for d in self.newly_broken},
            "fixed": self.fixed,
            "only_in_first": self.only_before,
            "only_in_second": self.only_after,
        }


def diff(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> Diff:
    """What changed per domain between two scans' documents (keyed by domain)."""
    out = Diff()
    out.only_before = sorted(set(before) - set(after))
    out.only_after = sorted(set(after) - set(before))
    for domain in sorted(set(before) & set(after)):
        old, new = before[domain], after[domain]
        old_mode, new_mode = _mode(old), _mode(new)
        old_rank, new_rank = _RANK.get(old_mode or "", 0), _RANK.get(new_mode or "", 0)
        if old_rank == 0 and new_rank > 0:
            out.adopted.append(domain)
        elif old_rank > 0 and new_rank == 0:
            out.dropped.append(domain)
        elif new_rank < old_rank:
            out.downgraded.append(domain)
        elif new_rank > old_rank:
            out.upgraded.append(domain)
        old_errors, new_errors = _errors(old), _errors(new)
        if new_errors - old_errors:
            out.newly_broken.append(domain)
            out.new_failures[domain] = sorted(new_errors - old_errors)
        elif old_errors and not new_errors:
            out.fixed.append(domain)
    return out
