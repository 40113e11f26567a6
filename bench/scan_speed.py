"""``mtasts scan`` on a 10,000-domain lab (40 shared providers, 200 MX addresses) with 1, 2
and 4 workers, against ``mtasts check --file`` on the same domains, in the same run.

Needs PostgreSQL: MTASTS_DB, or a private cluster this script starts from Debian's
binaries (as root, via the postgres user). Reports domains/second, CPU seconds per domain
(every process of ours: workers, or check's pool), the unique-MX ratio (probes a check per
domain makes / probes the scan makes), and a projection for 1,000,000 domains.

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
    port = 55000 + os.getpid() % 1000
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


def _scan(env: dict[str, str], name: str, listed: Path, lab: Path, workers: int) -> dict[str, Any]:
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
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [MTASTS, "scan", "worker", "--once", "--concurrency", "8"],
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
        rows = []
        for workers in (1, 2, 4):
            result = _scan(env, f"bench-{workers}w-{os.getpid()}", listed, lab_dir, workers)
            s = result["status"]
            assert s["judged"] == n, s
            ratio = s["per_domain_probes"] / max(1, s["pairs"])
            rows.append((workers, result["seconds"], result["cpu"]))
            print(
                f"scan, {workers} worker(s): {n / result['seconds']:.1f} domains/s"
                f" ({result['seconds']:.1f} s, {result['seconds'] / check_s:.2f}x check's time),"
                f" CPU {1000 * result['cpu'] / n:.2f} ms/domain ({result['cpu'] / check_cpu:.2f}x check's),"
                f" {s['pairs']:,} probes instead of {s['per_domain_probes']:,} (unique-MX ratio {ratio:.1f}x)"
            )
        best = max(rows, key=lambda r: n / r[1])
        cpu_per_domain = best[2] / n
        core_hours = cpu_per_domain * 1_000_000 / 3600
        print(
            f"projection, 1,000,000 domains: {core_hours:.1f} CPU core-hours of workers at"
            f" {1000 * cpu_per_domain:.2f} ms/domain; at this run's best rate ({n / best[1]:.0f}/s on 2 cores,"
            f" lab included) {1_000_000 / (n / best[1]) / 3600:.1f} h on one such machine."
            " On the internet the probes wait on networks, not CPU: with a 10 s timeout and"
            " 2 probes per address at once, latency and the politeness limits set the pace."
        )
    finally:
        subprocess.run([MTASTS, "lab", "down", "--state-dir", str(lab_dir)], capture_output=True)
        if stop:
            subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
