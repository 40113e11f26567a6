"""Lab start-up time: the default scenario, and 10,000 generated domains (issue targets 2 s / 30 s).

Measured as a user sees it: from launching ``mtasts lab up`` to ``lab.json`` existing
(every listener up), then one DNS query and one policy fetch that must succeed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query


def start(generate: int, subnet: str) -> float:
    state = Path(tempfile.mkdtemp(prefix="mtasts-bench-lab-"))
    mtasts = shutil.which("mtasts", path=str(Path(sys.executable).parent)) or "mtasts"
    began = time.perf_counter()
    process = subprocess.Popen(
        [
            mtasts,
            "lab",
            "up",
            "--state-dir",
            str(state),
            "--ports",
            "high",
            "--subnet",
            subnet,
            "--generate",
            str(generate),
            "--dns-port",
            "30053",
            "--https-port",
            "30443",
            "--smtp-port",
            "30025",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (state / "lab.json").exists():
            if process.poll() is not None:
                raise RuntimeError("lab exited")
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        lab = json.loads((state / "lab.json").read_text())
        last = lab["domains"][-1]["name"]
        reply = dns.query.udp(
            dns.message.make_query(last, "MX"), lab["dns"]["address"], port=30053, timeout=5
        )
        assert reply.answer, f"no MX for {last}"
        return elapsed
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    print(
        f"{'lab up, default scenario (20 domains)':<48} {start(0, '127.90'):>8.2f} s  (target < 2 s)"
    )
    print(
        f"{'lab up, default + 10,000 generated domains':<48} {start(10000, '127.91'):>8.2f} s  (target < 30 s)"
    )


if __name__ == "__main__":
    main()
