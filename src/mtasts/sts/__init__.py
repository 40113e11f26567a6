"""MTA-STS, RFC 8461, as pure functions: no sockets, no files.

SMTP's STARTTLS is opportunistic: an attacker on the path can delete the
``250-STARTTLS`` line from the server's EHLO reply and the sender falls back to
plaintext. MTA-STS lets a receiving domain say "my MX hosts always offer TLS
with a valid certificate for these names" out of band, so a sender can refuse
to downgrade.

A domain publishes two things:

* a TXT record at ``_mta-sts.<domain>`` such as ``v=STSv1; id=20260521T101500;``
  (§3.1) whose ``id`` changes whenever the policy does, and
* a policy file served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
  (§3.2, §3.3) naming the ``mode`` (``enforce``, ``testing`` or ``none``), how
  long senders may cache it (``max_age`` seconds), and the ``mx`` patterns the
  MX host names, and their certificates, must match (§4).

>>> from mtasts.sts import parse_policy, select_record, cert_matches
>>> select_record(["v=spf1 -all", ["v=STSv1; id=", "2026052101"]]).id
'2026052101'
>>> policy = parse_policy(b"version: STSv1\\r\\nmode: enforce\\r\\nmx: mx.example.com\\r\\nmax_age: 604800\\r\\n")
>>> policy.matches_mx("MX.example.com."), cert_matches(["mx.example.com"], "mx.example.com")
(True, True)
"""

from .errors import MultipleRecordsError, NoRecordError, PolicyError, RecordError, StsError
from .fetch import (
    FailureKind,
    FetchVerdict,
    PolicyFailure,
    PolicyResponse,
    judge_response,
)
from .match import cert_matches
from .names import MAX_POLICY_SIZE, WELL_KNOWN_PATH, policy_host
from .policy import (
    MAX_MAX_AGE,
    Mode,
    MxPattern,
    Policy,
    PolicyDiagnosis,
    diagnose_policy,
    parse_policy,
)
from .record import RecordDiagnosis, StsRecord, diagnose_record, parse_record, select_record

__all__ = [
    "MAX_MAX_AGE",
    "MAX_POLICY_SIZE",
    "WELL_KNOWN_PATH",
    "FailureKind",
    "FetchVerdict",
    "Mode",
    "MultipleRecordsError",
    "MxPattern",
    "NoRecordError",
    "Policy",
    "PolicyDiagnosis",
    "PolicyError",
    "PolicyFailure",
    "PolicyResponse",
    "RecordDiagnosis",
    "RecordError",
    "StsError",
    "StsRecord",
    "cert_matches",
    "diagnose_policy",
    "diagnose_record",
    "judge_response",
    "parse_policy",
    "parse_record",
    "policy_host",
    "select_record",
]
