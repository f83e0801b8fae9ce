"""sweeps: the `sweeps` table, `jobs.sweep_id` (nullable, indexed, a foreign key), and the
new fields `n_train` / `subset_seed` of every stored train request.

On SQLite the column is added and dropped with SQLite's own ALTER TABLE ADD/DROP COLUMN, never by
batch mode's copy-and-drop: with foreign keys enforced, dropping the old `jobs` table would
cascade-delete every measurement and milestone that references it. DROP COLUMN needs SQLite 3.35.
(No ON DELETE action: SQLAlchemy does not reflect one from SQLite's column-level REFERENCES, so
the schema check could not see it; deleting a sweep clears `jobs.sweep_id` first.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
FK_NAME = "jobs_sweep_id_fkey"  # PostgreSQL's own naming; SQLite keeps it unnamed
NEW_TRAIN_FIELDS = {"n_train": None, "subset_seed": 0}

jobs = sa.table("jobs", sa.column("id", sa.String(40)), sa.column("type", sa.String(20)),
                sa.column("request", JSON_TYPE))


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _rewrite_train_requests(change: dict[str, object] | None) -> None:
    """Add (`change` given) or remove (None) the new train fields in every stored train request."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.request).where(jobs.c.type == "train")).all()
    for job_id, request in rows:
        doc = dict(request or {})
        if change is None:
            for key in NEW_TRAIN_FIELDS:
                doc.pop(key, None)
        else:
            doc = {**change, **doc}
        bind.execute(sa.update(jobs).where(jobs.c.id == job_id).values(request=doc))


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("request", JSON_TYPE, nullable=False),
        sa.Column("points", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sweeps_owner_id", "sweeps", ["owner_id"], unique=False)
    op.create_index("ix_sweeps_created_at", "sweeps", ["created_at"], unique=False)
    if _is_sqlite():
        op.execute("ALTER TABLE jobs ADD COLUMN sweep_id VARCHAR(40) REFERENCES sweeps (id)")
    else:
        op.add_column("jobs", sa.Column("sweep_id", sa.String(length=40), nullable=True))
        op.create_foreign_key(FK_NAME, "jobs", "sweeps", ["sweep_id"], ["id"])
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"], unique=False)
    _rewrite_train_requests(NEW_TRAIN_FIELDS)


def downgrade() -> None:
    _rewrite_train_requests(None)
    op.drop_index("ix_jobs_sweep_id", table_name="jobs")
    if _is_sqlite():
        op.execute("ALTER TABLE jobs DROP COLUMN sweep_id")
    else:
        op.drop_constraint(FK_NAME, "jobs", type_="foreignkey")
        op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweeps_created_at", table_name="sweeps")
    op.drop_index("ix_sweeps_owner_id", table_name="sweeps")
    op.drop_table("sweeps")
