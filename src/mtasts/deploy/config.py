"""The ``[[domain]]`` tables of ``mtasts.toml``: what each of your domains publishes.

```toml
[[domain]]
name = "example.com"
mx = ["mx1.example.com", "*.mail.example.com"]
mode = "testing"            # testing | enforce | none
max_age = 86400             # seconds; one day while testing (the seed article's advice)
rua = ["mailto:tlsrpt@example.com"]
policy_host = { cname = "mta-sts.hosting.example" }   # or { address = ["192.0.2.10"] }
cert_file = "/etc/mtasts/mta-sts.example.com.pem"     # for `mtasts serve` over HTTPS
key_file = "/etc/mtasts/mta-sts.example.com.key"
```
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtasts import sts, tlsrpt
from mtasts.config import ConfigError, read_toml
from mtasts.files import write_atomic
from mtasts.sts import Mode, MxPattern, Policy
from mtasts.sts.domain import domain_problem, normalise_host

# One error type for all of mtasts.toml; the old name stays for library callers.
DeployConfigError = ConfigError


@dataclass(frozen=True)
class DomainConfig:
    name: str
    mx: tuple[MxPattern, ...]
    mode: Mode = Mode.TESTING
    max_age: int = 86400
    rua: tuple[str, ...] = ()
    host_addresses: tuple[str, ...] = ()
    host_cname: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def policy(self) -> Policy:
        return Policy(self.mode, self.max_age, self.mx)

    @property
    def policy_host(self) -> str:
        return f"mta-sts.{self.name}"


@dataclass(frozen=True)
class DeployConfig:
    path: Path
    domains: tuple[DomainConfig, ...] = field(default=())

    def domain(self, name: str) -> DomainConfig:
        wanted = normalise_host(name)
        for domain in self.domains:
            if domain.name == wanted:
                return domain
        known = ", ".join(d.name for d in self.domains) or "none"
        raise DeployConfigError(
            f"{self.path}: no [[domain]] named {wanted!r} (configured: {known})"
        )


_KEYS = {"name", "mx", "mode", "max_age", "rua", "policy_host", "cert_file", "key_file"}


def _domain(raw: Any, where: str, base: Path) -> DomainConfig:
    """One [[domain]] table; every mistake in it is reported at once (walkthrough #61), each
    on its own line in TOML terms, not only the first."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise DeployConfigError(f'{where}: needs name = "your.domain"')
    name = normalise_host(raw["name"])
    where = f"{where} ({name})"
    problems: list[str] = []
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(
            f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})"
        )
    mode_text = raw.get("mode", "testing")
    mode: Mode | None
    try:
        mode = Mode(mode_text)
    except ValueError:
        mode = None
        problems.append(f"mode = {mode_text!r} is not testing, enforce or none")
    max_age = raw.get("max_age", 86400)
    if (
        not isinstance(max_age, int)
        or isinstance(max_age, bool)
        or not 0 <= max_age <= sts.MAX_MAX_AGE
    ):
        problems.append(
            f"max_age = {max_age!r} must be whole seconds from 0 to {sts.MAX_MAX_AGE} (RFC 8461 §3.2)"
        )
    patterns = raw.get("mx", [])
    mx = []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        problems.append("mx must be a list of host names or *.domain patterns")
        patterns = []
    for pattern in patterns:
        try:
            mx.append(MxPattern.parse(pattern))
        except sts.PolicyError as exc:
            # In TOML terms: the policy's own words name the value, the fix is what to write.
            said = exc.message.removeprefix(f"mx {pattern!r} ").removeprefix("mx ")
            fix = exc.fix.removeprefix("mx: ") if exc.fix else None
            if fix:
                said = said.split(" (")[0]
            problems.append(f"mx = [{pattern!r}]: {said}" + (f"; write {fix!r}" if fix else ""))
    if mode is not None and mode is not Mode.NONE and not patterns:
        problems.append(f"mode {mode} needs at least one mx (RFC 8461 §3.2)")
    rua = raw.get("rua", [])
    if not isinstance(rua, list) or not all(isinstance(u, str) for u in rua):
        problems.append("rua must be a list of mailto: or https: URIs")
        rua = []
    for uri in rua:
        problem = tlsrpt.record.uri_problem(uri)
        if problem is not None:
            hint = f" (did you mean {problem[1]!r}?)" if problem[1] else ""
            problems.append(f"rua {problem[0]}{hint} (RFC 8460 §3)")
    host = raw.get("policy_host", {})
    if (
        not isinstance(host, dict)
        or set(host) - {"address", "cname"}
        or ("address" in host and "cname" in host)
    ):
        problems.append('policy_host is { address = [...] } or { cname = "..." }, not both')
        host = {}
    addresses = host.get("address", [])
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        problems.append("policy_host address must be an IP address or a list of them")
        addresses = []
    cname = host.get("cname")
    if cname is not None and (
        not isinstance(cname, str) or domain_problem(cname.rstrip(".")) is not None
    ):
        problems.append(f"policy_host cname {cname!r} is not a host name")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"policy_host address {address!r} is not an IP address")
    files: dict[str, Path | None] = {}
    bad_file = False
    for key in ("cert_file", "key_file"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) and value):
            problems.append(f"{key} must be a file path")
            value, bad_file = None, True
        files[key] = (base / value) if value else None
    if not bad_file and (files["cert_file"] is None) != (files["key_file"] is None):
        problems.append("cert_file and key_file go together")
    if problems:
        # One line per mistake; the CLI prints the first after "error: ", so the others
        # carry their own prefix.
        raise DeployConfigError("\nerror: ".join(f"{where}: {p}" for p in problems))
    assert mode is not None
    return DomainConfig(
        name,
        tuple(mx),
        mode,
        max_age,
        tuple(rua),
        tuple(addresses),
        host.get("cname"),
        files["cert_file"],
        files["key_file"],
    )


