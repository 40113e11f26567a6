"""TLS-RPT, RFC 8460, as pure functions: no sockets, no files.

MTA-STS (and DANE) make senders refuse mail delivery over broken TLS; TLS-RPT
tells the receiving domain when that happens. A domain publishes a TXT record
at ``_smtp._tls.<domain>`` such as ``v=TLSRPTv1; rua=mailto:tlsrpt@example.com``
(§3), and senders mail (or POST to an ``https:`` rua) one JSON report a day
(§4, §5): per policy, how many sessions succeeded, and for failures the result
type (``starttls-not-supported``, ``certificate-host-mismatch``, ...), the MX
and the addresses involved.

>>> from mtasts.tlsrpt import select_record
>>> select_record(["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@example.com"]).mailto
('tls@example.com',)
"""

from .errors import (
    MultipleTlsRptRecordsError,
    NoTlsRptRecordError,
    ReportError,
    ReportTooLargeError,
    TlsRptError,
    TlsRptRecordError,
)
from .model import (
    DateRange,
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ReportPolicy,
    ResultType,
)
from .parse import DEFAULT_MAX_SIZE, parse_report
from .record import (
    TlsRptRecord,
    TlsRptRecordDiagnosis,
    diagnose_record,
    parse_record,
    select_record,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DateRange",
    "FailureDetail",
    "MultipleTlsRptRecordsError",
    "NoTlsRptRecordError",
    "PolicyResult",
    "PolicyType",
    "Report",
    "ReportError",
    "ReportPolicy",
    "ReportTooLargeError",
    "ResultType",
    "TlsRptError",
    "TlsRptRecord",
    "TlsRptRecordDiagnosis",
    "TlsRptRecordError",
    "diagnose_record",
    "parse_record",
    "parse_report",
    "select_record",
]
