"""Postfix's mail log, read line by line into TLS sessions (no I/O: lines in, sessions out).

A Postfix before 3.10 cannot send libtlsrpt datagrams, but with
``smtp_tls_loglevel = 1`` its log says everything a report needs. Verified
against Postfix 3.7.11 (Debian 12), whose ``smtp`` client logs, per process:

    postfix/smtp[20376]: server certificate verification failed for
        mx.example[192.0.2.2]:25: num=62:hostname mismatch
    postfix/smtp[20376]: Untrusted TLS connection established to mx.example[192.0.2.2]:25: ...
    postfix/smtp[20376]: 0A1B2C3D4E: to=<bob@example>, relay=mx.example[192.0.2.2]:25, ...,
        dsn=4.7.5, status=deferred (Server certificate not verified)

and ``qmgr`` names each queue file's sender (``0A1B2C3D4E: from=<...>, size=...``).
One delivery line ends a session; the TLS lines of the same process before it
describe it. ``conn_use=N`` (N > 1) marks a cached connection, the same session
again, which is not counted twice.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+(\S+)\s+(.*)")
_BSD = re.compile(r"([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d):(\d\d):(\d\d)\s+(\S+)\s+(.*)")
_TAG = re.compile(r"([\w./-]+)\[(\d+)\]:\s?(.*)")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_TLS = re.compile(
    r"(Verified|Trusted|Untrusted|Anonymous) TLS connection established to (\S+?)\[([^\]]+)\]:\d+:"
)
_VERIFY = re.compile(
    r"(?:server certificate verification failed|certificate verification failed) for"
    r" (\S+?)\[([^\]]+)\]:\d+: num=(\d+):(.*)"
)
_DELIVERY = re.compile(
    r"([0-9A-Za-z]+): to=<([^>]*)>,(?: orig_to=<[^>]*>,)? relay=(\S+?)(?:\[([^\]]+)\](?::\d+)?)?,"
    r"(?: conn_use=(\d+),)?.*? dsn=([\d.]+), status=(\w+) ?(.*)"
)
_SENDER = re.compile(r"([0-9A-Za-z]+): from=<([^>]*)>, size=")
_MAX_PROCESSES = 10_000  # smtp processes with an open TLS state (Postfix reuses a few hundred)
_MAX_QUEUE = 100_000  # queue ids whose sender is remembered


@dataclass(frozen=True, slots=True)
class LoggedSession:
    """One SMTP session to one MX as the log tells it, ended by its first delivery line."""

    at: datetime
    service: str  # the master.cf service name: smtp, or a dedicated transport
    queue_id: str
    sender: str | None
    recipient_domain: str
    mx_host: str
    address: str
    tls: str | None  # Verified | Trusted | Untrusted | Anonymous; None: no TLS was established
    verify_code: int | None  # OpenSSL's X509_V_ERR_* when Postfix's certificate check failed
    verify_reason: str | None
    status: str  # sent | deferred | bounced | expired
    dsn: str
    detail: str  # the text in parentheses after the status


@dataclass(slots=True)
class _Pending:
    tls: str | None = None
    verify_code: int | None = None
    verify_reason: str | None = None
    mx_host: str = ""
    last: LoggedSession | None = None


def parse_time(stamp: str, now: datetime, zone: tzinfo | None) -> datetime | None:
    """A syslog time stamp in UTC: RFC 3339, or the traditional ``Mmm dd hh:mm:ss`` in
    ``zone`` (the host's local time when None) with the year that puts it nearest ``now``."""
    if stamp[:1].isdigit():
        try:
            value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        return value.replace(tzinfo=value.tzinfo or zone or UTC).astimezone(UTC)
    return None


def _bsd_time(match: re.Match[str], now: datetime, zone: tzinfo | None) -> datetime | None:
    month = _MONTHS.get(match[1])
    if month is None:
        return None
    local_now = now.astimezone(zone) if zone is not None else now.astimezone()
    try:
        value = local_now.replace(
            month=month,
            day=int(match[2]),
            hour=int(match[3]),
            minute=int(match[4]),
            second=int(match[5]),
            microsecond=0,
        )
    except ValueError:
        return None
    # No year in the line: a December line read in January belongs to last year.
    if (value - local_now).days > 180:
        value = value.replace(year=value.year - 1)
    elif (local_now - value).days > 185:
        value = value.replace(year=value.year + 1)
    return value.astimezone(UTC)


class PostfixLogReader:
    """Feed lines in order; each delivery of a TLS-relevant session comes out once."""

    def __init__(self, zone: tzinfo | None = None, skip_services: tuple[str, ...] = ()) -> None:
        self.zone = zone
        self.skip_services = frozenset(skip_services)
        self._processes: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self._senders: OrderedDict[str, str] = OrderedDict()
        self.lines = 0

    def feed(self, line: str, now: datetime | None = None) -> LoggedSession | None:
        self.lines += 1
        now = now or datetime.now(UTC)
        bsd = _BSD.match(line)
        if bsd is not None:
            at, rest = _bsd_time(bsd, now, self.zone), bsd[7]
        else:
            iso = _ISO.match(line)
            if iso is None:
                return None
            at, rest = parse_time(iso[1], now, self.zone), iso[3]
        tag = _TAG.match(rest)
        if at is None or tag is None or not tag[1].startswith("postfix"):
            return None
        return self.feed_message(at, tag[1], tag[2], tag[3])

    def feed_message(
        self, at: datetime, program: str, pid: str, message: str
    ) -> LoggedSession | None:
        """One message of ``program`` (``postfix/smtp``, or ``postfix-out/smtp`` for a second
        instance) from process ``pid``: what journald hands over without a syslog line."""
        service = program.rsplit("/", 1)[-1]
        if service == "qmgr":
            sender = _SENDER.match(message)
            if sender is not None:
                self._remember_sender(sender[1], sender[2])
            return None
        if " TLS connection established " in message:
            tls = _TLS.search(message)
            if tls is not None:
                state = self._process(program, pid)
                if state.mx_host and state.mx_host != tls[2]:
                    state.verify_code = state.verify_reason = None  # a new connection
                state.tls, state.mx_host = tls[1], tls[2]
            return None
        if "verification failed for" in message:
            verify = _VERIFY.search(message)
            if verify is not None:
                state = self._process(program, pid)
                state.tls, state.mx_host = None, verify[1]
                state.verify_code, state.verify_reason = int(verify[3]), verify[4].strip()
            return None
        if ": to=<" not in message or "status=" not in message:
            return None
        delivery = _DELIVERY.match(message)
        if delivery is None or delivery[4] is None:
            return None  # relay=none or local: no SMTP session with an MX
        return self._delivery(at, program, pid, service, delivery)

    def _delivery(
        self, at: datetime, program: str, pid: str, service: str, delivery: re.Match[str]
    ) -> LoggedSession | None:
        queue_id, recipient, host, address = delivery[1], delivery[2], delivery[3], delivery[4]
        conn_use = int(delivery[5] or 1)
        state = self._processes.get((program, pid))
        if state is None:
            state = self._process(program, pid)
        detail = delivery[8].strip()
        if detail.startswith("(") and detail.endswith(")"):
            detail = detail[1:-1]
        session = LoggedSession(
            at=at,
            service=service,
            queue_id=queue_id,
            sender=self._senders.get(queue_id),
            recipient_domain=recipient.rpartition("@")[2].lower().rstrip("."),
            mx_host=host.lower().rstrip("."),
            address=address,
            tls=state.tls,
            verify_code=state.verify_code,
            verify_reason=state.verify_reason,
            status=delivery[7],
            dsn=delivery[6],
            detail=detail,
        )
        last = state.last
        # More recipients of one queue file over one connection, or a cached connection
        # (conn_use > 1) to the same host: one session, counted once.
        same = (
            last is not None
            and last.mx_host == session.mx_host
            and (last.queue_id == queue_id or conn_use > 1)
        )
        if same and state.tls is None and last is not None and state.verify_code is None:
            state.last = replace(last, queue_id=queue_id)
            return None
        state.last = session
        state.tls = state.verify_code = state.verify_reason = None
        if service in self.skip_services:
            return None
        plain = session.tls is None and session.verify_code is None
        if plain and not _tls_related(session) and session.status != "sent":
            return None  # §4.3.4: a refused or timed-out connection is no TLS session
        return session

    def _process(self, program: str, pid: str) -> _Pending:
        key = (program, pid)
        state = self._processes.pop(key, None) or _Pending()
        self._processes[key] = state
        while len(self._processes) > _MAX_PROCESSES:
            self._processes.popitem(last=False)
        return state

    def _remember_sender(self, queue_id: str, sender: str) -> None:
        self._senders.pop(queue_id, None)
        self._senders[queue_id] = sender.lower()
        while len(self._senders) > _MAX_QUEUE:
            self._senders.popitem(last=False)


def _tls_related(session: LoggedSession) -> bool:
    text = session.detail.lower()
    return "tls" in text or "certificate" in text or "starttls" in text


__all__ = ["LoggedSession", "PostfixLogReader", "parse_time"]
