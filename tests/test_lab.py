"""The lab, proven with clients mtasts did not write: dnspython, dig, curl, openssl, swaks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from .conftest import LAB_PORTS, MTASTS, RunningLab, need, start_lab, stop_lab

DNS_PORT = LAB_PORTS["dns"]
HTTPS_PORT = LAB_PORTS["https"]
SMTP_PORT = LAB_PORTS["smtp"]


def resolver(lab: RunningLab) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [lab.dns_address]
    res.port = DNS_PORT
    res.lifetime = 3
    return res


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def test_dnspython_sees_records_split_txt_and_cname(lab: RunningLab) -> None:
    res = resolver(lab)
    mx = sorted(
        (r.preference, r.exchange.to_text()) for r in res.resolve("good-enforce.example", "MX")
    )
    assert mx == [(10, "mx1.good-enforce.example."), (20, "mx2.good-enforce.example.")]
    txt = [r.strings for r in res.resolve("_mta-sts.two-records.example", "TXT")]
    assert sorted(txt) == [(b"v=STSv1; id=2026052101;",), (b"v=STSv1; id=2026052102;",)]
    answer = res.resolve("mx.cname-mx.example", "A")
    assert answer.canonical_name.to_text() == "server123.provider.example."
    assert [r.address for r in answer] == [lab.mx_address("cname-mx.example")]
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("_mta-sts.no-sts.example", "TXT")


def test_dns_over_tcp_and_nodata_carries_soa(lab: RunningLab) -> None:
    query = dns.message.make_query("good-enforce.example", "AAAA")
    response = dns.query.tcp(query, lab.dns_address, port=DNS_PORT, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_injected_dns_faults(tmp_path: Path) -> None:
    scenario = tmp_path / "faults.toml"
    scenario.write_text(
        """
[[domain]]
name = "flaky.example"
mx = [{ name = "mx.flaky.example" }]
sts_records = [["v=STSv1; ", "id=split1;"]]
dns_faults = { "_smtp._tls.flaky.example" = "servfail", "mx.flaky.example" = "timeout" }
records = [["alias.flaky.example", "CNAME", "hop.flaky.example."], ["hop.flaky.example", "CNAME", "mx.flaky.example."],
           ["_25._tcp.mx.flaky.example", "TLSA", "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]]
"""
    )
    running = start_lab(tmp_path / "state", "127.79", "--scenario", str(scenario))
    try:
        res = resolver(running)
        # one record given as two strings stays two strings on the wire
        assert [r.strings for r in res.resolve("_mta-sts.flaky.example", "TXT")] == [
            (b"v=STSv1; ", b"id=split1;")
        ]
        servfail = dns.query.udp(
            dns.message.make_query("_smtp._tls.flaky.example", "TXT"),
            running.dns_address,
            port=DNS_PORT,
            timeout=3,
        )
        assert servfail.rcode() == dns.rcode.SERVFAIL
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(
                dns.message.make_query("mx.flaky.example", "A"),
                running.dns_address,
                port=DNS_PORT,
                timeout=1,
            )
        chain = dns.query.udp(
            dns.message.make_query("alias.flaky.example", "CNAME"),
            running.dns_address,
            port=DNS_PORT,
            timeout=3,
        )
        assert chain.answer[0][0].target.to_text() == "hop.flaky.example."
        tlsa = res.resolve("_25._tcp.mx.flaky.example", "TLSA")
        assert tlsa[0].usage == 3
    finally:
        stop_lab(running)


def test_dig_reads_the_lab(lab: RunningLab) -> None:
    dig = need("dig")
    out = run(
        dig,
        f"@{lab.dns_address}",
        "-p",
        str(DNS_PORT),
        "+short",
        "TXT",
        "_smtp._tls.bad-tlsrpt.example",
    )
    assert out.stdout.strip() == '"v=TLSRPTv1; rua=http://reports.bad-tlsrpt.example/tlsrpt"'
    tcp = run(dig, f"@{lab.dns_address}", "-p", str(DNS_PORT), "+tcp", "MX", "nothing.example")
    assert "status: NXDOMAIN" in tcp.stdout


def curl(lab: RunningLab, domain: str, *extra: str) -> subprocess.CompletedProcess[str]:
    host = f"mta-sts.{domain}"
    return run(
        need("curl"),
        "-s",
        "--max-time",
        "5",
        "--cacert",
        lab.ca_file,
        "--resolve",
        f"{host}:{HTTPS_PORT}:{lab.https_address}",
        *extra,
        f"https://{host}:{HTTPS_PORT}/.well-known/mta-sts.txt",
    )


def test_curl_fetches_policy_and_sees_each_host_fault(lab: RunningLab) -> None:
    ok = curl(lab, "good-enforce.example", "-D", "-")
    assert ok.returncode == 0
    assert "HTTP/1.1 200 OK" in ok.stdout
    assert "content-type: text/plain; charset=utf-8" in ok.stdout.lower()
    assert "mode: enforce\nmx: mx1.good-enforce.example\n" in ok.stdout
    assert "404 Not Found" in curl(lab, "policy-404.example", "-D", "-").stdout
    redirect = curl(lab, "redirect.example", "-D", "-").stdout
    assert "301 Moved Permanently" in redirect
    assert "location: https://www.redirect.example/" in redirect.lower()
    assert "content-type: text/html" in curl(lab, "html-policy.example", "-D", "-").stdout.lower()
    # curl exit 60: the certificate does not match the policy host's name
    assert curl(lab, "policy-cert.example").returncode == 60


def openssl_subject(lab: RunningLab, address: str, servername: str) -> tuple[str, str]:
    out = run(
        need("openssl"),
        "s_client",
        "-starttls",
        "smtp",
        "-connect",
        f"{address}:{SMTP_PORT}",
        "-servername",
        servername,
        "-CAfile",
        lab.ca_file,
        "-verify_hostname",
        servername,
        timeout=15,
    )
    subject = next((line for line in out.stdout.splitlines() if line.startswith("subject=")), "")
    verify = next(
        (line.strip() for line in out.stdout.splitlines() if "Verify return code" in line), ""
    )
    return subject, verify


def test_openssl_shows_the_wrong_name_only_on_the_faulty_backend(lab: RunningLab) -> None:
    name = "mx.load-balancer.example"
    results = [
        openssl_subject(lab, lab.mx_address("load-balancer.example", i), name) for i in range(3)
    ]
    assert results[0] == (f"subject=CN = {name}", "Verify return code: 0 (ok)")
    assert results[1] == (f"subject=CN = {name}", "Verify return code: 0 (ok)")
    assert results[2][0] == "subject=CN = old-backend.load-balancer.example"
    assert "hostname mismatch" in results[2][1]


@pytest.mark.parametrize(
    ("domain", "verify"),
    [
        ("expired-mx.example", "certificate has expired"),
        ("untrusted-mx.example", "unable to verify the first certificate"),
        ("cname-mx.example", "hostname mismatch"),
    ],
)
def test_openssl_sees_certificate_faults(lab: RunningLab, domain: str, verify: str) -> None:
    _, result = openssl_subject(lab, lab.mx_address(domain), f"mx.{domain}")
    assert verify in result


def swaks(lab: RunningLab, address: str, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        need("swaks"),
        "--server",
        f"{address}:{SMTP_PORT}",
        "--to",
        to,
        "--from",
        "postmaster@sender.example",
        "--timeout",
        "10",
        *extra,
    )


def test_swaks_delivers_over_verified_tls(lab: RunningLab) -> None:
    result = swaks(
        lab,
        lab.mx_address("good-enforce.example"),
        "alice@good-enforce.example",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        lab.ca_file,
        "--tls-sni",
        "mx1.good-enforce.example",
        "--header",
        "Subject: verified-tls-probe",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLS started with cipher TLSv1.3" in result.stdout
    entries = [json.loads(line) for line in (lab.state_dir / "mail.log").read_text().splitlines()]
    probe = next(e for e in entries if e["subject"] == "verified-tls-probe")
    assert probe["tls"] is True
    assert probe["to"] == ["<alice@good-enforce.example>"]


def test_swaks_sees_no_starttls_through_the_attacker(lab: RunningLab) -> None:
    stripped = swaks(lab, lab.mx_address("stripped.example"), "bob@stripped.example", "--tls")
    assert stripped.returncode != 0
    assert "Host did not advertise STARTTLS" in stripped.stdout + stripped.stderr
    # Without insisting on TLS, the mail goes through the attacker in plaintext.
    plain = swaks(
        lab,
        lab.mx_address("stripped.example"),
        "bob@stripped.example",
        "--header",
        "Subject: stripped-plaintext",
    )
    assert plain.returncode == 0
    entries = [json.loads(line) for line in (lab.state_dir / "mail.log").read_text().splitlines()]
    assert next(e for e in entries if e["subject"] == "stripped-plaintext")["tls"] is False


def test_no_starttls_handshake_failure_and_hang(tmp_path: Path) -> None:
    scenario = tmp_path / "smtp.toml"
    scenario.write_text(
        """
[[domain]]
name = "smtp-faults.example"
mx = [{ name = "mx.smtp-faults.example", addresses = [{ fault = "no-starttls" }, { fault = "handshake-failure" }, { fault = "hang" }] }]
"""
    )
    running = start_lab(tmp_path / "state", "127.80", "--scenario", str(scenario))
    try:
        addresses = [a["address"] for a in running.domain("smtp-faults.example")["mx"]]
        no_tls = swaks(running, addresses[0], "a@smtp-faults.example", "--tls")
        assert "Host did not advertise STARTTLS" in no_tls.stdout + no_tls.stderr
        handshake = swaks(running, addresses[1], "a@smtp-faults.example", "--tls")
        assert "220 2.0.0 Ready to start TLS" in handshake.stdout
        assert handshake.returncode != 0
        start = time.monotonic()
        hang = swaks(running, addresses[2], "a@smtp-faults.example", "--timeout", "2")
        assert hang.returncode != 0
        assert time.monotonic() - start >= 2
    finally:
        stop_lab(running)


def test_lab_cli_scenarios_and_explain() -> None:
    listing = run(MTASTS, "lab", "scenarios")
    assert listing.stdout.startswith("default")
    explain = run(MTASTS, "lab", "explain", "cname-mx.example")
    assert explain.returncode == 0
    assert "server123.provider.example" in explain.stdout
    assert "expected findings: certificate-host-mismatch" in explain.stdout
    unknown = run(MTASTS, "lab", "explain", "nope.example")
    assert unknown.returncode == 2
    assert "is not in scenario 'default'" in unknown.stderr


def test_bad_scenario_is_a_one_line_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[domain]]\nname = "x.example"\nmx = [{ name = "mx.x.example", addresses = [{ fault = "melted" }] }]\n'
    )
    result = run(MTASTS, "lab", "up", "--scenario", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: domain 'x.example'.mx[0].addresses[0].fault: 'melted' is not one of"
    )
    # An expected finding must be a code of the checker's vocabulary: a typo is caught here.
    bad.write_text('[[domain]]\nname = "x.example"\nexpect = ["certificate-expird"]\n')
    result = run(MTASTS, "lab", "up", "--scenario", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: domain 'x.example'.expect: 'certificate-expird' is not a finding code"
        " (see mtasts check --explain)"
    )


def test_every_default_domain_has_an_expect_list(lab: RunningLab) -> None:
    names = {d["name"] for d in lab.state["domains"]}
    assert len(names) == 21
    assert all(isinstance(d["expect"], list) for d in lab.state["domains"])
    assert lab.domain("stripped.example")["expect"] == ["starttls-not-supported"]


HOST_FAULTS = """
[[domain]]
name = "status-500.example"
mx = [{ name = "mx.status-500.example" }]
policy_host = "status-500"

[[domain]]
name = "oversized.example"
mx = [{ name = "mx.oversized.example" }]
policy_host = "oversized"

[[domain]]
name = "expired-policy.example"
mx = [{ name = "mx.expired-policy.example" }]
policy_host = "expired-cert"

[[domain]]
name = "dead-policy.example"
mx = [{ name = "mx.dead-policy.example" }]
policy_host = "no-listener"

[[domain]]
name = "slow-policy.example"
mx = [{ name = "mx.slow-policy.example" }]
policy_host = "slow"
"""


def test_curl_sees_the_remaining_policy_host_faults(tmp_path: Path) -> None:
    scenario = tmp_path / "hosts.toml"
    scenario.write_text(HOST_FAULTS)
    running = start_lab(tmp_path / "state", "127.81", "--scenario", str(scenario))
    try:
        dead = resolver(running).resolve("mta-sts.dead-policy.example", "A")[0].address
        assert "500 Internal Server Error" in curl(running, "status-500.example", "-D", "-").stdout
        oversized = curl(running, "oversized.example", "-o", "/dev/null", "-w", "%{size_download}")
        assert int(oversized.stdout) > 64 * 1024  # over the limit RFC 8461 §3.3 suggests
        assert curl(running, "expired-policy.example").returncode == 60
        refused = run(
            need("curl"),
            "-s",
            "--max-time",
            "5",
            "--cacert",
            running.ca_file,
            "--resolve",
            f"mta-sts.dead-policy.example:{HTTPS_PORT}:{dead}",
            f"https://mta-sts.dead-policy.example:{HTTPS_PORT}/.well-known/mta-sts.txt",
        )
        assert refused.returncode == 7  # connection refused: nothing listens there
        slow = run(
            need("curl"),
            "-s",
            "--max-time",
            "2",
            "--cacert",
            running.ca_file,
            "--resolve",
            f"mta-sts.slow-policy.example:{HTTPS_PORT}:{running.https_address}",
            f"https://mta-sts.slow-policy.example:{HTTPS_PORT}/.well-known/mta-sts.txt",
        )
        assert slow.returncode == 28  # curl's time-out: the body trickles in
    finally:
        stop_lab(running)


def test_a_detached_lab_writes_reports_a_user_can_ingest(tmp_path: Path) -> None:
    """The README's monitoring section, reproducible: the lab writes three weeks of signed
    report mail, runs in the background, and stops with lab down."""
    from .conftest import MTASTS, port

    def mtasts(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(MTASTS, *args, timeout=timeout)

    state = tmp_path / "lab"
    flags = [
        "--state-dir",
        str(state),
        "--subnet",
        "127.86",
        f"--dns-port={port(30)}",
        f"--https-port={port(31)}",
        f"--smtp-port={port(32)}",
    ]
    up = mtasts("lab", "up", "--detach", *flags)
    try:
        assert up.returncode == 0, up.stderr
        assert "lab running in the background" in up.stdout
        assert "1197 report mails in" in up.stdout
        mails = sorted((state / "reports").glob("*.eml"))
        assert len(mails) == 1197  # 19 domains with MTA-STS x 3 senders x 21 days
        nameserver = json.loads((state / "lab.json").read_text())["nameserver"]
        db = f"sqlite:///{tmp_path / 'r.sqlite'}"
        ingest = mtasts(
            "reports", "ingest", "--nameserver", nameserver, str(state / "reports"), "--db", db
        )
        assert "stored 1197, duplicates 0, quarantined 0" in ingest.stdout
        ready = mtasts("reports", "readiness", "good-testing.example", "--db", db)
        assert ready.returncode == 0, ready.stdout
        assert (
            "senders vouched for: google.com, mail.example-isp.net, microsoft.com" in ready.stdout
        )
        again = mtasts(
            "lab",
            "reports",
            "--state-dir",
            str(state),
            "--out",
            str(tmp_path / "more"),
            "--days",
            "2",
        )
        assert again.stdout.strip().endswith(f"report mails in {tmp_path / 'more'}")
        assert len(list((tmp_path / "more").glob("*.eml"))) == 19 * 3 * 2  # domains, senders, days
    finally:
        down = mtasts("lab", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert "lab stopped" in down.stdout
    assert not (state / "lab.json").exists()


def test_tls_sessions_closed_by_the_client_leave_the_lab_quiet(lab: RunningLab) -> None:
    """asyncio logs a warning for each STARTTLS session a client closes; a lab serving a
    scan wrote it until its output pipe filled and every endpoint froze. Our own probe
    closes sessions the way that triggered it."""
    import asyncio

    from mtasts.net.smtp import probe_mx

    async def probes() -> list[str | None]:
        address = lab.mx_address("good-enforce.example")
        done = [
            await probe_mx(
                "mx1.good-enforce.example",
                address,
                port=SMTP_PORT,
                ca_file=Path(lab.ca_file),
                timeout=5,
            )
            for _ in range(20)
        ]
        return [p.tls_version for p in done]

    assert asyncio.run(probes()) == ["TLSv1.3"] * 20
    time.sleep(0.3)  # the lab logs after the client has gone
    assert "eof_received" not in (lab.state_dir / "lab.out").read_text()


def test_a_warm_lab_has_issued_every_certificate_before_it_is_up(tmp_path: Path) -> None:
    """--warm (the benchmarks') makes every certificate before lab.json appears: checking
    every domain afterwards issues none, so no client pays for the lab's start-up."""
    from .conftest import MTASTS, port

    state = tmp_path / "lab"
    flags = ["--state-dir", str(state), "--subnet", "127.89", "--generate", "30", "--no-reports"]
    ports = [f"--dns-port={port(33)}", f"--https-port={port(34)}", f"--smtp-port={port(35)}"]
    up = run(MTASTS, "lab", "up", "--detach", "--warm", *flags, *ports, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        issued = sorted(path.name for path in (state / "certs").iterdir())
        domains = [d["name"] for d in json.loads((state / "lab.json").read_text())["domains"]]
        (tmp_path / "all.txt").write_text("\n".join(domains) + "\n")
        checked = run(
            MTASTS,
            "check",
            "--lab",
            str(state),
            "--file",
            str(tmp_path / "all.txt"),
            "--json",
            timeout=300,
        )
        assert len(checked.stdout.splitlines()) == len(domains), checked.stderr
        assert sorted(path.name for path in (state / "certs").iterdir()) == issued
    finally:
        run(MTASTS, "lab", "down", "--state-dir", str(state))
