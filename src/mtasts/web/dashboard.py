"""The dashboard: reports, readiness, checks and changes, as server-rendered pages.

Every view is a URL and works without JavaScript (there is none: the Content-Security-
Policy forbids scripts outright); charts are SVG drawn on the server next to a table of
the same numbers; every table exports as CSV and JSON. Report content, DNS answers and
certificates are written by strangers: Jinja2 escapes everything, CSV cells cannot
start a formula, and nothing is ever marked safe but the SVG the server drew.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hmac
import io
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mtasts.check.findings import RULES, finding_code
from mtasts.check.judge import judge
from mtasts.reports.analysis import readiness, readiness_many
from mtasts.reports.ingest import IngestResult, retry_quarantined
from mtasts.reports.store import ReportStore
from mtasts.text import csv_cell, plain
from mtasts.watch.events import EventCode
from mtasts.watch.history import timeline
from mtasts.watch.status import StatusRow, status_rows
from mtasts.watch.store import WatchStore

from . import queries
from .auth import SESSION_COOKIE, AuthConfig, Session, Sessions, read_passwords
from .charts import Marker, legend, sessions_chart

SECURITY_HEADERS = {
    # No script at all; styles from our own file; inline SVG is markup, not script.
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
# Our own policy changes, drawn as markers on the sessions chart.
_MARKER_CODES = frozenset(
    {
        EventCode.POLICY_ID_CHANGED,
        EventCode.POLICY_CHANGED_WITHOUT_ID,
        EventCode.MODE_CHANGED,
        EventCode.STS_RECORD_ADDED,
        EventCode.STS_RECORD_REMOVED,
        EventCode.MAX_AGE_CHANGED,
        EventCode.POLICY_MX_CHANGED,
    }
)
_PARTNER_CODES = frozenset(c for c in EventCode if c.value.startswith("partner-"))
_DEFAULT_DAYS = 30
_WINDOWS = ("7", "14", "30", "90")  # the overview's windows: readiness is judged over it
_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16"'
    ' rx="3" fill="#1d232b"/><path d="M4 8l3 3 5-6" stroke="#3b8f4f" stroke-width="2"'
    ' fill="none"/></svg>'
)


class SecurityHeaders:
    """Adds the security headers to every response, the static file's included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in names
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    auth: AuthConfig = field(default_factory=AuthConfig)
    secure_cookies: bool = True
    read_only: bool = False  # a read-only database role: the retry action is hidden


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mtasts.web", "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda value: f"{100 * value:.1f} %"
    env.filters["num"] = lambda value: f"{value:,}"
    env.filters["plain"] = plain
    env.filters["when"] = _when
    # A path segment from a stranger (a report's policy-domain): percent-encoded, so a "/",
    # "?" or "#" in it cannot point the link at another page.
    env.filters["path"] = lambda value: quote(str(value), safe="")
    env.globals["query"] = lambda **params: urlencode({k: v for k, v in params.items() if v})
    return env


def _when(value: dt.datetime | str | None) -> str:
    """A moment as people read it: 2026-12-06 05:27 UTC."""
    if value is None or value == "":
        return "-"
    moment = value
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    assert isinstance(moment, dt.datetime)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _date(value: str | None, default: dt.date) -> dt.date:
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return default


def filters_from(request: Request, domain: str | None = None) -> queries.Filters:
    today = dt.datetime.now(dt.UTC).date()
    params = request.query_params
    until = _date(params.get("until"), today)
    since = _date(params.get("since"), until - dt.timedelta(days=_DEFAULT_DAYS))
    return queries.Filters(
        since=min(since, until),
        until=until,
        domain=domain or (params.get("domain") or "").strip().lower() or None,
        sender=(params.get("sender") or "").strip().lower() or None,
        result_type=(params.get("type") or "").strip() or None,
    )


def _export(request: Request, name: str, rows: list[dict[str, Any]]) -> Response | None:
    """``?format=csv`` or ``?format=json`` of a table; None for the HTML page."""
    wanted = request.query_params.get("format")
    if wanted == "json":
        return Response(
            json.dumps({name: rows}, indent=2, default=str),
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="{name}.json"'},
        )
    if wanted != "csv":
        return None

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        columns = list(rows[0]) if rows else []
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(_cell(row[c])) for c in columns])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


