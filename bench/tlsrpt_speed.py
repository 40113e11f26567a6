"""The sending side's reporter against tlsrpt-reporter's collectd (PyPI ``tlsrpt-reporter``).

``python -m bench.tlsrpt_speed``. Three figures, nothing asserted:

* datagram intake: the highest rate (datagrams/s, sent with ``MSG_DONTWAIT`` as libtlsrpt
  does) at which a collector loses nothing, stepping the rate up; and CPU seconds per
  datagram over a 100,000-datagram run. Both collectors write SQLite.
* the Postfix log follower: lines per second over a generated 3.7 log of 1,000,000 lines.
* report generation: the reports of one day for 100,000 domains (built and gzipped).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RATES = (5_000, 10_000, 20_000, 40_000, 80_000, 160_000)
STEP_SECONDS = 2.0


def _datagram(i: int) -> bytes:
    domain = f"d{i % 5000}.example"
    policy: dict[str, object] = {
        "policy-type": 2,
        "policy-domain": domain,
        "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{domain}", "max_age: 86400"],
        "mx-host": [f"mx.{domain}"],
        "t": 0,
        "f": 0,
    }
    if i % 10 == 0:
        policy["failure-details"] = [{"c": 202, "n": f"mx.{domain}", "r": "192.0.2.1"}]
        policy["t"] = policy["f"] = 1
    raw = {"dpv": "1", "d": domain, "pr": f"v=TLSRPTv1;rua=mailto:r@{domain}", "policies": [policy]}
    return json.dumps(raw, separators=(",", ":")).encode()


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every process under it (our storing process counts too)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        total += sum(_cpu(int(child)) for child in children)
    return total


def _start(kind: str, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    sock = folder / f"{kind}.sock"
    if kind == "mtasts":
        command = [
            str(BIN / "mtasts"),
            "tlsrpt",
            "collect",
            "--socket",
            str(sock),
            "--db",
            f"sqlite:///{folder / 'mtasts.sqlite'}",
            "--config",
            str(folder / "none.toml"),
        ]
    else:
        command = [
            str(BIN / "tlsrpt-collectd"),
            "--storage",
            f"sqlite://{folder / 'peer.sqlite'}",
            "--socketname",
            str(sock),
            "--logfilename",
            str(folder / "peer.log"),
            "--pidfilename",
            str(folder / "peer.pid"),
        ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} collector did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    return process, sock


def _paced(sock: Path, rate: int, seconds: float, start: int) -> tuple[int, int]:
    """Send at ``rate`` per second without waiting; (sent, dropped by a full buffer)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.connect(str(sock))
    payloads = [_datagram(start + i) for i in range(1000)]
    sent = dropped = 0
    began = time.perf_counter()
    total = int(rate * seconds)
    while sent + dropped < total:
        due = int((time.perf_counter() - began) * rate)
        while sent + dropped < min(due, total):
            try:
                client.send(payloads[(sent + dropped) % 1000], socket.MSG_DONTWAIT)
                sent += 1
            except BlockingIOError:
                dropped += 1
        time.sleep(0.001)
    client.close()
    return sent, dropped


