"""jobs.convergence (a train job's S_NN trajectory and verdict, core.contract.Convergence), and the
training-recipe fields of every stored train request.

Train jobs stored before this revision were trained with the paper's recipe, so their resolved
`training` gains exactly that: recipe "paper", a constant learning rate, no warm-up, times uniform
in s, e_theta read directly, no early stop. The column is added and dropped with plain ALTER TABLE
(never SQLite batch mode's copy of `jobs`, which would cascade through the rows that reference it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
PAPER_TRAINING = {"recipe": "paper", "lr_schedule": "constant", "lr_final_fraction": 0.0,
                  "warmup_steps": 0, "log_snr_share": 0.0, "parametrization": "entropy_matching",
                  "stop_when_converged": False, "convergence_tolerance": 0.02}

jobs = sa.table("jobs", sa.column("id", sa.String(40)), sa.column("type", sa.String(20)),
                sa.column("request", JSON_TYPE))


def _rewrite_training(add: bool) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.request).where(jobs.c.type == "train")).all()
    for job_id, request in rows:
        doc = dict(request or {})
        training = dict(doc.get("training") or {})
        if add:
            training = {**PAPER_TRAINING, **training}
        else:
            for key in PAPER_TRAINING:
                training.pop(key, None)
        doc["training"] = training
        bind.execute(sa.update(jobs).where(jobs.c.id == job_id).values(request=doc))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("convergence", JSON_TYPE, nullable=True))
    _rewrite_training(add=True)


def downgrade() -> None:
    _rewrite_training(add=False)
    op.drop_column("jobs", "convergence")
