"""Training states for resuming a train job anywhere: saved every TRAINING_STATE_INTERVAL_SECONDS of
wall-clock time (mid-epoch if need be), every few epochs and at milestones, into the artifact
store as the named object `training-state/<job_id>.state` — so a job killed on host A resumes on
host B, which shares only the database, Redis and the store. Deleted when the job ends.

The state (model, optimizer, EMA, epoch and step; `models.training.TrainingState`) is our own
data, never a user upload. A write replaces the previous state atomically (a rename locally; an
S3 PUT is all-or-nothing); an S3 state carries its sha256 in the object's metadata, checked on read.
"""

from __future__ import annotations

import logging

from core.artifacts import ArtifactCorrupt, get_artifact_store
from models.training.state import TrainingState

log = logging.getLogger(__name__)


def training_state_name(job_id: str) -> str:
    """The object name of `job_id`'s training state in the artifact store."""
    return f"training-state/{job_id}.state"


def save_training_state(job_id: str, state: TrainingState) -> bool:
    """Write `state` for `job_id`, replacing the previous one; False (logged) when the store
    refused it — a missed resume point is not worth failing the job for."""
    try:
        get_artifact_store().put_object(training_state_name(job_id), state.to_bytes())
        return True
    except Exception:  # noqa: BLE001
        log.exception("job %s: could not save its training state (epoch %s, step %s)",
                      job_id, state.epoch, state.step)
        return False


def has_training_state(job_id: str) -> bool:
    return get_artifact_store().get_object(training_state_name(job_id)) is not None


def load_training_state(job_id: str) -> TrainingState | None:
    """The last saved TrainingState of `job_id`, or None (none saved, corrupt or unreadable)."""
    try:
        data = get_artifact_store().get_object(training_state_name(job_id))
    except ArtifactCorrupt:
        log.exception("job %s: its training state is corrupt; starting over", job_id)
        return None
    if data is None:
        return None
    try:
        return TrainingState.from_bytes(data)
    except Exception:  # noqa: BLE001 - a bad state means "start over", not "fail"
        log.exception("job %s: could not read its training state; starting over", job_id)
        return None


def delete_training_state(job_id: str) -> None:
    get_artifact_store().delete_object(training_state_name(job_id))
