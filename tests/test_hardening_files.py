"""The security review's file and secret findings (#23-#28), through the CLI."""

from __future__ import annotations

import mailbox
import os
import stat
import subprocess
from pathlib import Path

from mtasts.reports.store import open_store

from .conftest import MTASTS, RunningLab
from .test_reports_ingest import report, report_mail


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _mtasts(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MTASTS_DB", "MTASTS_DB_FILE")}
    return subprocess.run(
        [MTASTS, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**clean, "NO_COLOR": "1", "XDG_DATA_HOME": str(cwd / "data"), **env},
    )


def test_the_report_store_and_its_folder_are_private(tmp_path: Path) -> None:
    """#25: the default store was 0644 in a 0755 folder, whatever it holds."""
    (tmp_path / "r.json").write_bytes(report("private"))
    old = os.umask(0o022)
    try:
        done = _mtasts("reports", "ingest", str(tmp_path / "r.json"), cwd=tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "data" / "mtasts"
    assert _mode(folder) == 0o700
    assert _mode(folder / "reports.sqlite") == 0o600


def test_a_maildir_symlink_is_not_followed_and_a_huge_message_is_set_aside(tmp_path: Path) -> None:
    """#23, #29: a link in new/ copied any readable file into the store; any size was read."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"report-id": "stolen", "api-key": "hunter2"}')
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(report_mail(report("real")))
    (tmp_path / "Maildir" / "new" / "1.link").symlink_to(secret)
    (tmp_path / "Maildir" / "new" / "2.huge").write_bytes(b"x" * (3 << 20))
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    done = _mtasts(
        "reports",
        "ingest",
        "--maildir",
        str(tmp_path / "Maildir"),
        "--max-report-size",
        "1M",
        "--db",
        db,
        cwd=tmp_path,
    )
    assert "1.link: a symbolic link, not followed" in done.stdout
    assert "2.huge: 3,145,728 bytes, over the" in done.stdout
    store = open_store(db)
    assert store.counts() == {"reports": 1, "raw": 1, "quarantined": 0}
    assert all(b"hunter2" not in data for _, data, _ in store.quarantined_raw())
    assert (tmp_path / "Maildir" / ".Failed" / "new" / "2.huge").exists()
    assert (tmp_path / "Maildir" / "new" / "1.link").is_symlink()  # left alone


def test_a_planted_link_cannot_redirect_the_state_file(tmp_path: Path) -> None:
    """#24: the state file went through a fixed ``.state.tmp``; a symlink there was written through."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (tmp_path / "mtasts.state.tmp").symlink_to(target)
    assert _mtasts("init", "example.com", "--mx", "mx.example.com", cwd=tmp_path).returncode == 0
    done = _mtasts("records", "example.com", cwd=tmp_path)  # gives the policy its id: saves state
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "precious\n"
    state = tmp_path / "mtasts.state.json"
    assert state.is_file()
    assert not state.is_symlink()
    assert '"example.com"' in state.read_text()


def test_database_passwords_are_never_printed(tmp_path: Path) -> None:
    """#26: the report store's URL was echoed with its password on any error."""
    (tmp_path / "x.json").write_bytes(report("x"))
    url = "postgresql://mtasts:S3cretPassw0rd@127.0.0.1:1/reports"
    for args, env in ((("--db", url), {}), ((), {"MTASTS_DB": url})):
        done = _mtasts("reports", "ingest", *args, str(tmp_path / "x.json"), cwd=tmp_path, **env)
        assert done.returncode == 2
        assert "S3cretPassw0rd" not in done.stdout + done.stderr
        assert "postgresql://mtasts:***@127.0.0.1:1/reports" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    (tmp_path / "db-url").write_text(url + "\n")
    from_file = _mtasts(
        "reports",
        "ingest",
        str(tmp_path / "x.json"),
        cwd=tmp_path,
        MTASTS_DB_FILE=str(tmp_path / "db-url"),
    )
    assert "postgresql://mtasts:***@127.0.0.1:1/reports" in from_file.stderr
    cache = _mtasts(
        "resolver", "run", "--cache", url, "--listen", "socketmap:inet:127.0.0.1:1", cwd=tmp_path
    )
    assert cache.returncode == 2
    assert "Traceback" not in cache.stderr
    assert "S3cretPassw0rd" not in cache.stderr


def test_secrets_stay_out_of_reprs() -> None:
    """#28: a traceback with locals or a debug line showed the IMAP password and TSIG secret."""
    from mtasts.deploy.publish import PublishTarget
    from mtasts.net.dns import Nameserver
    from mtasts.reports.imap import ImapSource

    source = ImapSource("imap.example", 993, "u", "INBOX", True, "hunter2")
    target = PublishTarget(Nameserver("127.0.0.1"), "example.com", "key", "c2VjcmV0LXRzaWc=")
    assert "hunter2" not in repr(source)
    assert "c2VjcmV0LXRzaWc=" not in repr(target)


def test_keys_and_caches_are_private(lab: RunningLab, tmp_path: Path) -> None:
    """#25: the lab's private keys and the resolver's policy cache took the umask's 0644."""
    assert _mode(lab.state_dir / "certs" / "leaf.key") == 0o600
    assert all(_mode(key) == 0o600 for key in (lab.state_dir / "dkim").glob("*.key"))
    from .test_resolver import start_daemon

    old = os.umask(0o022)
    try:
        daemon = start_daemon(
            tmp_path, "--lab", str(lab.state_dir), "--cache", str(tmp_path / "cache" / "c.sqlite")
        )
        daemon.stop()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "cache") == 0o700
    assert _mode(tmp_path / "cache" / "c.sqlite") == 0o600
