"""``mtasts publish`` against a real Knot DNS: RFC 2136 update with TSIG, verified by querying."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dns.message
import dns.query

from mtasts import sts

from .conftest import KNOT_PORT, MTASTS


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def served_ids(server: str) -> list[str]:
    host, port = server.split(":")
    response = dns.query.tcp(
        dns.message.make_query("_mta-sts.example.com", "TXT"), host, port=int(port), timeout=5
    )
    return [
        sts.parse_record(b"".join(r.strings).decode()).id
        for rrset in response.answer
        for r in rrset
    ]


def test_publish_replaces_both_records_and_verifies(
    knot: dict[str, object], tmp_path: Path
) -> None:
    assert sorted(served_ids(str(knot["server"]))) == [
        "old1",
        "old2",
    ]  # two records: senders assume none
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    secret = tmp_path / "tsig.secret"
    secret.write_text(str(knot["secret"]))
    result = run(
        "publish",
        "--server",
        str(knot["server"]),
        "--tsig-key",
        str(knot["key"]),
        "--tsig-secret-file",
        str(secret),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    new_id = (
        run("records", "--format", "json", cwd=tmp_path).stdout.split('"id": "')[1].split('"')[0]
    )
    assert served_ids(str(knot["server"])) == [new_id]
    assert f"example.com: verified: _mta-sts.example.com id {new_id}" in result.stdout
    assert (
        "example.com: verified: _smtp._tls.example.com rua mailto:tlsrpt@example.com"
        in result.stdout
    )


def test_a_wrong_key_is_refused_and_said_so(knot: dict[str, object], tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    wrong = "c2VjcmV0IHRoYXQgaXMgbm90IHRoZSBzZXJ2ZXIncw=="
    result = run(
        "publish",
        "--server",
        str(knot["server"]),
        "--tsig-key",
        str(knot["key"]),
        cwd=tmp_path,
        env={"MTASTS_TSIG_SECRET": wrong},
    )
    assert result.returncode == 1
    assert "example.com: error:" in result.stdout
    assert f"rejects key {str(knot['key'])!r}'s secret" in result.stdout  # Knot says BADSIG
    garbled = run(
        "publish",
        "--server",
        str(knot["server"]),
        "--tsig-key",
        str(knot["key"]),
        cwd=tmp_path,
        env={"MTASTS_TSIG_SECRET": "not base64!"},
    )
    assert garbled.returncode == 1
    assert "the secret is not base64" in garbled.stdout
    unsigned = run("publish", "--server", str(knot["server"]), cwd=tmp_path)
    assert unsigned.returncode == 1
    assert "refused the update of zone example.com.: " in unsigned.stdout  # Knot says NOTAUTH


def test_missing_secret_is_a_usage_error(tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    result = run(
        "publish",
        "--server",
        f"127.0.0.1:{KNOT_PORT}",
        "--tsig-key",
        "k",
        cwd=tmp_path,
        env={"MTASTS_TSIG_SECRET": ""},
    )
    assert result.returncode == 2
    assert "needs --tsig-secret-file or MTASTS_TSIG_SECRET" in result.stderr


def test_a_mode_change_can_publish_directly(knot: dict[str, object], tmp_path: Path) -> None:
    run("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path)
    result = run(
        "max-age",
        "example.com",
        "3600",
        "--publish",
        str(knot["server"]),
        "--tsig-key",
        str(knot["key"]),
        cwd=tmp_path,
        env={"MTASTS_TSIG_SECRET": str(knot["secret"])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    new_id = (
        run("records", "--format", "json", cwd=tmp_path).stdout.split('"id": "')[1].split('"')[0]
    )
    assert served_ids(str(knot["server"])) == [new_id]
    assert f"verified: _mta-sts.example.com id {new_id}" in result.stdout


def test_mode_change_publishes_with_publish(knot: dict[str, object], tmp_path: Path) -> None:
    run(
        "init",
        "example.com",
        "--mx",
        "mx.example.com",
        "--mode",
        "enforce",
        "--force",
        cwd=tmp_path,
    )
    result = run(
        "mode",
        "example.com",
        "testing",
        "--publish",
        str(knot["server"]),
        "--tsig-key",
        str(knot["key"]),
        cwd=tmp_path,
        env={"MTASTS_TSIG_SECRET": str(knot["secret"])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    new_id = (
        run("records", "--format", "json", cwd=tmp_path).stdout.split('"id": "')[1].split('"')[0]
    )
    assert served_ids(str(knot["server"])) == [new_id]
