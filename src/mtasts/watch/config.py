"""The ``[watch]`` table of ``mtasts.toml``: what is watched, how often, and where alerts go.

Every key has a default, so ``mtasts watch once`` works with nothing but the
``[[domain]]`` tables ``mtasts init`` wrote. A bad value is one line naming the
key and the rule (a :class:`~mtasts.config.ConfigError`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtasts.check.findings import Severity
from mtasts.config import ConfigError, read_toml
from mtasts.sts.domain import as_asked, domain_problem

from .changes import EXPIRY_DAYS
from .events import at_least

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST = 100 * 366 * 86400
CHANNEL_TYPES = ("webhook", "slack", "email")
DIGESTS = ("event", "run", "day")


def duration(value: Any, key: str) -> dt.timedelta:
    """``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` or ``"1w"``."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*([smhdw])\s*", value)
        seconds = float(match[1]) * _UNITS[match[2]] if match else None
    if seconds is None or not 1 <= seconds <= _LONGEST:  # also refuses NaN
        raise ConfigError(
            f"{key}: {value!r} is not a duration (use 30s, 15m, 1h, 2d; from 1 second to 100 years)"
        )
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    type: str  # webhook | slack | email
    min_severity: Severity = Severity.INFO
    domains: tuple[str, ...] = ()  # empty: every domain
    labels: tuple[str, ...] = ()  # empty: every label
    url: str = ""
    secret: str = ""  # webhook HMAC key
    host: str = ""
    port: int = 587
    starttls: bool = True
    tls: bool = False  # implicit TLS (port 465)
    username: str = ""
    password: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    digest: str = "run"  # email: one mail per event, per run or per day
    ca_file: Path | None = None
    timeout: float = 10.0

    def wants(self, severity: Severity, domain: str, label: str) -> bool:
        """Routing by severity, domain and label."""
        if not at_least(severity, self.min_severity):
            return False
        if self.domains and domain not in self.domains:
            return False
        return not self.labels or label in self.labels


@dataclass(frozen=True, slots=True)
class Partner:
    domain: str
    label: str
    where: str


@dataclass(frozen=True, slots=True)
class WatchConfig:
    own: tuple[str, ...] = ()
    partners: tuple[Partner, ...] = ()
    interval: dt.timedelta = dt.timedelta(hours=1)
    partner_interval: dt.timedelta = dt.timedelta(hours=24)
    jitter: float = 0.1
    expiry_days: tuple[int, ...] = EXPIRY_DAYS
    remind: dt.timedelta = dt.timedelta(days=1)
    retry: dt.timedelta = dt.timedelta(minutes=1)  # a failed channel's first wait; doubles
    retention: dt.timedelta = dt.timedelta(days=400)
    spike_factor: float = 3.0
    silent_days: int = 3
    readiness_days: int = 14
    channels: tuple[Channel, ...] = ()
    network: dict[str, Any] = field(default_factory=dict)  # check's options, from [watch]
    metrics: str | None = None  # HOST:PORT for /metrics while `watch run` runs
    problems: tuple[str, ...] = ()  # partner-file lines that were not domains


def read_partners(path: Path, label: str = "") -> tuple[list[Partner], list[str]]:
    """``domain [label]`` per line, ``#`` comments; a bad line is one message, the rest kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"partners file {path}: {exc}") from None
    partners, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{number}"
        name = as_asked(words[0])
        problem = domain_problem(name)
        if problem:
            problems.append(f"{where}: {words[0]!r} is not a domain name: it {problem}")
            continue
        partners.append(Partner(name, " ".join(words[1:]) or label, where))
    return partners, problems


def _secret(raw: dict[str, Any], key: str, where: str, base: Path) -> str:
    """A secret from ``KEY_file`` or ``KEY_env``, never written into the config itself."""
    if raw.get(key):
        raise ConfigError(
            f"{where}: put the {key} in a file ({key}_file) or the environment ({key}_env),"
            " not in mtasts.toml"
        )
    if raw.get(f"{key}_file"):
        path = base / str(raw[f"{key}_file"])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: {key}_file {path}: {exc}") from None
    if raw.get(f"{key}_env"):
        name = str(raw[f"{key}_env"])
        if name not in os.environ:
            raise ConfigError(f"{where}: {key}_env names {name}, which is not set")
        return os.environ[name]
    return ""


def _channel(raw: Any, where: str, base: Path) -> Channel:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a channel is a [[watch.channel]] table")
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        raise ConfigError(f"{where}: type {kind!r}: use one of {', '.join(CHANNEL_TYPES)}")
    name = str(raw.get("name") or kind)
    try:
        severity = Severity(raw.get("min_severity", "info"))
    except ValueError:
        raise ConfigError(f"{where}: min_severity: use info, warning or error") from None
    digest = raw.get("digest", "run")
    if digest not in DIGESTS:
        raise ConfigError(f"{where}: digest {digest!r}: use one of {', '.join(DIGESTS)}")
    channel = Channel(
        name=name,
        type=kind,
        min_severity=severity,
        domains=tuple(as_asked(d) for d in raw.get("domains", [])),
        labels=tuple(str(x) for x in raw.get("labels", [])),
        url=str(raw.get("url", "")),
        secret=_secret(raw, "secret", where, base),
        host=str(raw.get("host", "")),
        port=int(raw.get("port", 465 if raw.get("tls") else 587)),
        starttls=bool(raw.get("starttls", not raw.get("tls", False))),
        tls=bool(raw.get("tls", False)),
        username=str(raw.get("username", "")),
        password=_secret(raw, "password", where, base),
        sender=str(raw.get("from", "")),
        recipients=tuple(str(x) for x in raw.get("to", [])),
        digest=digest,
        ca_file=base / str(raw["ca_file"]) if raw.get("ca_file") else None,
        timeout=float(raw.get("timeout", 10.0)),
    )
    if kind in ("webhook", "slack") and not channel.url.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: url {channel.url!r}: an http(s):// URL is needed")
    if kind == "email" and not (channel.host and channel.sender and channel.recipients):
        raise ConfigError(f"{where}: an email channel needs host, from and to")
    return channel


def load_watch(
    path: Path, own: tuple[str, ...], extra_partners: tuple[Path, ...] = ()
) -> WatchConfig:
    """``[watch]`` from ``path`` (absent: the defaults), for the ``own`` domains configured."""
    raw: dict[str, Any] = read_toml(path).get("watch", {}) if path.exists() else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [watch] must be a table")
    base = path.parent
    where = f"{path} [watch]"
    partners: list[Partner] = []
    problems: list[str] = []
    sources: list[tuple[Path, str]] = [(p, "") for p in extra_partners]
    for item in raw.get("partners", []):
        if isinstance(item, dict):
            sources.append((base / str(item.get("file", "")), str(item.get("label", ""))))
        else:
            sources.append((base / str(item), ""))
    for source, label in sources:
        found, bad = read_partners(source, label)
        partners += found
        problems += bad
    seen = set(own)
    unique = []
    for partner in partners:
        if partner.domain not in seen:
            seen.add(partner.domain)
            unique.append(partner)
    expiry = raw.get("expiry_days", list(EXPIRY_DAYS))
    if not isinstance(expiry, list) or not all(isinstance(d, int) and d > 0 for d in expiry):
        raise ConfigError(f"{where}: expiry_days: a list of positive whole days, like [30, 7, 1]")
    jitter = float(raw.get("jitter", 0.1))
    if not 0 <= jitter < 1:
        raise ConfigError(f"{where}: jitter {jitter}: a fraction of the interval, 0 to below 1")
    channels = tuple(
        _channel(c, f"{path} [[watch.channel]] #{i + 1}", base)
        for i, c in enumerate(raw.get("channel", []))
    )
    names = [c.name for c in channels]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: two channels are named {name!r}")
    network: dict[str, Any] = {
        k: raw[k]
        for k in ("nameserver", "ca_file", "smtp_port", "https_port", "timeout", "lab")
        if k in raw
    }
    for key in ("smtp_port", "https_port"):
        value = network.get(key)
        if key in network and (not isinstance(value, int) or not 1 <= value <= 65535):
            raise ConfigError(f"{where}: {key} {value!r}: a port number, 1 to 65535")
    if "timeout" in network and not (
        isinstance(network["timeout"], int | float) and 0.1 <= network["timeout"] <= 300
    ):
        raise ConfigError(f"{where}: timeout {network['timeout']!r}: seconds, 0.1 to 300")
    names = network.get("nameserver", [])
    if not isinstance(names, str | list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: nameserver: HOST[:PORT] or a list of them")
    for key in ("ca_file", "lab"):
        if key in network:
            if not isinstance(network[key], str):
                raise ConfigError(f"{where}: {key}: a path")
            network[key] = base / network[key]
    return WatchConfig(
        own=own,
        partners=tuple(unique),
        interval=duration(raw.get("interval", "1h"), f"{where} interval"),
        partner_interval=duration(raw.get("partner_interval", "24h"), f"{where} partner_interval"),
        jitter=jitter,
        expiry_days=tuple(sorted(set(expiry), reverse=True)),
        remind=duration(raw.get("remind", "24h"), f"{where} remind"),
        retry=duration(raw.get("retry", "1m"), f"{where} retry"),
        retention=duration(raw.get("retention", "400d"), f"{where} retention"),
        spike_factor=float(raw.get("spike_factor", 3.0)),
        silent_days=int(raw.get("silent_days", 3)),
        readiness_days=int(raw.get("readiness_days", 14)),
        channels=channels,
        network=network,
        metrics=str(raw["metrics"]) if raw.get("metrics") else None,
        problems=tuple(problems),
    )
