"""Shared fixtures: a real lab process on loopback, started the way a user starts it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

MTASTS = shutil.which("mtasts", path=str(Path(sys.executable).parent)) or "mtasts"
_BLOCK = 64  # ports one run of the suite uses, at fixed offsets from its base


def _bindable(port: int) -> bool:
    import socket

    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _port_base() -> int:
    """The first port of this run's block: two suites on one machine never share one.

    Chosen from the process id among blocks below the ephemeral range (32768+), and
    taken only when every port of it is free on 127.0.0.1; MTASTS_TEST_PORT_BASE pins it.
    """
    import random

    if os.environ.get("MTASTS_TEST_PORT_BASE"):
        return int(os.environ["MTASTS_TEST_PORT_BASE"])
    rng = random.Random(os.getpid())
    for _ in range(100):
        base = rng.randrange(12000, 32768 - _BLOCK, _BLOCK)
        if all(_bindable(base + offset) for offset in range(_BLOCK)):
            return base
    raise RuntimeError("no free block of loopback ports for the test servers")


PORT_BASE = _port_base()
KNOT_PORT = PORT_BASE + 4
IMAP_PORT = PORT_BASE + 7


def _port(offset: int) -> int:
    return port(offset)  # inside fixtures whose local variable is named port


def port(offset: int) -> int:
    """This run's port number ``offset`` (each fixture and test module has its own offsets)."""
    assert 0 <= offset < _BLOCK
    return PORT_BASE + offset


LAB_PORTS = {"dns": port(0), "https": port(1), "smtp": port(2)}


class RunningLab:
    def __init__(self, state_dir: Path, process: subprocess.Popen[bytes]) -> None:
        self.state_dir = state_dir
        self.process = process
        self.state: dict[str, Any] = json.loads((state_dir / "lab.json").read_text())
        self.ca_file = self.state["ca_file"]
        self.dns_address = self.state["dns"]["address"]
        self.https_address = self.state["https"]["address"]

    def domain(self, name: str) -> dict[str, Any]:
        return next(d for d in self.state["domains"] if d["name"] == name)

    def mx_address(self, domain: str, index: int = 0) -> str:
        address: str = self.domain(domain)["mx"][index]["address"]
        return address


def start_lab(state_dir: Path, subnet: str, *extra: str) -> RunningLab:
    ports = [f"--{k}-port={v}" for k, v in LAB_PORTS.items()]
    state_dir.mkdir(parents=True, exist_ok=True)
    # A file, not a pipe: nobody reads a pipe while the tests run, and a lab that logs a
    # line too many would block on its full stderr and freeze every endpoint with it.
    output = (state_dir / "lab.out").open("wb")
    process = subprocess.Popen(
        [
            MTASTS,
            "lab",
            "up",
            "--state-dir",
            str(state_dir),
            "--subnet",
            subnet,
            *ports,
            "--no-reports",
            *extra,
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output.close()  # the child has its own copy
    deadline = time.monotonic() + 60
    while not (state_dir / "lab.json").exists():
        if process.poll() is not None:
            raise RuntimeError(f"lab exited: {(state_dir / 'lab.out').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("lab did not start in 60 s")
        time.sleep(0.05)
    return RunningLab(state_dir, process)


def stop_lab(lab: RunningLab) -> None:
    lab.process.send_signal(signal.SIGTERM)
    try:
        lab.process.wait(10)
    except subprocess.TimeoutExpired:
        lab.process.kill()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = start_lab(tmp_path_factory.mktemp("lab"), "127.78")
    yield running
    stop_lab(running)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it from Debian)")
    return path


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], why_not: Callable[[], str] | None = None
) -> None:
    """Return once 127.0.0.1:PORT accepts a connection; fail with the process's story if it died."""
    import socket

    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                story = (
                    why_not()
                    if why_not
                    else (process.stderr.read().decode() if process.stderr else "")
                )
                raise RuntimeError(story or f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1, started for this session and removed after."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    import pwd
    import tempfile

    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' user to run the cluster as")
    folder = Path(tempfile.mkdtemp(prefix="mtasts-pg-"))
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", _port(3)

    def as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120
        )

    initialised = as_postgres(
        str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"
    )
    assert initialised.returncode == 0, initialised.stderr
    started = as_postgres(
        str(binaries / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "log"),
        "-w",
        "start",
        "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
    )
    assert started.returncode == 0, started.stderr + (folder / "log").read_text()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def cache_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "cache.sqlite")
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS mtasts_resolver_policies")