@dataclass
class Overview:
    rows: list[dict[str, Any]]
    partners: dict[str, int]
    partner_rows: list[StatusRow]


def overview(store: ReportStore, watch: WatchStore, today: dt.date, days: int = 14) -> Overview:
    status = status_rows(watch.watched(), dt.datetime.now(dt.UTC))
    own = {s.domain: s for s in status if s.role == "own"}
    verdicts = readiness_many(store, days, today)  # every reported domain in three queries
    rows = []
    for domain in sorted(set(verdicts) | set(own)):
        verdict = verdicts.get(domain) or readiness(store, domain, days, today)
        watched = own.get(domain)
        kinds: dict[str, int] = {}
        for group in (*verdict.would_defer, *verdict.unaffected):
            kinds[group.result_type] = kinds.get(group.result_type, 0) + group.sessions
        rows.append(
            {
                "domain": domain,
                "mode": watched.mode if watched else "-",
                "readiness": str(verdict.verdict),
                "reason": verdict.reason,
                "sessions": verdict.sessions,
                "failed": verdict.failed,
                "failure_rate": round(verdict.failed / verdict.sessions, 6)
                if verdict.sessions
                else 0.0,
                "top_failure": max(sorted(kinds), key=lambda k: kinds[k]) if kinds else None,
                "open_events": watched.open_events if watched else 0,
                "first_expiry_days": watched.first_expiry_days if watched else None,
                "cache_horizon": watched.horizon.isoformat()
                if watched and watched.horizon
                else None,
            }
        )
    partner_rows = [s for s in status if s.role == "partner"]
    counts: dict[str, int] = {}
    for row in partner_rows:
        counts[row.mode] = counts.get(row.mode, 0) + 1
    return Overview(rows, counts, partner_rows)


class OverviewCache:
    """The overview judges every domain's readiness; it is computed again only when the store
    changed (a report, a quarantined input, a watch pass) or the day did."""

    def __init__(self, store: ReportStore, watch: WatchStore) -> None:
        self.store = store
        self.watch = watch
        self.lock = threading.Lock()
        self.key: tuple[object, ...] | None = None
        self.value: Overview | None = None

    def get(self, today: dt.date, days: int = 14) -> Overview:
        with self.lock:  # one computation at a time; the others wait for its result
            key = (today, days, *queries.data_version(self.store))
            if self.value is None or key != self.key:
                self.value = overview(self.store, self.watch, today, days)
                self.key = key
            return self.value


