"""Files mtasts writes: private by default, replaced atomically, never through a planted link.

The report store holds partners' addresses and infrastructure names, the lab's key is a
key: they are created 0600 in 0700 folders whatever the umask (security review #25).
State and configuration files are rewritten through a fresh temporary file (``mkstemp``:
O_EXCL, mode 0600) and one rename(2), so a crash leaves the old or the new file, never a
half, and a symlink planted at a fixed temporary name cannot redirect the write (#24).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def masked(url: str, text: str | None = None) -> str:
    """``text`` (default: ``url`` itself) with the password of database URL ``url`` hidden.

    Errors, logs and the journal are read by more people than the database (review #26).
    """
    text = url if text is None else text
    match = _PASSWORD.search(url)
    if match and match.group(1):
        text = text.replace(f":{match.group(1)}@", ":***@")
    return text


_PASSWORD = re.compile(r"^[a-z0-9+]+://[^:/@]*:([^@]*)@", re.IGNORECASE)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (a ``.lock`` file beside it) for a read-change-write.

    Six ``mtasts max-age`` at once used to lose updates: each read the file, changed its
    line and wrote it back over the others'. flock(2) is released when the process dies.
    """
    lock = path.with_name(f".{path.name}.lock")
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def private_dir(path: Path) -> Path:
    """``path`` and its missing parents, created 0700 (an existing folder keeps its mode)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 unless it exists; a symlink there is refused."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(descriptor)
    return path


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` in one rename; ``mode`` defaults to the old file's, else 0600."""
    if mode is None:
        try:
            mode = os.lstat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # replaces a symlink at path itself, never its target
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
