"""The ``_smtp._tls.<domain>`` TXT record (RFC 8460 §3)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mtasts.sts.record import TxtRecord, join_strings
from mtasts.sts.taglist import begins_with_version, split_tags, valid_ext_value

from .errors import MultipleTlsRptRecordsError, NoTlsRptRecordError, TlsRptRecordError

VERSION = "v=TLSRPTv1"
_SECTION = "§3"
_RUA_SPLIT = re.compile(r"[ \t]*,[ \t]*")
_ADDRESS = re.compile(r"[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+\Z")


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A parsed TLS-RPT record: where reports go, plus extension fields.

    >>> str(parse_record("v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/tlsrpt"))
    'v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/tlsrpt;'
    """

    rua: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        fields = [VERSION, "rua=" + ",".join(self.rua)]
        fields += [f"{k}={v}" for k, v in self.extensions]
        return "; ".join(fields) + ";"

    @property
    def mailto(self) -> tuple[str, ...]:
        """The e-mail addresses of the ``mailto:`` URIs."""
        return tuple(
            u.split(":", 1)[1].split("?", 1)[0] for u in self.rua if _scheme(u) == "mailto"
        )

    @property
    def https(self) -> tuple[str, ...]:
        return tuple(u for u in self.rua if _scheme(u) == "https")


@dataclass(frozen=True, slots=True)
class TlsRptRecordDiagnosis:
    record: TlsRptRecord | None
    errors: tuple[TlsRptRecordError, ...]
    notes: tuple[TlsRptRecordError, ...]


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].lower() if ":" in uri else ""


def uri_problem(uri: str) -> tuple[str, str | None] | None:
    """Why ``uri`` cannot be a reporting URI, with a suggested fix; None when it can."""
    scheme = _scheme(uri)
    if scheme == "mailto":
        address = uri.split(":", 1)[1].split("?", 1)[0]
        if not _ADDRESS.match(address):
            return f"{uri!r} does not hold an e-mail address (mailto:user@domain)", None
        return None
    if scheme == "https":
        try:
            # urllib raises ValueError on a bracketed host that is not an IPv6 literal
            # ("https://r.e[]xample.com/x") or a bad port: any domain's DNS can hold that.
            parts = urlsplit(uri)
            host, _port = parts.hostname, parts.port
        except ValueError as exc:
            return f"{uri!r} is not a valid https URI ({exc})", None
        if not host:
            return f"{uri!r} has no host name", None
        return None
    if scheme == "http":
        return (
            f"{uri!r} uses http:, which RFC 8460 does not allow; use https:",
            "https:" + uri.split(":", 1)[1],
        )
    if not scheme and _ADDRESS.match(uri):
        return f"{uri!r} lacks its scheme", f"mailto:{uri}"
    return f"{uri!r}: only mailto: and https: URIs are allowed", None


def diagnose_record(text: str) -> TlsRptRecordDiagnosis:
    """Parse one record's text and collect every problem."""
    tags = split_tags(text, VERSION)
    errors = [
        TlsRptRecordError(
            p.message, rule=f"record.{p.rule}", section=_SECTION, field=p.field, fix=p.fix
        )
        for p in tags.problems
    ]
    first, duplicates = tags.first_values()
    # RFC 8460 §3's grammar (tlsrpt-rua *(field-delim tlsrpt-rua)) allows several rua fields:
    # together they list the URIs, so a second rua= adds endpoints rather than being ignored.
    ruas = [value for name, value in tags.fields if name == "rua"]
    if len(ruas) > 1:
        first["rua"] = ",".join(ruas)
    notes = [
        TlsRptRecordError(p.message, rule=f"record.{p.rule}", section=_SECTION, field=p.field)
        for p in duplicates
        if p.field != "rua"
    ]
    extensions: list[tuple[str, str]] = []
    rua: list[str] = []
    for name, value in first.items():
        if name == "rua":
            rua = _read_rua(value, errors)
        elif valid_ext_value(value):
            extensions.append((name, value))
        else:
            errors.append(
                TlsRptRecordError(
                    f"value of {name!r} may hold only printable ASCII without '=', ';' or spaces",
                    rule="record.extension-value",
                    section=_SECTION,
                    field=name,
                )
            )
    if "rua" not in first and not tags.problems:
        errors.append(
            TlsRptRecordError(
                "the record has no rua field (rua is required)",
                rule="record.rua-missing",
                section=_SECTION,
                field="rua",
                fix=f"{text.rstrip(' ;')}; rua=mailto:tlsrpt@<your domain>",
            )
        )
    record = None if errors else TlsRptRecord(tuple(rua), tuple(extensions))
    return TlsRptRecordDiagnosis(record, tuple(errors), tuple(notes))


def _read_rua(value: str, errors: list[TlsRptRecordError]) -> list[str]:
    # RFC 8460 §3: rua = URI *(*WSP "," *WSP URI); commas inside a URI must be %-encoded.
    uris = _RUA_SPLIT.split(value)
    fixed: list[str] = []
    bad = False
    for uri in uris:
        problem = uri_problem(uri) if uri else ("an empty URI between commas", None)
        if problem is not None:
            bad = True
            errors.append(
                TlsRptRecordError(
                    problem[0], rule="record.rua-uri", section="§3", field="rua", fix=None
                )
            )
        fixed.append(problem[1] if problem and problem[1] else uri)
    if bad and all(uri_problem(u) is None for u in fixed):
        errors[-1].fix = "rua=" + ",".join(fixed)
    return uris


def parse_record(text: str) -> TlsRptRecord:
    """Parse one ``_smtp._tls`` record; raise :class:`TlsRptRecordError`."""
    diagnosis = diagnose_record(text)
    if diagnosis.record is None:
        raise diagnosis.errors[0]
    return diagnosis.record


def select_record(txt_records: Iterable[TxtRecord]) -> TlsRptRecord:
    """Pick the TLS-RPT record from all TXT records at ``_smtp._tls.<domain>`` (RFC 8460 §3)."""
    candidates = [
        t for t in (join_strings(r) for r in txt_records) if begins_with_version(t, VERSION)
    ]
    if not candidates:
        raise NoTlsRptRecordError(
            "no TXT record begins with 'v=TLSRPTv1': the domain asks for no TLS reports",
            rule="record.none",
            section=_SECTION,
        )
    if len(candidates) > 1:
        raise MultipleTlsRptRecordsError(
            f"{len(candidates)} records begin with 'v=TLSRPTv1'; senders then send no"
            " reports: merge them into one",
            rule="record.multiple",
            section=_SECTION,
        )
    return parse_record(candidates[0])
