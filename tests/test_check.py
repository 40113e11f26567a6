"""``mtasts check`` against the real lab, driven through the CLI as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .conftest import MTASTS, RunningLab, need

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "check.schema.json").read_text())


def check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [MTASTS, "check", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def lab_documents(lab: RunningLab) -> dict[str, dict[str, Any]]:
    names = [d["name"] for d in lab.state["domains"]]
    result = check("--lab", str(lab.state_dir), "--json", "--timeout", "3", *names)
    assert result.returncode == 1, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    return {d["domain"]: d for d in documents}


def test_every_lab_domain_gets_exactly_its_expected_findings(
    lab: RunningLab, lab_documents: dict[str, dict[str, Any]]
) -> None:
    mismatches = {}
    for domain in lab.state["domains"]:
        document = lab_documents[domain["name"]]
        reported = sorted(
            {f["code"] for f in document["findings"] if f["severity"] in ("error", "warning")}
        )
        if reported != sorted(domain["expect"]):
            mismatches[domain["name"]] = (domain["expect"], reported)
    assert mismatches == {}


def test_json_validates_against_the_documented_schema(
    lab_documents: dict[str, dict[str, Any]],
) -> None:
    assert len(lab_documents) == 21
    for document in lab_documents.values():
        jsonschema.validate(document, SCHEMA)


def test_per_address_facts_and_sender_judgement(lab_documents: dict[str, dict[str, Any]]) -> None:
    balancer = lab_documents["load-balancer.example"]["mx"][0]
    assert [a["result"] for a in balancer["addresses"]] == [None, None, "certificate-host-mismatch"]
    assert balancer["addresses"][2]["certificate"]["names"] == ["old-backend.load-balancer.example"]
    assert balancer["action"] == "defer on 1 of 3 addresses (enforce)"
    good = lab_documents["good-enforce.example"]
    assert good["verdict"] == "ok"
    assert all(m["action"] == "deliver over verified TLS" for m in good["mx"])
    assert good["mx"][0]["addresses"][0]["tls_version"] == "TLSv1.3"
    testing = lab_documents["no-tlsrpt.example"]
    assert testing["policy"]["mode"] == "testing"
    cname = lab_documents["cname-mx.example"]["mx"][0]
    assert cname["cname"] == "server123.provider.example"
    stripped = lab_documents["stripped.example"]["mx"][0]
    assert stripped["addresses"][0]["starttls"] is False
    assert stripped["action"] == "defer: enforce forbids delivery"
    redirect = lab_documents["redirect.example"]["policy"]
    assert redirect["status"] == 301
    assert redirect["location"] == "https://www.redirect.example/.well-known/mta-sts.txt"
    two = lab_documents["two-records.example"]
    assert two["summary"]["mta_sts"] == "broken"  # senders apply no policy at all
    assert two["mx"][0]["action"] == "opportunistic: no policy applies"
    mode_none = lab_documents["mode-none.example"]
    assert mode_none["summary"]["mta_sts"] == "none"
    assert mode_none["mx"][0]["action"] == "opportunistic: no policy applies"


def test_readable_report_verdict_first_then_findings_and_fix(lab: RunningLab) -> None:
    result = check("--lab", str(lab.state_dir), "cname-mx.example")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cname-mx.example: ERROR  MTA-STS enforce, TLS-RPT yes, 1 error(s)")
    assert "error   certificate-host-mismatch mx.cname-mx.example" in result.stdout
    assert "a CNAME to server123.provider.example" in result.stdout
    assert (
        "fix: install a certificate whose subjectAltName includes mx.cname-mx.example"
        in result.stdout
    )


def test_healthy_domain_exits_0(lab: RunningLab) -> None:
    result = check("--lab", str(lab.state_dir), "good-enforce.example")
    assert result.returncode == 0
    assert result.stdout.startswith("good-enforce.example: OK")


def test_partner_file_concurrency_adoption_table_and_csv(lab: RunningLab, tmp_path: Path) -> None:
    partners = tmp_path / "partners.txt"
    partners.write_text(
        "# partners\ngood-enforce.example\n\nno-sts.example  # none yet\nGOOD-TESTING.example.\ngood-enforce.example\n"
    )
    table = tmp_path / "adoption.csv"
    result = check(
        "--lab",
        str(lab.state_dir),
        "--file",
        str(partners),
        "--concurrency",
        "2",
        "--csv",
        str(table),
    )
    assert result.returncode == 0, result.stdout
    assert "MTA-STS adoption" in result.stdout
    rows = list(csv.DictReader(table.open()))
    assert [(r["domain"], r["mta_sts"], r["tlsrpt"], r["verdict"]) for r in rows] == [
        ("good-enforce.example", "enforce", "True", "ok"),
        ("no-sts.example", "none", "True", "warning"),
        ("good-testing.example", "testing", "True", "ok"),
    ]
    # Why a partner is not ok, and the totals under the table.
    assert [r["main_finding"] for r in rows] == ["", "sts-not-published", ""]
    assert (
        "3 domains: 1 enforce, 1 testing, 1 without MTA-STS, 0 broken; 0 with errors;"
        " 3 publish TLS-RPT" in " ".join(result.stdout.split())
    )


def test_blocked_port_25_is_said_once(lab: RunningLab) -> None:
    result = check(
        "--lab",
        str(lab.state_dir),
        "--smtp-port",
        "9",
        "--timeout",
        "2",
        "good-enforce.example",
        "expired-mx.example",
    )
    assert result.stdout.count("outbound SMTP is probably blocked") == 1
    assert "mx-unreachable" not in result.stdout
    assert "unknown: port 25 unreachable from here" in result.stdout
    assert "[green]ok" not in result.stdout
    assert " ok " not in result.stdout.split("MTA-STS adoption")[0]
    # #11: a check that could not see says so: UNKNOWN, exit 1, the finding said once.
    assert result.returncode == 1
    assert "good-enforce.example: UNKNOWN" in result.stdout
    assert result.stdout.count("outbound-port-25-blocked") == 1
    documents = [
        json.loads(line)
        for line in check(
            "--lab",
            str(lab.state_dir),
            "--smtp-port",
            "9",
            "--timeout",
            "2",
            "--json",
            "good-enforce.example",
            "expired-mx.example",
        ).stdout.splitlines()
    ]
    assert [d["verdict"] for d in documents] == ["unknown", "unknown"]
    assert all(not d["smtp_reachable_from_here"] for d in documents)
    assert all("outbound-port-25-blocked" in {f["code"] for f in d["findings"]} for d in documents)


def test_a_domain_that_does_not_exist_is_said_once(lab: RunningLab) -> None:
    result = check("--lab", str(lab.state_dir), "--json", "nowhere.example")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert [(f["code"], f["severity"]) for f in document["findings"]] == [
        ("domain-not-found", "error")
    ]
    jsonschema.validate(document, SCHEMA)


def test_saved_facts_are_judged_again_offline(lab: RunningLab, tmp_path: Path) -> None:
    """#11: `--json --facts` keeps what was observed; `--from-facts` judges it with no network."""
    names = ["good-enforce.example", "expired-mx.example", "policy-backend.example"]
    live = check("--lab", str(lab.state_dir), "--json", "--facts", *names)
    saved = tmp_path / "facts.jsonl"
    saved.write_text(live.stdout)
    documents = [json.loads(line) for line in live.stdout.splitlines()]
    for document in documents:
        jsonschema.validate(document, SCHEMA)
        assert document["facts"]["version"] == 1
    # Judged again from the file alone: a nameserver that does not exist proves no lookup.
    again = check("--from-facts", str(saved), "--json", "--nameserver", "127.0.0.1:9")
    assert again.returncode == live.returncode == 1
    rejudged = [json.loads(line) for line in again.stdout.splitlines()]
    assert [d["findings"] for d in rejudged] == [d["findings"] for d in documents]
    assert [d["verdict"] for d in rejudged] == ["ok", "error", "error"]
    # A bad line is named and the rest is still judged.
    saved.write_text(live.stdout + "{not json\n")
    partial = check("--from-facts", str(saved))
    assert f"{saved}:4: not JSON" in partial.stderr
    assert "policy-backend.example" in partial.stdout
    assert check("--from-facts", str(saved), "good-enforce.example").returncode == 2


