"""The sending side's reporter: session tallies per day, outgoing reports, their deliveries,
endpoint health and intake positions.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _keys() -> list[sa.Column[str]]:
    return [
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("policy_domain", sa.String(255), primary_key=True),
        sa.Column("record_key", sa.String(64), primary_key=True),
        sa.Column("policy_key", sa.String(64), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "tlsrpt_tallies",
        *_keys(),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("successful", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tlsrpt_details",
        *_keys(),
        sa.Column("detail_key", sa.String(64), primary_key=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tlsrpt_outgoing",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("record_key", sa.String(64), nullable=False),
        sa.Column("report_id", sa.String(512), nullable=False, unique=True),
        sa.Column("document", sa.LargeBinary, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("deadline", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_attempt", _TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sent_at", _TS, nullable=True),
        sa.Column("sessions", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tlsrpt_outgoing_day", "tlsrpt_outgoing", ["day"])
    op.create_index("ix_tlsrpt_outgoing_status", "tlsrpt_outgoing", ["status"])
    op.create_table(
        "tlsrpt_deliveries",
        sa.Column("report", sa.Integer, primary_key=True),
        sa.Column("uri", sa.String(1024), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("accepted_at", _TS, nullable=True),
    )
    op.create_table(
        "tlsrpt_endpoints",
        sa.Column("uri", sa.String(1024), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("suppressed_until", _TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_success", _TS, nullable=True),
    )
    op.create_table(
        "tlsrpt_intake",
        sa.Column("source", sa.String(512), primary_key=True),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("sessions", sa.BigInteger, nullable=False),
        sa.Column("malformed", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
    )


def downgrade() -> None:
    for table in (
        "tlsrpt_intake",
        "tlsrpt_endpoints",
        "tlsrpt_deliveries",
        "tlsrpt_outgoing",
        "tlsrpt_details",
        "tlsrpt_tallies",
    ):
        op.drop_table(table)
