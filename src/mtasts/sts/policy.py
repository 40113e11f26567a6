"""The policy file at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 §3.2)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .domain import domain_problem, to_a_label
from .errors import PolicyError
from .match import pattern_matches
from .taglist import WSP, valid_name

MAX_MAX_AGE = 31557600  # RFC 8461 §3.2: max_age at most 31557600 (about one year)
_MAX_AGE = re.compile(r"[0-9]{1,10}\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SECTION = "§3.2"
_KNOWN = ("version", "mode", "max_age", "mx")


class Mode(StrEnum):
    """What a sender does when a policy's checks fail (RFC 8461 §5)."""

    ENFORCE = "enforce"  # do not deliver to an MX that fails
    TESTING = "testing"  # deliver anyway and report the failure (TLS-RPT)
    NONE = "none"  # no active policy: used to retire MTA-STS (§8.3)


@dataclass(frozen=True, slots=True)
class MxPattern:
    """One ``mx`` line: a host name, or ``*.`` plus a domain matching one extra label."""

    domain: str
    wildcard: bool = False

    def __str__(self) -> str:
        return f"*.{self.domain}" if self.wildcard else self.domain

    def matches(self, host: str) -> bool:
        """RFC 8461 §4.1: does this pattern cover the MX host name ``host``?"""
        return pattern_matches(self.wildcard, self.domain, host)

    @classmethod
    def parse(cls, text: str, *, line: int | None = None) -> MxPattern:
        """Parse ``mail.example.com`` or ``*.example.com``; raise :class:`PolicyError`."""
        wildcard = text.startswith("*.")
        domain = text[2:] if wildcard else text
        if "*" in domain:
            raise PolicyError(
                f"mx {text!r}: a wildcard is allowed only as the whole left-most label ('*.')",
                rule="policy.mx-wildcard",
                section="§3.2, §4.1",
                line=line,
                field="mx",
            )
        problem = domain_problem(domain)
        if problem is None:
            return cls(domain, wildcard)
        fix = None
        if not domain.isascii():
            a_label = to_a_label(domain)
            if a_label:
                problem = f"is in U-label form; write the A-label {a_label!r}"
                fix = f"mx: {'*.' if wildcard else ''}{a_label}"
        elif domain.endswith("."):
            fix = f"mx: {text.rstrip('.')}"
        raise PolicyError(
            f"mx {text!r} {problem}",
            rule="policy.mx-syntax",
            section=_SECTION,
            line=line,
            field="mx",
            fix=fix,
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed MTA-STS policy. ``str(policy)`` is its canonical wire form (CRLF lines).

    >>> p = parse_policy("version: STSv1\\nmode: enforce\\nmx: *.example.com\\nmax_age: 86400\\n")
    >>> p.mode, p.max_age, p.matches_mx("mx1.example.com")
    (<Mode.ENFORCE: 'enforce'>, 86400, True)
    """

    mode: Mode
    max_age: int
    mx: tuple[MxPattern, ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()
    version: str = "STSv1"

    def matches_mx(self, host: str) -> bool:
        """RFC 8461 §4.1: is ``host`` covered by any ``mx`` pattern?"""
        return any(p.matches(host) for p in self.mx)

    def __str__(self) -> str:
        lines = [f"version: {self.version}", f"mode: {self.mode}"]
        lines += [f"mx: {p}" for p in self.mx]
        lines.append(f"max_age: {self.max_age}")
        lines += [f"{k}: {v}" for k, v in self.extensions]
        return "".join(line + "\r\n" for line in lines)


@dataclass(frozen=True, slots=True)
class PolicyDiagnosis:
    """Everything one parse found: the policy (None when invalid), errors and notes."""

    policy: Policy | None
    errors: tuple[PolicyError, ...]
    notes: tuple[PolicyError, ...]


class _Scan:
    """Accumulates fields and problems while reading a policy line by line."""

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.notes: list[PolicyError] = []
        self.single: dict[str, tuple[str, int]] = {}
        self.mx: list[MxPattern] = []
        self.extensions: list[tuple[str, str]] = []
        self.miscased: dict[str, tuple[int, str]] = {}

    def error(self, message: str, rule: str, line: int | None, **kw: str | None) -> None:
        self.errors.append(
            PolicyError(message, rule=f"policy.{rule}", section=_SECTION, line=line, **kw)
        )

    def note(self, message: str, rule: str, line: int | None, **kw: str | None) -> None:
        self.notes.append(
            PolicyError(message, rule=f"policy.{rule}", section=_SECTION, line=line, **kw)
        )


def _decode(data: str | bytes, scan: _Scan) -> str | None:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            scan.error(
                f"the policy is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset"
                f" {exc.start}); is this a binary file?",
                "encoding",
                data.count(b"\n", 0, exc.start) + 1,
            )
            return None
    if text.startswith("\ufeff"):
        scan.note("the file starts with a byte-order mark; remove it", "bom", 1)
        text = text[1:]
    if not text.strip():
        scan.error("the policy is empty", "empty", None)
        return None
    return text


def _read_line(scan: _Scan, number: int, line: str) -> None:
    if line.startswith("<"):
        scan.error(
            f"{line[:40]!r} is HTML, not a 'key: value' field: the server returned a web page"
            " instead of the policy file",
            "html",
            number,
        )
        return
    if _CONTROL.search(line):
        scan.error("the line contains a control character (binary data?)", "control", number)
        return
    key, colon, value = line.partition(":")
    if not colon:
        scan.error(f"{line[:60]!r} is not a 'key: value' field", "field-syntax", number)
        return
    if not valid_name(key):
        fixed = key.strip(WSP)
        scan.error(
            f"field name {key!r} must be 1-32 letters, digits, '_', '-' or '.'",
            "field-name",
            number,
            field=key,
            fix=f"{fixed}: {value.strip(WSP)}" if valid_name(fixed) else None,
        )
        return
    value = value.strip(WSP)
    if not value:
        scan.error(f"field {key!r} has no value", "empty-value", number, field=key)
        return
    _read_field(scan, number, key, value)


def _read_field(scan: _Scan, number: int, key: str, value: str) -> None:
    if key == "mx":
        try:
            scan.mx.append(MxPattern.parse(value, line=number))
        except PolicyError as exc:
            scan.errors.append(exc)
        return
    if key in _KNOWN:
        if key in scan.single:
            scan.note(
                f"{key!r} is repeated; the first value (line {scan.single[key][1]}) is used",
                "duplicate-field",
                number,
                field=key,
            )
            return
        scan.single[key] = (value, number)
        _check_single(scan, number, key, value)
        return
    spelled = key.lower().replace("-", "_")
    if spelled in _KNOWN:
        scan.miscased.setdefault(spelled, (number, value))
    else:
        scan.note(f"unknown field {key!r} is ignored", "unknown-field", number, field=key)
    scan.extensions.append((key, value))


def _check_single(scan: _Scan, number: int, key: str, value: str) -> None:
    if key == "version" and value != "STSv1":
        scan.error(
            f"version {value!r} is not 'STSv1' (case-sensitive)",
            "version",
            number,
            field=key,
            fix="version: STSv1",
        )
    elif key == "mode" and value not in {m.value for m in Mode}:
        lowered = value.lower()
        scan.error(
            f"mode {value!r} is not one of testing, enforce, none (case-sensitive)",
            "mode",
            number,
            field=key,
            fix=f"mode: {lowered}" if lowered in {m.value for m in Mode} else None,
        )
    elif key == "max_age":
        if not _MAX_AGE.match(value):
            digits = re.sub(r"[^0-9]", "", value)[:10]
            scan.error(
                f"max_age {value!r} must be 1 to 10 digits (seconds)",
                "max-age-syntax",
                number,
                field=key,
                fix=f"max_age: {digits}" if digits else None,
            )
        elif int(value) > MAX_MAX_AGE:
            scan.error(
                f"max_age {value} exceeds the maximum {MAX_MAX_AGE} (one year)",
                "max-age-range",
                number,
                field=key,
                fix=f"max_age: {MAX_MAX_AGE}",
            )


def _finish(scan: _Scan) -> Policy | None:
    for key in ("version", "mode", "max_age"):
        if key not in scan.single:
            line, value = scan.miscased.get(key, (None, ""))
            hint = f" (line {line} spells it differently; write exactly {key!r})" if line else ""
            if key == "mode" and value.lower() in {m.value for m in Mode}:
                value = value.lower()
            scan.error(
                f"required field {key!r} is missing{hint}",
                f"{key.replace('_', '-')}-missing",
                line,
                field=key,
                fix=f"{key}: {value}" if line else None,
            )
    mode_value = scan.single.get("mode", ("", 0))[0]
    if mode_value in (Mode.ENFORCE, Mode.TESTING) and not scan.mx and not scan.errors:
        scan.error(f"mode {mode_value} requires at least one 'mx' line", "mx-missing", None)
    if scan.errors:
        return None
    return Policy(
        mode=Mode(mode_value),
        max_age=int(scan.single["max_age"][0]),
        mx=tuple(scan.mx),
        extensions=tuple(scan.extensions),
    )


def diagnose_policy(data: str | bytes) -> PolicyDiagnosis:
    """Parse a policy and collect every problem, for linting and explaining."""
    scan = _Scan()
    text = _decode(data, scan)
    if text is None:
        return PolicyDiagnosis(None, tuple(scan.errors), tuple(scan.notes))
    lines: Sequence[str] = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    blank_seen = False
    for number, raw in enumerate(lines, start=1):
        # RFC 8461 §3.2: lines end in CRLF or LF; WSP may precede a field.
        line = raw.removesuffix("\r").lstrip(WSP)
        if not line:
            # RFC 8461 §3.2: the grammar has no empty line, not even a final one (at most one
            # sts-policy-term ends the file). mox and mimecast reject the whole policy, so
            # those senders see no policy at all: an error, not a note.
            if not blank_seen:
                scan.error(
                    "empty line: the policy grammar has none, and strict senders (mox,"
                    " mimecast) reject the whole policy",
                    "blank",
                    number,
                    fix="remove the empty line(s); end the file with at most one line break",
                )
                blank_seen = True
            continue
        before = len(scan.errors)
        _read_line(scan, number, line)
        if scan.errors[before:] and scan.errors[-1].rule == "policy.html":
            break
    policy = _finish(scan)
    return PolicyDiagnosis(policy, tuple(scan.errors), tuple(scan.notes))


def parse_policy(data: str | bytes) -> Policy:
    """Parse a policy file given as text or as the raw HTTP body.

    Raises :class:`PolicyError` for the first problem, naming the line and rule.
    """
    diagnosis = diagnose_policy(data)
    if diagnosis.policy is None:
        raise diagnosis.errors[0]
    return diagnosis.policy
