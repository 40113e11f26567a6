"""The errors of the MTA-STS core, each saying how a caller must treat it."""

from __future__ import annotations

from mtasts.errors import MtastsError


class StsError(MtastsError, ValueError):
    """Something in an MTA-STS record or policy breaks RFC 8461.

    Every error carries the rule broken (``rule``, a stable short code), where
    (``line`` and/or ``field``), the RFC section, and, where one can be
    derived, the corrected text (``fix``).
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        section: str,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.section = section
        self.line = line
        self.field = field
        self.fix = fix

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message} (RFC 8461 {self.section})"


class RecordError(StsError):
    """The ``_mta-sts`` TXT record is unusable.

    Treat the domain as not having an MTA-STS policy (RFC 8461 §3.1), but a
    cached, unexpired policy still applies (§5.1).
    """


class NoRecordError(RecordError):
    """No TXT record begins with ``v=STSv1``: the domain does not use MTA-STS."""


class MultipleRecordsError(RecordError):
    """More than one ``v=STSv1`` record: RFC 8461 §3.1 says assume no policy."""


class PolicyError(StsError):
    """The policy file is invalid: the TLS-RPT result type is ``sts-policy-invalid``.

    A sender keeps using a cached, unexpired policy (RFC 8461 §5.1).
    """