@pytest.fixture(scope="session")
def knot() -> Iterator[dict[str, object]]:
    """Knot DNS, authoritative for example.com on 127.0.0.1 (this run's port), accepting TSIG updates."""
    if shutil.which("knotd") is None:
        pytest.skip("knotd is not installed (.ci/run installs Debian's knot)")
    import base64
    import secrets
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mtasts-knot-"))
    (folder / "db").mkdir()  # Knot's journal; an update fails with "not exists" without it
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = KNOT_PORT
    (folder / "example.com.zone").write_text(
        "$ORIGIN example.com.\n$TTL 300\n"
        "@ SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60\n"
        "@ NS ns.example.com.\nns A 127.0.0.1\n"
        '_mta-sts TXT "v=STSv1; id=old1;"\n_mta-sts TXT "v=STSv1; id=old2;"\n'
        # For the stub resolver: a CNAME chain, split TXT strings, and an answer too big for UDP.
        "@ MX 20 mx2\n@ MX 10 mx1\nmx1 CNAME edge\nedge CNAME host.example.net.\n"
        '_smtp._tls TXT "v=TLSRPTv1; " "rua=mailto:tlsrpt@example.com"\n'
        + "".join(f"many A 192.0.2.{n}\n" for n in range(1, 121))
    )
    (folder / "knot.conf").write_text(f"""server:
    listen: 127.0.0.1@{port}
    rundir: {folder}
log:
  - target: stderr
    any: warning
key:
  - id: mtasts-update
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: update
    key: mtasts-update
    action: update
database:
    storage: {folder}/db
zone:
  - domain: example.com
    storage: {folder}
    file: example.com.zone
    acl: update
""")
    process = subprocess.Popen(
        ["knotd", "-c", str(folder / "knot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(port, process)
    try:
        yield {
            "server": f"127.0.0.1:{port}",
            "secret": secret,
            "key": "mtasts-update",
            "folder": folder,
        }
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


DANE_ZONE = """$ORIGIN dane.example.
$TTL 300
@ SOA ns.dane.example. hostmaster.dane.example. 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
full MX 10 mx1
full MX 20 mx2
partial MX 10 mx1
partial MX 20 mx3
_mta-sts.full TXT "v=STSv1; id=20260101T000000;"
_mta-sts.partial TXT "v=STSv1; id=20260101T000000;"
mx1 A 127.0.0.81
mx2 A 127.0.0.82
mx3 A 127.0.0.83
_25._tcp.mx1 TLSA 3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6
_25._tcp.mx2 TLSA 3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6
"""


@pytest.fixture(scope="session")
def validating_resolver() -> Iterator[dict[str, object]]:
    """Unbound on 127.0.0.1, validating DNSSEC for dane.example, which a private Knot signs;
    every other name goes to that Knot too (and is refused), so nothing leaves."""
    if shutil.which("knotd") is None or shutil.which("unbound") is None:
        pytest.skip(
            "knotd and unbound are not installed (.ci/run installs Debian's knot and unbound)"
        )
    import tempfile

    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    folder = Path(tempfile.mkdtemp(prefix="mtasts-dnssec-"))
    os.chmod(folder, 0o755)
    (folder / "db").mkdir()
    (folder / "dane.example.zone").write_text(DANE_ZONE)
    knot_port, unbound_port = port(5), port(6)
    (folder / "knot.conf").write_text(f"""server:
    listen: 127.0.0.1@{knot_port}
    rundir: {folder}
log:
  - target: stderr
    any: warning
database:
    storage: {folder}/db
zone:
  - domain: dane.example
    storage: {folder}
    file: dane.example.zone
    dnssec-signing: on
""")
    processes = [
        subprocess.Popen(
            ["knotd", "-c", str(folder / "knot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    ]
    try:
        wait_for_port(knot_port, processes[0])
        # Knot signs on load; the key-signing key is the trust anchor Unbound starts from.
        deadline = time.monotonic() + 20
        while True:
            query = dns.message.make_query("dane.example", "DNSKEY", want_dnssec=True)
            answer = dns.query.udp(query, "127.0.0.1", port=knot_port, timeout=2)
            keys = [rr for rr in answer.answer if rr.rdtype == dns.rdatatype.DNSKEY]
            if keys or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert keys, "Knot did not sign dane.example"
        ksk = [
            f"dane.example. 300 IN DNSKEY {key.to_text()}" for key in keys[0] if key.flags == 257
        ]
        (folder / "anchor.key").write_text("\n".join(ksk) + "\n")
        (folder / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1
  port: {unbound_port}
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{folder}"
  pidfile: "{folder}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor-file: "{folder}/anchor.key"
  val-permissive-mode: no
remote-control:
  control-enable: no
stub-zone:
  name: "dane.example"
  stub-addr: 127.0.0.1@{knot_port}
stub-zone:
  name: "."
  stub-addr: 127.0.0.1@{knot_port}
""")
        processes.append(
            subprocess.Popen(
                ["unbound", "-d", "-c", str(folder / "unbound.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        deadline = time.monotonic() + 20
        while True:  # Unbound has no TCP-less readiness signal: ask until it answers
            try:
                dns.query.udp(
                    dns.message.make_query("dane.example", "SOA"),
                    "127.0.0.1",
                    port=unbound_port,
                    timeout=1,
                )
                break
            except (dns.exception.Timeout, OSError):
                if processes[1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        processes[1].stderr.read().decode()
                        if processes[1].stderr
                        else "unbound died"
                    ) from None
        yield {"nameserver": f"127.0.0.1:{unbound_port}", "authoritative": f"127.0.0.1:{knot_port}"}
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


OAUTH_TOKEN = "ya29.mtasts-test-token"


def _token_introspection(port: int) -> Any:
    """RFC 7662 token introspection, as Google or Microsoft would answer Dovecot's oauth2 passdb:
    OAUTH_TOKEN is an active token for the user tlsrpt, anything else is not."""
    import http.server
    import threading
    from urllib.parse import parse_qs

    class Introspect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            token = parse_qs(body).get("token", [""])[0]
            answer = (
                {"active": "true", "username": "tlsrpt"}
                if token == OAUTH_TOKEN
                else {"active": "false"}
            )
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Introspect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _imap_certificate(folder: Path) -> None:
    """ca.pem, and cert.pem/key.pem for 127.0.0.1 signed by it: STARTTLS and imaps get verified."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtasts test IMAP CA")])
    ca = build("mtasts test IMAP CA", ca_key, ca_name, ca_key, True)
    leaf = build("127.0.0.1", leaf_key, ca_name, ca_key, False)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="session")
def dovecot() -> Iterator[dict[str, object]]:
    """A private Dovecot IMAP server on 127.0.0.1 (IMAP_PORT) with one user, removed afterwards."""
    if shutil.which("dovecot") is None:
        pytest.skip("dovecot is not installed (.ci/run installs Debian's dovecot-imapd)")
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mtasts-dovecot-"))
    os.chmod(folder, 0o755)
    for sub in ("home", "run", "state"):
        (folder / sub).mkdir()
    shutil.chown(folder / "home", "nobody", "nogroup")
    # tlsrpt receives reports; alerts receives what `mtasts watch` mails through Postfix.
    (folder / "passwd").write_text("tlsrpt:{PLAIN}imap-secret-1\nalerts:{PLAIN}alerts-secret-2\n")
    _imap_certificate(folder)
    port, tls_port, introspection = IMAP_PORT, _port(8), _token_introspection(_port(9))
    auth_port = _port(42)  # Dovecot's SASL service, for the Postfix submission fixture
    (folder / "oauth2.conf.ext").write_text(
        f"introspection_url = http://127.0.0.1:{introspection.server_port}/introspect\n"
        "introspection_mode = post\nusername_attribute = username\n"
        "active_attribute = active\nactive_value = true\nforce_introspection = yes\n"
    )
    (folder / "dovecot.conf").write_text(f"""base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
passdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2
  args = {folder}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={folder}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
default_login_user = nobody
default_internal_user = nobody
""")
    process = subprocess.Popen(
        ["dovecot", "-c", str(folder / "dovecot.conf"), "-F"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = folder / "log"
    wait_for_port(
        port, process, lambda: log.read_text() if log.exists() else "dovecot did not start"
    )
    try:
        yield {
            "host": "127.0.0.1",
            "port": port,
            "tls_port": tls_port,
            "user": "tlsrpt",
            "password": "imap-secret-1",
            "ca_file": folder / "ca.pem",
            "token": OAUTH_TOKEN,
            "home": folder / "home",
            "auth_port": auth_port,
            "folder": folder,
        }
    finally:
        introspection.shutdown()
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _drop_all() -> str:
    """Every table of the report store's schema (reports, watch, reporter), for cleanup."""
    from mtasts.reporter import models as _reporter  # noqa: F401  (their tables join Base)
    from mtasts.reports.models import Base
    from mtasts.scan import models as _scan  # noqa: F401
    from mtasts.watch import models as _watch  # noqa: F401

    names = ", ".join(sorted(Base.metadata.tables))
    return f"DROP TABLE IF EXISTS {names}, alembic_version CASCADE"


DROP_ALL = _drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reports.sqlite'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DROP_ALL)


@pytest.fixture(scope="session")
def submission(dovecot: dict[str, object]) -> Iterator[dict[str, object]]:
    """A private Postfix on 127.0.0.1: SMTP submission with STARTTLS and SASL (Dovecot's),
    delivering every message for @watch.test into Dovecot's mailbox of user ``alerts``."""
    if shutil.which("postfix") is None:
        pytest.skip("postfix is not installed (.ci/run installs Debian's postfix)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mtasts-submission-"))
    os.chmod(root, 0o755)
    conf, spool, data = root / "conf", root / "spool", root / "data"
    for folder in (conf, spool, data):
        folder.mkdir()
    shutil.chown(data, "postfix", "postfix")
    tls = Path(str(dovecot["folder"]))
    listen = _port(43)
    nobody = pwd.getpwnam("nobody")
    (conf / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.watch.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
virtual_mailbox_domains = watch.test
virtual_mailbox_base = {dovecot["home"]}
virtual_mailbox_maps = static:alerts/Maildir/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
smtpd_tls_cert_file = {tls / "cert.pem"}
smtpd_tls_key_file = {tls / "key.pem"}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{dovecot["auth_port"]}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
""")
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    master = master.replace("\nsmtp      inet", "\n#smtp      inet")
    master += f"\n127.0.0.1:{listen} inet n - n - - smtpd\n"
    master += "postlog   unix-dgram n  -       n       -       1       postlogd\n"
    (conf / "master.cf").write_text(master)

    def postfix(action: str) -> subprocess.CompletedProcess[str]:
        # script(1) gives Postfix a terminal, so its errors reach us instead of syslog.
        return subprocess.run(
            ["script", "-qec", f"postfix -c {conf} {action}", "/dev/null"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    started = postfix("start")
    if started.returncode:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"postfix did not start: {started.stdout.strip()}")
    try:
        deadline = time.monotonic() + 30
        while not _listening(listen):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix submission did not listen; see {root}/maillog")
            time.sleep(0.1)
        yield {
            "host": "127.0.0.1",
            "port": listen,
            "user": "alerts",
            "password": "alerts-secret-2",
            "ca_file": tls / "ca.pem",
            "maillog": root / "maillog",
        }
    finally:
        postfix("stop")
        shutil.rmtree(root, ignore_errors=True)


def _listening(listen_port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", listen_port)) == 0
