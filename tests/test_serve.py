"""``mtasts serve``: policies over HTTPS by SNI, checked with curl and with mtasts' own fetcher."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtasts.lab.ca import LabCA, Validity
from mtasts.net.dns import Answer
from mtasts.net.https import fetch_policy
from mtasts.resolver.engine import usable_policy

from .conftest import MTASTS, need, port, wait_for_port

PORT = port(20)  # PORT + 1 .. + 3 too
METRICS = port(29)


class Site:
    def __init__(self, folder: Path, ca: LabCA, process: subprocess.Popen[bytes]) -> None:
        self.folder = folder
        self.ca = ca
        self.process = process
        self.config = folder / "mtasts.toml"

    def curl(
        self, host: str, path: str = "/.well-known/mta-sts.txt", *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                need("curl"),
                "-s",
                "--max-time",
                "5",
                "--cacert",
                str(self.ca.ca_file),
                "--resolve",
                f"{host}:{PORT}:127.0.0.1",
                *extra,
                f"https://{host}:{PORT}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=10)
        return err.decode()


def _configure(folder: Path) -> LabCA:
    ca = LabCA(folder / "ca")
    env = {**os.environ, "NO_COLOR": "1"}
    for domain, extra in (
        ("example.com", []),
        ("example.org", ["--mode", "enforce", "--max-age", "604800", "--force"]),
    ):
        (folder / f"{domain}.pem").write_bytes(ca.issue((f"mta-sts.{domain}",), Validity.VALID))
        subprocess.run(
            [MTASTS, "init", domain, "--mx", f"mx.{domain}", *extra],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
    text = (folder / "mtasts.toml").read_text()
    for domain in ("example.com", "example.org"):
        text = text.replace(
            f'name = "{domain}"',
            f'name = "{domain}"\ncert_file = "{domain}.pem"\nkey_file = "ca/certs/leaf.key"',
        )
    (folder / "mtasts.toml").write_text(text)
    return ca


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    ca = _configure(tmp_path)
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--metrics-listen",
            f"127.0.0.1:{METRICS}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(PORT, process)
    running = Site(tmp_path, ca, process)
    yield running
    if process.poll() is None:
        running.stop()


def test_each_policy_host_gets_its_own_certificate_and_policy(site: Site) -> None:
    com = site.curl("mta-sts.example.com", "/.well-known/mta-sts.txt", "-D", "-")
    assert com.returncode == 0, com.stderr  # curl verified the certificate for this host name
    assert "HTTP/1.1 200 OK" in com.stdout
    assert "content-type: text/plain; charset=utf-8" in com.stdout
    assert "cache-control: no-store" in com.stdout
    assert com.stdout.endswith(
        "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n".replace(
            "\r\n", "\n"
        )
    )
    org = site.curl("mta-sts.example.org")
    assert org.returncode == 0
    assert "mode: enforce" in org.stdout


def test_unknown_hosts_and_paths_get_404_never_a_redirect(site: Site) -> None:
    assert (
        site.curl("mta-sts.example.com", "/", "-o", "/dev/null", "-w", "%{http_code}").stdout
        == "404"
    )
    assert (
        site.curl(
            "mta-sts.example.com", "/.well-known/other", "-o", "/dev/null", "-w", "%{http_code}"
        ).stdout
        == "404"
    )
    unknown = site.curl(
        "mta-sts.example.com",
        "/.well-known/mta-sts.txt",
        "-H",
        "Host: mta-sts.nope.example",
        "-w",
        "%{http_code}",
    )
    assert unknown.stdout.endswith("404")
    # /healthz and /metrics name the served domains: only on the loopback listener.
    for path in ("/healthz", "/metrics"):
        public = site.curl("mta-sts.example.com", path, "-o", "/dev/null", "-w", "%{http_code}")
        assert public.stdout == "404"
    wait_for_port(METRICS, site.process)
    health = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{METRICS}/healthz"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert health.stdout == "ok 2 domains\n"
    metrics = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{METRICS}/metrics"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    assert 'mtasts_policy_fetches_total{domain="unknown",status="404"} 1' in metrics


class _Loopback:
    async def lookup(self, name: str, rdtype: str) -> Answer:
        return Answer(("127.0.0.1",) if rdtype == "A" else ())


def test_the_checkers_own_fetcher_accepts_the_served_policy(site: Site) -> None:
    fetch = asyncio.run(
        fetch_policy(_Loopback(), "example.org", port=PORT, ca_file=site.ca.ca_file, timeout=5)
    )  # type: ignore[arg-type]
    policy, reason = usable_policy(fetch)
    assert reason == ""
    assert policy is not None
    assert str(policy.mode) == "enforce"
    assert fetch.leaf is not None
    assert fetch.leaf.names == ("mta-sts.example.org",)


def test_sighup_and_an_edited_file_reload_without_a_restart(site: Site) -> None:
    site.config.write_text(
        site.config.read_text().replace('mode = "testing"', 'mode = "enforce"', 1)
    )
    site.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "mode: enforce" not in site.curl("mta-sts.example.com").stdout:
        assert time.monotonic() < deadline, "the new policy was not served"
        time.sleep(0.2)
    # An edit alone is picked up too (the file is watched), and a broken edit keeps the old policies.
    site.config.write_text(site.config.read_text() + "\nthis is not toml\n")
    time.sleep(3)
    assert "mode: enforce" in site.curl("mta-sts.example.com").stdout
    log = site.stop()
    assert "reload failed, still serving the previous policies" in log


def test_proxy_mode_serves_plain_http(tmp_path: Path) -> None:
    _configure(tmp_path)
    process = subprocess.Popen(
        [MTASTS, "serve", "--proxy", "--host", "127.0.0.1", "--port", str(PORT + 1)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(PORT + 1, process)
        out = subprocess.run(
            [
                need("curl"),
                "-s",
                "-H",
                "Host: mta-sts.example.org",
                f"http://127.0.0.1:{PORT + 1}/.well-known/mta-sts.txt",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "mode: enforce" in out.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_https_without_certificates_is_a_usage_error(tmp_path: Path) -> None:
    subprocess.run(
        [MTASTS, "init", "example.net", "--mx", "mx.example.net"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [MTASTS, "serve", "--port", str(PORT + 2)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no domain has cert_file/key_file; add them or use --proxy" in result.stderr


def test_https_rua_endpoint_stores_reports_once_and_refuses_bad_ones(tmp_path: Path) -> None:
    import gzip

    from mtasts.reports.store import open_store

    from .test_reports_analysis import stored_report

    _configure(tmp_path)
    db = f"sqlite:///{tmp_path / 'reports.sqlite'}"
    port = PORT + 3
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reports",
            db,
            "--max-report-size",
            "1M",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        (tmp_path / "r.json.gz").write_bytes(
            gzip.compress(stored_report("google.com", "example.org"))
        )
        (tmp_path / "bad.json").write_bytes(b'{"report-id": 1}')
        (tmp_path / "big.bin").write_bytes(b"x" * (2 * 1024 * 1024))
        # Small on the wire, past the limit once inflated: refused after reading, kept in quarantine.
        (tmp_path / "bomb.json.gz").write_bytes(
            gzip.compress(b"{" + b" " * (2 * 1024 * 1024) + b"}")
        )

        def post(path: str, media: str) -> str:
            return subprocess.run(
                [
                    need("curl"),
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--data-binary",
                    f"@{tmp_path / path}",
                    "-H",
                    f"Content-Type: {media}",
                    f"http://127.0.0.1:{port}/tlsrpt",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout

        assert post("r.json.gz", "application/tlsrpt+gzip") == "201"
        assert (
            post("r.json.gz", "application/tlsrpt+gzip") == "200"
        )  # the same report again: stored once
        assert post("bad.json", "application/tlsrpt+json") == "400"
        assert post("r.json.gz", "application/json") == "415"
        assert post("big.bin", "application/tlsrpt+gzip") == "413"
        assert post("bomb.json.gz", "application/tlsrpt+gzip") == "400"
        assert open_store(db).counts() == {"reports": 1, "raw": 3, "quarantined": 2}
        assert [q.rule for q in open_store(db).quarantine()] == ["report.type", "report.too-large"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_https_rua_answers_503_when_the_store_cannot_write(tmp_path: Path) -> None:
    import gzip

    from mtasts.reports.store import open_store

    from .test_reports_analysis import stored_report

    _configure(tmp_path)
    path = tmp_path / "reports.sqlite"
    open_store(f"sqlite:///{path}")
    port = PORT + 3
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reports",
            f"sqlite:///file:{path}?mode=ro&uri=true",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        (tmp_path / "r.json.gz").write_bytes(
            gzip.compress(stored_report("google.com", "example.org"))
        )
        answer = subprocess.run(
            [
                need("curl"),
                "-s",
                "-D",
                "-",
                "--data-binary",
                f"@{tmp_path / 'r.json.gz'}",
                "-H",
                "Content-Type: application/tlsrpt+gzip",
                f"http://127.0.0.1:{port}/tlsrpt",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=10)
    assert answer.startswith("HTTP/1.1 503")
    assert "retry-after: 300" in answer.lower()
    assert "try again later" in answer
    assert b"not stored: the report store failed: attempt to write a readonly database" in log


def test_serve_refuses_certificates_senders_would_reject(tmp_path: Path) -> None:
    """A certificate for another name, an expired one and a key that does not match were
    served without a word; each makes every sender report sts-webpki-invalid."""
    ca = _configure(tmp_path)
    (tmp_path / "example.com.pem").write_bytes(ca.issue(("www.other.example",), Validity.VALID))
    (tmp_path / "example.org.pem").write_bytes(ca.issue(("mta-sts.example.org",), Validity.EXPIRED))
    env = {**os.environ, "NO_COLOR": "1"}
    refused = subprocess.run(
        [MTASTS, "serve", "--host", "127.0.0.1", "--port", str(port(24))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert (
        "error: example.com: cert_file example.com.pem names www.other.example, not mta-sts.example.com:"
        " every sender would report sts-webpki-invalid"
    ) in lines
    assert any(
        line.startswith("error: example.org: cert_file example.org.pem expired on")
        for line in lines
    )
    assert lines[-1] == "error: not started (--allow-invalid-certificate starts anyway)"
    other = LabCA(tmp_path / "other-ca")
    (tmp_path / "example.org.pem").write_bytes(
        other.issue(("mta-sts.example.org",), Validity.VALID)
    )
    mismatch = subprocess.run(
        [MTASTS, "serve", "--host", "127.0.0.1", "--port", str(port(24))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (
        "error: example.org: cert_file example.org.pem and key_file ca/certs/leaf.key: they do not belong together"
        in mismatch.stderr.splitlines()
    )
    started = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port(24)),
            "--allow-invalid-certificate",
            "--metrics-listen",
            "none",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(port(24), started)
    started.send_signal(signal.SIGTERM)
    _, err = started.communicate(timeout=10)
    assert "warning: example.com: cert_file example.com.pem names www.other.example" in err.decode()


def test_serve_listens_on_ipv6_and_ipv4_and_logs_each_request(tmp_path: Path) -> None:
    import socket

    _configure(tmp_path)
    listen = port(25)
    process = subprocess.Popen(
        [MTASTS, "serve", "--port", str(listen), "--metrics-listen", "none"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(listen, process)
        with socket.create_connection(("::1", listen), timeout=5):
            pass
        done = subprocess.run(
            [
                need("curl"),
                "-s",
                "-k",
                "--resolve",
                f"mta-sts.example.com:{listen}:127.0.0.1",
                f"https://mta-sts.example.com:{listen}/.well-known/mta-sts.txt",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "mode: testing" in done.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    log = err.decode()
    assert f"https://[::] (IPv6 and IPv4):{listen}" in log
    assert "request client=127.0.0.1 host='mta-sts.example.com:" in log
    assert "path='/.well-known/mta-sts.txt' status=200" in log
    assert "Context impl" not in log


def test_serve_mounts_the_dashboard_beside_metrics_on_loopback_only(tmp_path: Path) -> None:
    _configure(tmp_path)
    store = f"sqlite:///{tmp_path / 'reports.sqlite'}"
    refused = subprocess.run(
        [
            MTASTS,
            "serve",
            "--port",
            str(PORT),
            "--reports",
            store,
            "--dashboard",
            "--metrics-listen",
            f"0.0.0.0:{METRICS}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "loopback --metrics-listen" in refused.stderr
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--reports",
            store,
            "--dashboard",
            "--metrics-listen",
            f"127.0.0.1:{METRICS}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(PORT, process)
        wait_for_port(METRICS, process)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/", timeout=10) as answer:
            page = answer.read().decode()
            assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "<h1>Overview" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=10) as answer:
            assert "mtasts" in answer.read().decode()
    finally:
        process.terminate()
        process.wait(10)
