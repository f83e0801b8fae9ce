"""Readable job errors: one line for the user (stored on the job row), the traceback in the log."""

from __future__ import annotations

from core.settings import get_settings

MAX_ERROR_CHARS = 2000


class JobCanceled(Exception):  # noqa: N818 - a signal, not an error
    """Cancellation was requested; raised between training steps or measurement phases."""


class JobInputError(ValueError):
    """A job's input is missing or unusable; the message is shown to the user."""


def _first_line(text: str) -> str:
    line = " ".join(text.strip().split())
    return line[:MAX_ERROR_CHARS] + ("..." if len(line) > MAX_ERROR_CHARS else "")


def readable_error(exc: BaseException, *, device: str | None = None) -> str:
    """A short, stack-trace-free explanation of why a job failed."""
    name = type(exc).__name__
    text = str(exc)
    if name == "JobTimeoutException":
        limit = get_settings().job_timeout_seconds
        return (f"The job ran longer than its time limit of {limit} s (JOB_TIMEOUT_SECONDS) "
                "and was stopped.")
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        where = f" on {device}" if device else ""
        return _first_line(
            f"Out of memory{where}: {text} Reduce batch_size, n_samples or the network size."
        )
    if isinstance(exc, JobInputError):
        return _first_line(text)
    if isinstance(exc, ValueError | TypeError | KeyError) and text:
        # validation errors of models/ (DataError, ProcessRangeError, CheckpointError, ...) are
        # written for users; name the kind so it can be searched for
        return _first_line(f"{name}: {text}")
    return _first_line(f"Internal error in the worker ({name}: {text or 'no message'}).")
