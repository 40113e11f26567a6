"""``mtasts watch run``: pass after pass, each domain on its own schedule, until stopped.

SIGHUP reloads ``mtasts.toml`` (domains, partners, channels) between passes; SIGTERM
and SIGINT finish the pass in progress and stop. ``/metrics`` is served by uvicorn in
a thread of its own while the daemon runs, so a slow pass never delays a scrape.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .observe import PassResult, run_pass
from .status import metrics_text, status_rows
from .store import WatchStore

log = logging.getLogger("mtasts.watch")

_MAX_SLEEP = 60.0  # seconds: the outbox's retries are looked at at least this often
_MIN_SLEEP = 1.0


@dataclass(frozen=True, slots=True)
class Settings:
    """What one pass needs; rebuilt on SIGHUP."""

    store: WatchStore
    pass_args: dict[str, Any]  # run_pass's keyword arguments: config, options, expected, ...


def render_metrics(settings: Settings) -> str:
    store = settings.store
    names = [c.name for c in settings.pass_args["config"].channels]
    rows = status_rows(store.watched(), dt.datetime.now(dt.UTC))
    return metrics_text(rows, store.channels(names), store.last_run())


def metrics_app(current: Callable[[], Settings]) -> Starlette:
    def metrics(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(render_metrics(current()), media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/metrics", metrics)])


def serve_metrics(app: Starlette, listen: str) -> uvicorn.Server:
    host, _, port = listen.rpartition(":")
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_level="warning"
        )
    )
    # Off the main thread uvicorn leaves the signals alone: SIGHUP and SIGTERM stay ours.
    threading.Thread(target=server.run, name="metrics", daemon=True).start()
    return server


def run_forever(
    load: Callable[[], Settings],
    metrics_at: str | None = None,
    on_pass: Callable[[PassResult], None] | None = None,
) -> None:
    settings = load()
    wake = threading.Event()
    flags = {"stop": False, "reload": False}

    def stop(_signum: int, _frame: object) -> None:
        flags["stop"] = True
        wake.set()

    def reload(_signum: int, _frame: object) -> None:
        flags["reload"] = True
        wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    server = serve_metrics(metrics_app(lambda: settings), metrics_at) if metrics_at else None
    try:
        while not flags["stop"]:
            if flags["reload"]:
                flags["reload"] = False
                try:
                    settings = load()
                    log.warning("watch: configuration reloaded")
                except Exception as exc:  # a broken edit keeps the old configuration running
                    log.error("watch: reload failed, keeping the old configuration: %s", exc)
            try:
                result = run_pass(settings.store, **settings.pass_args)
            except Exception:  # a database or network outage: say so, try again later
                log.exception("watch: the pass failed; the next one is tried in a minute")
                wake.clear()
                wake.wait(_MAX_SLEEP)
                continue
            if on_pass is not None:
                on_pass(result)
            wake.clear()
            if flags["stop"] or flags["reload"]:
                continue
            wake.wait(_sleep(settings.store))
    finally:
        if server is not None:
            server.should_exit = True


def _sleep(store: WatchStore) -> float:
    """Seconds until the next domain is due, within [1 s, 60 s]."""
    now = dt.datetime.now(dt.UTC)
    due = [w.next_due for w in store.watched() if w.next_due is not None]
    if not due:
        return _MAX_SLEEP
    return max(_MIN_SLEEP, min(_MAX_SLEEP, (min(due) - now).total_seconds()))
