"""The RQ worker class of the service: fork per job, reconcile periodically, shut down promptly.

- Work horses are forked; right after the fork the horse drops the SQLAlchemy connections it
  inherited (`engine.dispose(close=False)`) so parent and child never share a socket. The parent
  never initialises CUDA (see `worker.devices`) and never runs a torch operation (it only
  imports): a child forked after the parent used torch's CPU thread pool can deadlock in it
  (seen here), and one forked after CUDA initialisation cannot use CUDA.
- The reconciler (`worker.reconciler.reconcile`) runs on its own clock in a daemon thread of the
  parent (`Maintenance`): at start-up and every RECONCILE_INTERVAL_SECONDS, whatever the RQ loop
  is doing (rq 3's dequeue loops inside Redis while idle and would never return to us). The
  thread has its own Redis client, so a horse forked while it works inherits no busy connection
  pool; it never touches torch.
- The worker's own lease (`core.workers`): the same thread pool of the parent renews the worker's
  row in the `workers` table every LEASE_SECONDS / 3 (queues, device, idle or busy with which
  job), which `GET /v1/workers` and the `waiting_for_worker` phase read; the row is removed on a
  clean stop.
- Each reconciler pass also feeds every sweep with held jobs (`core.sweep_feed.feed_all`).
- The orphan sweep (`worker.sweeper.sweep`) at start-up and every SWEEP_INTERVAL_SECONDS, in a
  third thread.
- SIGTERM / SIGINT: a cold stop at once. The running horse is killed; its job stays `running` in
  the DB with its lease dropped, so the next reconciler pass of any worker re-enqueues it, and it
  resumes from its last saved training state. (RQ's default waits for the job to finish, which
  for training can take hours.)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from redis import ConnectionPool, Redis
from rq.worker import Worker, WorkerStatus
from sqlalchemy import update

from core.db import get_engine, session_scope
from core.lifecycle import die_with_parent
from core.settings import get_settings
from core.sweep_feed import feed_all
from core.tables import Job, JobStatus, utcnow
from core.workers import delete_dead_workers, remove_worker, renew_worker
from worker.lease import renew_interval
from worker.reconciler import reconcile
from worker.sweeper import sweep

log = logging.getLogger(__name__)


def dispose_inherited_engine() -> None:
    """In a forked child: forget (without closing) the DB connections inherited from the parent."""
    get_engine().dispose(close=False)


_fork_gate = threading.Lock()
"""Held by a maintenance thread while it works, and by the parent while it forks a horse: a horse
is never forked while a thread of the parent holds a lock the horse would inherit locked (the
SQLAlchemy pool's, a Redis pool's, ...) — that deadlocked a horse on its first DB call."""


def _fresh_gate_in_child() -> None:
    global _fork_gate
    _fork_gate = threading.Lock()


os.register_at_fork(after_in_child=_fresh_gate_in_child)


class PeriodicTask:
    """`action()` now and then every `interval` s, in a daemon thread, until `stop()`; a failing
    call is logged and retried at the next tick."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self.name, self.interval, self.action = name, max(0.05, float(interval)), action
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> PeriodicTask:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                with _fork_gate:
                    self.action()
            except Exception:  # noqa: BLE001 - retried at the next tick
                log.exception("%s failed", self.name)
            self.runs += 1
            if self._stop.wait(max(0.0, self.interval - (time.monotonic() - started))):
                return


def private_redis(connection: Redis) -> Redis:
    """A client with its own connection pool to the server `connection` talks to."""
    pool = connection.connection_pool
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class,
                                                **pool.connection_kwargs))


