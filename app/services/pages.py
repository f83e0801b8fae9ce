"""One owner-scoped, newest-first page query shared by every list endpoint."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

Row = TypeVar("Row")


def newest_first_page(session: Session, table: type[Row], where: list[ColumnElement[bool]],
                      limit: int, offset: int) -> tuple[list[Row], int]:
    """Rows of `table` matching every condition in `where`, newest first (ties by id), and the
    total count before paging."""
    t: Any = table
    total = session.scalar(select(func.count()).select_from(t).where(*where)) or 0
    rows = session.scalars(
        select(t).where(*where).order_by(t.created_at.desc(), t.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)
