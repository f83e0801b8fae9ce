"""Shared schema pieces: pagination parameters and the page envelope."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 500

Limit = Annotated[
    int,
    Query(ge=1, le=MAX_PAGE_LIMIT,
          description=f"Page size (1..{MAX_PAGE_LIMIT}, default {DEFAULT_PAGE_LIMIT})."),
]
MAX_OFFSET = 10**9
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET,
                              description=f"Items to skip (newest first), 0..{MAX_OFFSET}. "
                              "Default 0.")]


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first. Fetch the next page with `offset=next_offset`."""

    items: list[T]
    total: int = Field(description="Items matching the filter, over all pages.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page, null on the last page.")


def page_of(items: list[T], total: int, limit: int, offset: int) -> Page[T]:
    nxt = offset + len(items)
    return Page[T](items=items, total=total, limit=limit, offset=offset,
                   next_offset=nxt if nxt < total else None)
