"""/v1/sweeps: a grid of train jobs as one request; its table, log fits and plot."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from redis import Redis

from app.deps import CurrentOwner, SessionDep, SettingsDep
from app.errors import problem_responses
from app.plots import sweep_png
from app.schemas.common import Limit, Offset, Page, page_of
from app.schemas.sweeps import SweepCreate, SweepPublic, SweepSummary, SweepTable
from app.services import sweeps as service
from app.services.idempotency import REPLAY_HEADER, IdempotencyKeyHeader, check_key
from app.services.sweep_tables import table_csv
from core import queue as rq_client

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

_EXAMPLES = {
    "sizes x seeds (mixture)": {"value": {
        "base": {"dataset_id": "ds_...", "training": {"epochs": 20}},
        "grid": {"n_train": [256, 1024, 4096, 16384], "seed": [0, 1]}}},
    "sizes x processes (digits)": {"value": {
        "base": {"dataset_id": "ds_...", "training": {"epochs": 20}},
        "grid": {"n_train": [100, 200, 400, 800, 1600], "process": [{"kind": "vp"},
                                                                    {"kind": "sl"}]},
        "subset_seed": 0, "training_budget": "steps"}},
}


def _redis(request: Request) -> Redis:
    return rq_client.redis_connection(request.app.state.settings.resolved_redis_url)


@router.post(
    "", status_code=202, response_model=SweepPublic,
    summary="Submit a sweep: one train job per grid point; 202 + Location: /v1/sweeps/{id}",
    description=(
        "`base` is a train request without `type`; `grid` has any of `n_train` (nested subsets "
        "of the training split, class-balanced with labels), `seed` (training.seed), `process` "
        "and `network` (keys overriding base.network). The grid size is capped by "
        "MAX_SWEEP_JOBS (422 naming the cap); an invalid grid point rejects the whole sweep "
        "with 422 naming the axis (`grid.n_train`, ...) or base field (`base.training.epochs`). "
        "`Idempotency-Key` makes a retry safe (the first sweep again, 202). The sweep counts as "
        "one submission against MAX_QUEUED_JOBS_PER_OWNER (429 + Retry-After)."),
    responses=problem_responses(401, 404, 422, 429, 503),
)
def submit_sweep(request: Request, response: Response, session: SessionDep, owner: CurrentOwner,
                 settings: SettingsDep,
                 body: Annotated[SweepCreate, Body(openapi_examples=_EXAMPLES)],
                 idempotency_key: IdempotencyKeyHeader = None) -> SweepPublic:
    doc, replayed = service.submit(session, owner, body, settings, _redis(request),
                                   check_key(idempotency_key))
    response.headers["Location"] = f"/v1/sweeps/{doc.id}"
    if replayed:
        response.headers[REPLAY_HEADER] = "true"
    return doc


@router.get("", response_model=Page[SweepSummary], summary="List your sweeps (newest first)",
            responses=problem_responses(401, 422))
def list_sweeps(session: SessionDep, owner: CurrentOwner, limit: Limit = 50,
                offset: Offset = 0) -> Page[SweepSummary]:
    rows, total = service.list_owned(session, owner, limit, offset)
    counts = service.counts_of(session, [s.id for s in rows])
    return page_of([service.sweep_summary(s, counts[s.id]) for s in rows], total, limit, offset)


@router.get("/{sweep_id}", response_model=SweepPublic,
            summary="A sweep: status counts, its jobs (with errors), the table and the log fits",
            responses=problem_responses(401, 404))
def get_sweep(sweep_id: str, session: SessionDep, owner: CurrentOwner) -> SweepPublic:
    return service.sweep_public(session, service.get_owned(session, owner, sweep_id))


@router.get(
    "/{sweep_id}/table", response_model=SweepTable,
    summary="The table: S_NN per (n_train, process, network, epoch) over seeds (JSON or CSV)",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
               **problem_responses(401, 404, 422)},
)
def get_table(sweep_id: str, session: SessionDep, owner: CurrentOwner,
              format: Annotated[Literal["json", "csv"],
                                Query(description="json (default) or csv")] = "json",
              ) -> SweepTable | Response:
    doc = service.sweep_public(session, service.get_owned(session, owner, sweep_id))
    if format == "csv":
        return Response(table_csv(doc.table), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'inline; filename="{sweep_id}-table.csv"'})
    return SweepTable(rows=doc.table)


@router.get("/{sweep_id}/plot.png", response_class=Response,
            summary="S_NN against N (log axis) per process, seed error bars, fit, S_tot (PNG)",
            responses={200: {"content": {"image/png": {}}}, **problem_responses(401, 404)})
def get_plot(sweep_id: str, session: SessionDep, owner: CurrentOwner) -> Response:
    doc = service.sweep_public(session, service.get_owned(session, owner, sweep_id))
    return Response(sweep_png(doc.table, doc.fits, doc.id), media_type="image/png")


@router.post("/{sweep_id}/cancel", response_model=SweepPublic,
             summary="Cancel the sweep's unfinished jobs (queued at once, running between steps)",
             responses=problem_responses(401, 404, 409))
def cancel_sweep(sweep_id: str, request: Request, session: SessionDep,
                 owner: CurrentOwner) -> SweepPublic:
    try:
        connection: Redis | None = _redis(request)
    except Exception:  # noqa: BLE001 - cancel works from the DB alone
        connection = None
    return service.sweep_public(session, service.cancel(session, owner, sweep_id, connection))


@router.delete("/{sweep_id}", status_code=204, response_class=Response,
               summary="Delete a finished sweep (its jobs and results stay); 409 while it runs",
               responses=problem_responses(401, 404, 409))
def delete_sweep(sweep_id: str, session: SessionDep, owner: CurrentOwner) -> Response:
    service.delete_owned(session, owner, sweep_id)
    return Response(status_code=204)
