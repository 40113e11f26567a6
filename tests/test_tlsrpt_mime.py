"""The strict report-mail reader gives exactly what the email package gives, or declines.

`extract_reports` reads mail of the usual shape with `tlsrpt.mime` and everything else
with the email package; these tests hold the two readers equal wherever the strict one
answers, on generated mail full of the shapes real senders and hostile ones use.
"""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtasts.lab.reports import report_mail
from mtasts.tlsrpt.mail import _read_with_email_package, _usual_report_mail, extract_reports

REPORT = gzip.compress(b'{"organization-name": "x", "report-id": "r1"}')


def _same_or_declined(message: bytes) -> bool:
    """True when the strict reader answered (and then it must equal the email package)."""
    usual = _usual_report_mail(message)
    if usual is not None:
        assert usual == _read_with_email_package(message)
    return usual is not None


def test_the_lab_and_rfc_shapes_are_read_by_the_strict_reader() -> None:
    """The fast path must actually be taken for the mail senders send, not just be safe."""
    shapes = [
        report_mail(REPORT),
        report_mail(REPORT, media="application/gzip", filename="a!b!1!2.json.gz"),
        report_mail(b'{"a": 1}', media="application/tlsrpt+json").replace(
            b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: 7bit"
        ),
        report_mail(REPORT).replace(b"\r\n", b"\n"),
        # Content-Type folded over two lines, as Google's is.
        report_mail(REPORT).replace(b'report-type="tlsrpt"; ', b'report-type="tlsrpt";\r\n\t'),
    ]
    for message in shapes:
        assert _same_or_declined(message), message[:300]
    mail = extract_reports(shapes[0])
    assert mail.parts[0].data == REPORT
    assert mail.domain == "company-y.example"


def test_json_sent_as_7bit_keeps_its_bytes_but_not_the_delimiters_line_break() -> None:
    message = (
        b"Content-Type: multipart/report; report-type=tlsrpt; boundary=b\n\n"
        b'--b\nContent-Type: application/tlsrpt+json\n\n{"a":\n 1}\n\n--b--\n'
    )
    assert _same_or_declined(message)
    assert extract_reports(message).parts[0].data == b'{"a":\n 1}\n'


@pytest.mark.parametrize(
    "message",
    [
        # Each is one thing the strict reader leaves to the email package.
        report_mail(REPORT).replace(b"--tlsrpt-boundary-42--", b"--not-the-close--"),
        report_mail(REPORT).replace(b"Subject: Report", b"Subject: R\xc3\xa9port"),
        report_mail(REPORT).replace(b'filename="', b"filename*=utf-8''"),
        report_mail(REPORT).replace(b"base64", b"quoted-printable"),
        report_mail(REPORT).replace(b"\r\n", b"\r", 3),
        report_mail(REPORT).replace(b"\r\n\r\n", b"\r\n", 1),
    ],
)
def test_unusual_mail_is_left_to_the_email_package(message: bytes) -> None:
    assert _usual_report_mail(message) is None
    assert extract_reports(message) == _read_with_email_package(message)


def _usually(usual: list[str], unusual: list[str]) -> st.SearchStrategy[str]:
    """One of ``usual`` but one time in 30: a mail has dozens of these choices, and most
    generated mail must be of the usual shape, or the strict reader is dodged, not tested.
    (From a Random hypothesis seeds: its own draws favour the ends of every range.)"""
    return st.randoms(use_true_random=True).map(
        lambda rng: rng.choice(unusual if rng.random() < 1 / 30 else usual)
    )


_rarely = _usually(["no"], ["yes"]).map(lambda answer: answer == "yes")
_EOLS = st.sampled_from(["\r\n", "\n"])
_TYPES = _usually(
    [
        "application/tlsrpt+gzip",
        "application/tlsrpt+gzip",
        "application/tlsrpt+gzip",
        "Application/TLSRPT+gzip",
        "application/tlsrpt+json",
        "application/tlsrpt",
        "application/gzip",
        "application/octet-stream",
        "application/json",
        "application/zip",
        "text/plain",
        "text/html",
        "image/png",
    ],
    ["multipart/mixed", "message/rfc822", "application", "a/b/c", ""],
)
_NAMES = _usually(
    [
        "r.json.gz",
        "R.JSON.GZ",
        "google.com!example.com!1!2.json.gz",
        "a b.json",
        "report.zip",
        "notes.txt",
        "",
        " padded.gz ",
    ],
    ["<x.json.gz>", 'a"b.gz', "a\\b.gz", "x;y.json"],
)
_PARAM_FORMS = _usually(['; {k}="{v}"', "; {k}={v}", ";{k} = {v}", '; {K}="{v}"'], ["; {k}*={v}"])
_ENCODINGS = _usually(
    ["base64", "BASE64", "7bit", "8bit", "binary", ""],
    ["base64 ", "quoted-printable", "x-uue", "base64\r\n x"],
)
_SEPARATORS = _usually(["", "", " ", "\t"], ["--", "-- ", "x"])


@st.composite
def _param(draw: st.DrawFn, key: str, value: str) -> str:
    form = draw(_PARAM_FORMS)
    return form.format(k=key, K=key.upper(), v=value)


@st.composite
def _body(draw: st.DrawFn, encoding: str, eol: str) -> str:
    payload = draw(st.binary(max_size=120))
    kind = draw(_usually(["base64", "raw"], ["base64-nopad", "junk", "empty"]))
    if kind == "empty":
        return ""
    if kind == "junk":
        return draw(st.sampled_from(["!!!!", "abc", "YWJj\x00", "====", "YW Jj"]))
    if kind == "raw" or "base64" not in encoding.lower():
        return draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
    text = base64.b64encode(payload).decode()
    if kind == "base64-nopad":
        text = text.rstrip("=")
    width = draw(st.sampled_from([76, 64, 4, 1000]))
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


