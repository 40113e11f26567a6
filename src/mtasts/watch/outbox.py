"""Delivering the outbox: every pending (event, channel) row, with retries and back-off.

A channel that fails keeps its rows pending and is tried again after an exponential
back-off (1 minute, doubling, at most 6 hours); a channel that is down for a day
loses nothing, and its events arrive in order once it is back. Each channel's last
success and last error are recorded for ``mtasts watch channels``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .channels import SENDERS, DeliveryError
from .config import Channel
from .events import Event
from .store import Pending, WatchStore

log = logging.getLogger("mtasts.watch")

BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=6)

Sender = Callable[[Channel, Sequence[Event]], None]


def backoff(attempts: int, first: dt.timedelta = BACKOFF_FIRST) -> dt.timedelta:
    """The wait after the ``attempts``-th failure in a row."""
    wait: dt.timedelta = first * (2 ** min(max(attempts - 1, 0), 30))
    return min(wait, max(BACKOFF_MAX, first))


@dataclass(frozen=True, slots=True)
class Delivered:
    channel: str
    sent: int
    error: str | None = None


def _batches(
    channel: Channel, pending: list[Pending], now: dt.datetime, last_success: dt.datetime | None
) -> list[list[Pending]]:
    if channel.type != "email" or channel.digest == "event":
        return [[p] for p in pending]
    if (
        channel.digest == "day"
        and last_success is not None
        and now - last_success < dt.timedelta(days=1)
    ):
        return []  # the next daily digest is not due yet
    return [pending]


def deliver(
    store: WatchStore,
    channels: Sequence[Channel],
    now: dt.datetime,
    senders: dict[str, Sender] | None = None,
    first_retry: dt.timedelta = BACKOFF_FIRST,
) -> list[Delivered]:
    """Send what is due on every channel; never raises for a channel's failure."""
    table: dict[str, Sender] = dict(senders or SENDERS)
    health = {h.name: h for h in store.channels([c.name for c in channels])}
    results = []
    for channel in channels:
        pending = store.pending(channel.name, now)
        if not pending:
            continue
        sent = 0
        error = None
        last = health[channel.name].last_success if channel.name in health else None
        for batch in _batches(channel, pending, now, last):
            try:
                table[channel.type](channel, [p.event for p in batch])
            except DeliveryError as exc:
                error = str(exc)
                # The whole rest waits: a dead channel is not hammered once per event.
                rest = pending[pending.index(batch[0]) :]
                store.failed(
                    channel.name, rest, error, now, backoff(batch[0].attempts + 1, first_retry)
                )
                log.warning("watch channel %s failed: %s", channel.name, error)
                break
            store.delivered(channel.name, [p.outbox_id for p in batch], now)
            sent += len(batch)
        results.append(Delivered(channel.name, sent, error))
    return results
