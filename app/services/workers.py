"""The live workers per queue, from their leases in the database (`core.workers`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.schemas.workers import WorkerPublic, WorkersPublic
from core.queue import QUEUE_NAMES
from core.settings import Settings
from core.workers import live_workers


def workers_by_queue(session: Session, settings: Settings) -> WorkersPublic:
    """Each queue with the workers whose lease is current (shared infrastructure: every owner
    sees the same list, without the jobs they run)."""
    rows = live_workers(session, settings.lease_seconds)
    public = [WorkerPublic(name=w.name, hostname=w.hostname, queues=list(w.queues or []),
                           device=w.device, state="busy" if w.state == "busy" else "idle",
                           started_at=w.started_at, heartbeat_at=w.heartbeat_at) for w in rows]
    return WorkersPublic(
        queues={q: [w for w in public if q in w.queues] for q in QUEUE_NAMES},
        lease_seconds=settings.lease_seconds,
        reconcile_interval_seconds=settings.reconcile_interval_seconds,
    )
