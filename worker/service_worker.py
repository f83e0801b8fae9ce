"""The RQ worker class of the service: fork per job, reconcile periodically, shut down promptly.

- Work horses are forked; right after the fork the horse drops the SQLAlchemy connections it
  inherited (`engine.dispose(close=False)`) so parent and child never share a socket. The parent
  never initialises CUDA (see `worker.devices`) and never runs a torch operation (it only
  imports): a child forked after the parent used torch's CPU thread pool can deadlock in it
  (seen here), and one forked after CUDA initialisation cannot use CUDA.
- The reconciler (`worker.reconciler.reconcile`) runs at start-up and every
  RECONCILE_INTERVAL_SECONDS, both while idle (the blocking dequeue wakes up that often) and
  while a horse is working (from the parent's monitoring loop).
- SIGTERM / SIGINT: a cold stop at once. The running horse is killed; its job stays `running` in
  the DB, and the reconciler of the next worker to start re-enqueues it, resuming from the last
  milestone. (RQ's default waits for the job to finish, which for training can take hours.)
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

from rq.worker import Worker, WorkerStatus

from core.db import get_engine
from core.lifecycle import die_with_parent
from core.settings import get_settings
from worker.reconciler import reconcile

log = logging.getLogger(__name__)


def dispose_inherited_engine() -> None:
    """In a forked child: forget (without closing) the DB connections inherited from the parent."""
    get_engine().dispose(close=False)


class ServiceWorker(Worker):
    """rq.Worker with periodic reconciliation, fork hygiene and a prompt shutdown."""

    def __init__(self, *args: Any, reconcile_interval: float | None = None, **kwargs: Any) -> None:
        interval = float(reconcile_interval if reconcile_interval is not None
                         else get_settings().reconcile_interval_seconds)
        self.reconcile_interval = max(1.0, interval)
        # the blocking dequeue returns every worker_ttl - 15 s: wake up to reconcile on time
        kwargs.setdefault("worker_ttl", int(self.reconcile_interval) + 15)
        kwargs.setdefault("job_monitoring_interval", max(1, min(30, int(self.reconcile_interval))))
        super().__init__(*args, **kwargs)
        self._last_reconcile: float | None = None

    # ---- reconciliation ----
    def reconcile_now(self) -> None:
        self._last_reconcile = time.monotonic()
        try:
            report = reconcile(self.connection)
        except Exception:  # noqa: BLE001 - a failed pass is retried at the next interval
            log.exception("reconciler pass failed")
            return
        if report.requeued or report.failed or report.canceled:
            log.info("reconciler: requeued %s, failed %s, canceled %s",
                     report.requeued, report.failed, report.canceled)

    def maybe_reconcile(self) -> None:
        last = self._last_reconcile
        if last is None or time.monotonic() - last >= self.reconcile_interval:
            self.reconcile_now()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        self.maybe_reconcile()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        super().maintain_heartbeats(job, execution)
        self.maybe_reconcile()

    # ---- fork hygiene ----
    def main_work_horse(self, job: Any, queue: Any) -> None:
        die_with_parent()  # the horse has its own process group: make sure it dies with us
        dispose_inherited_engine()
        super().main_work_horse(job, queue)

    # ---- shutdown ----
    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._cold_stop)
        signal.signal(signal.SIGTERM, self._cold_stop)

    def _cold_stop(self, signum: int, frame: FrameType | None) -> None:
        log.warning("worker %s: signal %d, stopping now", self.name, signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.horse_pid:
            self.kill_horse()
            self.wait_for_horse()
        if self.get_state() == WorkerStatus.BUSY:
            self.set_state(WorkerStatus.IDLE)
        raise SystemExit(0)
