"""A real Postfix as the lab's sending MTA, enforcing policies through ``mtasts resolver``.

Postfix resolves MX hosts with the system resolver and delivers to port 25, so
the stage is a network namespace whose /etc/resolv.conf names the lab's DNS
server and whose /etc/postfix is a private configuration (``ip netns exec``
bind-mounts /etc/netns/NAME/* over /etc). The lab runs inside on standard
ports, the resolver beside it. The host's Postfix files and queue are never
touched, and :meth:`PostfixStage.close` removes everything.
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

RESOLVER_PORT = 8461
REPORTER = "noreply-tlsrpt@sender.example"  # the From of the lab sender's TLS reports


def unavailable() -> str | None:
    """Why a Postfix stage cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "postfix", "sendmail", "script"):
        if shutil.which(tool) is None:
            return f"needs {tool}, which is not installed (Debian: postfix, iproute2)"
    return None


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
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{RESOLVER_PORT}:postfix
smtp_tls_loglevel = 1
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
smtputf8_enable = no
# RFC 8460 §3: report mail must be delivered even where TLS fails, and RFC 8689's
# "TLS-Required: No" is not honoured before Postfix 3.10: the reporter's mail takes its
# own transport, which enforces no policy (and `tlsrpt collect` does not count it).
sender_dependent_default_transport_maps = inline:{{{REPORTER}=tlsrpt-out}}
"""


class PostfixStage:
    """Lab + resolver + Postfix in one namespace. Use as a context manager."""

    def __init__(self, scenario: Path, mtasts: str | None = None) -> None:
        self.scenario = scenario
        self.mtasts = mtasts or str(Path(sys.executable).parent / "mtasts")
        self.namespace = f"mtasts-pf-{os.getpid()}"
        self.etc = Path("/etc/netns") / self.namespace
        # Postfix's unprivileged daemons must traverse this folder.
        self.root = Path(tempfile.mkdtemp(prefix="mtasts-postfix-"))
        os.chmod(self.root, 0o755)
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> PostfixStage:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inside(self, command: str) -> subprocess.CompletedProcess[str]:
        # script(1) gives Postfix commands a terminal, so their errors reach us instead of syslog.
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, "script", "-qec", command, "/dev/null"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def mtasts_inside(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``mtasts ARGS`` in the namespace, where the lab is on standard ports."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, self.mtasts, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def reporter(self, db: str) -> tuple[str, ...]:
        """``mtasts tlsrpt`` options for this stage's reporter: a ``[tlsrpt]`` table (report mail
        through this Postfix's `tlsrpt-out`, signed with the lab's key for sender.example), the
        lab and the store ``db``."""
        config = self.root / "mtasts.toml"
        config.write_text(
            '[tlsrpt]\norganization = "Sender Example"\n'
            'contact = "mailto:postmaster@sender.example"\n'
            f'sender = "{REPORTER}"\nsendmail = "/usr/sbin/sendmail"\n'
            f'dkim_key = "{self.root}/lab/dkim/sender.example.key"\n'
            'skip_services = ["tlsrpt-out"]\n'
        )
        return ("--lab", str(self.root / "lab"), "--config", str(config), "--db", db)

    def collect(self, *options: str) -> subprocess.CompletedProcess[str]:
        """``tlsrpt collect --once`` over this Postfix's log and its resolver's answers."""
        log, answers = str(self.root / "maillog"), str(self.root / "cache.sqlite")
        return self.mtasts_inside(
            "tlsrpt", "collect", "--log", log, "--answers", answers, "--once", *options
        )

    def ingest_mailbox(
        self, domain: str, db: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Wait for report mail in ``domain``'s rua mailbox (Postfix delivers on its own time),
        then ingest it, DKIM checked against the lab's DNS."""
        mailbox = self.root / "lab" / "mailboxes" / domain
        deadline = time.monotonic() + timeout
        while not list((mailbox / "new").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.mtasts_inside(
            "reports",
            "ingest",
            "--maildir",
            str(mailbox),
            "--nameserver",
            "127.77.0.53",
            "--db",
            db,
        )

    def _spawn(self, *args: str) -> None:
        log = (self.root / f"{args[1]}.log").open("wb")
        self.processes.append(
            subprocess.Popen(["ip", "netns", "exec", self.namespace, *args], stdout=log, stderr=log)
        )

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start; see {self.root}")
            time.sleep(0.1)

    def _listening(self, port: int) -> bool:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
        return (
            subprocess.run(
                ["ip", "netns", "exec", self.namespace, sys.executable, "-c", probe],
                capture_output=True,
            ).returncode
            == 0
        )

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.namespace], check=True)
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "ip", "link", "set", "lo", "up"], check=True
        )
        self.etc.mkdir(parents=True)
        (self.etc / "resolv.conf").write_text("nameserver 127.77.0.53\n")
        shutil.copytree("/etc/postfix", self.etc / "postfix", symlinks=True)
        (self.etc / "postfix" / "main.cf").write_text(_main_cf(self.root))
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        # No smtpd listener (the lab owns port 25 here) and a postlog service for maillog_file.
        master = master.replace("\nsmtp      inet", "\n#smtp      inet")
        master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
        master += (
            "tlsrpt-out unix -       -       n       -       -       smtp"
            " -o smtp_tls_policy_maps= -o smtp_tls_security_level=may\n"
        )
        (self.etc / "postfix" / "master.cf").write_text(master)
        for folder, owner in (("spool", "root"), ("data", "postfix")):
            (self.root / folder).mkdir()
            shutil.chown(self.root / folder, owner, owner)
        self._spawn(
            self.mtasts,
            "lab",
            "up",
            "--ports",
            "standard",
            "--scenario",
            str(self.scenario),
            "--state-dir",
            str(self.root / "lab"),
        )
        self._wait((self.root / "lab" / "lab.json").exists, "the lab")
        self._spawn(
            self.mtasts,
            "resolver",
            "run",
            "--lab",
            str(self.root / "lab"),
            "--cache",
            str(self.root / "cache.sqlite"),
            "--listen",
            f"socketmap:inet:127.0.0.1:{RESOLVER_PORT}",
        )
        self._wait(lambda: self._listening(RESOLVER_PORT), "the resolver")
        # Postfix's daemons must not chroot: resolv.conf lives at /etc in the namespace.
        self.inside("postconf -F '*/*/chroot = n'")
        started = self.inside("postfix check && postfix start")
        if started.returncode:
            raise RuntimeError(f"postfix did not start: {started.stdout.strip()}")

    def send(self, recipient: str, subject: str | None = None) -> None:
        message = f"Subject: {subject or 'to ' + recipient}\nFrom: alice@sender.example\nTo: {recipient}\n\nhello\n"
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                "sendmail",
                "-f",
                "alice@sender.example",
                recipient,
            ],
            input=message,
            text=True,
            check=True,
            timeout=30,
        )

    def outcome(self, recipient: str, timeout: float = 60) -> str:
        """Postfix's log line with this recipient's delivery status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.maillog().splitlines():
                if f"to=<{recipient}>" in line and "status=" in line:
                    return line
            time.sleep(0.2)
        raise TimeoutError(f"no delivery status for {recipient} within {timeout} s")

    def maillog(self) -> str:
        path = self.root / "maillog"
        return path.read_text() if path.exists() else ""

    def received(self) -> list[dict[str, Any]]:
        """What the lab's MX hosts accepted (with whether it came over TLS)."""
        path = self.root / "lab" / "mail.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self) -> None:
        if self.etc.exists():
            self.inside("postfix stop")
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["ip", "netns", "del", self.namespace], check=False, capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
