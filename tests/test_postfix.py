"""The resolver proven with a real Postfix: enforce delivers over verified TLS or defers.

Postfix resolves MX hosts through the system resolver and delivers to port 25,
so the test builds a network namespace whose /etc/resolv.conf names the lab's
DNS server and whose /etc/postfix is a private configuration (``ip netns exec``
bind-mounts /etc/netns/NAME/* over /etc). The system's Postfix files and queue
are never touched; everything is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MTASTS

pytestmark = pytest.mark.integration

SCENARIO = """
[[domain]]
name = "pf-good.example"
mx = [{ name = "mx.pf-good.example" }]

[[domain]]
name = "pf-badcert.example"
mx = [{ name = "mx.pf-badcert.example", addresses = [{ fault = "cert-name", cert_name = "server7.hosting.example" }] }]

[[domain]]
name = "pf-stripped.example"
mx = [{ name = "mx.pf-stripped.example", addresses = [{ fault = "strip-starttls" }] }]

[[domain]]
name = "pf-nopolicy.example"
mode = false
mx = [{ name = "mx.pf-nopolicy.example", addresses = [{ fault = "strip-starttls" }] }]

[[domain]]
name = "pf-testing.example"
mode = "testing"
mx = [{ name = "mx.pf-testing.example", addresses = [{ fault = "cert-name", cert_name = "server7.hosting.example" }] }]
"""


def _postfix_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "postfix", "sendmail", "script"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs Debian's postfix and iproute2)"
    return None


class PostfixLab:
    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = namespace
        self.processes: list[subprocess.Popen[bytes]] = []

    def inside(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        # script(1) gives Postfix commands a terminal, so their errors reach us instead of syslog.
        command = " ".join(args)
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, "script", "-qec", command, "/dev/null"],
            capture_output=True, text=True, timeout=60, **kw,  # type: ignore[call-overload]
        )  # fmt: skip

    def spawn(self, *args: str) -> None:
        log = (self.root / f"{Path(args[1]).name}-{len(self.processes)}.log").open("wb")
        self.processes.append(
            subprocess.Popen(["ip", "netns", "exec", self.namespace, *args], stdout=log, stderr=log)
        )

    def send(self, recipient: str) -> None:
        message = f"Subject: to {recipient}\nFrom: alice@sender.example\nTo: {recipient}\n\nhello\n"
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "sendmail", "-f", "alice@sender.example", recipient],
            input=message, text=True, check=True, timeout=30,
        )  # fmt: skip

    def outcome(self, recipient: str, timeout: float = 60) -> str:
        """The maillog line with this recipient's delivery status."""
        deadline = time.monotonic() + timeout
        maillog = self.root / "maillog"
        while time.monotonic() < deadline:
            if maillog.exists():
                for line in maillog.read_text().splitlines():
                    if f"to=<{recipient}>" in line and "status=" in line:
                        return line
            time.sleep(0.2)
        raise AssertionError(f"no delivery status for {recipient} within {timeout} s")

    def maillog(self) -> str:
        return (self.root / "maillog").read_text()

    def received(self) -> list[dict[str, object]]:
        path = self.root / "lab" / "mail.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _wait_port(namespace: str, port: int) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    deadline = time.monotonic() + 20
    while subprocess.run(
        ["ip", "netns", "exec", namespace, "python3", "-c", probe], capture_output=True
    ).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} in {namespace}")
        time.sleep(0.1)


def _main_cf(root: Path) -> str:
    return f"""compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = sender.example
mydomain = sender.example
myorigin = sender.example
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_tls_security_level = may
smtp_tls_CAfile = {root}/lab/ca.pem
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix
smtp_tls_loglevel = 1
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
smtputf8_enable = no
"""


@pytest.fixture(scope="module")
def postfix_lab() -> Iterator[PostfixLab]:
    reason = _postfix_missing()
    if reason:
        pytest.skip(reason)
    # Postfix's unprivileged daemons must traverse this folder; pytest's temp folders are 0700.
    root = Path(tempfile.mkdtemp(prefix="mtasts-postfix-"))
    os.chmod(root, 0o755)
    namespace = f"mtasts-pf-{os.getpid()}"
    etc = Path("/etc/netns") / namespace
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    lab = PostfixLab(root, namespace)
    try:
        subprocess.run(
            ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True
        )
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.77.0.53\n")
        shutil.copytree("/etc/postfix", etc / "postfix", symlinks=True)
        (etc / "postfix" / "main.cf").write_text(_main_cf(root))
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        # No smtpd listener (the lab owns port 25 here) and a postlog service for maillog_file.
        master = master.replace("\nsmtp      inet", "\n#smtp      inet")
        master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
        (etc / "postfix" / "master.cf").write_text(master)
        for folder, owner in (("spool", "root"), ("data", "postfix")):
            (root / folder).mkdir()
            shutil.chown(root / folder, owner, owner)
        (root / "scenario.toml").write_text(SCENARIO)
        lab.spawn(MTASTS, "lab", "up", "--ports", "standard", "--scenario", str(root / "scenario.toml"),
                  "--state-dir", str(root / "lab"))  # fmt: skip
        _wait_for(root / "lab" / "lab.json", "the lab")
        lab.spawn(MTASTS, "resolver", "run", "--lab", str(root / "lab"), "--cache", str(root / "cache.sqlite"),
                  "--listen", "socketmap:inet:127.0.0.1:8461")  # fmt: skip
        _wait_port(namespace, 8461)
        # Postfix's daemons must not chroot: resolv.conf lives at /etc in the namespace.
        lab.inside("postconf", "-F", "'*/*/chroot = n'")
        started = lab.inside("postfix", "check", "&&", "postfix", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        yield lab
    finally:
        lab.inside("postfix", "stop")
        for process in lab.processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_enforce_with_healthy_mx_delivers_over_verified_tls(postfix_lab: PostfixLab) -> None:
    postfix_lab.send("bob@pf-good.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-good.example")
    assert "Verified TLS connection established to mx.pf-good.example" in postfix_lab.maillog()
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-good.example>"]]
    assert arrived[0]["tls"] is True


def test_enforce_with_wrong_certificate_is_deferred(postfix_lab: PostfixLab) -> None:
    postfix_lab.send("bob@pf-badcert.example")
    line = postfix_lab.outcome("bob@pf-badcert.example")
    assert "status=deferred (Server certificate not verified)" in line
    assert not [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-badcert.example>"]]


def test_stripping_attacker_defeated_by_enforce_but_not_without_policy(
    postfix_lab: PostfixLab,
) -> None:
    postfix_lab.send("bob@pf-stripped.example")
    postfix_lab.send("bob@pf-nopolicy.example")
    stripped = postfix_lab.outcome("bob@pf-stripped.example")
    assert (
        "status=deferred (TLS is required, but was not offered by host mx.pf-stripped.example"
        in stripped
    )
    # The attack the article describes: without a policy the mail goes through in plaintext.
    assert "status=sent" in postfix_lab.outcome("bob@pf-nopolicy.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-nopolicy.example>"]]
    assert arrived[0]["tls"] is False


def test_testing_domain_receives_mail_despite_the_failure(postfix_lab: PostfixLab) -> None:
    postfix_lab.send("bob@pf-testing.example")
    assert "status=sent" in postfix_lab.outcome("bob@pf-testing.example")
    arrived = [m for m in postfix_lab.received() if m["to"] == ["<bob@pf-testing.example>"]]
    assert arrived
