"""Everything a domain publishes: two TXT records, the policy host's address, the policy file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtasts.sts import StsRecord
from mtasts.tlsrpt import TlsRptRecord

from .config import DomainConfig


@dataclass(frozen=True)
class Publication:
    domain: DomainConfig
    policy_id: str

    @property
    def sts_record(self) -> str:
        return str(StsRecord(self.policy_id))

    @property
    def tlsrpt_record(self) -> str | None:
        return str(TlsRptRecord(self.domain.rua)) if self.domain.rua else None

    @property
    def policy_text(self) -> str:
        return str(self.domain.policy)

    def host_records(self) -> list[tuple[str, str]]:
        if self.domain.host_cname:
            return [("CNAME", self.domain.host_cname.rstrip(".") + ".")]
        return [("AAAA" if ":" in a else "A", a) for a in self.domain.host_addresses]

    def bind(self) -> str:
        """A zone-file snippet (owner names absolute)."""
        name = self.domain.name
        lines = [
            f"; MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) for {name}, policy id {self.policy_id}"
        ]
        lines.append(f'_mta-sts.{name}.   300 IN TXT "{self.sts_record}"')
        if self.tlsrpt_record:
            lines.append(f'_smtp._tls.{name}. 300 IN TXT "{self.tlsrpt_record}"')
        for rdtype, value in self.host_records():
            lines.append(f"mta-sts.{name}.    300 IN {rdtype} {value}")
        if not self.host_records():
            lines.append(
                f"; mta-sts.{name}: add an A/AAAA or CNAME for the host serving the policy"
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        name = self.domain.name
        records = [{"name": f"_mta-sts.{name}", "type": "TXT", "value": self.sts_record}]
        if self.tlsrpt_record:
            records.append(
                {"name": f"_smtp._tls.{name}", "type": "TXT", "value": self.tlsrpt_record}
            )
        records += [
            {"name": f"mta-sts.{name}", "type": t, "value": v} for t, v in self.host_records()
        ]
        return {
            "domain": name,
            "id": self.policy_id,
            "records": records,
            "policy_url": f"https://mta-sts.{name}/.well-known/mta-sts.txt",
            "policy": self.policy_text,
        }

    def nginx(self) -> str:
        name = self.domain.name
        return f"""# nginx: serve the MTA-STS policy of {name} (RFC 8461 §3.3: HTTPS, 200, text/plain, no redirects)
# mtasts records {name} --policy > /var/www/mta-sts.{name}/.well-known/mta-sts.txt
server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name mta-sts.{name};
    ssl_certificate     /etc/ssl/mta-sts.{name}.pem;   # a certificate valid for mta-sts.{name}
    ssl_certificate_key /etc/ssl/mta-sts.{name}.key;
    root /var/www/mta-sts.{name};

    location = /.well-known/mta-sts.txt {{
        default_type text/plain;
        types {{ }}
        add_header Cache-Control "no-store" always;
    }}
    location / {{
        return 404;
    }}
}}
"""

    def caddy(self) -> str:
        name = self.domain.name
        policy = self.policy_text.replace("\r\n", "\n")
        return f"""# Caddy: serve the MTA-STS policy of {name} (Caddy obtains the certificate itself)
mta-sts.{name} {{
    handle /.well-known/mta-sts.txt {{
        header Content-Type "text/plain; charset=utf-8"
        header Cache-Control "no-store"
        respond `{policy}` 200
    }}
    handle {{
        respond 404
    }}
}}
"""
