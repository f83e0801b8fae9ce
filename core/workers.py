"""Worker leases in the database (`core.tables.WorkerRow`): what `python -m worker` processes are
alive, which queues they listen on and on what device.

Each worker's parent renews its row every LEASE_SECONDS / 3 (`worker.service_worker`); a row whose
`heartbeat_at` is older than LEASE_SECONDS belongs to a dead worker. The database, not Redis, is
read, so a Redis flush or restart does not hide live workers. Used by the API (`GET /v1/workers`,
the `waiting_for_worker` phase of queued jobs) and by the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.tables import WorkerRow, utcnow

DEAD_ROWS_KEPT_FOR = timedelta(hours=1)  # a dead worker's row is deleted after this


def lease_cutoff(lease_seconds: float, now: datetime | None = None) -> datetime:
    """Rows renewed before this instant are dead."""
    return (now or utcnow()) - timedelta(seconds=float(lease_seconds))


def live_workers(session: Session, lease_seconds: float) -> Sequence[WorkerRow]:
    """The workers whose lease is current, by name."""
    return session.scalars(
        select(WorkerRow).where(WorkerRow.heartbeat_at >= lease_cutoff(lease_seconds))
        .order_by(WorkerRow.name)
    ).all()


def live_queues(session: Session, lease_seconds: float) -> set[str]:
    """The queues at least one live worker listens on."""
    return {q for w in live_workers(session, lease_seconds) for q in (w.queues or [])}


def renew_worker(session: Session, *, name: str, hostname: str, pid: int, queues: list[str],
                 device: str, current_job_id: str | None, started_at: datetime) -> None:
    """Insert or refresh the lease row of worker `name` (its own row: no concurrent writer)."""
    now = utcnow()
    values = {"hostname": hostname, "pid": pid, "queues": list(queues), "device": device,
              "state": "busy" if current_job_id else "idle", "current_job_id": current_job_id,
              "heartbeat_at": now}
    result = session.execute(update(WorkerRow).where(WorkerRow.name == name).values(**values))
    if not getattr(result, "rowcount", 0):
        session.add(WorkerRow(name=name, started_at=started_at, **values))


def remove_worker(session: Session, name: str) -> None:
    session.execute(delete(WorkerRow).where(WorkerRow.name == name))


def delete_dead_workers(session: Session, lease_seconds: float) -> int:
    """Forget workers dead for DEAD_ROWS_KEPT_FOR; returns how many rows went."""
    cutoff = lease_cutoff(lease_seconds) - DEAD_ROWS_KEPT_FOR
    result = session.execute(delete(WorkerRow).where(WorkerRow.heartbeat_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
