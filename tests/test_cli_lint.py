"""``mtasts lint`` and ``mtasts demo`` driven as a user runs them: the installed console script."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MTASTS = shutil.which("mtasts", path=str(Path(sys.executable).parent)) or "mtasts"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [MTASTS, *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


GOOD = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n"


def test_valid_policy_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "mta-sts.txt"
    path.write_text(GOOD)
    result = run("lint", "policy", str(path))
    assert result.returncode == 0, result.stdout
    assert (
        f"{path}: valid policy: mode enforce, max_age 604800 (7 days), mx mx.example.com"
        in result.stdout
    )


def test_invalid_policy_lines_name_input_line_rule_section_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("version: STSv1\nmode: Enforce\nmx: mx.example.com\nmax_age: 604800\n")
    result = run("lint", "policy", str(path))
    assert result.returncode == 1
    assert (
        f"{path}:2: error: mode 'Enforce' is not one of testing, enforce, none (case-sensitive)"
        " [policy.mode, RFC 8461 §3.2] fix: mode: enforce"
    ) in result.stdout


def test_batch_goes_on_past_bad_and_missing_files(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text(GOOD)
    html = tmp_path / "page.html"
    html.write_text("<html><body>404</body></html>")
    result = run("lint", "policy", str(html), str(tmp_path / "missing.txt"), str(good))
    assert result.returncode == 2  # a file that cannot be read is a usage error (exit 2)
    assert f"{html}:1: error:" in result.stdout
    assert "HTML" in result.stdout
    assert "missing.txt: error: cannot read: No such file or directory" in result.stdout
    assert f"{good}: valid policy" in result.stdout


def test_an_invalid_policy_alone_exits_1_and_strict_lists_every_deviation(tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text("<html><body>404</body></html>")
    assert run("lint", "policy", str(html)).returncode == 1
    report = {
        "organization-name": "x",
        "date-range": {
            "start-datetime": "2026-05-20T00:00:00Z",
            "end-datetime": "2026-05-20T23:59:59Z",
        },
        "contact-info": "r@x.example",
        "report-id": "r1",
        "policies": [
            {
                "policy": {"policy-type": "STS", "policy-domain": "x.example"},
                "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
            }
        ],
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    result = run("lint", "report", "--strict", str(tmp_path / "r.json"))
    assert result.returncode == 1
    assert "is not lower-case" in result.stdout
    assert "the applied policy is not included" in result.stdout


def test_policy_from_stdin_and_json() -> None:
    result = run("lint", "policy", "-", "--json", stdin=GOOD.encode())
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    assert doc["results"][0]["input"] == "<stdin>"
    assert doc["results"][0]["parsed"]["mx"] == ["mx.example.com"]


def test_sts_record_lint() -> None:
    ok = run("lint", "sts-record", "v=STSv1; id=20260521T101500;")
    assert ok.returncode == 0
    assert "valid sts-record: id 20260521T101500" in ok.stdout
    bad = run("lint", "sts-record", "--json", "v=STSv1; id=2026-05-21")
    assert bad.returncode == 1
    message = json.loads(bad.stdout)["results"][0]["messages"][0]
    assert message["rule"] == "record.id-syntax"
    assert message["reference"] == "RFC 8461 §3.1"
    assert message["fix"] == "id=20260521"


def test_tlsrpt_record_lint() -> None:
    bad = run("lint", "tlsrpt-record", "v=TLSRPTv1; rua=http://r.example.com/x")
    assert bad.returncode == 1
    assert "fix: rua=https://r.example.com/x" in bad.stdout
    assert run("lint", "tlsrpt-record", "v=TLSRPTv1; rua=mailto:a@example.com").returncode == 0


def test_report_lint_gzip_and_strict(tmp_path: Path) -> None:
    doc = {
        "organization-name": "Example",
        "date-range": {
            "start-datetime": "2026-05-20T00:00:00Z",
            "end-datetime": "2026-05-20T23:59:59Z",
        },
        "contact-info": "",
        "report-id": "r1",
        "policies": [],
    }
    path = tmp_path / "r.json.gz"
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    lenient = run("lint", "report", str(path))
    assert lenient.returncode == 0
    assert "warning: contact-info: empty string" in lenient.stdout
    strict = run("lint", "report", "--strict", str(path))
    assert strict.returncode == 1
    assert "[report.empty, RFC 8460 §4.4]" in strict.stdout


@pytest.mark.parametrize("args", [["lint"], ["lint", "policy"], ["lint", "nonsense"], ["--bogus"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).returncode == 2


def test_help_everywhere() -> None:
    for args in (["--help"], ["lint", "--help"], ["lint", "policy", "--help"], ["demo", "--help"]):
        result = run(*args)
        assert result.returncode == 0
        assert "Usage:" in result.stdout


def test_demo_runs_the_lab_and_checks_every_domain() -> None:
    result = subprocess.run(
        [MTASTS, "demo"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "lab up in" in result.stdout
    assert "21 domains" in result.stdout
    assert "21 of 21 match the lab's expected findings" in result.stdout
    lines = result.stdout.splitlines()
    stripped = next(line for line in lines if line.startswith("stripped.example "))
    assert "enforce" in stripped
    assert "ERROR" in stripped
    assert "cname-mx.example: ERROR  MTA-STS enforce" in result.stdout
    assert "good-testing.example     READY:" in result.stdout
    assert "load-balancer.example    NOT READY: enforce would have deferred" in result.stdout
    assert "certificate-host-mismatch at 127." in result.stdout
    # the watch act: the second pass catches the policy edited without a new id, and the
    # certificates about to expire, on each address
    act = result.stdout.split("== 6. watch", 1)[1].split("== 7.", 1)[0]
    assert "first pass: 2 domains observed, 0 events (a baseline)" in act
    assert "error   policy-changed-without-id mta-sts.good-enforce.example" in act
    assert act.count("error   certificate-expiring mx") == 2
    if "== 8. the sending side reports back" in result.stdout:  # where Postfix could run
        reported = result.stdout.split("== 8.", 1)[1]
        assert "reports: 5 built, 5 sent" in reported
        assert (
            "pf-badcert.example     NOT READY  1/1 failed certificate-host-mismatch (DKIM ok)"
            in reported
        )
        assert "pf-good.example        UNKNOWN" in reported
