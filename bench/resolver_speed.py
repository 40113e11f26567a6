"""``mtasts resolver`` against postfix-mta-sts-resolver, same lab, same client, same run.

Both daemons resolve through the system resolver / port 443 in the peer's case,
so the lab (on standard ports), both daemons and the load generator run inside
a network namespace this script creates. Needs root, iproute2 and
postfix-mta-sts-resolver installed in this Python environment
(``pip install postfix-mta-sts-resolver``). Measures cached lookups/s with 1
and 16 clients (p50/p99), cold lookups of 1,000 distinct domains (three rounds of new
domains, the median shown), the same daemon with ``--workers 2``, and resident
memory per cached domain.
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
from pathlib import Path
from typing import Any

from mtasts.lab.scenario import generate

BIN = Path(sys.executable).parent
NAMESPACE = f"mtasts-bench-res-{os.getpid()}"
OURS, THEIRS, WORKERS = 18461, 18462, 18463


def inside(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", NAMESPACE, *args], capture_output=True, text=True, **kw
    )


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", NAMESPACE, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def wait_port(port: int) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    deadline = time.monotonic() + 30
    while inside(sys.executable, "-c", probe).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.1)


# The load generator: the small C one when a compiler is here (one Python process was the
# bottleneck at 16 clients: it needed a core for itself), else bench/socketmap_client.py.
_CLIENT: list[str] = [sys.executable, "-m", "bench.socketmap_client"]


def compile_client(into: Path) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "one Python process (bench/socketmap_client.py; no C compiler here)"
    binary = into / "socketmap_load"
    source = Path(__file__).with_name("socketmap_load.c")
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    _CLIENT[:] = [str(binary)]
    return "bench/socketmap_load.c (C, one thread, epoll, one connection per client)"


def load(port: int, *args: str) -> dict[str, Any]:
    out = inside(
        *_CLIENT,
        str(port),
        *args,
        cwd=str(Path(__file__).parent.parent),
        timeout=900,
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def family(pid: int) -> list[int]:
    """The daemon and its worker processes (``--workers``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def cpu_seconds(pid: int) -> float:
    total = 0
    for member in family(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured(pid: int, port: int, *args: str) -> dict[str, Any]:
    """A load run plus the daemon's own CPU time per request (its capacity, whatever the client)."""
    before = cpu_seconds(pid)
    result = load(port, *args)
    result["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / result["requests"]
    return result


def rss_mib(pid: int) -> float:
    # ip netns exec execs the daemon, so the pid is the daemon's own; workers each hold
    # their own memory of answers, so theirs is added (shared pages counted twice).
    total = 0.0
    for member in family(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def main(cached_domains: int = 10000) -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not (BIN / "mta-sts-daemon").exists():
        print(
            "resolver_speed: needs root, iproute2 and postfix-mta-sts-resolver in this venv; skipped"
        )
        return
    state = Path(tempfile.mkdtemp(prefix="mtasts-bench-res-"))
    os.chmod(state, 0o755)
    etc = Path("/etc/netns") / NAMESPACE
    client = compile_client(state)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        inside("ip", "link", "set", "lo", "up", check=True)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.77.0.53\n")
        processes.append(
            spawn(
                [
                    str(BIN / "mtasts"),
                    "lab",
                    "up",
                    "--ports",
                    "standard",
                    "--generate",
                    str(cached_domains),
                    "--no-reports",  # writing simulated reports competes with what is measured
                    # Certificates made before the clock starts: lazily, the first tool run
                    # paid for issuing them, and a second one over the same hosts did not.
                    "--warm",
                    "--state-dir",
                    str(state / "lab"),
                ]
            )
        )
        while not (state / "lab" / "lab.json").exists():
            time.sleep(0.1)
        names = [
            d["name"]
            for d in json.loads((state / "lab" / "lab.json").read_text())["domains"]
            if d["name"].startswith("gen")
        ]
        # A healthy enforce domain, so the cached replies are the full "OK secure match=..." answer.
        enforce = next(
            d.name for d in generate(cached_domains) if d.mode == "enforce" and not d.expect
        )
        # Three rounds of 1,000 domains new to every daemon, the daemons in a rotating order:
        # one round on this shared 2-core machine varied by a third from run to run.
        colds = []
        for round_ in range(3):
            cold = state / f"cold{round_}.txt"
            cold.write_text("\n".join(names[round_ * 1000 : (round_ + 1) * 1000]))
            colds.append(cold)
        everything = state / "all.txt"
        everything.write_text("\n".join(names))

        def ours_on(port: int, *extra: str) -> subprocess.Popen[bytes]:
            return spawn(
                [
                    *(str(BIN / "mtasts"), "resolver", "run", "--lab", str(state / "lab")),
                    *("--listen", f"socketmap:inet:127.0.0.1:{port}", *extra),
                ]
            )

        ours = ours_on(OURS, "--cache", ":memory:")
        # The same daemon in two processes sharing the port and a cache file (issue #16's
        # fallback for cold lookups, which one process does on one core).
        workers = ours_on(WORKERS, "--cache", str(state / "workers-cache.sqlite"), "--workers", "2")
        (state / "theirs.yml").write_text(
            f"host: 127.0.0.1\nport: {THEIRS}\ncache:\n  type: internal\n  options:\n    cache_size: {cached_domains * 2}\n"
        )
        env = {**os.environ, "SSL_CERT_FILE": str(state / "lab" / "ca.pem")}
        theirs = spawn(
            [str(BIN / "mta-sts-daemon"), "-c", str(state / "theirs.yml"), "-v", "error"], env
        )
        processes += [ours, theirs, workers]
        wait_port(OURS)
        wait_port(THEIRS)
        wait_port(WORKERS)
        daemons = [
            ("mtasts", OURS, ours),
            ("postfix-mta-sts-resolver", THEIRS, theirs),
            ("mtasts --workers 2", WORKERS, workers),
        ]
        base = {name: rss_mib(process.pid) for name, _, process in daemons}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in daemons}
        for round_, cold in enumerate(colds):
            for name, port, process in daemons[round_:] + daemons[:round_]:
                runs[name].append(measured(process.pid, port, "cold", str(cold), "16"))
        results: dict[str, dict[str, Any]] = {}
        for name, port, process in daemons:
            ordered = sorted(runs[name], key=lambda run: float(run["seconds"]))
            row = results[name] = {"cold": ordered[1], "cold_runs": ordered}
            load(port, "cold", str(everything), "16")  # fill the cache with every generated domain
            row["rss_per_domain_kib"] = (rss_mib(process.pid) - base[name]) * 1024 / len(names)
            row["cached_1"] = measured(process.pid, port, "cached", enforce, "1", "100000")
            row["cached_16"] = measured(process.pid, port, "cached", enforce, "16", "20000")
        report(results, len(names), client)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def report(results: dict[str, dict[str, Any]], cached: int, client: str) -> None:
    print(
        f"{'':<26} {'cached, 1 client':>34} {'cached, 16 clients':>34} {'cold 1,000 (16 conc., median of 3)':>32} {'RSS/cached domain':>18}"
    )
    for name, row in results.items():
        cells = []
        for key in ("cached_1", "cached_16"):
            r = row[key]
            cells.append(
                f"{r['per_second']:>7,.0f}/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f}ms {r['cpu_us']:>4.0f}us"
            )
        cold = row["cold"]
        print(
            f"{name:<26} {cells[0]:>34} {cells[1]:>34} {cold['seconds']:>8.1f} s ({cold['per_second']:,.0f}/s) p99 {cold['p99_ms']:.0f}ms CPU {cold['cpu_us'] * cold['requests'] / 1e6:.1f} s {row['rss_per_domain_kib']:>12.2f} KiB"
        )
    ours, theirs = results["mtasts"], results["postfix-mta-sts-resolver"]
    print(
        f"ratios mtasts/peer: cached throughput x{ours['cached_1']['per_second'] / theirs['cached_1']['per_second']:.1f} (1 client),"
        f" x{ours['cached_16']['per_second'] / theirs['cached_16']['per_second']:.1f} (16 clients);"
        f" daemon CPU per cached lookup {ours['cached_16']['cpu_us'] / theirs['cached_16']['cpu_us']:.2f}x"
        f" (capacity x{theirs['cached_16']['cpu_us'] / ours['cached_16']['cpu_us']:.1f});"
        f" cold x{theirs['cold']['seconds'] / ours['cold']['seconds']:.1f} faster;"
        f" memory per domain {ours['rss_per_domain_kib'] / max(theirs['rss_per_domain_kib'], 1e-9):.2f}x ({cached:,} domains cached)"
    )
    two = results.get("mtasts --workers 2")
    if two is not None:
        print(
            f"  with --workers 2: cold x{theirs['cold']['seconds'] / two['cold']['seconds']:.1f} faster,"
            f" cached x{two['cached_16']['per_second'] / theirs['cached_16']['per_second']:.1f} (16 clients)"
        )
    for name, row in results.items():
        seconds = ", ".join(f"{run['seconds']:.2f}" for run in row["cold_runs"])
        p99 = ", ".join(f"{run['p99_ms']:.0f}" for run in row["cold_runs"])
        print(f"  {name} cold rounds (the median is shown): {seconds} s; p99 {p99} ms")
    for name, row in results.items():
        print(
            f"  {name} replies: cold {row['cold']['replies']}, cached {row['cached_16']['replies']}"
        )
    print(f"  (usNN = the daemon's own CPU microseconds per request; load generator: {client})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
