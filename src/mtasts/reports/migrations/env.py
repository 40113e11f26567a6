"""Alembic environment: migrations run on the connection the store hands over."""

from __future__ import annotations

from alembic import context

from mtasts.reporter import models as _reporter_models  # noqa: F401
from mtasts.reports.models import Base
from mtasts.watch import models as _watch_models  # noqa: F401  (its tables join the metadata)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
