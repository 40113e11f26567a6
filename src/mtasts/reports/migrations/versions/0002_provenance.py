"""Reports record how they arrived and who vouches for them; one id may hold two contents.

Security review #3: reports were told apart by (submitter, report-id), both chosen by
the sender, so a forged report sent first turned the real one into a "duplicate" that
was never stored. A report is now told apart by (submitter, report-id, content hash);
a second content under the same id is stored too and both are flagged ``conflict``.
Rows stored before this revision have no content hash ("legacy"): a later copy of
one of them reads as a duplicate, as it did before.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite's unique constraint from 0001 has no name; batch mode names it by this convention.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    old = (
        "uq_reports_submitter"
        if op.get_bind().dialect.name == "sqlite"
        else "reports_submitter_report_id_key"
    )
    with op.batch_alter_table("reports", naming_convention=_NAMING) as batch:
        batch.add_column(
            sa.Column("content_sha256", sa.String(64), nullable=False, server_default="legacy")
        )
        batch.add_column(sa.Column("channel", sa.String(16), nullable=False, server_default="file"))
        batch.add_column(sa.Column("dkim_domain", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("sender_domain", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("conflict", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(
            "uq_reports_submitter_id_content", ["submitter", "report_id", "content_sha256"]
        )


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_constraint("uq_reports_submitter_id_content", type_="unique")
        for column in ("conflict", "sender_domain", "dkim_domain", "channel", "content_sha256"):
            batch.drop_column(column)
        batch.create_unique_constraint("uq_reports_submitter", ["submitter", "report_id"])