def create_dashboard(store: ReportStore, config: DashboardConfig = DashboardConfig()) -> Starlette:
    env = _environment()
    watch = WatchStore(store.engine)
    cached = OverviewCache(store, watch)
    sessions = Sessions(
        read_passwords(config.auth.password_file) if config.auth.password_file else {}
    )

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = request.state.session
        html = env.get_template(template).render(
            request=request,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            auth=config.auth.enabled,
            read_only=config.read_only,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def client(request: Request) -> str:
        return request.client.host if request.client else "-"

    def current(request: Request) -> tuple[Session | None, str | None]:
        """The request's session, and a new session token to set when one was started."""
        existing = sessions.get(request.cookies.get(SESSION_COOKIE))
        if config.auth.user_header and config.auth.trusts(client(request)):
            user = request.headers.get(config.auth.user_header)
            if not user:
                return None, None
            if existing is not None and existing.user == user:
                return existing, None
            # The proxy vouches for the user; a session of our own carries the CSRF token.
            token, session = sessions.start(user)
            return session, token
        return existing, None

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            session, fresh = current(request)
            if session is None and not config.auth.enabled:
                # No login on loopback, but still a session: its CSRF token guards the POSTs.
                fresh, session = sessions.start("local")
            if session is None:
                if config.auth.password_file is None:  # only the proxy can log anyone in
                    return Response("authentication required (by the proxy)", status_code=401)
                if request.method != "GET" or request.query_params.get("format"):
                    return Response("login required", status_code=401)
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", 303)
            request.state.session = session
            if request.method == "POST":
                form = await _form(request)
                if not _same(form.get("csrf", ""), session.csrf):
                    return Response("missing or wrong CSRF token", status_code=403)
                request.state.form = form
            response = await handler(request)
            if fresh:
                _set_cookie(response, fresh)
            return response

        return wrapper

    def _set_cookie(response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=config.secure_cookies,
            path="/",
        )

    async def login_page(request: Request) -> Response:
        request.state.session = None
        if not config.auth.password_file:
            return RedirectResponse("/", 303)
        return render(request, "login.html", next=request.query_params.get("next", "/"))

    async def login(request: Request) -> Response:
        request.state.session = None
        if not config.auth.password_file:
            return RedirectResponse("/", 303)
        form = await _form(request)
        who = client(request)
        wait = sessions.delay(who)
        if wait:
            await asyncio.sleep(wait)  # repeated wrong passwords are slowed, per client
        user, password = form.get("user", ""), form.get("password", "")
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # never an open redirect
        if not await run_in_threadpool(sessions.check, user, password):
            sessions.failed(who)
            failed = render(request, "login.html", status=401, next=target, error=True)
            if wait:  # say how long this client was made to wait, and why
                failed.headers["retry-after"] = str(int(wait))
            return failed
        token, _session = sessions.start(user)
        response = RedirectResponse(target, 303)
        _set_cookie(response, token)
        return response

    async def logout(request: Request) -> Response:
        sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login" if config.auth.password_file else "/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def home(request: Request) -> Response:
        today = dt.datetime.now(dt.UTC).date()
        days = request.query_params.get("days", "14")
        window = int(days) if days in _WINDOWS else 14
        data = await run_in_threadpool(cached.get, today, window)
        exported = _export(request, "overview", data.rows)
        if exported:
            return exported
        return render(
            request, "overview.html", data=data, today=today, days=window, windows=_WINDOWS
        )

    async def domain_page(request: Request) -> Response:
        domain = request.path_params["domain"].lower()
        filters = filters_from(request, domain)
        table = request.query_params.get("table", "days")

        def load() -> dict[str, Any]:
            rows = queries.summary_rows(store, filters)
            groups = queries.failure_groups(store, filters)
            senders = queries.sender_rows(rows)
            events = watch.events(dt.datetime.combine(filters.since, dt.time(), dt.UTC), domain)
            markers = [
                Marker(e.at.date(), f"{e.code}: {e.message}")
                for e in events
                if e.code in _MARKER_CODES and e.at.date() <= filters.until
            ]
            verdict = readiness(store, domain, 14)
            latest = watch.observations(domain, 1)
            return {
                "rows": rows,
                "bars": queries.day_bars(rows),
                "groups": groups,
                "senders": senders,
                "matrix": queries.mx_matrix(groups, senders),
                "markers": markers,
                "readiness": verdict,
                "checked": {a.address for m in latest[-1].facts.mx for a in m.addresses}
                if latest
                else set(),
            }

        data = await run_in_threadpool(load)
        exports = {
            "days": [r.to_dict() for r in data["rows"]],
            "senders": [s.to_dict() for s in data["senders"]],
            "failures": [g.to_dict() for g in data["groups"]],
        }
        exported = _export(request, f"{domain}-{table}", exports.get(table, exports["days"]))
        if exported:
            return exported
        types = sorted({t for b in data["bars"] for t in b.failures})
        # The one thing marked safe: SVG that charts.py drew, escaping every label itself.
        chart = Markup(
            sessions_chart(
                data["bars"],
                data["markers"],
                f"sessions per day for {domain}",
                filters.since,
                filters.until,
            )
        )
        return render(
            request,
            "domain.html",
            domain=domain,
            filters=filters,
            chart=chart,
            legend=legend(types),
            **data,
        )

    async def check_page(request: Request) -> Response:
        domain = request.path_params["domain"].lower()

        def load() -> dict[str, Any]:
            latest = watch.observations(domain, 1)
            check = judge(latest[-1].facts) if latest else None
            return {
                "check": check,
                "observed": latest[-1] if latest else None,
                "timeline": timeline(watch, domain, 100),
            }

        data = await run_in_threadpool(load)
        if data["check"] is None and not data["timeline"]:
            return render(
                request, "missing.html", status=404, what=f"no watch history for {domain}"
            )
        return render(request, "check.html", domain=domain, rules=RULES, **data)

    async def reports_page(request: Request) -> Response:
        filters = filters_from(request)
        mx = request.query_params.get("mx") or None
        ip = request.query_params.get("ip") or None
        rows = await run_in_threadpool(queries.reports_list, store, filters, mx, ip)
        exported = _export(request, "reports", [r.to_dict() for r in rows])
        if exported:
            return exported
        extra = [(k, v) for k, v in (("mx", mx), ("ip", ip)) if v]
        return render(
            request, "reports.html", rows=rows, filters=filters, mx=mx, ip=ip, extra=extra
        )

    async def report_page(request: Request) -> Response:
        report_id = request.path_params["report_id"]
        detail = await run_in_threadpool(queries.report_detail, store, report_id)
        if detail is None:
            return render(request, "missing.html", status=404, what=f"no report {report_id}")
        if request.query_params.get("download"):
            return Response(
                detail.raw,
                media_type="application/json",
                headers={"content-disposition": f'attachment; filename="report-{detail.id}.json"'},
            )
        policies = await run_in_threadpool(queries.policy_rows, store, report_id)
        return render(request, "report.html", report=detail, policies=policies)

    async def partners_page(request: Request) -> Response:
        label = request.query_params.get("label") or None
        data = await run_in_threadpool(cached.get, dt.datetime.now(dt.UTC).date())
        rows = [r for r in data.partner_rows if label is None or r.label == label]
        history = {
            r.domain: [e for e in watch.events(None, r.domain) if e.code in _PARTNER_CODES]
            for r in rows
        }
        exported = _export(request, "partners", [r.to_dict() for r in rows])
        if exported:
            return exported
        labels = sorted({r.label for r in data.partner_rows if r.label})
        return render(
            request, "partners.html", rows=rows, labels=labels, label=label, history=history
        )

    async def quarantine_page(request: Request) -> Response:
        rows = await run_in_threadpool(queries.quarantine_rows, store)
        exported = _export(
            request,
            "quarantine",
            [
                {"id": r.id, "rule": r.rule, "reason": r.reason, "source": r.source, "at": r.at}
                for r in rows
            ],
        )
        if exported:
            return exported
        return render(
            request, "quarantine.html", rows=rows, released=request.query_params.get("released")
        )

    async def retry(request: Request) -> Response:
        if config.read_only:
            return Response("read-only dashboard", status_code=403)
        result = IngestResult()
        released = await run_in_threadpool(retry_quarantined, store, result)
        return RedirectResponse(f"/quarantine?released={released}", 303)

    async def explain(request: Request) -> Response:
        try:
            code = finding_code(request.path_params["code"])
        except ValueError:
            return render(request, "missing.html", status=404, what="no such finding code")
        return render(request, "explain.html", code=code, rule=RULES[code])

    async def icon(_request: Request) -> Response:
        return Response(
            _ICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"}
        )

    async def stylesheet(_request: Request) -> Response:
        css = env.loader.get_source(env, "style.css")[0] if env.loader else ""
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=3600"})

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/style.css", stylesheet),
        Route("/favicon.ico", icon),
        Route("/", guarded(home)),
        Route("/domain/{domain}", guarded(domain_page)),
        Route("/domain/{domain}/check", guarded(check_page)),
        Route("/reports", guarded(reports_page)),
        Route("/report/{report_id:int}", guarded(report_page)),
        Route("/partners", guarded(partners_page)),
        Route("/quarantine", guarded(quarantine_page)),
        Route("/quarantine/retry", guarded(retry), methods=["POST"]),
        Route("/explain/{code}", guarded(explain)),
    ]

    async def not_found(request: Request, _exc: Exception) -> Response:
        request.state.session = None
        return render(request, "missing.html", status=404, what="no such page")

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.add_middleware(SecurityHeaders)
    return app


_MAX_FORM = 16 * 1024


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind these pages send), at most 16 KiB; the first value
    of each field. Anything else reads as an empty form, which every handler refuses."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
