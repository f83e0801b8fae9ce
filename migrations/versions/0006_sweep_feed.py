"""sweeps feed their jobs to the queue: `jobs.held` marks a sweep's queued job that its sweep has
not yet put on RQ (`core.sweep_feed`).

Like 0003, plain ADD/DROP COLUMN on SQLite, never batch mode's copy-and-drop (which, with
foreign keys enforced, would cascade-delete every measurement and milestone of the old table).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("held", sa.Boolean(), nullable=False,
                                    server_default=sa.false()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE jobs DROP COLUMN held")
    else:
        op.drop_column("jobs", "held")
