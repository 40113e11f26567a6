"""Mutation property tests: valid inputs, bent a little, raise only each parser's typed error.

Random bytes rarely get past a parser's first check; the escapes the security review found
came from inputs that are almost right (a ``rua`` URI with brackets in its host). So every
parser entry point is fed valid inputs mutated by a few insertions, deletions, replacements
and duplications drawn from the characters that separate, quote or escape in these grammars.
The typed errors all subclass ValueError, so each test catches only the typed class: a bare
ValueError, or anything else, fails the test.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtasts import sts, tlsrpt
from mtasts.net import dnswire
from mtasts.tlsrpt.mail import expand_zip, extract_reports

_SPECIAL = (
    "[]{}<>()%:;=,@/\\?#&+-.*_!~'\"`\x00\x01\x1b\x7f\t\r\n \u00e9\u2028\ufeff\udcff0123456789aZ"
)

STS_RECORDS = ["v=STSv1; id=20260521T101500;", "v=STSv1; id=abc123; ext=value"]
TLSRPT_RECORDS = [
    "v=TLSRPTv1; rua=mailto:tlsrpt@example.com",
    "v=TLSRPTv1; rua=https://r.example.com/tlsrpt,mailto:a@b.example;",
    "v=TLSRPTv1;rua=https://[2001:db8::1]:8443/x",
]
POLICIES = [
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
    "version: STSv1\nmode: testing\nmx: mail.example.org\nmax_age: 86400\n",
    "version: STSv1\r\nmode: none\r\nmax_age: 0\r\n",
]
REPORT = {
    "organization-name": "Example Org",
    "date-range": {
        "start-datetime": "2026-05-20T00:00:00Z",
        "end-datetime": "2026-05-20T23:59:59Z",
    },
    "contact-info": "tlsrpt@example.org",
    "report-id": "2026-05-20_example.com",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce"],
                "policy-domain": "example.com",
                "mx-host": ["*.example.com"],
            },
            "summary": {"total-successful-session-count": 5, "total-failure-session-count": 2},
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "192.0.2.1",
                    "receiving-mx-hostname": "mx.example.com",
                    "receiving-ip": "2001:db8::25",
                    "failed-session-count": 2,
                    "failure-reason-code": "X509_V_ERR_CERT_HAS_EXPIRED",
                }
            ],
        }
    ],
}
REPORT_TEXT = json.dumps(REPORT, indent=1)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str]) -> str:
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = draw(st.text(st.sampled_from(_SPECIAL), min_size=1, max_size=4))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        elif kind == "replace":
            text = text[:at] + piece + text[at + len(piece) :]
        else:
            end = min(len(text), at + draw(st.integers(1, 20)))
            text = text[:end] + text[at:end] + text[end:]
    return text


def _mutated_bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


_MUTATIONS = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@_MUTATIONS
@given(mutated(STS_RECORDS))
def test_sts_record_parsers(text: str) -> None:
    with contextlib.suppress(sts.RecordError):
        sts.parse_record(text)
    with contextlib.suppress(sts.RecordError):
        sts.select_record([text, [text[:7], text[7:]]])
    sts.diagnose_record(text)


@_MUTATIONS
@given(mutated(TLSRPT_RECORDS))
def test_tlsrpt_record_parsers(text: str) -> None:
    with contextlib.suppress(tlsrpt.TlsRptRecordError):
        record = tlsrpt.parse_record(text)
        assert len(record.mailto) + len(record.https) == len(record.rua)
    with contextlib.suppress(tlsrpt.TlsRptRecordError):
        tlsrpt.select_record([text])
    tlsrpt.diagnose_record(text)


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv1; rua=https://r.e[]xample.com/x",
        "v=TLSRPTv1; rua=https://[::1/x",
        "v=TLSRPTv1; rua=https://r.example.com:99999/x",
    ],
)
def test_bracketed_rua_host_is_a_record_error(text: str) -> None:
    """The security review's one escape: urllib's ValueError from a bracketed host."""
    with pytest.raises(tlsrpt.TlsRptRecordError, match="is not a valid https URI") as caught:
        tlsrpt.parse_record(text)
    assert caught.value.rule == "record.rua-uri"


@_MUTATIONS
@given(mutated(POLICIES), st.booleans())
def test_policy_parsers(text: str, as_bytes: bool) -> None:
    data: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    with contextlib.suppress(sts.PolicyError):
        sts.parse_policy(data)
    sts.diagnose_policy(data)


@_MUTATIONS
@given(mutated([REPORT_TEXT]), st.booleans(), st.booleans())
def test_report_parser(text: str, strict: bool, compress: bool) -> None:
    data = text.encode("utf-8", "surrogatepass")
    if compress:
        data = gzip.compress(data)
    with contextlib.suppress(tlsrpt.ReportError):
        tlsrpt.parse_report(data, strict=strict)


@st.composite
def mutated_gzip(draw: st.DrawFn) -> bytes:
    return _mutated_bytes(draw, gzip.compress(REPORT_TEXT.encode()))


@_MUTATIONS
@given(mutated_gzip())
def test_report_parser_on_mutated_gzip(data: bytes) -> None:
    with contextlib.suppress(tlsrpt.ReportError):
        tlsrpt.parse_report(data)


def _report_mail(report: bytes) -> str:
    import base64

    body = base64.encodebytes(gzip.compress(report)).decode()
    return (
        'Content-Type: multipart/report; report-type="tlsrpt"; boundary="b1"\r\n'
        "TLS-Report-Domain: example.com\r\nTLS-Report-Submitter: example.org\r\n"
        "Message-ID: <r1@example.org>\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        '--b1\r\nContent-Type: application/tlsrpt+gzip; name="r.json.gz"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n--b1--\r\n"
    )


MAILS = [_report_mail(REPORT_TEXT.encode())]


@_MUTATIONS
@given(mutated(MAILS))
def test_report_mail_extraction(text: str) -> None:
    mail = extract_reports(text.encode("utf-8", "surrogatepass"))
    for part in mail.parts:
        with contextlib.suppress(tlsrpt.ReportError):
            tlsrpt.parse_report(part.data)


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


@st.composite
def mutated_zip(draw: st.DrawFn) -> bytes:
    return _mutated_bytes(draw, _zip({"a.json": REPORT_TEXT.encode(), "b.json": b"{}"}))


@_MUTATIONS
@given(mutated_zip())
def test_zip_expansion(data: bytes) -> None:
    with contextlib.suppress(tlsrpt.ReportError):
        expand_zip(data, 1 << 20)


def _dns_answer() -> bytes:
    query = dnswire.decode_query(dnswire.encode_query(7, dnswire.question("example.com", 16)))
    answers = [
        ("example.com", 16, 300, dnswire.encode_rdata(16, '"v=STSv1; id=1;"')),
        ("example.com", 15, 300, dnswire.encode_rdata(15, "10 mx.example.com.")),
    ]
    return dnswire.encode_response(query, 0, answers)


@st.composite
def mutated_wire(draw: st.DrawFn) -> bytes:
    return _mutated_bytes(draw, _dns_answer())


@_MUTATIONS
@given(mutated_wire())
def test_dns_decoder(wire: bytes) -> None:
    with contextlib.suppress(dnswire.WireError):
        dnswire.decode_response(wire)
    with contextlib.suppress(dnswire.WireError):
        dnswire.decode_query(wire)


CONFIG = """\
[[domain]]
name = "example.com"
mode = "testing"
mx = ["mx1.example.com", "*.example.net"]
max_age = 86400
rua = ["mailto:tlsrpt@example.com"]
"""


@settings(
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutated([CONFIG]))
def test_config_loader(tmp_path: Path, text: str) -> None:
    from mtasts.deploy.config import DeployConfigError, load_config

    path = tmp_path / "mtasts.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(DeployConfigError):
        load_config(path)