class ServiceWorker(Worker):
    """rq.Worker with a reconciler on its own clock, fork hygiene and a prompt shutdown."""

    def __init__(self, *args: Any, reconcile_interval: float | None = None,
                 device_label: str = "cpu", **kwargs: Any) -> None:
        settings = get_settings()
        interval = float(reconcile_interval if reconcile_interval is not None
                         else settings.reconcile_interval_seconds)
        self.reconcile_interval = max(0.05, interval)
        self.lease_seconds = float(settings.lease_seconds)
        self.device_label = device_label
        self.current_db_job: str | None = None
        self.born_at = utcnow()
        kwargs.setdefault("worker_ttl", int(self.reconcile_interval) + 15)
        kwargs.setdefault("job_monitoring_interval", max(1, min(30, int(self.reconcile_interval))))
        super().__init__(*args, **kwargs)
        self._tasks: list[PeriodicTask] = []
        self._maintenance_redis: Redis | None = None

    # ---- maintenance on its own clock ----
    def start_maintenance(self) -> None:
        """Start the reconciler thread (idempotent)."""
        if self._tasks:
            return
        self._maintenance_redis = private_redis(self.connection)
        self._tasks = [
            PeriodicTask(f"lease-{self.name}", renew_interval(self.lease_seconds),
                         self.renew_lease),
            PeriodicTask(f"reconciler-{self.name}", self.reconcile_interval, self.reconcile_now),
            # its own thread: a slow sweep never delays a reconciler pass (the takeover bound)
            PeriodicTask(f"sweeper-{self.name}", get_settings().sweep_interval_seconds, sweep),
        ]
        for task in self._tasks:
            task.start()

    def stop_maintenance(self) -> None:
        for task in self._tasks:
            task.stop()

    def renew_lease(self) -> None:
        """Insert or refresh this worker's row in `workers` (and forget long-dead workers)."""
        with session_scope() as session:
            renew_worker(session, name=self.name, hostname=socket.gethostname(), pid=os.getpid(),
                         queues=list(self.queue_names()), device=self.device_label,
                         current_job_id=self.current_db_job, started_at=self.born_at)
            delete_dead_workers(session, self.lease_seconds)

    def drop_lease(self) -> None:
        try:
            with session_scope() as session:
                remove_worker(session, self.name)
        except Exception:  # noqa: BLE001 - the row then dies with its lease
            log.exception("worker %s: could not remove its lease row", self.name)

    def execute_job(self, job: Any, queue: Any) -> None:
        args = getattr(job, "args", None) or [None]
        self.current_db_job = str(args[0]) if args[0] is not None else None
        try:
            super().execute_job(job, queue)
        finally:
            self.current_db_job = None

    def reconcile_now(self) -> None:
        """One reconciler pass, then feed every sweep with held jobs (`core.sweep_feed`)."""
        connection = self._maintenance_redis or private_redis(self.connection)
        report = reconcile(connection)
        if report.requeued or report.failed or report.canceled:
            log.info("reconciler: requeued %s, failed %s, canceled %s",
                     report.requeued, report.failed, report.canceled)
        fed = feed_all(connection)
        if fed:
            log.info("reconciler: sweeps fed %s", fed)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self.start_maintenance()

    def teardown(self) -> None:
        self.stop_maintenance()
        self.drop_lease()
        super().teardown()

    # ---- fork hygiene ----
    def fork_work_horse(self, job: Any, queue: Any) -> None:
        """Fork while no maintenance thread is mid-pass (see `_fork_gate`)."""
        gate = _fork_gate
        with gate:
            super().fork_work_horse(job, queue)

    def main_work_horse(self, job: Any, queue: Any) -> None:
        die_with_parent()  # the horse has its own process group: make sure it dies with us
        dispose_inherited_engine()
        super().main_work_horse(job, queue)

    # ---- shutdown ----
    def release_jobs(self) -> None:
        """Drop the lease of every job this worker ran (its horse is dead): the next reconciler
        pass, of any worker, re-enqueues them without waiting for the lease to expire."""
        try:
            with session_scope() as session:
                session.execute(update(Job).where(
                    Job.worker_name == self.name, Job.status == JobStatus.running.value,
                ).values(heartbeat_at=None))
        except Exception:  # noqa: BLE001 - then the lease simply expires
            log.exception("worker %s: could not release its jobs", self.name)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._cold_stop)
        signal.signal(signal.SIGTERM, self._cold_stop)

    def _cold_stop(self, signum: int, frame: FrameType | None) -> None:
        log.warning("worker %s: signal %d, stopping now", self.name, signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stop_maintenance()
        if self.horse_pid:
            self.kill_horse()
            self.wait_for_horse()
            self.release_jobs()
        self.drop_lease()
        if self.get_state() == WorkerStatus.BUSY:
            self.set_state(WorkerStatus.IDLE)
        raise SystemExit(0)
