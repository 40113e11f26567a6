"""The listening sockets of the resolver, bound before any worker starts.

Bound synchronously, before an event loop or a worker process exists, so a port in
use or a bad path is one error at start and every worker is handed sockets that
already accept. An inet listener with ``reuse_port`` gets SO_REUSEPORT, so several
workers can each bind one to the same port and the kernel spreads connections over
them; a Unix socket is one socket all workers accept on.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
from dataclasses import dataclass
from pathlib import Path

from .server import Listen

_BACKLOG = 1024  # Postfix opens a connection per smtp process: many may arrive at once


@dataclass(frozen=True, slots=True)
class UnixAccess:
    """Who may use a Unix listener: its mode at creation, then its owner and group."""

    mode: int = 0o660
    owner: str | None = None
    group: str | None = None


def bind(listen: Listen, access: UnixAccess, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening, non-blocking sockets for ``listen`` (one per address a host name has)."""
    if listen.family == "unix":
        return [_bind_unix(Path(listen.address), access)]
    found = socket.getaddrinfo(
        listen.address, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_unix(path: Path, access: UnixAccess) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # an old socket, or a planted link: unlink never follows it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The mode is set by the umask at bind(2), so there is no moment when the socket is
    # wider open, and no chmod by path that a swapped symlink could redirect.
    previous = os.umask(0o777 & ~access.mode)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    if access.owner or access.group:
        uid = pwd.getpwnam(access.owner).pw_uid if access.owner else -1
        gid = grp.getgrnam(access.group).gr_gid if access.group else -1
        os.chown(path, uid, gid, follow_symlinks=False)
    return sock
