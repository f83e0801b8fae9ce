"""Which accelerators exist, found WITHOUT initialising CUDA in the calling process.

The RQ parent process forks a work horse per job; a parent that had initialised CUDA would hand its
children a broken CUDA context. So the parent asks a throw-away subprocess, and only the work horse
(`job_device`) touches `torch.cuda`.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from core.settings import get_settings

log = logging.getLogger(__name__)
CUDA_PROBE_TIMEOUT_SECONDS = 120.0
_PROBE = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def cuda_device_count_in_subprocess(timeout: float = CUDA_PROBE_TIMEOUT_SECONDS) -> int:
    """Number of usable CUDA devices, asked of a separate Python process (0 on any failure)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - no usable CUDA
        log.info("CUDA probe found no device (%s)", exc)
        return 0


def worker_queues(forced_device: str | None = None) -> list[str]:
    """Queues to listen on: `gpu` then `cpu` where CUDA exists (or is forced), else `cpu` only."""
    device = forced_device if forced_device is not None else get_settings().worker_device
    if device:
        return ["gpu", "cpu"] if device.startswith("cuda") else ["cpu"]
    return ["gpu", "cpu"] if cuda_device_count_in_subprocess() > 0 else ["cpu"]


def job_device() -> str:
    """The torch device for a job; call only in the work horse (it may initialise CUDA)."""
    forced = get_settings().worker_device
    if forced:
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
