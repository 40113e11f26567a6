"""Watch: watched domains and their state, compact observations, events, the outbox,
channel health and runs.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_domains",
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("label", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.Text, nullable=False, server_default="{}"),
        sa.Column("last_run", _TS, nullable=True),
        sa.Column("next_due", _TS, nullable=True),
    )
    op.create_table(
        "watch_observations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False, server_default="1"),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("facts", sa.LargeBinary, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_watch_observations_domain_seen", "watch_observations", ["domain", "first_seen"]
    )
    op.create_table(
        "watch_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("horizon", _TS, nullable=True),
    )
    op.create_index("ix_watch_events_at", "watch_events", ["at"])
    op.create_index("ix_watch_events_domain_at", "watch_events", ["domain", "at"])
    op.create_table(
        "watch_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "event_id",
            sa.Integer,
            sa.ForeignKey("watch_events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_watch_outbox_pending", "watch_outbox", ["channel", "sent_at", "next_attempt"]
    )
    op.create_table(
        "watch_channels",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_success", _TS, nullable=True),
        sa.Column("last_error_at", _TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sent", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "watch_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started", _TS, nullable=False),
        sa.Column("finished", _TS, nullable=False),
        sa.Column("domains", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_watch_runs_finished", "watch_runs", ["finished"])


def downgrade() -> None:
    for table in (
        "watch_runs",
        "watch_channels",
        "watch_outbox",
        "watch_events",
        "watch_observations",
        "watch_domains",
    ):
        op.drop_table(table)
