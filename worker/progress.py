"""Progress reporting to the job's DB row at a bounded rate, and the cancellation flag read back.

`Job.progress` is a `core.contract.JobProgress`; a write happens at most
once per `Settings.progress_interval_seconds` (phase changes and `force=True` write at once), and
each write also refreshes `heartbeat_at` and reads `cancel_requested` in the same transaction, so
the database sees O(1/interval) statements per second from a job however fast it trains. With a
run's lease (`worker.lease.RunLease`) every write is fenced on the run's attempt and raises
`JobSuperseded` once the job was taken over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.contract import JobProgress
from core.db import session_scope
from core.tables import Job, utcnow
from worker.lease import RunLease

TRAINING_SHARE = 0.95  # share of `fraction` given to training; the final measurement gets the rest


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: None for None, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ProgressReporter:
    """Writes `Job.progress` at most every `interval` seconds and caches `cancel_requested`."""

    def __init__(
        self,
        job_id: str,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        lease: RunLease | None = None,
    ) -> None:
        self.job_id = job_id
        self.lease = lease
        self.interval = max(0.0, float(interval))
        self.clock = clock
        self.writes = 0  # number of DB writes so far (tests check the bound)
        self._last_write: float | None = None
        self._last_phase: str | None = None
        self._cancel = False
        self._last_cancel_check: float | None = None
        self.current = JobProgress(phase="starting")

    def _due(self, now: float) -> bool:
        return self._last_write is None or now - self._last_write >= self.interval

    def report(
        self,
        phase: str,
        *,
        epoch: int | None = None,
        epochs: int | None = None,
        loss: float | None = None,
        fraction: float | None = None,
        eta_seconds: float | None = None,
        force: bool = False,
    ) -> bool:
        """Record progress; returns True when it was written to the database now."""
        self.current = JobProgress(
            phase=phase,
            epoch=epoch,
            epochs=epochs,
            loss=finite_or_none(loss),
            fraction=None if fraction is None else min(1.0, max(0.0, float(fraction))),
            eta_seconds=None if eta_seconds is None else max(0.0, round(float(eta_seconds), 1)),
        )
        now = self.clock()
        if not (force or phase != self._last_phase or self._due(now)):
            return False
        self._write(now)
        self._last_phase = phase
        return True

    def _write(self, now: float) -> None:
        if self.lease is not None:
            with self.lease.session(progress=self.current.model_dump()) as session:
                cancel = self._read_cancel(session)
        else:
            with session_scope() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == self.job_id)
                    .values(progress=self.current.model_dump(), heartbeat_at=utcnow())
                )
                cancel = self._read_cancel(session)
        self._cancel = bool(cancel)
        self._last_write = now
        self._last_cancel_check = now
        self.writes += 1

    def _read_cancel(self, session: Session) -> bool:
        return bool(session.execute(
            select(Job.cancel_requested).where(Job.id == self.job_id)
        ).scalar_one_or_none())

    def report_phase(self, phase: str, *, force: bool = False) -> bool:
        """Record a new phase, keeping epoch, loss, fraction and ETA as they are."""
        c = self.current
        return self.report(phase, epoch=c.epoch, epochs=c.epochs, loss=c.loss, fraction=c.fraction,
                           eta_seconds=c.eta_seconds, force=force)

    def set_fraction(self, fraction: float) -> None:
        """Move the overall fraction (written with the next report)."""
        self.current = self.current.model_copy(update={"fraction": fraction})

    def final(self, phase: str, *, fraction: float | None = None) -> dict[str, Any]:
        """The progress document of a finished job (`done`, `failed` or `canceled`)."""
        update_: dict[str, Any] = {"phase": phase, "eta_seconds": 0.0 if phase == "done" else None}
        if fraction is not None:
            update_["fraction"] = fraction
        return self.current.model_copy(update=update_).model_dump()

    def cancel_requested(self) -> bool:
        """Whether cancellation was asked for; re-read from the DB at most every `interval` s.
        Raises JobSuperseded when this run's attempt was taken over."""
        if self.lease is not None:
            self.lease.check()
        now = self.clock()
        if self._last_cancel_check is None or now - self._last_cancel_check >= self.interval:
            with session_scope() as session:
                cancel = session.execute(
                    select(Job.cancel_requested).where(Job.id == self.job_id)
                ).scalar_one_or_none()
            self._cancel = bool(cancel)
            self._last_cancel_check = now
        return self._cancel


class TrainingClock:
    """Turns training steps into the job's overall fraction and an ETA (s) from the step rate."""

    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        *,
        start_epoch: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs = max(1, int(epochs))
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.clock = clock
        self.total_steps = self.epochs * self.steps_per_epoch
        self.start_step = min(self.total_steps, start_epoch * self.steps_per_epoch)
        self.start_time = clock()

    def steps_done(self, epoch: int, step: int) -> int:
        """Steps finished after `step` (1-based) of `epoch` (1-based)."""
        return min(self.total_steps, (epoch - 1) * self.steps_per_epoch + step)

    def fraction(self, done: int) -> float:
        return TRAINING_SHARE * done / self.total_steps

    def eta_seconds(self, done: int) -> float | None:
        """Remaining seconds at the rate seen so far in this run (None before any step)."""
        done_here = done - self.start_step
        elapsed = self.clock() - self.start_time
        if done_here <= 0 or elapsed <= 0:
            return None
        remaining = (self.total_steps - done) * elapsed / done_here
        return remaining / TRAINING_SHARE  # allow for the final measurement
