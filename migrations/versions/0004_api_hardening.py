"""api hardening: `idempotency_keys` (the first answer to a POST with `Idempotency-Key`) and a
unique index on `owners.name` (`create-key` refuses a name twice).

Owners that already share a name keep it for the oldest and get ` (2)`, ` (3)`, ... appended
(by creation time) before the unique index is built; the downgrade drops the index and the table
and leaves the names as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

owners = sa.table("owners", sa.column("id", sa.String(40)), sa.column("name", sa.String(200)),
                  sa.column("created_at", sa.DateTime(timezone=True)))


def _dedupe_owner_names() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(owners.c.id, owners.c.name)
                        .order_by(owners.c.created_at, owners.c.id)).all()
    taken = {name for _, name in rows}
    seen: set[str] = set()
    for owner_id, name in rows:
        if name not in seen:
            seen.add(name)
            continue
        n = 2
        while f"{name} ({n})" in taken:
            n += 1
        new = f"{name} ({n})"
        taken.add(new)
        seen.add(new)
        bind.execute(sa.update(owners).where(owners.c.id == owner_id).values(name=new))


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=40), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "key"),
    )
    _dedupe_owner_names()
    op.create_index("ix_owners_name", "owners", ["name"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_owners_name", table_name="owners")
    op.drop_table("idempotency_keys")
