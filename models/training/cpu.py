"""The CPU allocator setting that training applies before it runs on the CPU."""

from __future__ import annotations

import ctypes
import sys

_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process (glibc only): fewer page faults per step.

    PyTorch's CPU tensors come from malloc; glibc serves blocks over its mmap threshold with fresh
    mmaps and trims the heap on free, so every training step page-faults its activations in again
    (~400 faults, ~0.7 ms of system time per step of the paper MLP at batch 400). Raising the mmap
    and trim thresholds to 32 MB / 256 MB keeps those pages. Process-wide and idempotent; returns
    whether the settings were applied.
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1 and libc.mallopt(m_trim_threshold, 256 * 2**20) == 1
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok
