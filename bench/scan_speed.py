"""``mtasts scan`` on a 10,000-domain lab (40 shared providers, 200 MX addresses) with 1, 2
and 4 workers, against ``mtasts check --file`` on the same domains, in the same run.

Needs PostgreSQL: MTASTS_DB, or a private cluster this script starts from Debian's
binaries (as root, via the postgres user). Reports domains/second, CPU seconds per domain
(every process of ours: workers, or check's pool), the unique-MX ratio (probes a check per
domain makes / probes the scan makes), the cost of each phase (a scan whose opt-out list
holds every lab address does phase 1 and judging only; the rest of a full scan's CPU is
phase 2), and from those a projection for 1,000,000 domains.

    python -m bench.scan_speed [--domains 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
MTASTS = str(BIN / "mtasts")


def _postgres(folder: Path) -> tuple[str, list[str]]:
    """A throwaway cluster: (URL, the pg_ctl stop command)."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    data = folder / "pg"
    data.mkdir()
    owner = pwd.getpwnam("postgres")
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    os.chown(data, owner.pw_uid, owner.pw_gid)
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    # Above the kernel's ephemeral range (32768-60999 by default): a port in it can be held
    # by a client socket in TIME-WAIT from an earlier run, and PostgreSQL then cannot bind.
    port = 61000 + os.getpid() % 4000
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    )
    subprocess.run(
        [
            *run,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "pg.log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", [
        *run,
        str(binaries / "pg_ctl"),
        "-D",
        str(data),
        "-m",
        "fast",
        "-w",
        "stop",
    ]


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds, CPU seconds of the process and its children, exit status)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    return (
        time.perf_counter() - started,
        usage.ru_utime + usage.ru_stime,
        os.waitstatus_to_exitcode(status),
    )


def _scan(
    env: dict[str, str], name: str, listed: Path, lab: Path, workers: int, *extra: str
) -> dict[str, Any]:
    subprocess.run(
        [
            MTASTS,
            "scan",
            "submit",
            str(listed),
            "--name",
            name,
            "--lab",
            str(lab),
            "--address-rate",
            "0",
            *extra,
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [MTASTS, "scan", "worker", "--once"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(workers)
    ]
    cpu = 0.0
    for process in processes:
        _, _, usage = os.wait4(process.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
    seconds = time.perf_counter() - started
    status = json.loads(
        subprocess.run(
            [MTASTS, "scan", "status", name, "--json"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    return {"seconds": seconds, "cpu": cpu, "status": status}


def _projection(p1_cpu: float, p2_cpu: float, ratio: float, one_worker_rate: float) -> None:
    """1,000,000 domains from the per-phase costs measured here. CPU is what the lab shows;
    wall time on the internet is set by latency, so it is computed from stated round-trip
    assumptions, not from this loopback run."""
    domains = 1_000_000
    pairs = domains / ratio
    cpu_hours = (domains * p1_cpu + pairs * p2_cpu) / 3600
    print(
        f"per phase: phase 1 {1000 * p1_cpu:.2f} ms CPU/domain, phase 2 {1000 * p2_cpu:.2f} ms"
        f" CPU/probe (one (MX host, address) pair)"
    )
    print(
        f"projection, {domains:,} domains: {pairs:,.0f} probes at this lab's unique-MX ratio"
        f" ({ratio:.1f}x), {cpu_hours:.1f} CPU core-hours for the workers"
        f" ({domains * p1_cpu / 3600:.1f} phase 1 + {pairs * p2_cpu / 3600:.1f} phase 2)."
    )
    # On the internet: a domain's phase 1 waits ~1 s (TXT, MX, A/AAAA, HTTPS fetch), a probe
    # ~2 s (connect, banner, EHLO, STARTTLS, handshake); a worker keeps --batches 2 x 50
    # domains and --concurrency probes in flight.
    for concurrency in (32, 128):
        p1_rate = 2 * 50 / 1.0
        p2_rate = concurrency / 2.0
        hours = domains / p1_rate / 3600 + pairs / p2_rate / 3600
        cores = cpu_hours / max(hours, 1e-9)
        print(
            f"  one worker, --concurrency {concurrency}: ~{hours:.1f} h if latency-bound"
            f" (1 s per domain, 2 s per probe), needing ~{cores:.1f} cores at the CPU cost"
            f" above; 8 such workers: ~{hours / 8:.1f} h."
        )
    print(
        f"  this run, 1 worker on a 2-core machine shared with the lab and PostgreSQL:"
        f" {one_worker_rate:.0f} domains/s = {domains / one_worker_rate / 3600:.1f} h per million."
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mtasts-scan-bench-"))
    stop: list[str] = []
    url = os.environ.get("MTASTS_DB")
    if not url:
        url, stop = _postgres(folder)
    env = {**os.environ, "MTASTS_DB": url, "NO_COLOR": "1"}
    lab_dir = folder / "lab"
    subprocess.run(
        [
            MTASTS,
            "lab",
            "up",
            "--generate",
            str(args.domains),
            "--providers",
            "40",
            "--mx-addresses",
            "200",
            "--no-reports",
            # Certificates made before the clock starts: lazily, the first tool run
            # paid for issuing them, and a second one over the same hosts did not.
            "--warm",
            "--subnet",
            "127.198",
            "--ports",
            "high",
            "--state-dir",
            str(lab_dir),
            "-d",
        ],
        check=True,
        capture_output=True,
    )
    try:
        state = json.loads((lab_dir / "lab.json").read_text())
        names = [d["name"] for d in state["domains"] if d["name"].startswith("gen")]
        listed = folder / "domains.txt"
        listed.write_text("\n".join(names) + "\n")
        n = len(names)
        check_s, check_cpu, _ = _timed(
            [MTASTS, "check", "--file", str(listed), "--lab", str(lab_dir), "--json"], env
        )
        print(
            f"check --file: {n:,} domains in {check_s:.1f} s = {n / check_s:.1f} domains/s, CPU {1000 * check_cpu / n:.2f} ms/domain"
        )
        optout = folder / "optout.txt"
        optout.write_text("127.0.0.0/8\n")
        phase1 = _scan(env, f"bench-p1-{os.getpid()}", listed, lab_dir, 1, "--opt-out", str(optout))
        p1_cpu = phase1["cpu"] / n
        print(
            f"phase 1 alone (every address opted out), 1 worker: {n / phase1['seconds']:.1f}"
            f" domains/s, CPU {1000 * p1_cpu:.2f} ms/domain (DNS, policy fetch, judging, storing)"
        )
        rows = []
        pairs = 0
        for workers in (1, 2, 4):
            result = _scan(env, f"bench-{workers}w-{os.getpid()}", listed, lab_dir, workers)
            s = result["status"]
            assert s["judged"] == n, s
            pairs = s["pairs"]
            ratio = s["per_domain_probes"] / max(1, pairs)
            rows.append((workers, result["seconds"], result["cpu"], ratio))
            print(
                f"scan, {workers} worker(s): {n / result['seconds']:.1f} domains/s"
                f" ({result['seconds']:.1f} s, {result['seconds'] / check_s:.2f}x check's time),"
                f" CPU {1000 * result['cpu'] / n:.2f} ms/domain ({result['cpu'] / check_cpu:.2f}x check's),"
                f" {pairs:,} probes instead of {s['per_domain_probes']:,} (unique-MX ratio {ratio:.1f}x)"
            )
        one = rows[0]
        p2_cpu = max(0.0, one[2] - phase1["cpu"]) / max(1, pairs)
        ratio = one[3]
        _projection(p1_cpu, p2_cpu, ratio, n / max(r[1] for r in rows[:1]))
    finally:
        subprocess.run([MTASTS, "lab", "down", "--state-dir", str(lab_dir)], capture_output=True)
        if stop:
            subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
