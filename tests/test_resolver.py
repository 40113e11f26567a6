"""``mtasts resolver run`` driven over its sockets, as Postfix drives it, against the lab."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MTASTS, RunningLab, port, wait_for_port

SOCKETMAP_PORT = port(10)
TCP_TABLE_PORT = port(11)
METRICS_PORT = port(12)


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], unix: Path) -> None:
        self.process = process
        self.unix = unix

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=10)
        return err.decode()


def start_daemon(tmp: Path, *args: str) -> Daemon:
    unix = tmp / "resolver.sock"
    process = subprocess.Popen(
        [
            MTASTS,
            "resolver",
            "run",
            "--listen",
            f"socketmap:inet:127.0.0.1:{SOCKETMAP_PORT}",
            "--listen",
            f"tcp:inet:127.0.0.1:{TCP_TABLE_PORT}",
            "--listen",
            f"socketmap:unix:{unix}",
            "--metrics",
            f"127.0.0.1:{METRICS_PORT}",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    wait_for_port(SOCKETMAP_PORT, process)
    return Daemon(process, unix)


def netstring(text: str) -> bytes:
    return f"{len(text.encode())}:{text},".encode()


def ask(sock: socket.socket, key: str) -> str:
    sock.sendall(netstring(f"postfix {key}"))
    return read_netstring(sock)


def read_netstring(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b","):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    length, _, rest = data.partition(b":")
    assert len(rest) == int(length) + 1, data
    return rest[:-1].decode()


@pytest.fixture
def daemon(lab: RunningLab, tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(
        tmp_path, "--lab", str(lab.state_dir), "--cache", str(tmp_path / "cache.sqlite")
    )
    yield running
    running.stop()


def test_socketmap_answers_like_postfix_mta_sts_resolver(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
        assert ask(sock, "good-enforce.example") == (
            "OK secure match=mx1.good-enforce.example:mx2.good-enforce.example servername=hostname"
        )
        assert ask(sock, "GOOD-ENFORCE.example.").startswith(
            "OK secure"
        )  # same connection, case, root dot
        assert (
            ask(sock, "good-testing.example") == "NOTFOUND "
        )  # testing: Postfix's own settings apply
        assert ask(sock, "mode-none.example") == "NOTFOUND "
        assert ask(sock, "no-sts.example") == "NOTFOUND "
        assert ask(sock, "policy-404.example") == "NOTFOUND "
        assert ask(sock, ".good-enforce.example") == "NOTFOUND "  # no parent-zone lookups (§3.4)
        # RFC 8461 §3.4: a smart host's own domain is the policy domain, bracketed or not.
        assert ask(sock, "[mx1.good-enforce.example]:25") == "NOTFOUND "  # that name has no policy
        assert ask(sock, "[good-enforce.example]:587").startswith("OK secure match=")
        assert ask(sock, "[good-enforce.example]").startswith("OK secure match=")
        assert ask(sock, "[127.0.0.1]:25") == "NOTFOUND "  # an address literal has no domain


def test_unix_socket_and_tcp_table(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.unix))
        assert (
            ask(sock, "cname-mx.example")
            == "OK secure match=mx.cname-mx.example servername=hostname"
        )
    with socket.create_connection(("127.0.0.1", TCP_TABLE_PORT), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"get good-enforce.example\n")
        assert (
            reader.readline()
            == b"200 secure%20match=mx1.good-enforce.example:mx2.good-enforce.example%20servername=hostname\n"
        )
        sock.sendall(b"get no-sts.example\n")
        assert reader.readline().startswith(b"500 ")
        sock.sendall(b"put x y\n")
        assert reader.readline().startswith(b"400 ")


@pytest.mark.parametrize(
    "garbage", [b"abc", b"99999999:x,", b"5:hello;", b"3:\xff\xfe\xfd,", b"4:nokey,"]
)
def test_malformed_requests_get_an_error_and_do_not_hurt_others(
    daemon: Daemon, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as healthy:
        assert ask(healthy, "good-enforce.example").startswith("OK secure")
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as bad:
            bad.sendall(garbage)
            reply = read_netstring(bad)
            assert reply.startswith("PERM ")
            assert bad.recv(10) == b""  # the daemon closed that connection only
        assert ask(healthy, "good-enforce.example").startswith("OK secure")
    assert daemon.process.poll() is None


def test_metrics_count_lookups_and_failures(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
        ask(sock, "good-enforce.example")
        ask(sock, "good-enforce.example")
        ask(sock, "policy-404.example")
        ask(sock, "policy-404.example")
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'mtasts_resolver_lookups_total{source="memory"} 2' in text
    # The lab's DNS server is on loopback (trusted) but validates nothing: no DANE questions.
    assert "mtasts_resolver_dane_questions 0" in text
    # One fetch for the 404 domain: the second request within 5 minutes does not refetch.
    assert 'mtasts_resolver_fetch_failures_total{reason="http-404"} 1' in text
    assert "mtasts_resolver_cached_policies 1" in text


def test_cache_survives_restart_and_outlives_dns_failure(lab: RunningLab, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    first = start_daemon(tmp_path, "--lab", str(lab.state_dir), "--cache", str(cache))
    with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
        assert ask(sock, "good-enforce.example").startswith("OK secure")
    first.stop()
    # The cache file also keeps what Postfix was told (for the reporter): two answers from a
    # year ago, the second still in force. A start prunes the one it replaced, not the other.
    from mtasts.resolver.answers import AnswerLog

    history = AnswerLog(cache)
    year_ago = time.time() - 365 * 86400
    history.record("old.example", year_ago, "none", None, None, "no _mta-sts record")
    history.record("old.example", year_ago + 60, "sts-policy-fetch-error", None, None, "timeout")
    history.close()
    # Restart with DNS pointing nowhere: RFC 8461 §5.1, the cached unexpired policy still applies.
    second = start_daemon(
        tmp_path,
        "--cache",
        str(cache),
        "--nameserver",
        "127.0.0.1:9",
        "--timeout",
        "1",
        "--ca-file",
        lab.ca_file,
    )
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            assert ask(sock, "good-enforce.example").startswith(
                "OK secure match=mx1.good-enforce.example"
            )
            assert ask(sock, "good-testing.example") == "NOTFOUND "
    finally:
        log = second.stop()
    assert "level=INFO logger=mtasts.resolver" in log
    assert "answer log pruned rows=1" in log
    kept = AnswerLog(cache, readonly=True)
    assert kept.at("old.example", year_ago + 1) is None  # replaced a year ago: forgotten
    still = kept.at("old.example", time.time())
    assert still is not None
    assert still.kind == "sts-policy-fetch-error"
    assert kept.at("good-enforce.example", time.time()) is not None  # this run's answers stay


def test_sighup_reloads_the_testing_choice(lab: RunningLab, tmp_path: Path) -> None:
    config = tmp_path / "mtasts.toml"
    config.write_text('[resolver]\ntesting = "none"\ncache = ""\n')
    running = start_daemon(tmp_path, "--config", str(config), "--lab", str(lab.state_dir))
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            assert ask(sock, "good-testing.example") == "NOTFOUND "
            config.write_text('[resolver]\ntesting = "secure"\ncache = ""\n')
            running.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert (
                ask(sock, "good-testing.example")
                == "OK secure match=mx.good-testing.example servername=hostname"
            )
            # A typo then a reload (systemctl reload): the daemon says why and goes on
            # answering as before; it used to exit, leaving Postfix without its map.
            config.write_text('[resolver]\ntesting = "sometimes"\n')
            running.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert running.process.poll() is None
            assert ask(sock, "good-testing.example").startswith("OK secure match=")
    finally:
        log = running.stop()
    assert "configuration reloaded testing=secure" in log
    assert "reload failed, keeping the running configuration: " in log
    assert "testing = 'sometimes'" in log


def test_demo_falls_back_to_the_resolver_answers_without_postfix(
    lab: RunningLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtasts.cli import demo

    monkeypatch.setattr(demo, "unavailable", lambda: "needs root to create a network namespace")
    demo._sending_side(lab.state)
    out = capsys.readouterr().out
    assert "(a real Postfix needs needs root" not in out
    assert "a real Postfix needs root to create a network namespace" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert (
        "OK secure match=mx1.good-enforce.example:mx2.good-enforce.example"
        in lines["good-enforce.example"]
    )
    assert "NOTFOUND" in lines["good-testing.example"]
    assert "no _mta-sts record" in lines["no-sts.example"]


def test_zones_pick_settings_by_the_postfix_map_name(lab: RunningLab, tmp_path: Path) -> None:
    config = tmp_path / "mtasts.toml"
    config.write_text(
        '[resolver]\ntesting = "none"\n\n[resolver.zones.strict]\ntesting = "secure"\n'
    )
    running = start_daemon(
        tmp_path, "--config", str(config), "--lab", str(lab.state_dir), "--cache", ":memory:"
    )
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            sock.sendall(netstring("postfix good-testing.example"))
            assert read_netstring(sock) == "NOTFOUND "
            sock.sendall(netstring("strict good-testing.example"))
            assert (
                read_netstring(sock)
                == "OK secure match=mx.good-testing.example servername=hostname"
            )
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ('[resolver]\ntesting = "sometimes"\n', " [resolver]: testing = 'sometimes'"),
        (
            '[resolver.zones.strict]\nlisten = ["socketmap:inet:127.0.0.1:1"]\n',
            " [resolver] zones.strict: 'listen' cannot be set per zone (only testing, tlsrpt_attributes, request_timeout)",
        ),
        ("[resolver]\ncolour = 1\n", ": [resolver] unknown key 'colour'"),
        (
            "[resolver]\nworkers = 0\n",
            " [resolver]: workers = 0: must be a whole number from 1 to 64",
        ),
    ],
)
def test_bad_config_is_a_one_line_usage_error(
    tmp_path: Path, config_text: str, message: str
) -> None:
    config = tmp_path / "mtasts.toml"
    config.write_text(config_text)
    result = subprocess.run(
        [MTASTS, "resolver", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {config}{message}")
    assert len(result.stderr.strip().splitlines()) == 1
