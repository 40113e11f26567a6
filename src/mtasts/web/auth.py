"""Who may read the dashboard: a password file with argon2id hashes, server-side sessions,
CSRF tokens, and a login rate limit; or a user header set by a trusted reverse proxy.

The password file has one ``user:hash`` per line (``mtasts web passwd USER`` writes it,
0600). Sessions live in this process's memory (a random 256-bit token in a cookie that is
HttpOnly, SameSite=Strict and Secure unless the dashboard is on loopback over plain HTTP),
so a restart logs everyone out and nothing secret is ever stored in the cookie itself.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mtasts.errors import MtastsError
from mtasts.files import private_file, write_atomic

SESSION_COOKIE = "mtasts_session"
SESSION_SECONDS = 12 * 3600
_MAX_SESSIONS = 10_000
_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106) defaults
# A hash to verify against when the user does not exist, so both cases take the same time.
_DUMMY = _HASHER.hash(secrets.token_hex(16))


class AuthError(MtastsError):
    """The password file cannot be read or written; the message names it and why."""


def read_passwords(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(f"password file {path}: {exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith("$argon2"):
            raise AuthError(f"{path}:{number}: not 'user:argon2-hash' (use mtasts web passwd)")
        users[user] = hashed
    return users


def set_password(path: Path, user: str, password: str) -> None:
    if not user or ":" in user or any(c.isspace() for c in user):
        raise AuthError(f"user name {user!r}: no colon or white space, not empty")
    if len(password) < 12:
        raise AuthError("the password needs at least 12 characters")
    users = read_passwords(path) if path.exists() else {}
    users[user] = _HASHER.hash(password)
    private_file(path)
    write_atomic(path, "".join(f"{u}:{h}\n" for u, h in sorted(users.items())).encode(), 0o600)


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Logged-in sessions, and the failed logins that slow the next attempt."""

    passwords: dict[str, str]
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def check(self, user: str, password: str) -> bool:
        hashed = self.passwords.get(user)
        try:
            _HASHER.verify(hashed or _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return hashed is not None

    def delay(self, client: str, now: float | None = None) -> float:
        """Seconds a login from ``client`` must wait: doubling after the 3rd failure in 15 min."""
        now = time.monotonic() if now is None else now
        recent = self.failures.get(client, deque())
        while recent and now - recent[0] > 900:
            recent.popleft()
        if len(recent) < 3:
            return 0.0
        return float(min(2 ** (len(recent) - 3), 60))

    def failed(self, client: str, now: float | None = None) -> None:
        recent = self.failures.setdefault(client, deque(maxlen=64))
        recent.append(time.monotonic() if now is None else now)

    def start(self, user: str) -> tuple[str, Session]:
        if len(self.sessions) >= _MAX_SESSIONS:  # clients that never keep a cookie
            now = time.monotonic()
            for old in [t for t, s in self.sessions.items() if s.expires < now]:
                del self.sessions[old]
            while len(self.sessions) >= _MAX_SESSIONS:
                del self.sessions[next(iter(self.sessions))]  # the oldest
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS)
        self.sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self.sessions.get(token)
        if session is None or session.expires < time.monotonic():
            self.sessions.pop(token, None)
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self.sessions.pop(token, None)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``passwords``: built-in login; ``user_header`` set only by ``trusted_proxies``."""

    password_file: Path | None = None
    user_header: str | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.password_file is not None or self.user_header is not None

    def trusts(self, address: str | None) -> bool:
        if address is None or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
