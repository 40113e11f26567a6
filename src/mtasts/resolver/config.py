"""The ``[resolver]`` table of ``mtasts.toml``; every value can be overridden by a flag."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mtasts.config import ConfigError, read_toml
from mtasts.net.dns import Nameserver

from .postfix import TestingAnswer
from .server import Listen


@dataclass(frozen=True)
class ResolverConfig:
    listen: tuple[Listen, ...] = (Listen("socketmap", "inet", "127.0.0.1", 8461),)
    cache: str | None = (
        "/var/lib/mtasts/resolver-cache.sqlite"  # a SQLite path or a postgresql:// URL
    )
    # Where each change of an answer is kept for `mtasts tlsrpt collect --log`: a SQLite path,
    # "off", or None for the cache's own SQLite file (none when the cache is PostgreSQL).
    answers: str | None = None
    nameservers: tuple[Nameserver, ...] = ()
    ca_file: Path | None = None
    https_port: int = 443
    timeout: float = 10.0
    request_timeout: float = 5.0
    grace: float = 60.0
    testing: TestingAnswer = TestingAnswer.NONE
    tlsrpt_attributes: bool = False
    relays: dict[str, str] = field(default_factory=dict)
    refresh_check: float = 600.0
    metrics: str | None = None  # HOST:PORT for Prometheus
    # Trust the AD bit (DNSSEC-validated TLSA, so answer dane) from: "loopback" resolvers
    # only (RFC 7672 §2: a validating resolver on this host), "always" or "never".
    dane_trust_ad: str = "loopback"
    max_domains: int = 100_000  # per-domain state kept in memory
    # Processes answering on the same listeners and sharing the cache (resolver/workers.py):
    # more than one needs a cache they can share, a SQLite file or PostgreSQL.
    workers: int = 1
    # Unix listeners: created with this mode (never world-writable by default), then
    # given to this owner and group (Postfix's smtp runs as the postfix user).
    socket_mode: int = 0o660
    socket_owner: str | None = None
    socket_group: str | None = None
    # [resolver.zones.NAME]: what differs for Postfix maps named NAME (socketmap:...:NAME).
    zones: dict[str, dict[str, Any]] = field(default_factory=dict)

    def answers_path(self) -> Path | None:
        """Where the answer log lives: ``answers``, else the SQLite cache's own file."""
        if self.answers == "off":
            return None
        if self.answers:
            return Path(self.answers)
        if self.cache and not self.cache.startswith(("postgresql://", "postgres://")):
            return Path(self.cache)
        return None

    def merged(self, **overrides: Any) -> ResolverConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and v != ()})

    def check(self) -> ResolverConfig:
        """Raise ConfigError for settings that are each valid but not together."""
        if self.workers > 1 and self.cache is None:
            raise ConfigError(
                f"workers = {self.workers} needs a cache the workers share (a SQLite file or"
                " postgresql:// URL), not :memory:, or each would fetch every policy itself"
            )
        return self


def _convert(key: str, value: Any, where: str) -> Any:
    try:
        if key == "listen":
            return tuple(Listen.parse(v) for v in value)
        if key == "nameservers":
            return tuple(Nameserver.parse(v) for v in value)
        if key == "cache":
            return str(value) if value and value != ":memory:" else None
        if key == "answers":
            if not isinstance(value, str) or not value:
                raise ValueError('must be a SQLite file path or "off"')
            return value
        if key == "ca_file":
            return Path(value) if value else None
        if key == "testing":
            return TestingAnswer(value)
        if key in ("https_port",):
            return int(value)
        if key in ("timeout", "request_timeout", "grace", "refresh_check"):
            return float(value)
        if key == "tlsrpt_attributes":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if key == "relays":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError('must be a table of NEXTHOP = "policy domain"')
            return {k.lower(): v.lower() for k, v in value.items()}
        if key == "metrics":
            return str(value)
        if key == "dane_trust_ad":
            if value not in ("loopback", "always", "never"):
                raise ValueError("must be loopback, always or never")
            return value
        if key == "max_domains":
            if not isinstance(value, int) or value < 1:
                raise ValueError("must be a whole number of at least 1")
            return value
        if key == "workers":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
                raise ValueError("must be a whole number from 1 to 64")
            return value
        if key == "socket_mode":
            mode = int(value, 8) if isinstance(value, str) else int(value)
            if not 0 <= mode <= 0o777:
                raise ValueError("must be an octal mode such as 0660")
            return mode
        if key in ("socket_owner", "socket_group"):
            return str(value)
        if key == "zones":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ValueError("must be tables: [resolver.zones.NAME]")
            return {
                name: {k: _convert_zone(k, v, f"{where} zones.{name}") for k, v in table.items()}
                for name, table in value.items()
            }
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key} = {value!r}: {exc}") from None
    raise ConfigError(f"{where}: unknown key {key!r}")


_ZONE_KEYS = ("testing", "tlsrpt_attributes", "request_timeout")


def _convert_zone(key: str, value: Any, where: str) -> Any:
    if key not in _ZONE_KEYS:
        raise ConfigError(f"{where}: {key!r} cannot be set per zone (only {', '.join(_ZONE_KEYS)})")
    return _convert(key, value, where)


def load(path: Path) -> ResolverConfig:
    raw = read_toml(path)
    table = raw.get("resolver", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [resolver] must be a table")
    known = {f.name for f in fields(ResolverConfig)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(
                f"{path}: [resolver] unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
        values[key] = _convert(key, value, f"{path} [resolver]")
    return ResolverConfig(**values)
