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
from email.message import Message

from .errors import ReportError, ReportTooLargeError
from .parse import DEFAULT_MAX_SIZE

TLSRPT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
_LOOSE_TYPES = ("application/gzip", "application/x-gzip", "application/json", "application/octet-stream",
                "application/zip", "application/x-zip-compressed", "text/json", "text/plain")  # fmt: skip
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


def _looks_like_report(content_type: str, part: Message) -> bool:
    if content_type in TLSRPT_TYPES:
        return True
    if content_type not in _LOOSE_TYPES:
        return False
    return (part.get_filename() or "").lower().endswith(_REPORT_NAMES)


def extract_reports(message: bytes) -> ReportMail:
    """The report parts of one message; malformed MIME becomes a note, not an exception."""
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
        if part.is_multipart() or not _looks_like_report(content_type, part):
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


def expand_zip(
    data: bytes, max_size: int = DEFAULT_MAX_SIZE, max_members: int = 1000
) -> list[tuple[str, bytes]]:
    """The report files inside a zip; refuses path traversal, bombs and absurd member counts."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ReportError(
            f"not a valid zip file ({exc})", rule="report.zip", section="§5.3"
        ) from None
    members = archive.infolist()
    if len(members) > max_members:
        raise ReportError(
            f"the zip holds {len(members)} files (limit {max_members})",
            rule="report.zip",
            section="§5.3",
        )
    out = []
    total = 0
    for member in members:
        name = member.filename
        if (
            name.startswith(("/", "\\"))
            or ".." in name.replace("\\", "/").split("/")
            or ":" in name
        ):
            raise ReportError(
                f"zip member {name!r} has an unsafe path", rule="report.zip-path", section="§5.3"
            )
        if member.is_dir():
            continue
        total += member.file_size
        if member.file_size > max_size or total > max_size:
            raise ReportTooLargeError(
                f"zip member {name!r} inflates past {max_size:,} bytes",
                rule="report.too-large",
                section="§5.3",
            )
        try:
            with archive.open(member) as handle:
                content = handle.read(max_size + 1)
        except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, ValueError) as exc:
            raise ReportError(
                f"zip member {name!r} is corrupt ({exc})", rule="report.zip", section="§5.3"
            ) from None
        if len(content) > max_size:
            raise ReportTooLargeError(
                f"zip member {name!r} inflates past {max_size:,} bytes",
                rule="report.too-large",
                section="§5.3",
            )
        out.append((name, content))
    return out


__all__ = ["ReportMail", "ReportPart", "expand_zip", "extract_reports"]
