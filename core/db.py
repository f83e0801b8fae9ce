"""Engine and session handling: sessions and commits happen in one place (`session_scope`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Update, create_engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL mode, a busy timeout and enforced foreign keys.

    The pool is sized on purpose (DB_POOL_SIZE + DB_MAX_OVERFLOW connections per process) and a
    request waits at most DB_POOL_TIMEOUT_SECONDS for one (then `sqlalchemy.exc.TimeoutError`,
    which the API answers with 503 + Retry-After). The API's in-flight cap
    (MAX_IN_FLIGHT_REQUESTS) keeps the wait short: requests never hold a connection while they
    wait for a thread (`app.deps`).
    """
    settings = get_settings()
    pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout_seconds}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **pool,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True,
                         connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}, **pool)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    """The engine for the configured DATABASE_URL (one per URL per process)."""
    return engine_for(get_settings().resolved_database_url)


def session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """A session (from `factory`, default the configured database's) that commits on success and
    rolls back on error."""
    session = (factory or session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rows_changed(session: Session, statement: Update) -> int:
    """Execute an UPDATE and return how many rows it changed (the fence of a state change)."""
    result = session.execute(statement)
    return int(cast(CursorResult[Any], result).rowcount)


def lock_for_write(session: Session, entity: Any, row_id: str) -> bool:
    """Hold a write lock covering row `row_id` of `entity` (a table with `id` and `created_at`)
    until the session's transaction ends, so that read-then-write steps of concurrent sessions
    on that row run one after the other. False when the row does not exist.

    PostgreSQL (and other servers): `SELECT ... FOR UPDATE` of that row. SQLite has one writer
    at a time and no row locks: a no-op UPDATE of the row begins the write transaction (waiting
    up to SQLITE_BUSY_TIMEOUT_MS for another writer), and every read after it sees the latest
    commit; a plain `FOR UPDATE` would be ignored and let two sessions read the same state.
    """
    if session.get_bind().dialect.name == "sqlite":
        return rows_changed(session, update(entity).where(entity.id == row_id)
                            .values(created_at=entity.created_at)) == 1
    found = session.execute(select(entity.id).where(entity.id == row_id).with_for_update())
    return found.first() is not None
