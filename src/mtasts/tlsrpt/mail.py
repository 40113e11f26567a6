"""Report mail (RFC 8460 §5.3): find the report attachments in a message, without I/O.

Senders are meant to send ``multipart/report; report-type=tlsrpt`` with an
``application/tlsrpt+gzip`` (or ``+json``) part and the ``TLS-Report-Domain`` /
``TLS-Report-Submitter`` headers. Real ones also send ``application/gzip``,
``application/json`` or ``application/octet-stream`` parts named ``*.json.gz``,
zip files, or the report as the whole single-part body. Anything else is
unrelated mail: it is reported as such, never as an error.
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
from dataclasses import dataclass

from . import mime
from .errors import ReportError
from .parse import DEFAULT_MAX_SIZE, Budget

TLSRPT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
# Seen in other implementations' test suites: the bare type, gzip or JSON by its bytes.
_BARE_TYPE = "application/tlsrpt"
_LOOSE_TYPES = (
    "application/gzip",
    "application/x-gzip",
    "application/json",
    "application/octet-stream",
    "application/zip",
    "application/x-zip-compressed",
    "text/json",
    "text/plain",
)
_REPORT_NAMES = (".json", ".json.gz", ".gz", ".zip", ".json.zip")


@dataclass(frozen=True, slots=True)
class ReportPart:
    """One attached report file, as sent (gzip, zip or JSON bytes)."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ReportMail:
    is_report: bool
    parts: tuple[ReportPart, ...]
    submitter: str | None = None
    domain: str | None = None
    message_id: str | None = None
    notes: tuple[str, ...] = ()


def _looks_like_report(content_type: str, filename: str | None) -> bool:
    if content_type in TLSRPT_TYPES or content_type == _BARE_TYPE:
        return True
    return content_type in _LOOSE_TYPES and (filename or "").lower().endswith(_REPORT_NAMES)


def extract_reports(message: bytes) -> ReportMail:
    """The report parts of one message; malformed MIME becomes a note, not an exception."""
    usual = _usual_report_mail(message)
    return usual if usual is not None else _read_with_email_package(message)


def _usual_report_mail(message: bytes) -> ReportMail | None:
    """The report mail of the usual shape, read by :mod:`.mime`; None for any other message."""
    read = mime.leaf_parts(message)
    if read is None:
        return None
    top, leaves = read
    parts: list[ReportPart] = []
    for leaf in leaves:
        try:
            name = mime.filename(leaf.fields, leaf.params)
        except mime.Unusual:
            return None
        kind = leaf.content_type
        if not _looks_like_report(kind, name):
            continue
        data = mime.payload(leaf.fields, leaf.body)
        if not data:
            return None  # undecodable or empty: the email package's reading says which
        parts.append(ReportPart(name, kind, data))
    if not parts:
        return None  # unrelated mail, or a declared report with nothing attached: noted there
    domain, submitter = top.get("tls-report-domain"), top.get("tls-report-submitter")
    return ReportMail(
        True,
        tuple(parts),
        submitter.strip() if submitter else None,
        domain.strip().lower() if domain else None,
        top.get("message-id", "").strip() or None,
    )


def _read_with_email_package(message: bytes) -> ReportMail:
    notes: list[str] = []
    try:
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    except Exception as exc:  # the email package should not raise, but mail is adversarial
        return ReportMail(False, (), notes=(f"unreadable message: {exc}",))
    top_type = parsed.get_content_type()
    declared = top_type == "multipart/report" and parsed.get_param("report-type") == "tlsrpt"
    parts: list[ReportPart] = []
    for part in parsed.walk() if parsed.is_multipart() else [parsed]:
        content_type = part.get_content_type()  # computed once: it re-parses the header each call
        if part.is_multipart() or not _looks_like_report(content_type, part.get_filename()):
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception as exc:
            notes.append(f"part {part.get_filename()!r}: cannot decode ({exc})")
            continue
        if not isinstance(payload, bytes) or not payload:
            notes.append(f"part {part.get_filename()!r}: empty or undecodable")
            continue
        parts.append(ReportPart(part.get_filename(), content_type, payload))
    if declared and not parts:
        notes.append("declared report-type=tlsrpt but holds no report attachment")
    domain = parsed.get("TLS-Report-Domain")
    submitter = parsed.get("TLS-Report-Submitter")
    return ReportMail(
        bool(parts) or declared,
        tuple(parts),
        str(submitter).strip() if submitter else None,
        str(domain).strip().lower() if domain else None,
        str(parsed.get("Message-ID", "")).strip() or None,
        tuple(notes),
    )


_ZIP_MAGIC = b"PK\x03\x04"


def expand_zip(
    data: bytes,
    max_size: int = DEFAULT_MAX_SIZE,
    max_members: int = 1000,
    budget: Budget | None = None,
) -> list[tuple[str, bytes]]:
    """The report files inside a zip; refuses path traversal, bombs and absurd member counts.

    Every member's inflated bytes are taken from ``budget`` (one per input, shared with
    the input's other parts; a fresh one of ``max_size`` when none is given). A member
    that is itself a zip is refused: reports are zipped once, and expanding nested zips
    is how a small mail turns into gigabytes.
    """
    budget = budget if budget is not None else Budget(max_size)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except Exception as exc:  # zipfile raises IndexError, struct.error, ... on hostile bytes
        raise ReportError(
            f"not a valid zip file ({exc})", rule="report.zip", section="§5.3"
        ) from None
    if len(members) > max_members:
        raise ReportError(
            f"the zip holds {len(members)} files (limit {max_members})",
            rule="report.zip",
            section="§5.3",
        )
    out = []
    for member in members:
        name = member.filename
        if (
            not name  # zipfile's is_dir() would raise IndexError on it
            or name.startswith(("/", "\\"))
            or ".." in name.replace("\\", "/").split("/")
            or ":" in name
        ):
            raise ReportError(
                f"zip member {name!r} has an unsafe path", rule="report.zip-path", section="§5.3"
            )
        if member.is_dir():
            continue
        if member.file_size > budget.remaining:
            budget.take(member.file_size, f"zip member {name!r}")  # raises, naming the member
        try:
            with archive.open(member) as handle:
                content = handle.read(budget.remaining + 1)
        except Exception as exc:  # as above: a corrupt member is a ReportError, never a crash
            raise ReportError(
                f"zip member {name!r} is corrupt ({exc})", rule="report.zip", section="§5.3"
            ) from None
        budget.take(len(content), f"zip member {name!r}")
        if content.startswith(_ZIP_MAGIC):
            raise ReportError(
                f"zip member {name!r} is itself a zip; reports are zipped once, never nested",
                rule="report.zip-nested",
                section="§5.3",
            )
        out.append((name, content))
    return out


__all__ = ["ReportMail", "ReportPart", "expand_zip", "extract_reports"]
