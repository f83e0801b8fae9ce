"""/v1/workers: the live workers per queue and their devices."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import CurrentOwner, SessionDep, SettingsDep
from app.errors import problem_responses
from app.schemas.workers import WorkersPublic
from app.services import workers as service

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", summary="Live workers per queue, with their devices",
            responses=problem_responses(401))
def list_workers(owner: CurrentOwner, session: SessionDep,
                 settings: SettingsDep) -> WorkersPublic:
    return service.workers_by_queue(session, settings)
