"""The small state file beside ``mtasts.toml``: each domain's published policy, its id, history.

RFC 8461 §3.1: the ``id`` must change whenever the policy changes, and senders
refetch only then. We make it a UTC timestamp (``20260521T101500``) that changes
when, and only when, the policy text does, so running ``records`` twice gives
the same id and a forgotten id bump cannot happen.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtasts.files import write_atomic
from mtasts.sts import Policy


@dataclass(frozen=True)
class Change:
    when: str
    who: str
    policy_id: str
    old_policy: str | None
    new_policy: str
    note: str = ""


def state_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.stem + ".state.json")


class DeployState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"domains": {}}
        if path.exists():
            self.data = json.loads(path.read_text(encoding="utf-8"))

    def _domain(self, name: str) -> dict[str, Any]:
        domains: dict[str, Any] = self.data.setdefault("domains", {})
        entry: dict[str, Any] = domains.setdefault(
            name, {"policy": None, "id": None, "history": []}
        )
        return entry

    def policy_id(
        self, name: str, policy: Policy, now: dt.datetime | None = None, note: str = ""
    ) -> str:
        """The id for ``policy``: unchanged if the text is, else a new UTC timestamp (recorded)."""
        entry = self._domain(name)
        text = str(policy)
        if entry["policy"] == text and entry["id"]:
            return str(entry["id"])
        moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        new_id = moment.strftime("%Y%m%dT%H%M%S")
        if entry["id"] is not None and new_id <= entry["id"]:
            # Two changes in one second: still a new, larger id (letters and digits only).
            new_id = (
                dt.datetime.strptime(entry["id"][:15], "%Y%m%dT%H%M%S") + dt.timedelta(seconds=1)
            ).strftime("%Y%m%dT%H%M%S")
        change = Change(
            moment.isoformat(timespec="seconds"),
            getpass.getuser(),
            new_id,
            entry["policy"],
            text,
            note,
        )
        entry["history"].append(change.__dict__)
        entry["policy"], entry["id"] = text, new_id
        self.save()
        return new_id

    def note(self, name: str, policy: Policy, note: str, now: dt.datetime | None = None) -> None:
        """A history entry that gives no id (``init``: the history starts there, but an id is
        given only when the records are made, and days in a mode count from then)."""
        moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        change = Change(
            moment.isoformat(timespec="seconds"), getpass.getuser(), "", None, str(policy), note
        )
        self._domain(name)["history"].append(change.__dict__)
        self.save()

    def recorded_id(self, name: str, policy: Policy) -> str | None:
        """The id given to exactly this policy text, without giving one: None if it has none."""
        entry = self.data.get("domains", {}).get(name) or {}
        return str(entry["id"]) if entry.get("policy") == str(policy) and entry.get("id") else None

    def retire(self, name: str, old_max_age: int, now: dt.datetime) -> None:
        self._domain(name)["retired"] = {
            "at": now.isoformat(timespec="seconds"),
            "old_max_age": old_max_age,
        }
        self.save()

    def retired(self, name: str) -> tuple[dt.datetime, int] | None:
        entry = self._domain(name).get("retired")
        if not entry:
            return None
        return dt.datetime.fromisoformat(entry["at"]), int(entry["old_max_age"])

    def history(self, name: str) -> list[Change]:
        return [Change(**c) for c in self._domain(name)["history"]]

    def save(self) -> None:
        # Through a fresh temporary file: a link planted at a fixed name cannot redirect it.
        write_atomic(self.path, (json.dumps(self.data, indent=2) + "\n").encode())
