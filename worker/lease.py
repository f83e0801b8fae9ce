"""A run's lease on its job row: the fence every write of the run goes through, the heartbeat, and
the compute-time meter.

A run is one attempt at a job (`Job.attempts` after its claim). It owns the row while the row is
`running` with that attempt number. Every write the run makes - progress, convergence, milestone
checkpoints and measurements, the final result and status - happens in a transaction that first
runs the *fence*:

    UPDATE jobs SET heartbeat_at = now, compute_seconds = coalesce(compute_seconds, 0) + :delta
    WHERE id = :job AND attempts = :mine AND status = 'running'

and raises `JobSuperseded` when it changes no row (the reconciler took the job over, or it ended).
Inserts made in the same transaction therefore commit only while the attempt is current: on
PostgreSQL the UPDATE holds the row lock until commit, so a concurrent takeover waits for it; on
SQLite the transaction holds the single writer lock. A superseded run stops at its next write.

A background thread renews the lease every `LEASE_SECONDS / 3` s (so a run inside a long phase
without progress - a big measurement - stays live), which also accumulates `compute_seconds`:
a killed attempt's time is counted up to its last renewal (at most a third of the lease is lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from core.db import rows_changed, session_scope
from core.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


class JobSuperseded(Exception):  # noqa: N818 - a signal, not an error
    """This run's attempt is no longer the job's current one; it must stop without writing."""


def renew_interval(lease_seconds: float) -> float:
    """Seconds between renewals of a lease that expires after `lease_seconds`."""
    return max(0.05, float(lease_seconds) / 3.0)


class RunLease:
    """The fence of run (`job_id`, `attempt`), its heartbeat thread and its compute meter."""

    def __init__(self, job_id: str, attempt: int, lease_seconds: float,
                 *, started: float | None = None) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.interval = renew_interval(lease_seconds)
        self.superseded = False
        self.renewals = 0
        self._metered_until = time.monotonic() if started is None else started
        self._meter_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the fence ----
    def fence(self) -> ColumnElement[bool]:
        """The WHERE clause of every write of this run."""
        return ((Job.id == self.job_id) & (Job.attempts == self.attempt)
                & (Job.status == JobStatus.running.value))

    def _take_compute(self) -> float:
        """Seconds of compute since the last accounted write (and restart the meter)."""
        with self._meter_lock:
            now = time.monotonic()
            delta, self._metered_until = max(0.0, now - self._metered_until), now
            return delta

    def _give_back(self, delta: float) -> None:
        """Return `delta` seconds to the meter (their write was rolled back)."""
        with self._meter_lock:
            self._metered_until -= delta

    def renew(self, session: Session, **values: Any) -> float:
        """Run the fence in `session` (with `values` set on the row as well); returns the compute
        seconds it added. Raises JobSuperseded when the attempt is no longer current."""
        self.check()
        delta = self._take_compute()
        changed = rows_changed(session, update(Job).where(self.fence()).values(
            heartbeat_at=utcnow(),
            compute_seconds=func.coalesce(Job.compute_seconds, 0.0) + delta,
            **values,
        ))
        if changed != 1:
            self.superseded = True
            raise JobSuperseded(f"job {self.job_id}: attempt {self.attempt} is no longer current")
        self.renewals += 1
        return delta

    @contextmanager
    def session(self, **values: Any) -> Iterator[Session]:
        """A transaction that starts with the fence: what the caller adds commits only while this
        attempt is current (JobSuperseded otherwise, and nothing is written)."""
        delta = 0.0
        try:
            with session_scope() as session:
                delta = self.renew(session, **values)
                yield session
        except BaseException:
            self._give_back(delta)
            raise

    def write(self, **values: Any) -> None:
        """Set `values` on the row (fenced) and renew the lease, in one transaction."""
        with self.session(**values):
            pass

    def check(self) -> None:
        """Raise JobSuperseded when a renewal already found the attempt superseded (no I/O)."""
        if self.superseded:
            raise JobSuperseded(f"job {self.job_id}: attempt {self.attempt} is no longer current")

    # ---- the heartbeat thread ----
    def start(self) -> RunLease:
        """Renew the lease every `interval` s in a daemon thread until `stop()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name=f"lease-{self.job_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except JobSuperseded:
                log.warning("job %s: attempt %d was superseded; this run stops at its next "
                            "write", self.job_id, self.attempt)
                return
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next beat
                log.exception("job %s: lease renewal failed", self.job_id)
