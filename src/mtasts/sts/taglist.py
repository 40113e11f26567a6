"""The ``v=...; name=value; ...`` TXT grammar shared by RFC 8461 §3.1 and RFC 8460 §3.

Both RFCs define the same shape: a version tag first, then fields separated by
``*WSP ";" *WSP``, extension names of at most 32 characters. This module splits
the text and reports grammar problems as neutral values; each RFC's record
parser turns them into its own error type and validates its own values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WSP = " \t"
# RFC 8461 §3.1 / RFC 8460 §3: ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
# ext-value = 1*(%x21-3A / %x3C / %x3E-7E): printable ASCII except "=", ";" and space.
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")


@dataclass(frozen=True, slots=True)
class TagProblem:
    """One way the text breaks the tag-list grammar."""

    rule: str
    message: str
    field: str | None = None
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class TagList:
    """The fields after the version tag, in order, duplicates included."""

    fields: tuple[tuple[str, str], ...]
    problems: tuple[TagProblem, ...]

    def first_values(self) -> tuple[dict[str, str], tuple[TagProblem, ...]]:
        """Each field's first value, and a note for every later copy that is ignored.

        Both RFCs leave repeated fields unspecified; we keep the first, as the
        issue asks and as senders that stop at the first match do.
        """
        first: dict[str, str] = {}
        notes = []
        for name, value in self.fields:
            if name in first:
                notes.append(
                    TagProblem(
                        "duplicate-field",
                        f"field {name!r} appears more than once; the first value {first[name]!r} is used",
                        name,
                    )
                )
            else:
                first[name] = value
        return first, tuple(notes)


def begins_with_version(text: str, version: str) -> bool:
    """True when ``text`` starts with the version tag as a whole token.

    RFC 8461 §3.1 says records not beginning with ``v=STSv1;`` are discarded, but
    its own grammar allows WSP before the ";" (errata 6285); we accept the tag
    followed by ";", WSP or the end, so ``v=STSv10`` is discarded and ``v=STSv1 ;`` is not.
    """
    if not text.startswith(version):
        return False
    rest = text[len(version) :]
    return rest == "" or rest[0] in ";" + WSP


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def valid_ext_value(value: str) -> bool:
    return bool(_EXT_VALUE.match(value))


def split_tags(text: str, version: str) -> TagList:
    """Split a TXT record of the tag-list grammar into (name, value) pairs."""
    if not begins_with_version(text, version):
        stripped = text.strip(WSP)
        fix = None
        if stripped.lower().startswith(version.lower()):
            fix = version + stripped[len(version) :]
        return TagList(
            (),
            (
                TagProblem(
                    "version-first",
                    f"the record must begin with {version!r} (case-sensitive, nothing before it)",
                    "v",
                    fix,
                ),
            ),
        )
    chunks = text.split(";")
    problems: list[TagProblem] = []
    if chunks[0].strip(WSP) != version:
        problems.append(
            TagProblem(
                "separator",
                f"{version!r} must be followed by ';' before the next field",
                "v",
            )
        )
    fields: list[tuple[str, str]] = []
    body = chunks[1:]
    for index, raw in enumerate(body):
        chunk = raw.strip(WSP)
        if not chunk:
            if index != len(body) - 1:
                problems.append(TagProblem("empty-field", "empty field between two ';' separators"))
            continue
        name, eq, value = chunk.partition("=")
        if not eq:
            problems.append(TagProblem("field-syntax", f"field {chunk!r} is not name=value", chunk))
            continue
        if not valid_name(name):
            problems.append(
                TagProblem(
                    "field-name",
                    f"field name {name!r} must be 1-32 letters, digits, '_', '-' or '.',"
                    " starting with a letter or digit",
                    name,
                )
            )
            continue
        fields.append((name, value))
    return TagList(tuple(fields), tuple(problems))
