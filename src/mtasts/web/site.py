"""What ``mtasts serve`` serves: each configured domain's policy, by policy host name.

Reloading re-reads ``mtasts.toml``; certificates are looked up per TLS
connection by SNI, so a reload also picks up renewed certificate files.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtasts.deploy.config import DeployConfig, DeployConfigError, load_config
from mtasts.net.tls import Leaf
from mtasts.sts import cert_matches
from mtasts.sts.domain import normalise_host

log = logging.getLogger("mtasts.web")


@dataclass
class Served:
    domain: str
    policy: str
    cert_file: Path | None
    key_file: Path | None

    @functools.cached_property
    def response(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The policy's HTTP 200 as ASGI headers and body, made once per load."""
        body = self.policy.encode()
        headers = [
            (b"cache-control", b"no-store"),  # a sender must see a changed policy at once
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),  # RFC 8461 §3.3
        ]
        return headers, body


@dataclass
class PolicySite:
    config_path: Path
    hosts: dict[str, Served] = field(default_factory=dict)
    fetches: Counter[tuple[str, int]] = field(default_factory=Counter)
    reloads: int = 0
    _contexts: dict[tuple[Path, Path, float], ssl.SSLContext] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _mtime: float = 0.0

    def load(self) -> None:
        """(Re)read the configuration; a broken file keeps the running policies and says why."""
        config: DeployConfig = load_config(self.config_path)
        hosts = {
            d.policy_host: Served(d.name, str(d.policy), d.cert_file, d.key_file)
            for d in config.domains
        }
        changed = [
            h for h, s in hosts.items() if h in self.hosts and self.hosts[h].policy != s.policy
        ]
        with self._lock:
            self.hosts = hosts
            self._mtime = self.config_path.stat().st_mtime
            self.reloads += 1
        for host in changed:
            log.info(
                "policy changed host=%s; publish the new id: mtasts records %s",
                host,
                hosts[host].domain,
            )

    def reload(self) -> None:
        try:
            self.load()
            log.info("configuration reloaded domains=%d", len(self.hosts))
        except DeployConfigError as exc:
            log.error("reload failed, still serving the previous policies: %s", exc)

    def reload_if_changed(self) -> None:
        try:
            if self.config_path.stat().st_mtime != self._mtime:
                self.reload()
        except OSError:
            pass

    def policy_for(self, host: str) -> Served | None:
        return self.hosts.get(normalise_host(host))

    def context_for(self, host: str | None) -> ssl.SSLContext | None:
        served = self.policy_for(host) if host else None
        if served is None or served.cert_file is None or served.key_file is None:
            return None
        try:
            stamp = served.cert_file.stat().st_mtime
        except OSError:
            return None
        key = (served.cert_file, served.key_file, stamp)
        context = self._contexts.get(key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(served.cert_file, served.key_file)
            self._contexts[key] = context
        return context

    def certificate_problems(self, now: dt.datetime | None = None) -> list[str]:
        """Why a policy host's certificate would fail senders (RFC 8461 §3.3: a certificate valid
        for mta-sts.<domain>), one line each naming the domain and the file."""
        now = now or dt.datetime.now(dt.UTC)
        problems = []
        for host, served in sorted(self.hosts.items()):
            if served.cert_file is None or served.key_file is None:
                continue
            where = f"{served.domain}: cert_file {served.cert_file}"
            try:
                pem = served.cert_file.read_bytes()
                leaf = Leaf.from_der(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
            except OSError as exc:
                problems.append(f"{where}: cannot read it ({exc.strerror})")
                continue
            except ValueError:
                problems.append(f"{where}: not a PEM certificate")
                continue
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                    served.cert_file, served.key_file
                )
            except ssl.SSLError as exc:  # before OSError, of which it is a kind
                reason = (
                    "they do not belong together"
                    if "MISMATCH" in str(exc)
                    else str(exc.reason or exc)
                )
                problems.append(f"{where} and key_file {served.key_file}: {reason}")
            except OSError as exc:
                problems.append(
                    f"{served.domain}: key_file {served.key_file}: cannot read it ({exc.strerror})"
                )
            if not cert_matches(leaf.dns_ids, host):
                problems.append(
                    f"{where} names {', '.join(leaf.dns_ids) or 'nothing'}, not {host}:"
                    " every sender would report sts-webpki-invalid"
                )
            if leaf.not_after <= now:
                problems.append(f"{where} expired on {leaf.not_after:%Y-%m-%d}")
            elif leaf.not_before > now:
                problems.append(f"{where} is valid only from {leaf.not_before:%Y-%m-%d}")
        return problems

    def tls_context(self) -> ssl.SSLContext:
        """The listener's context: the first certificate by default, SNI picks the right one."""
        first = next((s for s in self.hosts.values() if s.cert_file and s.key_file), None)
        if first is None or first.cert_file is None or first.key_file is None:
            raise DeployConfigError(
                f"{self.config_path}: no domain has cert_file/key_file; add them or use --proxy"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(first.cert_file, first.key_file)

        def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            chosen = self.context_for(name)
            if chosen is not None:
                sslobj.context = chosen

        context.sni_callback = pick
        return context

    def metrics(self) -> str:
        lines = [
            "# HELP mtasts_policy_fetches_total Policy requests by domain and HTTP status.",
            "# TYPE mtasts_policy_fetches_total counter",
            *(
                f'mtasts_policy_fetches_total{{domain="{d}",status="{s}"}} {n}'
                for (d, s), n in sorted(self.fetches.items())
            ),
            "# TYPE mtasts_config_reloads_total counter",
            f"mtasts_config_reloads_total {self.reloads}",
            "# TYPE mtasts_served_domains gauge",
            f"mtasts_served_domains {len(self.hosts)}",
        ]
        return "\n".join(lines) + "\n"
