"""Training state saved at milestones and every few epochs, so a crashed or lost job resumes there.

The state (model, optimizer, EMA, RNG, epoch; `models.training.TrainingState`) is written by the
worker itself to ARTIFACT_DIR/training-state/<job_id>.state — the artifact volume is the one place
every worker host shares — atomically (temporary file + rename), and deleted when the job ends.
It is our own data, never a user upload.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from core.settings import get_settings
from models.training.state import TrainingState

log = logging.getLogger(__name__)


def training_state_path(job_id: str) -> Path:
    return get_settings().resolved_artifact_dir / "training-state" / f"{job_id}.state"


def save_training_state(job_id: str, state: TrainingState) -> None:
    """Write `state` (a TrainingState) for `job_id`, replacing the previous one atomically."""
    path = training_state_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        Path(tmp).write_bytes(state.to_bytes())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_training_state(job_id: str) -> TrainingState | None:
    """The last saved TrainingState of `job_id`, or None (none saved, or unreadable)."""
    path = training_state_path(job_id)
    if not path.is_file():
        return None
    try:
        return TrainingState.from_bytes(path.read_bytes())
    except Exception:  # noqa: BLE001 - a bad state means "start over", not "fail"
        log.exception("job %s: could not read its training state; starting over", job_id)
        return None


def delete_training_state(job_id: str) -> None:
    training_state_path(job_id).unlink(missing_ok=True)
