"""What a job body gets: the job's resolved spec (`core.contract`), its inputs, the device it
runs on, the attempt, its lease (the fence of every write) and the progress reporter (which also
reads the cancellation flag)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from core.contract import MeasureJobSpec, SampleJobSpec, TrainJobSpec
from worker.errors import JobCanceled
from worker.lease import RunLease
from worker.progress import ProgressReporter


@dataclass
class JobContext:
    """A claimed job: a snapshot of its row's inputs, the device, the progress reporter."""

    job_id: str
    owner_id: str
    spec: TrainJobSpec | MeasureJobSpec | SampleJobSpec
    dataset_id: str | None
    input_checkpoint_id: str | None
    attempt: int
    device: str
    worker_name: str
    reporter: ProgressReporter
    lease: RunLease  # fences every write of this run on its attempt (worker.lease)
    started: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str:
        return self.spec.type

    def elapsed(self) -> float:
        """Seconds since this run started."""
        return round(time.monotonic() - self.started, 3)

    def check_canceled(self) -> None:
        """Raise JobCanceled when cancellation was asked for (checked between steps/phases), or
        JobSuperseded when this run's attempt was taken over."""
        self.lease.check()
        if self.reporter.cancel_requested():
            raise JobCanceled()


def current_worker_name() -> str:
    """The RQ worker's name inside a work horse, else host:pid (direct calls, tests)."""
    return os.environ.get("RQ_WORKER_ID") or f"local:{socket.gethostname()}:{os.getpid()}"