@st.composite
def _part(draw: st.DrawFn, eol: str) -> str:
    lines = []
    name = draw(_NAMES)
    if not draw(_rarely):
        content_type = f"Content-Type: {draw(_TYPES)}"
        if draw(st.booleans()):
            content_type += draw(_param("name", name))
        if draw(st.booleans()):
            content_type += (
                draw(st.sampled_from([eol + "\t", eol + " ", ""])) + "; charset=us-ascii"
            )
        lines.append(content_type)
    encoding = draw(_ENCODINGS)
    if encoding:
        lines.append(f"Content-Transfer-Encoding: {encoding}")
    if draw(st.booleans()):
        disposition = "Content-Disposition: " + draw(st.sampled_from(["attachment", "inline", ""]))
        if draw(st.booleans()):
            disposition += draw(_param("filename", draw(_NAMES)))
        lines.append(disposition)
    draw(st.randoms()).shuffle(lines)
    if draw(_rarely):
        lines.append(draw(st.sampled_from(["Bad Header", " continued", "From x", ": empty"])))
    head = eol.join(lines)
    blank = "" if draw(_rarely) else eol
    return (head + eol if head else "") + blank + draw(_body(encoding, eol))


@st.composite
def report_mails(draw: st.DrawFn) -> bytes:
    eol = draw(_EOLS)
    boundary = draw(_usually(["b1", "tlsrpt-boundary-42", "=_x", "b--", "a b"], ["b ", 'b"x']))
    top = [
        "From: reports@example.net",
        draw(st.sampled_from(["Subject: Report", "Subject: a" + eol + " b", "X-Empty:"])),
    ]
    if draw(st.booleans()):
        top.append(
            "TLS-Report-Domain: " + draw(st.sampled_from(["Example.COM", " x.example ", ""]))
        )
    if draw(st.booleans()):
        top.append(
            "TLS-Report-Submitter: " + draw(st.sampled_from(["google.com", "a" + eol + " b"]))
        )
    if draw(st.booleans()):
        top.append("Message-ID: " + draw(st.sampled_from(["<r1@example.net>", "", "  <x>  "])))
    mime_type = draw(
        _usually(["multipart/report", "multipart/mixed", "Multipart/Report"], ["multipart/digest"])
    )
    content_type = f"Content-Type: {mime_type}"
    content_type += draw(
        _param("report-type", draw(st.sampled_from(["tlsrpt", "TLSRPT", "other"])))
    )
    content_type += draw(st.sampled_from([eol + "\t", eol + " ", " ", ""]))
    content_type += draw(_param("boundary", boundary))
    top.insert(draw(st.integers(0, len(top))), content_type)
    if draw(st.randoms(use_true_random=True)).random() < 1 / 8:  # the report is the whole body
        top.remove(content_type)
        top.append("Content-Type: " + draw(_TYPES) + draw(_param("name", draw(_NAMES))))
        top.append("Content-Transfer-Encoding: base64")
        return (eol.join(top) + eol + eol + draw(_body("base64", eol))).encode()
    parts = draw(st.lists(_part(eol), min_size=1, max_size=4))
    text = eol.join(top) + eol + eol + draw(st.sampled_from(["", "preamble" + eol]))
    for part in parts:
        text += f"--{boundary}{draw(_SEPARATORS)}{eol}{part}{eol}"
    text += "" if draw(_rarely) else f"--{boundary}--{eol}"
    text += draw(_usually(["", "epilogue" + eol], [f"--{boundary}{eol}after{eol}"]))
    return text.encode("utf-8", "surrogateescape")


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(report_mails())
def test_the_strict_reader_equals_the_email_package_or_declines(message: bytes) -> None:
    _same_or_declined(message)
    assert extract_reports(message) == _read_with_email_package(message)


@settings(max_examples=300)
@given(report_mails(), st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_mangled_mail_is_still_read_the_same(message: bytes, at: int, junk: bytes) -> None:
    mangled = message[:at] + junk + message[at:]
    _same_or_declined(mangled)


def _corpus() -> Path | None:
    """The shared corpus: MTASTS_CORPUS, else ``shared/corpus`` beside this checkout or
    beside the local repository it was cloned from (a fresh clone in /tmp)."""
    if os.environ.get("MTASTS_CORPUS"):
        return Path(os.environ["MTASTS_CORPUS"])
    checkout = Path(__file__).parents[1]
    origin = subprocess.run(
        ["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    for root in (checkout, Path(origin) if origin.startswith("/") else None):
        if root is not None and (root.parent / "shared" / "corpus").is_dir():
            return root.parent / "shared" / "corpus"
    return None


def test_real_report_mail_reads_the_same_both_ways() -> None:
    corpus = _corpus()
    mails = sorted((corpus / "tlsrpt-reports").rglob("*.eml")) if corpus else []
    if not mails:
        pytest.skip("no report mail corpus (MTASTS_CORPUS, or shared/corpus beside the checkout)")
    fast = [path.name for path in mails if _same_or_declined(path.read_bytes())]
    # Google's and Microsoft's real mail is the usual shape: the fast path must take it.
    assert any(name.startswith("google") for name in fast), fast
    assert any(name.startswith("microsoft") for name in fast), fast