def intake(kind: str) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-tlsrpt-{kind}-"))
    try:
        process, sock = _start(kind, folder)
        best = 0
        for rate in RATES:
            _sent, dropped = _paced(sock, rate, STEP_SECONDS, 0)
            time.sleep(1.0)
            if dropped:
                break
            best = rate
        # CPU per datagram: 100,000 sent as fast as the collector takes them (blocking).
        cpu_before = _cpu(process.pid)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.connect(str(sock))
        payloads = [_datagram(i) for i in range(1000)]
        began = time.perf_counter()
        for i in range(100_000):
            client.send(payloads[i % 1000])
        client.close()
        time.sleep(1.5)
        seconds = time.perf_counter() - began
        cpu = _cpu(process.pid) - cpu_before
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        return {
            "no_loss_rate": best,
            "cpu_us_per_datagram": cpu / 100_000 * 1e6,
            "blocking_seconds_100k": seconds,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


LOG_LINES = [
    "Dec 06 07:27:35 sender postfix/qmgr[20362]: {q}: from=<alice@sender.example>, size=307, nrcpt=1 (queue active)",
    "Dec 06 07:27:36 sender postfix/smtp[{p}]: Verified TLS connection established to mx.d{d}.example[127.77.1.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
    "Dec 06 07:27:36 sender postfix/smtp[{p}]: {q}: to=<bob@d{d}.example>, relay=mx.d{d}.example[127.77.1.1]:25, delay=0.12, delays=0.02/0.04/0.06/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)",
    "Dec 06 07:27:36 sender postfix/qmgr[20362]: {q}: removed",
]


def follower(lines: int = 1_000_000) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-tlsrpt-log-"))
    try:
        log = folder / "maillog"
        with log.open("w") as handle:
            for i in range(lines // len(LOG_LINES)):
                values = {"q": f"{i:010X}", "p": 20000 + i % 300, "d": i % 5000}
                for line in LOG_LINES:
                    handle.write(line.format(**values) + "\n")
        began = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "mtasts"),
                "tlsrpt",
                "collect",
                "--log",
                str(log),
                "--once",
                "--db",
                f"sqlite:///{folder / 'r.sqlite'}",
                "--config",
                str(folder / "none.toml"),
                "--answers",
                str(folder / "none"),
            ],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - began
        return {"lines": lines, "seconds": seconds, "lines_per_second": lines / seconds}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def generation(domains: int = 100_000) -> dict[str, float]:
    from mtasts.reporter.config import TlsrptConfig
    from mtasts.reporter.send import build_due
    from mtasts.reporter.store import ReporterStore
    from mtasts.reports.store import open_store
    from mtasts.tlsrpt.datagram import parse_datagram

    folder = Path(tempfile.mkdtemp(prefix="bench-tlsrpt-gen-"))
    try:
        store = ReporterStore(open_store(f"sqlite:///{folder / 'r.sqlite'}").engine)
        day = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
        sessions = []
        for i in range(domains):
            raw = json.loads(_datagram(i))
            domain = f"g{i}.example"
            raw["d"] = raw["policies"][0]["policy-domain"] = domain
            sessions.append((day, parse_datagram(json.dumps(raw).encode())))
        for first in range(0, domains, 20_000):
            store.add_sessions(sessions[first : first + 20_000], source="bench")
        config = TlsrptConfig(organization="Bench", contact="mailto:r@bench.example")
        began = time.perf_counter()
        # Built, gzipped and stored as `tlsrpt send` does (delivery aside).
        built = build_due(store, config, dt.datetime(2026, 12, 6, 1, tzinfo=dt.UTC))
        seconds = time.perf_counter() - began
        return {"reports": built, "seconds": seconds, "reports_per_second": built / seconds}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def _compare(label: str) -> None:
    ours = intake("mtasts")
    print(f"  [{label}] mtasts tlsrpt collect: {ours}")
    if shutil.which("tlsrpt-collectd") or (BIN / "tlsrpt-collectd").exists():
        peer = intake("peer")
        print(f"  [{label}] tlsrpt-collectd:       {peer}")
        if peer["no_loss_rate"]:
            print(f"  [{label}] no-loss rate: {ours['no_loss_rate'] / peer['no_loss_rate']:.1f}x")
        print(
            f"  [{label}] CPU per datagram: {ours['cpu_us_per_datagram'] / peer['cpu_us_per_datagram']:.2f}x,"
            f" 100,000 blocking: {peer['blocking_seconds_100k'] / ours['blocking_seconds_100k']:.1f}x faster"
        )
    else:
        print("  tlsrpt-collectd not installed (pip install tlsrpt-reporter): no peer figure")


def main() -> None:
    print("tlsrpt: datagram intake, no-loss rate stepping through", RATES)
    default = int(QLEN.read_text()) if QLEN.exists() else None
    _compare(f"max_dgram_qlen={default}")
    if default is not None and default < 1024 and os.geteuid() == 0:
        # Production advice (docs/tlsrpt.md): a queue of 10 datagrams drops any burst.
        QLEN.write_text("1024")
        try:
            _compare("max_dgram_qlen=1024")
        finally:
            QLEN.write_text(str(default))
    print(f"tlsrpt: log follower {follower()}")
    print(f"tlsrpt: report generation {generation()}")


if __name__ == "__main__":
    main()
