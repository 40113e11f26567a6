"""The ``_mta-sts.<domain>`` TXT record (RFC 8461 §3.1)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import MultipleRecordsError, NoRecordError, RecordError
from .taglist import begins_with_version, split_tags, valid_ext_value

VERSION = "v=STSv1"
# RFC 8461 §3.1: sts-id = %s"id=" 1*32(ALPHA / DIGIT)
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")

TxtRecord = str | bytes | Sequence[str | bytes]


@dataclass(frozen=True, slots=True)
class StsRecord:
    """A parsed ``_mta-sts`` record: the policy ``id`` and any extension fields.

    ``str(record)`` is the wire form, e.g. ``v=STSv1; id=20260521T101500;``.
    """

    id: str
    extensions: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        fields = [VERSION, f"id={self.id}", *(f"{k}={v}" for k, v in self.extensions)]
        return "; ".join(fields) + ";"


@dataclass(frozen=True, slots=True)
class RecordDiagnosis:
    """Everything a parse found: the record (None when invalid), errors, and notes.

    Notes are legal but suspicious things, such as a repeated field whose later
    copies were ignored.
    """

    record: StsRecord | None
    errors: tuple[RecordError, ...]
    notes: tuple[RecordError, ...]


def _id_fix(value: str) -> str | None:
    cleaned = re.sub(r"[^A-Za-z0-9]", "", value)[:32]
    return f"id={cleaned}" if cleaned else None


def diagnose_record(text: str) -> RecordDiagnosis:
    """Parse one record's text and collect every problem instead of stopping at the first."""
    section = "§3.1"
    tags = split_tags(text, VERSION)
    errors = [
        RecordError(p.message, rule=f"record.{p.rule}", section=section, field=p.field, fix=p.fix)
        for p in tags.problems
    ]
    first, duplicates = tags.first_values()
    notes = [
        RecordError(p.message, rule=f"record.{p.rule}", section=section, field=p.field)
        for p in duplicates
    ]
    extensions: list[tuple[str, str]] = []
    for name, value in first.items():
        if name == "id":
            if not _ID.match(value):
                errors.append(
                    RecordError(
                        f"id {value!r} must be 1 to 32 letters and digits only",
                        rule="record.id-syntax",
                        section=section,
                        field="id",
                        fix=_id_fix(value),
                    )
                )
        elif not valid_ext_value(value):
            errors.append(
                RecordError(
                    f"value of {name!r} may hold only printable ASCII without '=', ';' or spaces",
                    rule="record.extension-value",
                    section=section,
                    field=name,
                )
            )
        else:
            extensions.append((name, value))
    if "id" not in first and not tags.problems:
        errors.append(
            RecordError(
                "the record has no id field (id is required)",
                rule="record.id-missing",
                section=section,
                field="id",
                fix=f"{text.rstrip(' ;')}; id=YYYYMMDDTHHMMSS;",
            )
        )
    record = None if errors else StsRecord(first["id"], tuple(extensions))
    return RecordDiagnosis(record, tuple(errors), tuple(notes))


def parse_record(text: str) -> StsRecord:
    """Parse the text of one ``_mta-sts`` TXT record.

    >>> parse_record("v=STSv1; id=20260521T101500;")
    StsRecord(id='20260521T101500', extensions=())

    Raises :class:`RecordError` naming the rule broken.
    """
    diagnosis = diagnose_record(text)
    if diagnosis.record is None:
        raise diagnosis.errors[0]
    return diagnosis.record


def join_strings(txt: TxtRecord) -> str:
    """One TXT record's text: RFC 8461 §3.1 concatenates its strings with nothing between."""
    parts: Iterable[str | bytes] = [txt] if isinstance(txt, str | bytes) else txt
    return "".join(
        p.decode("utf-8", errors="replace") if isinstance(p, bytes) else p for p in parts
    )


def select_record(txt_records: Iterable[TxtRecord]) -> StsRecord:
    """Pick and parse the MTA-STS record from all TXT records at ``_mta-sts.<domain>``.

    Each record is a str or a list of strings (as DNS returns them). RFC 8461
    §3.1: records not beginning with ``v=STSv1`` are discarded; anything but
    exactly one left means "no policy".

    >>> select_record([["v=spf1 -all"], ["v=STSv1; ", "id=1;"]]).id
    '1'
    """
    candidates = [
        text
        for text in (join_strings(t) for t in txt_records)
        if begins_with_version(text, VERSION)
    ]
    if not candidates:
        raise NoRecordError(
            "no TXT record begins with 'v=STSv1': the domain does not publish MTA-STS",
            rule="record.none",
            section="§3.1",
        )
    if len(candidates) > 1:
        listed = " | ".join(candidates)
        raise MultipleRecordsError(
            f"{len(candidates)} records begin with 'v=STSv1' ({listed}); senders must then"
            " assume no policy: delete all but one",
            rule="record.multiple",
            section="§3.1",
        )
    return parse_record(candidates[0])