def load_config(path: Path) -> DeployConfig:
    raw = read_toml(path, missing_hint="create it with `mtasts init DOMAIN --mx ...`")
    tables = raw.get("domain", [])
    if not isinstance(tables, list):
        raise DeployConfigError(f"{path}: domains are [[domain]] tables")
    domains = tuple(
        _domain(t, f"{path} [[domain]] #{i + 1}", path.parent) for i, t in enumerate(tables)
    )
    names = [d.name for d in domains]
    for name in names:
        if names.count(name) > 1:
            raise DeployConfigError(f"{path}: domain {name!r} is configured twice")
    return DeployConfig(path, domains)


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def domain_table(domain: DomainConfig) -> str:
    """The ``[[domain]]`` table for ``domain``, as ``mtasts init`` appends it."""
    lines = [
        "[[domain]]",
        f'name = "{domain.name}"',
        f"mx = {_toml_list([str(p) for p in domain.mx])}",
        f'mode = "{domain.mode}"',
        f"max_age = {domain.max_age}",
        f"rua = {_toml_list(domain.rua)}",
    ]
    return "\n".join(lines) + "\n"


def set_domain_value(path: Path, domain: str, key: str, value: str) -> None:
    """Set ``key = value`` (TOML text) in DOMAIN's ``[[domain]]`` table, keeping the rest of the file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == "[[domain]]"] + [len(lines)]
    for begin, end in itertools.pairwise(starts):
        block = lines[begin:end]
        if not any(
            line.split("=", 1)[0].strip() == "name" and f'"{domain}"' in line for line in block
        ):
            continue
        for offset, line in enumerate(block):
            if line.split("=", 1)[0].strip() == key:
                lines[begin + offset] = f"{key} = {value}\n"
                break
        else:
            after_name = next(
                o for o, line in enumerate(block) if line.split("=", 1)[0].strip() == "name"
            )
            lines.insert(begin + after_name + 1, f"{key} = {value}\n")
        write_atomic(path, "".join(lines).encode("utf-8"))
        load_config(path)  # the edit must leave a valid file
        return
    raise DeployConfigError(f"{path}: no [[domain]] named {domain!r}")
