"""A domain's timeline: each distinct observation (unchanged until when), the events, and a
diff of the policy wherever the served text changed. Read by `watch history` and the
dashboard."""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any

from .store import ObservationRow, WatchStore


def policy_text(observation: ObservationRow) -> str | None:
    """The policy the first address served with status 200, as text."""
    for fetch in observation.facts.policy:
        if fetch.status == 200 and fetch.body is not None:
            return fetch.body.decode("utf-8", "replace")
    return None


def timeline(store: WatchStore, domain: str, limit: int = 50) -> list[dict[str, Any]]:
    """Entries oldest first: ``{"type": "observation", ...}`` or ``{"type": "event", ...}``."""
    observations = store.observations(domain, limit)
    since = observations[0].first_seen if observations else None
    entries: list[tuple[dt.datetime, int, dict[str, Any]]] = []
    previous: str | None = None
    for observation in observations:
        entry: dict[str, Any] = {"type": "observation", **observation.to_dict()}
        policy = policy_text(observation)
        if previous is not None and policy is not None and policy != previous:
            entry["policy_diff"] = "".join(
                difflib.unified_diff(
                    previous.splitlines(keepends=True),
                    policy.splitlines(keepends=True),
                    "policy before",
                    "policy after",
                )
            )
        if policy is not None:
            previous = policy
        entries.append((observation.first_seen, 0, entry))
    for event in store.events(since, domain):
        entries.append((event.at, 1, {"type": "event", **event.to_dict()}))
    entries.sort(key=lambda t: (t[0], t[1]))
    return [e for _, _, e in entries]
