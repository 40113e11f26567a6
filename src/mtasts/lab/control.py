"""Change a running lab: what ``mtasts lab change`` asks for, applied between two checks.

``watch`` is about what changes over time, so its tests (and a curious user) need a
lab that changes while it runs: a certificate replaced by one about to expire, a
policy edited with or without a new id, the ``_mta-sts`` record removed, a policy
backend gone stale, an MX that stops offering STARTTLS, DNS that stops answering.
A :class:`Change` is applied to the running lab's topology in its own event loop,
either in process (:func:`apply`) or through the control socket in the state folder
(``control.sock``, one JSON object per line each way).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtasts.errors import MtastsError
from mtasts.sts.domain import normalise_host

from .scenario import DnsFault, HostFault, LabDomain, MxAddress, MxFault
from .topology import LabSite, Topology, txt_value

CONTROL_SOCKET = "control.sock"
_MAX_REQUEST = 64 * 1024

# Faults that are the certificate's, undone by a renewal.
_CERTIFICATE_FAULTS = {MxFault.EXPIRED, MxFault.NOT_YET_VALID, MxFault.UNTRUSTED, MxFault.CERT_NAME}


class ChangeError(MtastsError, ValueError):
    """A change the lab cannot make; the message names the field and why."""


@dataclass(frozen=True, slots=True)
class Change:
    """One edit of one lab domain; every field left ``None`` stays as it is."""

    domain: str
    mode: str | None = None  # a new policy mode: testing | enforce | none
    max_age: int | None = None
    mx_patterns: tuple[str, ...] | None = None
    keep_id: bool = False  # the policy text changes but the record keeps its old id (a mistake)
    sts_record: str | None = None  # remove | restore
    certificate: str | None = None  # expired | expires-in:N | renew
    mx_fault: str | None = None  # an MxFault for the MX addresses (no-starttls, none, ...)
    address: str | None = None  # the MX address a certificate or MX fault applies to
    backend: str | None = None  # stale (a second policy address serving last year's policy) | none
    dns: str | None = None  # timeout | servfail | none
    dns_name: str | None = None  # the name the DNS fault applies to (default _mta-sts.DOMAIN)

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        if self.mx_patterns is not None:
            raw["mx_patterns"] = list(self.mx_patterns)
        return {k: v for k, v in raw.items() if v not in (None, False)}

    @classmethod
    def from_dict(cls, raw: Any) -> Change:
        if not isinstance(raw, dict) or not isinstance(raw.get("domain"), str):
            raise ChangeError("a change is a JSON object with a 'domain' string")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ChangeError(f"unknown change field {unknown[0]!r}")
        values = dict(raw)
        for key, value in values.items():
            if value is None or key == "domain":
                continue
            if key == "max_age":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif key == "keep_id":
                ok = isinstance(value, bool)
            elif key == "mx_patterns":
                ok = isinstance(value, list) and all(isinstance(p, str) for p in value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ChangeError(f"{key}: {value!r} is not the right kind of value")
        if values.get("mx_patterns") is not None:
            values["mx_patterns"] = tuple(values["mx_patterns"])
        return cls(**values)


class LabState:
    """The mutable part of a running lab: its topology and each domain as now published."""

    def __init__(self, topology: Topology, domains: tuple[LabDomain, ...]) -> None:
        self.topology = topology
        self.domains = {d.name: d for d in domains}
        self.removed_sts: dict[str, list[str]] = {}


def apply(state: LabState, change: Change) -> list[str]:
    """Make ``change`` in the running lab; one line per thing done. Nothing is changed when
    any part of the change is invalid."""
    name = normalise_host(change.domain)
    domain = state.domains.get(name)
    if domain is None:
        raise ChangeError(f"{change.domain!r} is not a lab domain (see `mtasts lab explain`)")
    steps = _plan(state, domain, change)
    done: list[str] = []
    for step in steps:
        done.append(step())
    state.topology.generation += 1  # the DNS server forgets what it had encoded
    return done


def _plan(state: LabState, domain: LabDomain, change: Change) -> list[Callable[[], str]]:
    """Validate every part first, then return the edits; a bad part changes nothing."""
    topo = state.topology
    steps: list[Callable[[], str]] = []
    if change.mode is not None or change.max_age is not None or change.mx_patterns is not None:
        mode = change.mode if change.mode is not None else domain.mode
        if mode not in ("testing", "enforce", "none"):
            raise ChangeError(f"mode {mode!r}: use testing, enforce or none")
        if change.max_age is not None and not 0 <= change.max_age <= 31557600:
            raise ChangeError(f"max_age {change.max_age}: RFC 8461 §3.2 allows 0 to 31557600")
        updated = dataclasses.replace(
            domain,
            mode=mode,
            max_age=change.max_age if change.max_age is not None else domain.max_age,
            mx_patterns=change.mx_patterns
            if change.mx_patterns is not None
            else domain.mx_patterns,
            policy=None,  # regenerated from mode, max_age and patterns
        )
        steps.append(lambda: _publish_policy(state, updated, change.keep_id))
    if change.sts_record is not None:
        if change.sts_record not in ("remove", "restore"):
            raise ChangeError(f"sts_record {change.sts_record!r}: use remove or restore")
        steps.append(lambda: _sts_record(state, domain.name, change.sts_record == "remove"))
    addresses = [a for a, _ in topo.mx_addresses.get(domain.name, [])]
    if change.address is not None:
        if change.address not in addresses:
            raise ChangeError(
                f"{change.address} is not an MX address of {domain.name}"
                f" (it has {', '.join(addresses) or 'none'})"
            )
        addresses = [change.address]
    if change.certificate is not None:
        days = _certificate_days(change.certificate)
        for address in addresses:
            steps.append(functools.partial(_certificate, topo, address, change.certificate, days))
    if change.mx_fault is not None:
        try:
            fault = MxFault(change.mx_fault)
        except ValueError:
            raise ChangeError(
                f"mx_fault {change.mx_fault!r}: use one of {', '.join(f.value for f in MxFault)}"
            ) from None
        if fault in (MxFault.STRIP, MxFault.CERT_NAME):
            raise ChangeError(f"mx_fault {fault}: set it in a scenario file, not at run time")
        for address in addresses:
            steps.append(functools.partial(_mx_fault, topo, address, fault))
    if change.backend is not None:
        if change.backend not in ("stale", "none"):
            raise ChangeError(f"backend {change.backend!r}: use stale or none")
        host = f"mta-sts.{domain.name}"
        if host not in topo.sites:
            raise ChangeError(f"{domain.name} has no policy host to break")
        steps.append(lambda: _backend(topo, host, change.backend == "stale"))
    if change.dns is not None:
        if change.dns != "none" and change.dns not in {f.value for f in DnsFault}:
            raise ChangeError(f"dns {change.dns!r}: use timeout, servfail or none")
        owner = normalise_host(change.dns_name or f"_mta-sts.{domain.name}")
        steps.append(lambda: _dns(topo, owner, change.dns or "none"))
    if not steps:
        raise ChangeError("nothing to change: give at least one change")
    return steps


def _certificate_days(value: str) -> int | None:
    if value in ("expired", "renew"):
        return None
    prefix = "expires-in:"
    if value.startswith(prefix) and value[len(prefix) :].isdigit():
        return int(value[len(prefix) :])
    raise ChangeError(f"certificate {value!r}: use expired, expires-in:DAYS or renew")


def _publish_policy(state: LabState, new: LabDomain, keep_id: bool) -> str:
    topo = state.topology
    state.domains[new.name] = new
    host = f"mta-sts.{new.name}"
    site = topo.sites.get(host)
    policy = new.policy_text()
    if site is not None:
        topo.sites[host] = LabSite(new, policy, site.fault)
    owner = f"_mta-sts.{new.name}"
    if keep_id:
        return f"{host} serves a new policy ({new.mode}, max_age {new.max_age}); the record keeps its id"
    records = [txt_value(r) for r in new.sts_txt()]
    if owner in state.removed_sts:
        state.removed_sts[owner] = records
    elif records:
        topo.records.setdefault(owner, {})["TXT"] = records
    else:
        topo.records.get(owner, {}).pop("TXT", None)
    return f"{host} serves a new policy ({new.mode}, max_age {new.max_age}) with a new id"


def _sts_record(state: LabState, domain: str, remove: bool) -> str:
    owner = f"_mta-sts.{domain}"
    node = state.topology.records.setdefault(owner, {})
    if remove:
        if "TXT" in node:
            state.removed_sts[owner] = node.pop("TXT")
        return f"{owner} TXT removed"
    if owner in state.removed_sts:
        node["TXT"] = state.removed_sts.pop(owner)
    return f"{owner} TXT restored"


def _certificate(topo: Topology, address: str, what: str, days: int | None) -> str:
    endpoint = topo.smtp[address]
    fault = MxFault.EXPIRED if what == "expired" else MxFault.NONE
    if endpoint.fault in _CERTIFICATE_FAULTS or fault is MxFault.EXPIRED:
        endpoint.fault = fault
    for name, spec in list(endpoint.names.items()):
        if spec.fault in _CERTIFICATE_FAULTS or fault is MxFault.EXPIRED:
            endpoint.names[name] = MxAddress(fault)
    endpoint.days_left = days
    endpoint.generation += 1
    endpoint.context = None  # the next client gets the new certificate
    if what == "expired":
        return f"{address} now presents an expired certificate"
    if days is not None:
        return f"{address} now presents a certificate that expires in {days} days"
    return f"{address} now presents a renewed certificate"


def _mx_fault(topo: Topology, address: str, fault: MxFault) -> str:
    endpoint = topo.smtp[address]
    endpoint.fault = fault
    for name in list(endpoint.names):
        endpoint.names[name] = MxAddress(fault)
    endpoint.context = None
    return f"{address} now has fault {fault}"


def _backend(topo: Topology, host: str, stale: bool) -> str:
    site = topo.sites[host]
    addresses = topo.records.setdefault(host, {}).setdefault("A", [])
    if stale:
        topo.sites[host] = LabSite(site.domain, site.policy, HostFault.BAD_BACKEND)
        if topo.stale_https_address not in addresses:
            addresses.append(topo.stale_https_address)
        return f"{host} has a second address {topo.stale_https_address} serving a stale policy"
    topo.sites[host] = LabSite(site.domain, site.policy, HostFault.NONE)
    if topo.stale_https_address in addresses:
        addresses.remove(topo.stale_https_address)
    return f"{host} is served by one healthy address again"


def _dns(topo: Topology, owner: str, fault: str) -> str:
    if fault == "none":
        topo.dns_faults.pop(owner, None)
        return f"DNS answers for {owner} again"
    topo.dns_faults[owner] = fault
    return f"DNS for {owner} now: {fault}"


def smtp_stats(topo: Topology, reset: bool = False) -> dict[str, dict[str, int]]:
    """Per MX address that saw a client: connections accepted and the most open at once."""
    stats = {
        address: {"connections": e.connections, "peak": e.peak}
        for address, e in topo.smtp.items()
        if e.connections
    }
    if reset:
        for endpoint in topo.smtp.values():
            endpoint.connections, endpoint.peak = 0, endpoint.active
    return stats


async def serve_control(state: LabState, path: Path) -> asyncio.AbstractServer:
    """The control socket: only the lab's owner may connect (mode 0600)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if len(line) > _MAX_REQUEST:
                raise ChangeError("request too large")
            request = json.loads(line)
            reply: dict[str, Any]
            if isinstance(request, dict) and request.get("op") == "stats":
                reply = {
                    "ok": True,
                    "stats": smtp_stats(state.topology, bool(request.get("reset"))),
                }
            else:
                reply = {"ok": True, "done": apply(state, Change.from_dict(request))}
        except (ChangeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            reply = {"ok": False, "error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, str(path), limit=_MAX_REQUEST + 1)
    finally:
        os.umask(old)
    return server


def send_change(state_dir: Path, change: Change, timeout: float = 10.0) -> list[str]:
    """Ask the lab running from ``state_dir`` to make ``change``; the lines it did."""
    reply = _ask(state_dir, change.to_dict(), timeout)
    return [str(line) for line in reply.get("done", [])]


def read_stats(
    state_dir: Path, reset: bool = False, timeout: float = 10.0
) -> dict[str, dict[str, int]]:
    """The running lab's SMTP counters (see :func:`smtp_stats`); ``reset`` starts them anew."""
    stats: dict[str, dict[str, int]] = _ask(state_dir, {"op": "stats", "reset": reset}, timeout)[
        "stats"
    ]
    return stats


def _ask(state_dir: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    path = state_dir / CONTROL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ChangeError(f"cannot reach the lab at {path} ({exc}); is it running?") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ChangeError(f"the lab at {path} sent no answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ChangeError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply
