"""The errors of the TLS-RPT core."""

from __future__ import annotations

import functools
from typing import Any

from mtasts.errors import MtastsError


class TlsRptError(MtastsError, ValueError):
    """Something in a TLS-RPT record or report breaks RFC 8460.

    ``rule`` is a stable short code, ``field`` the record field or the JSON path
    (``policies[0].summary.total-failure-session-count``), ``fix`` the corrected
    text where one can be derived.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        section: str,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.section = section
        self.field = field
        self.fix = fix

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # The fields are keyword-only, which default exception pickling (cls(*args)) drops;
        # a report parsed in a worker process brings its error back to the store whole.
        rebuild = functools.partial(
            type(self), rule=self.rule, section=self.section, field=self.field, fix=self.fix
        )
        return rebuild, (self.message,)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field and self.field not in self.message else ""
        return f"{where}{self.message} (RFC 8460 {self.section})"


class TlsRptRecordError(TlsRptError):
    """The ``_smtp._tls`` record is unusable: senders send no reports (RFC 8460 §3)."""


class NoTlsRptRecordError(TlsRptRecordError):
    """No record begins with ``v=TLSRPTv1``: the domain asks for no reports."""


class MultipleTlsRptRecordsError(TlsRptRecordError):
    """More than one ``v=TLSRPTv1`` record: senders must assume none (RFC 8460 §3)."""


class ReportError(TlsRptError):
    """A report cannot be understood; keep the raw bytes so a fixed parser can retry."""


class ReportTooLargeError(ReportError):
    """The report, or what it inflates to, exceeds the size limit (a gzip bomb, or abuse)."""
