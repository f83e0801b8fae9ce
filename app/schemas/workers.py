"""The live workers, per queue (`GET /v1/workers`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class WorkerPublic(BaseModel):
    name: str = Field(description="The worker's name (host.pid.random unless set).")
    hostname: str
    queues: list[str] = Field(description="Queues it takes jobs from, in order of priority.")
    device: str = Field(description="What it computes on: cpu, or cuda (<device name>).")
    state: Literal["idle", "busy"]
    started_at: datetime
    heartbeat_at: datetime = Field(description="Its last lease renewal.")


class WorkersPublic(BaseModel):
    queues: dict[str, list[WorkerPublic]] = Field(
        description="Every queue (gpu, cpu) with the live workers that listen on it; an empty "
        "list means its jobs wait (their phase is `waiting_for_worker`).")
    lease_seconds: float = Field(
        description="A worker whose lease is older than this is dead and not listed; a job it "
        "ran is taken over within lease_seconds + reconcile_interval_seconds.")
    reconcile_interval_seconds: float
