"""Where training draws its times s (docs/math.md §2.4).

The loss at time s penalises the error of e_theta with weight lambda(s) Sigma(s)^2, while the
neural entropy integrates the same error with weight sigma(s)^2 / 2. Drawing s with density
proportional to sigma^2 / Sigma^2 (and unit lambda) therefore trains on the entropy's own
weighting -- the maximum-likelihood weighting, by importance sampling rather than by a weight
that diverges at s -> 0. For every process here sigma^2 / Sigma^2 = -d log SNR / ds
(d/ds log(Sigma^2 / mu^2) = (sigma^2 - 2 a Sigma^2) / Sigma^2 + 2 a), so that density is
*uniform in log-SNR*.

`TimeSampler` draws a share `log_snr_share` of the throws uniformly in log-SNR and the rest
uniformly in s (share 0: the paper's uniform times).
"""

from __future__ import annotations

import numpy as np
import torch

from models.entropy.quadrature import s_at_log_snr
from models.processes import ForwardProcess

TABLE_SIZE = 2049  # nodes of the log-SNR -> s table (linear in between)


class TimeSampler:
    """Maps uniform draws u in [0, 1) to training times s in [lo, hi] (shape (B,))."""

    def __init__(self, process: ForwardProcess, lo: float, hi: float, log_snr_share: float) -> None:
        if not 0.0 <= log_snr_share <= 1.0:
            raise ValueError(f"log_snr_share must lie in [0, 1], got {log_snr_share}")
        self.lo, self.hi, self.share = float(lo), float(hi), float(log_snr_share)
        self.table: torch.Tensor | None = None
        if self.share > 0:
            ends = process.log_snr(torch.tensor([self.lo, self.hi], dtype=torch.float64))
            lam = np.linspace(float(ends[0]), float(ends[1]), TABLE_SIZE)
            s = s_at_log_snr(process, lam, self.lo, self.hi)
            s[0], s[-1] = self.lo, self.hi
            self.table = torch.from_numpy(s)

    def __call__(self, u: torch.Tensor, pick: torch.Tensor | None = None) -> torch.Tensor:
        """Times for draws `u` (B,); `pick` (B,) in [0, 1) chooses log-SNR where < the share."""
        uniform = self.lo + (self.hi - self.lo) * u
        if self.table is None:
            return uniform
        table = self.table.to(device=u.device, dtype=u.dtype)
        pos = u * (TABLE_SIZE - 1)
        i = pos.floor().long().clamp(max=TABLE_SIZE - 2)
        frac = pos - i.to(u.dtype)
        log_snr_times = torch.lerp(table[i], table[i + 1], frac)
        if self.share >= 1.0 or pick is None:
            return log_snr_times
        return torch.where(pick < self.share, log_snr_times, uniform)
