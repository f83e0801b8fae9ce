"""Which accelerators exist, found WITHOUT initialising CUDA in the calling process.

The RQ parent process forks a work horse per job; a parent that had initialised CUDA would hand its
children a broken CUDA context. So the parent asks a throw-away subprocess, and only the work horse
(`job_device`) touches `torch.cuda`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from functools import lru_cache

from core.settings import get_settings

log = logging.getLogger(__name__)
CUDA_PROBE_TIMEOUT_SECONDS = 120.0
_PROBE = (
    "import json, torch; n = torch.cuda.device_count() if torch.cuda.is_available() else 0; "
    "print(json.dumps([torch.cuda.get_device_name(i) for i in range(n)]))"
)


@lru_cache(maxsize=1)
def cuda_device_names_in_subprocess(timeout: float = CUDA_PROBE_TIMEOUT_SECONDS) -> tuple[str, ...]:
    """Names of the usable CUDA devices, asked of a separate Python process once (none on any
    failure)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return tuple(str(n) for n in json.loads(out.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # noqa: BLE001 - no usable CUDA
        log.info("CUDA probe found no device (%s)", exc)
        return ()


def cuda_device_count_in_subprocess(timeout: float = CUDA_PROBE_TIMEOUT_SECONDS) -> int:
    """Number of usable CUDA devices, asked of a separate Python process (0 on any failure)."""
    return len(cuda_device_names_in_subprocess(timeout))


def worker_device_label(queues: list[str], forced_device: str | None = None) -> str:
    """What a worker on `queues` computes on, for `GET /v1/workers`: `cpu`, or `cuda (<name>)`
    (`cuda:1 (<name>)` when forced to a device); the parent never initialises CUDA for it."""
    device = forced_device if forced_device is not None else get_settings().worker_device
    if (device and not device.startswith("cuda")) or "gpu" not in queues:
        return device or "cpu"
    names = cuda_device_names_in_subprocess()
    index = int(device.split(":", 1)[1]) if device and ":" in device else 0
    name = names[index] if 0 <= index < len(names) else "unknown"
    return f"{device or 'cuda'} ({name})"


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
