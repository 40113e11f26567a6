"""Start and stop a whole lab in one asyncio loop, and describe it in ``lab.json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtasts.files import write_atomic
from mtasts.net.dns import Nameserver

from . import https_server, smtp_server
from .attacker import serve_attacker
from .ca import LabCA
from .control import CONTROL_SOCKET, LabState, serve_control
from .dkim import LabSigners
from .dns_server import serve_dns
from .https_server import serve_https
from .reports import SENDER_DOMAINS
from .scenario import MxFault, Scenario, generate
from .smtp_server import serve_smtp
from .topology import Topology, build, txt_value

# The lab's own sending MTA (the Postfix stage) and the reporter that reports for it.
OWN_SENDER = "sender.example"
STANDARD_PORTS = {"dns": 53, "https": 443, "smtp": 25}
HIGH_PORTS = {"dns": 10053, "https": 10443, "smtp": 10025}
STATE_FILE = "lab.json"


@dataclass(frozen=True, slots=True)
class LabConfig:
    scenario: Scenario
    state_dir: Path
    generate: int = 0
    subnet: str = "127.77"
    ports: str = "auto"  # auto | standard | high
    dns_port: int | None = None
    https_port: int | None = None
    smtp_port: int | None = None
    providers: int = 0  # generated domains hosted by that many shared mail providers
    mx_addresses: int = 16  # healthy MX addresses the generated domains share
    # Every certificate issued and every TLS context loaded before the lab says it is up,
    # as a real server's are: lazily, the first client of each host pays for it (the
    # benchmarks' tool under test, on the cores it shares with the lab).
    warm: bool = False


def _bindable(address: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def choose_ports(config: LabConfig, topology: Topology) -> dict[str, int]:
    """Standard ports when this process may bind them there, else high ones; flags win."""
    ports = dict(HIGH_PORTS)
    if config.ports == "standard" or (config.ports == "auto" and os.geteuid() == 0):
        probes = [
            (topology.dns_address, 53, socket.SOCK_DGRAM),
            (topology.dns_address, 53, socket.SOCK_STREAM),
            (topology.https_address, 443, socket.SOCK_STREAM),
            *((address, 25, socket.SOCK_STREAM) for address in list(topology.smtp)[:1]),
        ]
        if all(_bindable(a, p, k) for a, p, k in probes) or config.ports == "standard":
            ports = dict(STANDARD_PORTS)
    for key, value in (
        ("dns", config.dns_port),
        ("https", config.https_port),
        ("smtp", config.smtp_port),
    ):
        if value is not None:
            ports[key] = value
    return ports


class Lab:
    """A running lab: ``await lab.start()``, then ``await lab.stop()``."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.generated = (
            generate(config.generate, providers=config.providers) if config.generate else ()
        )
        self.topology = build(
            config.scenario.domains, self.generated, config.subnet, config.mx_addresses
        )
        self.state = LabState(self.topology, (*config.scenario.domains, *self.generated))
        self.ports: dict[str, int] = {}
        self._servers: list[Any] = []

    @property
    def state_file(self) -> Path:
        return self.config.state_dir / STATE_FILE

    async def start(self) -> None:
        state = self.config.state_dir
        state.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.ca = LabCA(state)
        self.ports = choose_ports(self.config, self.topology)
        topo = self.topology
        # The simulated report senders sign their mail; their public keys are in our DNS.
        # So is the lab's own sending MTA (the Postfix stage), whose reporter signs as it.
        self.signers = LabSigners(state / "dkim", (*SENDER_DOMAINS, OWN_SENDER))
        for owner, value in self.signers.records():
            topo.records.get(owner, {}).pop("TXT", None)  # a restarted lab made new keys
            topo.add(
                owner,
                "TXT",
                txt_value(tuple(value[i : i + 255] for i in range(0, len(value), 255))),
            )
        mail_log = state / "mail.log"
        self._servers += await serve_dns(topo, self.ports["dns"])
        self._servers += await serve_https(self.ca, topo, self.ports["https"])
        for endpoint in topo.smtp.values():
            if endpoint.fault is MxFault.STRIP and endpoint.backend:
                server = await serve_attacker(
                    endpoint.address, endpoint.backend, self.ports["smtp"]
                )
            else:
                server = await serve_smtp(self.ca, endpoint, self.ports["smtp"], mail_log)
                if self.config.warm:
                    smtp_server.warm(self.ca, endpoint)
            self._servers.append(server)
        if self.config.warm:
            https_server.warm(self.ca, topo)
        self._servers.append(await serve_control(self.state, state / CONTROL_SOCKET))
        self._write_state()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for path in (self.state_file, self.config.state_dir / CONTROL_SOCKET):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def nameserver(self) -> str:
        return f"{self.topology.dns_address}:{self.ports['dns']}"

    def check_flags(self) -> str:
        return (
            f"--nameserver {self.nameserver()} --ca-file {self.ca.ca_file}"
            f" --smtp-port {self.ports['smtp']} --https-port {self.ports['https']}"
        )

    def describe(self) -> dict[str, Any]:
        topo = self.topology
        domains = []
        for domain in (*self.config.scenario.domains, *self.generated):
            domains.append(
                {
                    "name": domain.name,
                    "expect": list(domain.expect),
                    "explain": domain.explain,
                    "mx": [
                        {"address": a, "fault": str(f)}
                        for a, f in topo.mx_addresses.get(domain.name, [])
                    ],
                }
            )
        return {
            "scenario": self.config.scenario.name,
            "pid": os.getpid(),
            "dns": {"address": topo.dns_address, "port": self.ports["dns"]},
            "nameserver": self.nameserver(),
            "https": {"address": topo.https_address, "port": self.ports["https"]},
            "smtp": {"port": self.ports["smtp"]},
            "ca_file": str(self.ca.ca_file),
            "dkim_keys": str(self.config.state_dir / "dkim"),
            "mail_log": str(self.config.state_dir / "mail.log"),
            "control": str(self.config.state_dir / CONTROL_SOCKET),
            "check_flags": self.check_flags(),
            "domains": domains,
        }

    def _write_state(self) -> None:
        # Written last and atomically: its presence means every listener is up.
        write_atomic(self.state_file, json.dumps(self.describe(), indent=2).encode(), 0o644)


def read_state(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    return data


@dataclass(frozen=True, slots=True)
class LabClient:
    """What a client (checker, resolver) needs to reach a running lab, from its lab.json."""

    nameserver: Nameserver
    ca_file: Path
    smtp_port: int
    https_port: int

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabClient:
        return cls(
            Nameserver.parse(state["nameserver"]),
            Path(state["ca_file"]),
            int(state["smtp"]["port"]),
            int(state["https"]["port"]),
        )


async def run_forever(lab: Lab, ready: asyncio.Event | None = None) -> None:
    await lab.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await lab.stop()