def test_a_policy_host_with_one_bad_backend_is_caught(
    lab_documents: dict[str, dict[str, Any]],
) -> None:
    document = lab_documents["policy-backend.example"]
    addresses = document["policy"]["addresses"]
    assert len(addresses) == 2
    assert len({a["policy"] for a in addresses}) == 2  # the stale backend serves another policy
    finding = next(f for f in document["findings"] if f["code"] == "policy-inconsistent")
    assert "old-mx.lab.invalid" in finding["message"]


def test_probes_repeat_each_address(lab: RunningLab) -> None:
    result = check("--lab", str(lab.state_dir), "--json", "--probes", "3", "load-balancer.example")
    document = json.loads(result.stdout)
    assert [a["probes"] for a in document["mx"][0]["addresses"]] == [3, 3, 3]


def test_unreachable_dns_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    result = check("--nameserver", "127.0.0.1:9", "--timeout", "1", "--json", "example.invalid")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert {f["code"] for f in document["findings"]} >= {"dns-error"}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--nameserver", "127.0.0.1:notaport", "x.example"],
        ["--lab", "/nonexistent", "x.example"],
        ["--explain", "nope"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = check(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_explain_a_code() -> None:
    result = check("--explain", "certificate-host-mismatch")
    assert result.returncode == 0
    assert "CNAME to a provider host" in result.stdout


POLICY_HOST_SILENCES = """
[[domain]]
name = "flaky-policy.example"
mx = [{ name = "mx.flaky-policy.example" }]
policy_host = "flaky"

[[domain]]
name = "dead-policy.example"
mx = [{ name = "mx.dead-policy.example" }]
policy_host = "no-listener"

[[domain]]
name = "slow-policy.example"
mx = [{ name = "mx.slow-policy.example" }]
policy_host = "slow"
"""


def test_a_policy_host_that_never_answered_gets_a_second_look(tmp_path: Path) -> None:
    """One unanswered connection is not a broken policy: the fetch is tried once more a
    second later (a scan under load failed a healthy domain for want of this); a host that
    refuses twice is reported with both tries, and one that began to answer and stalled is
    judged on the one try."""
    from .conftest import start_lab, stop_lab

    scenario = tmp_path / "silences.toml"
    scenario.write_text(POLICY_HOST_SILENCES)
    running = start_lab(tmp_path / "state", "127.86", "--scenario", str(scenario))
    names = ["flaky-policy.example", "dead-policy.example", "slow-policy.example"]
    try:
        for _ in range(2):  # the flaky host drops every other request: each run meets one
            result = check("--lab", str(running.state_dir), "--json", "--timeout", "2", *names)
            documents = {d["domain"]: d for d in map(json.loads, result.stdout.splitlines())}
            for document in documents.values():
                jsonschema.validate(document, SCHEMA)
            flaky = documents["flaky-policy.example"]
            assert (flaky["verdict"], flaky["policy"]["mode"]) == ("ok", "enforce"), flaky
            assert [a["tries"] for a in flaky["policy"]["addresses"]] == [2]
            assert not [f for f in flaky["findings"] if f["severity"] != "info"]
        dead = documents["dead-policy.example"]["policy"]
        assert [a["tries"] for a in dead["addresses"]] == [2]
        assert dead["error"].endswith("Connection refused (twice, 1 s apart)"), dead["error"]
        slow = documents["slow-policy.example"]["policy"]
        assert [a["tries"] for a in slow["addresses"]] == [1]
        assert slow["error"] == "no complete answer within 2 s"
    finally:
        stop_lab(running)


def test_tls10_only_and_not_yet_valid_certificates(tmp_path: Path) -> None:
    from .conftest import start_lab, stop_lab

    scenario = tmp_path / "tls.toml"
    scenario.write_text(
        """
[[domain]]
name = "old-tls.example"
mx = [{ name = "mx.old-tls.example", addresses = [{ fault = "tls1.0-only" }] }]

[[domain]]
name = "future-cert.example"
mx = [{ name = "mx.future-cert.example", addresses = [{ fault = "not-yet-valid" }] }]
"""
    )
    running = start_lab(tmp_path / "state", "127.82", "--scenario", str(scenario))
    try:
        result = check(
            "--lab",
            str(running.state_dir),
            "--json",
            "--timeout",
            "3",
            "old-tls.example",
            "future-cert.example",
        )
        documents = {d["domain"]: d for d in map(json.loads, result.stdout.splitlines())}
        old = documents["old-tls.example"]["mx"][0]["addresses"][0]
        assert old["result"] == "validation-failure"
        assert "TLS handshake failed" in old["detail"]
        future = documents["future-cert.example"]["mx"][0]["addresses"][0]
        assert future["result"] == "validation-failure"
        assert "not yet valid" in future["detail"]
    finally:
        stop_lab(running)


def test_names_that_are_not_domains_are_named_and_the_rest_is_checked(
    lab: RunningLab, tmp_path: Path
) -> None:
    partners = tmp_path / "partners.txt"
    partners.write_text("good-enforce.example\nbad..example\nbücher.example\nexample.com/path\n")
    result = check("--lab", str(lab.state_dir), "--file", str(partners), "--json", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {partners}:2: 'bad..example' is not a domain name: it has an empty label (two dots in a row or a leading dot)",
        f"error: {partners}:4: 'example.com/path' is not a domain name: it has the label 'com/path': only letters, digits and inner hyphens are allowed",
    ]
    # The U-label name is asked in DNS as its A-label (IDNA, RFC 5891).
    assert [json.loads(line)["domain"] for line in result.stdout.splitlines()] == [
        "good-enforce.example",
        "xn--bcher-kva.example",
    ]
    nothing = check("--lab", str(lab.state_dir), "not_a_name.example")
    assert nothing.returncode == 2
    assert nothing.stderr.startswith("error: 'not_a_name.example' is not a domain name")


def test_a_machine_without_dns_servers_gets_a_finding_not_a_traceback() -> None:
    """An empty /etc/resolv.conf (here: inside a network namespace that has one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    ip = need("ip")
    name = f"mtasts-nodns-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("# no nameserver lines\n")
        result = subprocess.run(
            [ip, "netns", "exec", name, MTASTS, "check", "--json", "--timeout", "1", "example.com"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run([ip, "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    messages = [f["message"] for f in document["findings"] if f["code"] == "dns-error"]
    assert messages
    assert all("no DNS server configured (/etc/resolv.conf names none)" in m for m in messages)


def test_hostile_domains_never_stop_a_batch(tmp_path: Path) -> None:
    """Security review #4, #9, #10, #11: a bracketed rua, a 100 KiB SMTP line, an endless
    reply and 20 MX hosts each cost their own domain a finding; the batch is checked whole."""
    from .conftest import start_lab, stop_lab

    many = ", ".join(f'{{ name = "mx{i}.many-mx.example", preference = {i} }}' for i in range(20))
    scenario = tmp_path / "hostile.toml"
    scenario.write_text(
        f"""
[[domain]]
name = "bracket-rua.example"
mx = [{{ name = "mx.bracket-rua.example" }}]
tlsrpt_records = [["v=TLSRPTv1; rua=https://r.e[]xample.com/x"]]

[[domain]]
name = "long-line.example"
mx = [{{ name = "mx.long-line.example", addresses = [{{ fault = "long-line" }}] }}]

[[domain]]
name = "flood.example"
mx = [{{ name = "mx.flood.example", addresses = [{{ fault = "reply-flood" }}] }}]

[[domain]]
name = "many-mx.example"
mx = [{many}]

[[domain]]
name = "fine.example"
mx = [{{ name = "mx.fine.example" }}]
"""
    )
    partners = tmp_path / "partners.txt"
    partners.write_text(
        "bracket-rua.example\nlong-line.example\nflood.example\nmany-mx.example\nfine.example\n"
    )
    running = start_lab(tmp_path / "state", "127.83", "--scenario", str(scenario))
    try:
        result = check(
            "--lab",
            str(running.state_dir),
            "--file",
            str(partners),
            "--json",
            "--timeout",
            "5",
            "--max-mx",
            "4",
        )
        assert "Traceback" not in result.stderr
        documents = {d["domain"]: d for d in map(json.loads, result.stdout.splitlines())}
        assert sorted(documents) == sorted(partners.read_text().split())
        codes = {name: {f["code"] for f in d["findings"]} for name, d in documents.items()}
        assert "tlsrpt-invalid" in codes["bracket-rua.example"]
        rua = next(
            f for f in documents["bracket-rua.example"]["findings"] if f["code"] == "tlsrpt-invalid"
        )
        assert "is not a valid https URI" in rua["message"]
        long_line = documents["long-line.example"]["mx"][0]["addresses"][0]
        assert long_line["result"] == "mx-unreachable"
        assert "longer than 64 KiB" in long_line["detail"]
        flood = documents["flood.example"]["mx"][0]["addresses"][0]
        assert "a reply of over 100 lines" in flood["detail"]
        assert "mx-too-many" in codes["many-mx.example"]
        assert [m["host"] for m in documents["many-mx.example"]["mx"]] == [
            f"mx{i}.many-mx.example" for i in range(4)
        ]
        assert documents["fine.example"]["verdict"] == "ok"
        assert result.returncode == 1
    finally:
        stop_lab(running)


def test_ctrl_c_stops_a_long_run_and_keeps_what_was_checked(tmp_path: Path) -> None:
    """Ctrl-C took 22.7 s to stop check --file of 2,020 domains (longer than the whole run)
    and kept nothing; with stderr piped there were 18 s of silence."""
    import os
    import signal
    import subprocess

    from .conftest import MTASTS, start_lab, stop_lab

    running = start_lab(tmp_path / "state", "127.87", "--generate", "5000")
    try:
        domains = json.loads((running.state_dir / "lab.json").read_text())["domains"]
        (tmp_path / "many.txt").write_text("\n".join(d["name"] for d in domains))
        process = subprocess.Popen(
            [
                MTASTS,
                "check",
                "--lab",
                str(running.state_dir),
                "--file",
                str(tmp_path / "many.txt"),
                "--csv",
                str(tmp_path / "many.csv"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert process.stderr is not None
        progress = process.stderr.readline()  # the first progress line: the run is under way
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
        _, rest = process.communicate(timeout=60)
    finally:
        stop_lab(running)
    assert progress.startswith("checked ")
    assert progress.rstrip().endswith(" of 5,021 domains")
    assert process.returncode == 130
    line = next(line for line in rest.splitlines() if line.startswith("interrupted: "))
    checked = int(line.split()[1].replace(",", ""))
    assert checked < 5021  # it stopped, rather than finishing the run first
    rows = (tmp_path / "many.csv").read_text().splitlines()
    assert len(rows) == checked + 1  # the results so far are written, header included
    assert "Traceback" not in rest


def test_a_batch_probes_each_shared_mx_pair_once(tmp_path: Path) -> None:
    """Customers of one provider name the same MX hosts: check --file asks for each host
    and probes each (host, address) pair once for all of them (the lab counts connections
    per address), and each domain's result is what checking it alone says."""
    from mtasts.lab.control import read_stats

    from .conftest import start_lab, stop_lab

    running = start_lab(tmp_path / "state", "127.97", "--generate", "400", "--providers", "5")
    try:
        names = [
            d["name"]
            for d in json.loads((running.state_dir / "lab.json").read_text())["domains"]
            if d["name"].startswith("gen")
        ]
        (tmp_path / "batch.txt").write_text("\n".join(names) + "\n")
        read_stats(running.state_dir, reset=True)
        lab = ["--lab", str(running.state_dir)]
        done = subprocess.run(
            [
                MTASTS,
                "check",
                "--file",
                str(tmp_path / "batch.txt"),
                "--workers",
                "1",
                "--json",
                *lab,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        stats = read_stats(running.state_dir)
        docs = [json.loads(line) for line in done.stdout.splitlines()]
        alone = {}
        for name in names[:: len(names) // 8][:8]:
            one = subprocess.run(
                [MTASTS, "check", name, "--json", *lab], capture_output=True, text=True, timeout=60
            )
            alone[name] = json.loads(one.stdout)
    finally:
        stop_lab(running)
    assert sorted(d["domain"] for d in docs) == sorted(names)
    per_domain = [
        (mx["host"], a["address"]) for d in docs for mx in d["mx"] for a in mx["addresses"]
    ]
    unique: dict[str, set[str]] = {}
    for host, address in per_domain:
        unique.setdefault(address, set()).add(host)
    pairs = sum(len(hosts) for hosts in unique.values())
    assert len(per_domain) > 1.5 * pairs  # the providers' hosts are named many times
    assert set(stats) == set(unique)
    for address, seen in stats.items():
        # One connection per pair; two when its certificate failed verification (a second,
        # unverified look at it) - never one per domain.
        assert len(unique[address]) <= seen["connections"] <= 2 * len(unique[address]), address
    assert sum(s["connections"] for s in stats.values()) < len(per_domain)

    def essence(doc: dict[str, Any]) -> tuple[Any, ...]:
        return (
            doc["verdict"],
            doc["summary"],
            sorted((f["code"], f["severity"]) for f in doc["findings"]),
        )

    by_name = {d["domain"]: d for d in docs}
    assert {n: essence(by_name[n]) for n in alone} == {n: essence(d) for n, d in alone.items()}
