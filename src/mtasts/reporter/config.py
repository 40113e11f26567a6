"""The ``[tlsrpt]`` table of ``mtasts.toml``: who reports, how reports travel, where sessions
come from. Secrets (the relay's password) only by ``*_file`` or ``*_env``."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mtasts.config import ConfigError, read_toml
from mtasts.watch.config import _secret, duration

_ADDRESS = re.compile(r"[^@\s<>]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+\Z")
_KEYS: dict[str, type | tuple[type, ...]] = {
    "organization": str,
    "contact": str,
    "submitter": str,
    "sender": str,
    "dkim_key": str,
    "dkim_domain": str,
    "dkim_selector": str,
    "relay": str,
    "relay_username": str,
    "relay_starttls": bool,
    "relay_tls": bool,
    "sendmail": str,
    "ca_file": str,
    "socket": str,
    "socket_owner": str,
    "socket_group": str,
    "socket_mode": int,
    "keep_malformed": str,
    "log": str,
    "answers": str,
    "skip_services": list,
    "max_delay": (str, int),
    "retry": (str, int),
    "retry_for": (str, int),
    "suppress_after": int,
    "suppress_for": (str, int),
    "timeout": (int, float),
    "nameserver": (str, list),
    "confirm": bool,
    "smtp_port": int,
}


@dataclass(frozen=True)
class TlsrptConfig:
    organization: str = ""  # the report's organization-name (RFC 8460 §4.4)
    contact: str = ""  # contact-info: an e-mail address or URI
    submitter: str = ""  # TLS-Report-Submitter; default: the contact's domain
    sender: str = ""  # the From of report mail; default: noreply-tlsrpt@<submitter>
    dkim_key: Path | None = None
    dkim_domain: str = ""  # default: the submitter
    dkim_selector: str = "tlsrpt"
    relay: str = ""  # HOST:PORT of an SMTP submission server
    relay_username: str = ""
    relay_password: str = ""
    relay_starttls: bool = True
    relay_tls: bool = False
    sendmail: str = ""  # a sendmail(1) program instead of a relay
    ca_file: Path | None = None  # trust for the relay and https rua endpoints
    socket: Path = Path("/run/mtasts/tlsrpt.sock")
    socket_owner: str | None = None
    socket_group: str | None = None
    socket_mode: int = 0o660
    keep_malformed: Path | None = None
    log: Path | None = None
    answers: Path | None = None
    skip_services: tuple[str, ...] = ()
    max_delay: dt.timedelta = dt.timedelta(hours=4)
    retry: dt.timedelta = dt.timedelta(minutes=10)
    retry_for: dt.timedelta = dt.timedelta(hours=24)
    suppress_after: int = 5
    suppress_for: dt.timedelta = dt.timedelta(hours=24)
    timeout: float = 30.0
    nameservers: tuple[str, ...] = ()
    confirm: bool = True  # probe an MX whose name Postfix did not check (testing policies)
    smtp_port: int = 25
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def submitter_name(self) -> str:
        if self.submitter:
            return self.submitter
        return self.contact.rpartition("@")[2].split("?")[0].strip("> ").lower()

    @property
    def from_address(self) -> str:
        return self.sender or f"noreply-tlsrpt@{self.submitter_name}"

    def merged(self, **overrides: Any) -> TlsrptConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and v != ()})

    def missing_for_send(self) -> list[str]:
        """What ``send`` cannot go without, in one line each."""
        out = []
        if not self.organization:
            out.append("[tlsrpt] organization is not set (the report's organization-name)")
        if not self.contact:
            out.append("[tlsrpt] contact is not set (the report's contact-info)")
        elif not self.submitter_name or "." not in self.submitter_name:
            out.append("[tlsrpt] submitter is not set and cannot be taken from contact")
        return out


def _port(value: str, key: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT")


def load_tlsrpt(path: Path) -> TlsrptConfig:
    """``[tlsrpt]`` of ``path`` (defaults when the file or the table is absent)."""
    raw: dict[str, Any] = read_toml(path).get("tlsrpt", {}) if path.exists() else {}
    where = f"{path} [tlsrpt]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    base = path.parent
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key.endswith(("_file", "_env")) and key.startswith("relay_password"):
            continue
        if key == "relay_password":
            _secret(raw, "relay_password", where, base)  # raises: secrets never in the file
        kind = _KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"{where}: {key} {value!r} has the wrong type")
        values[key] = value
    out: dict[str, Any] = {}
    for key in ("organization", "contact", "submitter", "dkim_domain", "dkim_selector"):
        if key in values:
            out[key] = str(values[key]).strip()
    for key in ("sender",):
        if key in values:
            if not _ADDRESS.match(values[key]):
                raise ConfigError(f"{where}: sender {values[key]!r} is not an e-mail address")
            out[key] = values[key]
    if "relay" in values:
        _port(values["relay"], f"{where} relay")
        out["relay"] = values["relay"]
    for key in ("relay_username", "sendmail", "socket_owner", "socket_group"):
        if key in values:
            out[key] = values[key]
    for key in ("relay_starttls", "relay_tls", "confirm"):
        if key in values:
            out[key] = values[key]
    for key in ("dkim_key", "ca_file", "socket", "keep_malformed", "log", "answers"):
        if key in values:
            out[key] = base / values[key]
    if "socket_mode" in values:
        if not 0 <= values["socket_mode"] <= 0o777 or values["socket_mode"] & 0o002:
            raise ConfigError(f"{where}: socket_mode must not let every user write (o+w)")
        out["socket_mode"] = values["socket_mode"]
    if "skip_services" in values:
        if not all(isinstance(s, str) for s in values["skip_services"]):
            raise ConfigError(f"{where}: skip_services: a list of master.cf service names")
        out["skip_services"] = tuple(values["skip_services"])
    for key in ("max_delay", "retry", "retry_for", "suppress_for"):
        if key == "max_delay" and str(values.get(key)).strip() in ("0", "0s"):
            out[key] = dt.timedelta(0)  # no random delay: send right after midnight UTC
        elif key in values:
            out[key] = duration(values[key], f"{where} {key}")
    if "suppress_after" in values:
        if not 1 <= values["suppress_after"] <= 1000:
            raise ConfigError(f"{where}: suppress_after: failures in a row, 1 to 1000")
        out["suppress_after"] = values["suppress_after"]
    if "timeout" in values:
        if not 0.1 <= float(values["timeout"]) <= 600:
            raise ConfigError(f"{where}: timeout: seconds, 0.1 to 600")
        out["timeout"] = float(values["timeout"])
    if "smtp_port" in values:
        if not 1 <= values["smtp_port"] <= 65535:
            raise ConfigError(f"{where}: smtp_port: 1 to 65535")
        out["smtp_port"] = values["smtp_port"]
    if "nameserver" in values:
        names = values["nameserver"]
        names = [names] if isinstance(names, str) else names
        if not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: nameserver: HOST[:PORT] or a list of them")
        out["nameservers"] = tuple(names)
    password = _secret(raw, "relay_password", where, base)
    if password:
        out["relay_password"] = password
    if out.get("relay") and out.get("sendmail"):
        raise ConfigError(f"{where}: set relay or sendmail, not both")
    return TlsrptConfig(**out)
