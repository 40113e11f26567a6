"""The initial report store: raw reports, parsed reports, per-policy rows, failures, quarantine.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "raw_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submitter", sa.String(255), nullable=False),
        sa.Column("report_id", sa.String(255), nullable=False),
        sa.Column("organization", sa.String(255), nullable=False),
        sa.Column("contact", sa.String(255), nullable=False),
        sa.Column("start", _TS, nullable=False, index=True),
        sa.Column("end", _TS, nullable=False),
        sa.Column("raw_id", sa.Integer, sa.ForeignKey("raw_reports.id"), nullable=False),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("ingested_at", _TS, nullable=False),
        sa.UniqueConstraint("submitter", "report_id"),
    )
    op.create_table(
        "policy_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "report_id",
            sa.Integer,
            sa.ForeignKey("reports.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("submitter", sa.String(255), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("policy_type", sa.String(32), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("policy_string", sa.Text, nullable=True),
        sa.Column("mx_host", sa.Text, nullable=False),
        sa.Column("successful", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_policy_results_domain_day", "policy_results", ["policy_domain", "day"])
    op.create_table(
        "failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "policy_id",
            sa.Integer,
            sa.ForeignKey("policy_results.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("result_type", sa.String(64), nullable=False),
        sa.Column("sending_ip", sa.String(64), nullable=True),
        sa.Column("receiving_mx", sa.String(255), nullable=True),
        sa.Column("receiving_ip", sa.String(64), nullable=True),
        sa.Column("sessions", sa.BigInteger, nullable=False),
        sa.Column("reason_code", sa.Text, nullable=True),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "raw_id", sa.Integer, sa.ForeignKey("raw_reports.id"), nullable=False, unique=True
        ),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("quarantine", "failures", "policy_results", "reports", "raw_reports"):
        op.drop_table(table)
