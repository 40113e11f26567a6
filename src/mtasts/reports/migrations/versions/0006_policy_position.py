"""Each policy row records its place in its report's ``policies`` list.

(report, position) tells a report's policy rows apart, so a batch of them can be
inserted with one statement and the new ids matched to their rows by it: SQLite
returns the rows of a multi-row INSERT ... RETURNING in no promised order, and
without a key the insert went one row per statement. Rows stored before this
revision keep position 0; nothing reads the position of an old row.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy_results") as batch:
        batch.add_column(sa.Column("position", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("policy_results") as batch:
        batch.drop_column("position")
