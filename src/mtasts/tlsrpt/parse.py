"""Reading a TLS-RPT report (RFC 8460 §4): JSON or gzip, strict or lenient.

Real senders deviate from the schema: Microsoft omits ``sending-mta-ip`` and
``receiving-ip``, Mail.ru omits ``policy-string``, some write empty strings for
absent fields or counts as strings. Lenient mode (the default) accepts what it
can understand and records each deviation in ``Report.warnings``; strict mode
rejects the same input with :class:`ReportError`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from datetime import datetime
from typing import Any

from .errors import ReportError, ReportTooLargeError
from .model import (
    DateRange,
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ReportPolicy,
    ResultType,
    utc,
)

DEFAULT_MAX_SIZE = 20 * 1024 * 1024
MAX_COUNT = 10**12  # more sessions than all mail ever sent in a day: an absurd count
_GZIP_MAGIC = b"\x1f\x8b"
_SECTION = "§4.4"
_TOP = ("organization-name", "date-range", "contact-info", "report-id", "policies")
_POLICY = ("policy-type", "policy-string", "policy-domain", "mx-host")
_DETAIL = (
    "result-type",
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-mx-helo",
    "receiving-ip",
    "failed-session-count",
    "additional-information",
    "failure-reason-code",
)


class Budget:
    """How many report bytes one input (a mail, a file, a POST) may still produce.

    RFC 8460 §5.3 lets a report arrive compressed; a small input can inflate
    enormously. One budget is shared by every MIME part, zip member and gzip
    stream of the input, so nesting or repeating attachments cannot multiply it.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def take(self, size: int, what: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise ReportTooLargeError(
                f"{what} takes the input past {self.limit:,} bytes of reports in all"
                " (every attachment, zip member and gzip stream counts)",
                rule="report.too-large",
                section="§5.3",
            )


def inflate(data: bytes, limit: int) -> bytes:
    """Gunzip ``data`` (every member) without ever holding more than ``limit`` bytes."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(rest, limit - len(out) + 1)
        except zlib.error as exc:
            raise ReportError(
                f"the gzip data is corrupt ({exc})", rule="report.gzip", section="§5.3"
            ) from None
        out += chunk
        if len(out) > limit or inflater.unconsumed_tail:
            raise ReportTooLargeError(
                f"the report inflates past the {limit:,}-byte limit (a gzip bomb?)",
                rule="report.too-large",
                section="§5.3",
            )
        if not inflater.eof:
            raise ReportError("the gzip data is truncated", rule="report.gzip", section="§5.3")
        rest = inflater.unused_data
        if rest and not rest.startswith(_GZIP_MAGIC):
            break  # trailing garbage after the last member: ignore, as gzip(1) does
    return bytes(out)


def decode_json(data: bytes | str, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Bytes (JSON, or gzip of JSON) to a Python value, with every failure a ReportError."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if len(data) > max_size:
        raise ReportTooLargeError(
            f"the report is {len(data):,} bytes, over the {max_size:,}-byte limit",
            rule="report.too-large",
            section="§5.3",
        )
    if data.startswith(_GZIP_MAGIC):
        data = inflate(data, max_size)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(
            f"the report is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            rule="report.encoding",
            section="§4",
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ReportError(
            "the JSON is nested too deeply", rule="report.json", section="§4"
        ) from None
    except ValueError as exc:
        raise ReportError(
            f"the report is not valid JSON ({exc})", rule="report.json", section="§4"
        ) from None


class _Reader:
    """Walks the JSON tree, turning deviations into warnings (lenient) or errors (strict)."""

    domain_hint: str | None = None
    hint_source: str = ""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.warnings: list[str] = []
        self.rules: list[str] = []

    def fail(self, path: str, message: str, rule: str) -> ReportError:
        return ReportError(
            f"{path}: {message}", rule=f"report.{rule}", section=_SECTION, field=path
        )

    def deviate(self, path: str, message: str, rule: str) -> None:
        if self.strict:
            raise self.fail(path, message, rule)
        self.warnings.append(f"{path}: {message}")
        self.rules.append(f"report.{rule}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a JSON object, not {_kind(value)}", "type")
        return value

    def extras(self, value: dict[str, Any], known: tuple[str, ...], path: str) -> None:
        for key in value:
            if key not in known:
                self.deviate(
                    f"{path}.{key}" if path else key, "unknown field ignored", "unknown-field"
                )

    def text(self, parent: dict[str, Any], key: str, path: str, *, required: bool) -> str | None:
        where = f"{path}.{key}" if path else key
        if key not in parent or parent[key] is None:
            if required:
                self.deviate(where, "required field is missing", "missing")
            return None
        value = parent[key]
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, not {_kind(value)}", "type")
        if value == "":
            self.deviate(where, "empty string where the field should be absent or filled", "empty")
            return None
        return value

    def count(self, parent: dict[str, Any], key: str, path: str) -> int:
        where = f"{path}.{key}"
        if key not in parent:
            self.deviate(where, "required count is missing; 0 assumed", "missing")
            return 0
        value = parent[key]
        if isinstance(value, bool):
            raise self.fail(where, "must be a whole number, not a boolean", "count")
        if isinstance(value, str) and value.strip().isdigit():
            self.deviate(where, f"count written as a string {value!r}", "count-string")
            value = int(value.strip())
        elif isinstance(value, float) and value.is_integer():
            self.deviate(where, f"count written as a decimal {value!r}", "count-float")
            value = int(value)
        if not isinstance(value, int):
            raise self.fail(where, f"must be a whole number, not {value!r:.40}", "count")
        if value < 0:
            raise self.fail(where, f"count {value} is negative", "count-negative")
        if value > MAX_COUNT:
            raise self.fail(where, f"count {value} is absurd (over {MAX_COUNT:,})", "count-absurd")
        return value

    def when(self, parent: dict[str, Any], key: str, path: str) -> datetime:
        where = f"{path}.{key}"
        value = parent.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(where, "required RFC 3339 date-time is missing", "date")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self.fail(
                where, f"{value!r} is not an RFC 3339 date-time (2026-05-21T00:00:00Z)", "date"
            ) from None
        if parsed.tzinfo is None:
            self.deviate(where, f"{value!r} has no time zone; UTC assumed", "date-zone")
        return utc(parsed)

    def ip(self, detail: dict[str, Any], key: str, path: str) -> str | None:
        value = self.text(detail, key, path, required=False)
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.deviate(f"{path}.{key}", f"{value!r:.60} is not an IP address", "ip")
            return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _read_policy(reader: _Reader, raw: Any, path: str) -> ReportPolicy:
    policy = reader.obj(raw, path)
    reader.extras(policy, _POLICY, path)
    type_text = reader.text(policy, "policy-type", path, required=True) or ""
    try:
        policy_type = PolicyType(type_text)
    except ValueError:
        if type_text.lower() not in {t.value for t in PolicyType}:
            raise reader.fail(
                f"{path}.policy-type",
                f"{type_text!r} is not sts, tlsa or no-policy-found",
                "policy-type",
            ) from None
        reader.deviate(f"{path}.policy-type", f"{type_text!r} is not lower-case", "policy-type")
        policy_type = PolicyType(type_text.lower())
    domain = reader.text(policy, "policy-domain", path, required=reader.domain_hint is None)
    if domain is None and reader.domain_hint is not None:
        # tlsrpt-reporter 0.5 leaves it out (no-policy-found); the mail or the URL says which
        # domain the report is about, so the report is kept, with the deviation recorded.
        reader.deviate(
            f"{path}.policy-domain",
            f"the policy domain is missing; taken as {reader.domain_hint!r} from {reader.hint_source}",
            "missing",
        )
        domain = reader.domain_hint
    if domain is None:
        raise reader.fail(f"{path}.policy-domain", "the policy domain is required", "missing")
    strings = _read_strings(reader, policy, "policy-string", path)
    if strings is None and policy_type is not PolicyType.NO_POLICY_FOUND:
        reader.deviate(f"{path}.policy-string", "the applied policy is not included", "missing")
    mx_host = _read_strings(reader, policy, "mx-host", path) or ()
    return ReportPolicy(policy_type, domain, strings, mx_host)


def _read_strings(
    reader: _Reader, parent: dict[str, Any], key: str, path: str
) -> tuple[str, ...] | None:
    value = parent.get(key)
    where = f"{path}.{key}"
    if value is None:
        return None
    if isinstance(value, str):
        # RFC 8460 shows mx-host as one string; Google sends a list. Accept both.
        return (value,) if value else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise reader.fail(where, "must be a string or a list of strings", "type")
    return tuple(value)


def _read_detail(reader: _Reader, raw: Any, path: str) -> FailureDetail:
    detail = reader.obj(raw, path)
    reader.extras(detail, _DETAIL, path)
    result_type = reader.text(detail, "result-type", path, required=True)
    if result_type is None:
        raise reader.fail(f"{path}.result-type", "the result type is required", "missing")
    if result_type not in {r.value for r in ResultType}:
        reader.deviate(
            f"{path}.result-type", f"{result_type!r} is not an RFC 8460 result type", "result-type"
        )
    return FailureDetail(
        result_type=result_type,
        failed_session_count=reader.count(detail, "failed-session-count", path),
        sending_mta_ip=reader.ip(detail, "sending-mta-ip", path),
        receiving_mx_hostname=reader.text(detail, "receiving-mx-hostname", path, required=False),
        receiving_mx_helo=reader.text(detail, "receiving-mx-helo", path, required=False),
        receiving_ip=reader.ip(detail, "receiving-ip", path),
        additional_information=reader.text(detail, "additional-information", path, required=False),
        failure_reason_code=reader.text(detail, "failure-reason-code", path, required=False),
    )


def _read_policy_result(reader: _Reader, raw: Any, path: str) -> PolicyResult:
    entry = reader.obj(raw, path)
    reader.extras(entry, ("policy", "summary", "failure-details"), path)
    policy = _read_policy(reader, entry.get("policy"), f"{path}.policy")
    summary = reader.obj(entry.get("summary"), f"{path}.summary")
    reader.extras(
        summary,
        ("total-successful-session-count", "total-failure-session-count"),
        f"{path}.summary",
    )
    ok = reader.count(summary, "total-successful-session-count", f"{path}.summary")
    failed = reader.count(summary, "total-failure-session-count", f"{path}.summary")
    raw_details = entry.get("failure-details") or []
    if not isinstance(raw_details, list):
        raise reader.fail(f"{path}.failure-details", "must be a list", "type")
    details = tuple(
        _read_detail(reader, d, f"{path}.failure-details[{i}]") for i, d in enumerate(raw_details)
    )
    listed = sum(d.failed_session_count for d in details)
    if listed > failed:
        reader.deviate(
            f"{path}.summary.total-failure-session-count",
            f"{failed} failed sessions, but the failure details add up to {listed}",
            "counts",
        )
    return PolicyResult(policy, ok, failed, details)


_ID_DOMAIN = re.compile(r"_((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})\Z")


def parse_report(
    data: bytes | str,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    domain_hint: str | None = None,
) -> Report:
    """Parse a report given as JSON or gzip-compressed JSON bytes.

    >>> r = parse_report(b'{"organization-name": "Example", "date-range": {"start-datetime":'
    ...     b' "2026-05-20T00:00:00Z", "end-datetime": "2026-05-20T23:59:59Z"}, "contact-info":'
    ...     b' "tlsrpt@example.net", "report-id": "r1", "policies": []}')
    >>> r.report_id, r.failed_sessions
    ('r1', 0)

    Raises :class:`ReportError` (or :class:`ReportTooLargeError`) naming the field.
    """
    reader = _Reader(strict)
    top = reader.obj(decode_json(data, max_size=max_size), "report")
    reader.extras(top, _TOP, "")
    report_id = reader.text(top, "report-id", "", required=True)
    if report_id is None:
        raise reader.fail("report-id", "the report id is required to tell reports apart", "missing")
    if not strict:
        found = _ID_DOMAIN.search(report_id.lower())
        if domain_hint:
            reader.domain_hint, reader.hint_source = domain_hint.lower(), "where it was sent"
        elif found:  # tlsrpt-reporter's ids end in _<domain>
            reader.domain_hint, reader.hint_source = found[1], "the report-id"
    organization = reader.text(top, "organization-name", "", required=True) or ""
    contact = reader.text(top, "contact-info", "", required=True) or ""
    dates = reader.obj(top.get("date-range"), "date-range")
    start = reader.when(dates, "start-datetime", "date-range")
    end = reader.when(dates, "end-datetime", "date-range")
    if end < start:
        raise reader.fail("date-range", "end-datetime is before start-datetime", "date-order")
    raw_policies = top.get("policies")
    if not isinstance(raw_policies, list):
        raise reader.fail("policies", f"must be a list, not {_kind(raw_policies)}", "type")
    if not raw_policies:
        reader.deviate("policies", "the report lists no policies", "empty")
    policies = tuple(
        _read_policy_result(reader, p, f"policies[{i}]") for i, p in enumerate(raw_policies)
    )
    return Report(
        organization,
        DateRange(start, end),
        contact,
        report_id,
        policies,
        tuple(reader.warnings),
        tuple(reader.rules),
    )
