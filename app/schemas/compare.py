"""Several measurements' curves on one time axis."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.schemas.measurements import CurvePointPublic

COMPARE_CSV_COLUMNS = ("measurement_id", "label", "s", "rate", "rate_stderr", "cumulative",
                       "cumulative_stderr")


class TimeAxis(BaseModel):
    kind: str = Field(description="Process kind shared by every measurement.")
    t_min: float | None
    t_max: float | None


class CompareSeries(BaseModel):
    measurement_id: str
    label: str = Field(description="Data set, N, process and epoch, as far as known.")
    dataset_id: str | None
    dataset: str | None = Field(description="The data set's name (or kind), if it still exists.")
    n_train: int | None = Field(description="Training points of the measured network, if known.")
    process: str = Field(description="Process label: the kind and its non-default parameters.")
    process_spec: dict[str, Any]
    epoch: int | None
    neural_entropy: float = Field(description="S_NN(T), nats.")
    stderr: float
    total_entropy: float | None
    points: list[CurvePointPublic]


class ComparePublic(BaseModel):
    time_axis: TimeAxis
    series: list[CompareSeries]
