"""mtasts scan: scans, per-domain results, shared (MX host, address) probes, pacing.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _scan_id() -> sa.Column[int]:
    return sa.Column(
        "scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("domains", sa.Integer, nullable=False),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("opted_out", sa.Integer, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_table(
        "scan_domains",
        _scan_id(),
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("batch", sa.Integer, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("facts", sa.Text, nullable=True),
        sa.Column("provider", sa.String(255), nullable=True),
        sa.Column("verdict", sa.String(10), nullable=True),
        sa.Column("mode", sa.String(10), nullable=True),
        sa.Column("tlsrpt", sa.Boolean, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("judged_at", _TS, nullable=True),
    )
    op.create_index("ix_scan_domains_batch", "scan_domains", ["scan_id", "batch"])
    op.create_index("ix_scan_domains_state", "scan_domains", ["scan_id", "state"])
    op.create_table(
        "scan_pairs",
        _scan_id(),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("probe", sa.Text, nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("probed_at", _TS, nullable=True),
    )
    op.create_index("ix_scan_pairs_state", "scan_pairs", ["scan_id", "state"])
    op.create_table(
        "scan_links",
        _scan_id(),
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("address", sa.String(64), primary_key=True),
    )
    op.create_index("ix_scan_links_pair", "scan_links", ["scan_id", "host", "address"])
    op.create_table(
        "scan_pace",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("next_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("scan_pace", "scan_links", "scan_pairs", "scan_domains", "scans"):
        op.drop_table(table)
