"""``mtasts resolver run --workers N``: several processes, one port, one cache, against the lab."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import MTASTS, RunningLab, port
from .test_resolver import SOCKETMAP_PORT, ask, start_daemon

METRICS_PORT = port(12)


def workers_of(pid: int) -> set[int]:
    """The daemon's child processes, from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in children.read_text().split()} if children.exists() else set()


def metrics() -> str:
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def settled(expect: str, timeout: float = 10.0) -> str:
    """The metrics once ``expect`` shows (workers post their counters every second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = metrics()
        if expect in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_workers_share_the_port_the_cache_and_the_metrics(
    lab: RunningLab, tmp_path: Path, cache_location: str
) -> None:
    daemon = start_daemon(
        tmp_path, "--lab", str(lab.state_dir), "--cache", cache_location, "--workers", "2"
    )
    try:
        deadline = time.monotonic() + 10
        while len(workers_of(daemon.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers_of(daemon.process.pid)) == 2
        # One fetch, then 40 connections one after another: the kernel spreads them over
        # both workers' sockets, and the worker that did not fetch reads the shared cache.
        for _ in range(41):
            with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
                assert ask(sock, "good-enforce.example") == (
                    "OK secure match=mx1.good-enforce.example:mx2.good-enforce.example"
                    " servername=hostname"
                )
        # The Unix listener is one socket both workers accept on.
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(daemon.unix))
            assert ask(sock, "good-testing.example") == "NOTFOUND "
        text = settled('mtasts_resolver_requests_total{outcome="ok"} 41')
        assert 'mtasts_resolver_requests_total{outcome="ok"} 41' in text
        # One fetch per domain (the connections came one after another), and the second
        # worker found good-enforce's policy in the shared store, not over HTTPS.
        assert "mtasts_resolver_fetches_total 2\n" in text
        assert 'mtasts_resolver_lookups_total{source="cache"} 1' in text
    finally:
        log = daemon.stop()
    assert "resolver workers=2" in log
    assert daemon.process.returncode == 0


def test_a_worker_that_dies_is_replaced_and_signals_reach_every_worker(
    lab: RunningLab, tmp_path: Path
) -> None:
    config = tmp_path / "mtasts.toml"
    config.write_text(f'[resolver]\ntesting = "none"\ncache = "{tmp_path / "c.sqlite"}"\n')
    daemon = start_daemon(
        tmp_path, "--config", str(config), "--lab", str(lab.state_dir), "--workers", "2"
    )
    try:
        deadline = time.monotonic() + 10
        while len(workers_of(daemon.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # SIGHUP to the parent: every worker rereads the file.
        config.write_text(f'[resolver]\ntesting = "secure"\ncache = "{tmp_path / "c.sqlite"}"\n')
        daemon.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        victim = min(workers_of(daemon.process.pid))
        os.kill(victim, signal.SIGKILL)
        # Another SIGHUP while the replacement starts: held until it can handle it, never
        # its default action (which would kill it).
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = workers_of(daemon.process.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2
        assert victim not in now
        time.sleep(1.0)
        # The replacement answers as its siblings do since the reload, whichever answers.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
                assert ask(sock, "good-testing.example") == (
                    "OK secure match=mx.good-testing.example servername=hostname"
                )
        # A broken file on the next reload: parent and workers keep running as they were.
        config.write_text('[resolver]\ntesting = "sometimes"\n')
        daemon.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert daemon.process.poll() is None
        assert workers_of(daemon.process.pid) == now
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            assert ask(sock, "good-testing.example").startswith("OK secure match=")
    finally:
        log = daemon.stop()
    assert log.count("reload failed, keeping the running configuration") == 2
    assert f"pid {victim}) ended: killed by SIGKILL; starting another" in log
    assert "killed by SIGHUP" not in log
    assert log.count("configuration reloaded testing=secure") >= 3
    assert daemon.process.returncode == 0
    assert not [pid for pid in now if Path(f"/proc/{pid}").exists()]  # stopped, and reaped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--workers", "2", "--cache", ":memory:"],
            "error: workers = 2 needs a cache the workers share",
        ),
        (
            ["--workers", "2", "--cache", "postgresql://u:S3cret@127.0.0.1:9/db"],
            "error: cannot open the policy cache postgresql://u:***@127.0.0.1:9/db:",
        ),
    ],
)
def test_workers_without_a_usable_shared_cache_is_a_one_line_error(
    args: list[str], message: str
) -> None:
    done = subprocess.run(
        [MTASTS, "resolver", "run", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "S3cret" not in done.stderr


def test_a_worker_count_out_of_range_is_refused() -> None:
    done = subprocess.run(
        [MTASTS, "resolver", "run", "--workers", "0"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "Invalid value for '--workers': 0 is not in the range 1<=x<=64." in done.stderr
