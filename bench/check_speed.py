"""``mtasts check`` on 1,000 generated lab domains (plus the default 20), against checkdmarc.

checkdmarc takes only a nameserver address (port 53) and fetches MTA-STS
policies through the system resolver, so both tools and the lab run inside a
network namespace this script creates, whose resolv.conf names the lab's DNS
server, with the lab on standard ports. Needs root and iproute2; nothing leaves
the namespace's loopback. Reports domains/second, peak memory, and which lab
faults each tool detects.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

NAMESPACE = f"mtasts-bench-{os.getpid()}"
_STEADY = 5  # the lab holds this many times ``count`` generated domains
BIN = Path(sys.executable).parent


def timed(args: list[str], env: dict[str, str], stdout: Path) -> tuple[float, int, int, float]:
    """(seconds, peak RSS in MiB, exit status, CPU seconds) of one command, from wait4."""
    started = time.perf_counter()
    with stdout.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - started, usage.ru_maxrss // 1024, process.returncode, cpu


def checkdmarc_flags(doc: dict[str, Any]) -> set[str]:
    """Which parts of a checkdmarc result report a problem in scope (MTA-STS, TLS-RPT, MX TLS)."""
    flagged = set()
    sts = doc.get("mta_sts", {})
    if not sts.get("valid", False) or sts.get("warnings"):
        flagged.add("mta-sts")
    if not doc.get("smtp_tls_reporting", {}).get("valid", False):
        flagged.add("tlsrpt")
    warnings = doc.get("mx", {}).get("warnings", [])
    if any(w for w in warnings if any(k in w for k in ("SSL", "TLS", "STARTTLS", "certificate"))):
        flagged.add("mx-tls")
    hosts = doc.get("mx", {}).get("hosts", [])
    if any(h.get("starttls") is False or h.get("tls") is False for h in hosts):
        flagged.add("mx-tls")
    return flagged


def area(code: str) -> str:
    if code.startswith("tlsrpt"):
        return "tlsrpt"
    if code.startswith(("sts-", "max-age", "mode-")):
        return "mta-sts"
    return "mx-tls"


def main(count: int = 1000) -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("checkdmarc", path=str(BIN)):
        print("check_speed: needs root, iproute2 and checkdmarc (pip install checkdmarc); skipped")
        return
    state = Path(tempfile.mkdtemp(prefix="mtasts-bench-check-"))
    netns_etc = Path("/etc/netns") / NAMESPACE
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    lab = None
    try:
        subprocess.run(
            ["ip", "netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"], check=True
        )
        netns_etc.mkdir(parents=True, exist_ok=True)
        (netns_etc / "resolv.conf").write_text("nameserver 127.77.0.53\n")
        inside = ["ip", "netns", "exec", NAMESPACE]
        lab = subprocess.Popen(
            [
                *inside,
                str(BIN / "mtasts"),
                "lab",
                "up",
                "--ports",
                "standard",
                "--generate",
                str(count * _STEADY),
                # The lab's simulated reports are written at start; they compete with the
                # tools for both cores and made every probe slow (both tools, 10x).
                "--no-reports",
                # Certificates made before the clock starts: lazily, the first tool run
                # paid for issuing them, and a second one over the same hosts did not.
                "--warm",
                "--state-dir",
                str(state),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not (state / "lab.json").exists():
            if lab.poll() is not None:
                raise RuntimeError("the lab did not start in the namespace")
            time.sleep(0.05)
        every = json.loads((state / "lab.json").read_text())["domains"]
        domains = every[: len(every) - count * (_STEADY - 1)]  # the scenario's + count
        expect = {d["name"]: d["expect"] for d in domains}
        listing = state / "domains.txt"
        listing.write_text("\n".join(expect) + "\n")
        env = {
            **os.environ,
            "REQUESTS_CA_BUNDLE": str(state / "ca.pem"),
            "SSL_CERT_FILE": str(state / "ca.pem"),
        }
        ours_out, theirs_out = state / "ours.jsonl", state / "checkdmarc.json"
        ours = timed(
            [
                *inside,
                str(BIN / "mtasts"),
                "check",
                "--lab",
                str(state),
                "--file",
                str(listing),
                "--json",
                "--timeout",
                "5",
            ],
            env,
            ours_out,
        )
        theirs = timed(
            [
                *inside,
                str(BIN / "checkdmarc"),
                "--check-mx-tls",
                "-n",
                "127.77.0.53",
                "-t",
                "5",
                str(listing),
            ],
            env,
            theirs_out,
        )
        report(expect, ours, theirs, ours_out, theirs_out)
        # The rate above includes the slowest domain's timeouts (the lab's hanging MX holds
        # a probe for the whole --timeout): a tail that weighs on a parallel tool's 1,000
        # domains and not on a sequential one. The steady rate, over five times as many:
        everything = state / "every.txt"
        everything.write_text("\n".join(d["name"] for d in every) + "\n")
        steady = timed(
            [
                *inside,
                str(BIN / "mtasts"),
                "check",
                "--lab",
                str(state),
                "--file",
                str(everything),
                "--json",
                "--timeout",
                "5",
            ],
            env,
            state / "every.jsonl",
        )
        rate, theirs_rate = len(every) / steady[0], len(expect) / theirs[0]
        print(
            f"\nsteady rate: mtasts check {len(every):,} domains in {steady[0]:.1f} s ="
            f" {rate:.1f} domains/s (CPU {1000 * steady[3] / len(every):.1f} ms/domain),"
            f" {rate / theirs_rate:.1f}x checkdmarc's {theirs_rate:.1f}/s"
        )
    finally:
        if lab is not None:
            lab.send_signal(signal.SIGTERM)
            lab.wait(30)
        subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)
        shutil.rmtree(netns_etc, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def report(
    expect: dict[str, list[str]],
    ours: tuple[float, int, int, float],
    theirs: tuple[float, int, int, float],
    ours_out: Path,
    theirs_out: Path,
) -> None:
    n = len(expect)
    print(
        f"{'mtasts check':<14} {n} domains in {ours[0]:6.1f} s = {n / ours[0]:7.1f} domains/s, peak {ours[1]} MiB"
    )
    print(
        f"{'checkdmarc':<14} {n} domains in {theirs[0]:6.1f} s = {n / theirs[0]:7.1f} domains/s, peak {theirs[1]} MiB"
    )
    print(f"speed ratio mtasts/checkdmarc: {theirs[0] / ours[0]:.1f}x")
    our_docs = {d["domain"]: d for d in map(json.loads, ours_out.read_text().splitlines())}
    text = theirs_out.read_text()
    their_docs = {d["domain"]: d for d in (json.loads(text) if text.strip() else [])}
    detected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for domain, codes in expect.items():
        for code in codes or ["(healthy)"]:
            row = detected[code]
            row[0] += 1
            mine = {
                f["code"]
                for f in our_docs.get(domain, {}).get("findings", [])
                if f["severity"] != "info"
            }
            if (code in mine) if codes else not mine:
                row[1] += 1
            flags = checkdmarc_flags(their_docs[domain]) if domain in their_docs else {"missing"}
            if (area(code) in flags) if codes else not flags:
                row[2] += 1
    print(f"\n{'lab fault (expected finding)':<30} {'domains':>7} {'mtasts':>8} {'checkdmarc':>11}")
    for code, (total, mine, theirs_count) in sorted(detected.items()):
        print(f"{code:<30} {total:>7} {mine:>8} {theirs_count:>11}")
    print(
        "(healthy: reported nothing in scope; checkdmarc counts any MTA-STS/TLS-RPT/MX-TLS complaint)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
