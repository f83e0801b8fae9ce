"""Forward diffusion processes with affine drift (docs/math.md §1).

Every process is the SDE  dY = -a(s) Y ds + sigma(s) dB  on s in [t_min, t_max], with the Gaussian
transition  Y_s | Y_0 = x0 ~ N(mu(s) x0, Sigma(s)^2 I).  A subclass supplies a handful of scalar
formulas (a, sigma^2, mu, Sigma^2, the equilibrium precision); everything built from them —
perturbation, conditional and equilibrium scores, prior, probability-flow drift — lives once in
`ForwardProcess`.  Times are tensors of shape (B,); states are (B, ...) of any rank (vectors (B, D)
or images (B, C, H, W)).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from models.discrete_schedules import log_snr_table
from models.tensors import append_dims, squared_norm

T_MIN_DEFAULT = 1e-5  # smallest time any process is evaluated at (docs/math.md §1.3, the range column)


class ProcessRangeError(ValueError):
    """A time outside the process's range [t_min, t_max] was asked for."""


class ForwardProcess(ABC):
    """An SDE  dY = -a(s) Y ds + sigma(s) dB  with Gaussian transitions (docs/math.md §1.1)."""

    kind: ClassVar[str]
    t_min: float = T_MIN_DEFAULT
    t_max: float = 1.0

    # ---- per-process scalar formulas; s has shape (B,), results (B,) ----
    @abstractmethod
    def drift_rate(self, s: torch.Tensor) -> torch.Tensor:
        """a(s), so that the drift is b(y, s) = -a(s) y."""

    @abstractmethod
    def diffusion_squared(self, s: torch.Tensor) -> torch.Tensor:
        """sigma(s)^2, the squared diffusion coefficient."""

    @abstractmethod
    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        """ln mu(s) = -int_0^s a."""

    @abstractmethod
    def variance(self, s: torch.Tensor) -> torch.Tensor:
        """Sigma(s)^2, the variance of Y_s given Y_0 (per coordinate)."""

    @abstractmethod
    def equilibrium_precision(self, s: torch.Tensor) -> torch.Tensor:
        """2 a(s) / sigma(s)^2: the equilibrium score is -equilibrium_precision * y."""

    @abstractmethod
    def equilibrium_variance(self) -> float | None:
        """k^2 of the proper equilibrium N(0, k^2 I), or None where p_eq is flat (improper)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable parameters, with `kind`; `process_from_spec(p.spec())` rebuilds p."""

    # ---- derived quantities, written once ----
    def mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        """mu(s), shape (B,)."""
        return torch.exp(self.log_mean_scale(s))

    def std(self, s: torch.Tensor) -> torch.Tensor:
        """Sigma(s), shape (B,)."""
        return torch.sqrt(self.variance(s))

    def diffusion(self, s: torch.Tensor) -> torch.Tensor:
        """sigma(s), shape (B,)."""
        return torch.sqrt(self.diffusion_squared(s))

    def log_snr(self, s: torch.Tensor) -> torch.Tensor:
        """ln(mu^2 / Sigma^2), decreasing in s; shape (B,)."""
        return 2.0 * self.log_mean_scale(s) - torch.log(self.variance(s))

    def drift(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """b(y, s) = -a(s) y, shape of y."""
        return -append_dims(self.drift_rate(s), y.ndim) * y

    def perturb(self, x0: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of Y_s given Y_0 = x0: mu(s) x0 + Sigma(s) noise, with noise ~ N(0, I)."""
        mu, std = self.mean_scale(s), self.std(s)
        return append_dims(mu, x0.ndim) * x0 + append_dims(std, x0.ndim) * noise

    def conditional_score(self, y: torch.Tensor, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """grad_y log p(y_s | x0) = -(y - mu x0) / Sigma^2."""
        mu = append_dims(self.mean_scale(s), y.ndim)
        return -(y - mu * x0) / append_dims(self.variance(s), y.ndim)

    def equilibrium_score(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """grad log p_eq(y, s) = -2 a(s) y / sigma(s)^2 (docs/math.md §1.2)."""
        return -append_dims(self.equilibrium_precision(s), y.ndim) * y

    def equilibrium_log_prob(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log p_eq(y, s), shape (B,); zero for a flat (improper) equilibrium."""
        k2 = self.equilibrium_variance()
        if k2 is None:
            return torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        d = y[0].numel()
        return -0.5 * squared_norm(y) / k2 - 0.5 * d * math.log(2.0 * math.pi * k2)

    def probability_flow_drift(self, y: torch.Tensor, s: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """dy/ds of the probability-flow ODE: b(y, s) - sigma(s)^2 / 2 * score (docs/math.md §5)."""
        half_g2 = append_dims(0.5 * self.diffusion_squared(s), y.ndim)
        return self.drift(y, s) - half_g2 * score

    # ---- prior at the end time ----
    def default_data_variance(self) -> float:
        """Per-coordinate data variance assumed by the prior when none is given."""
        k2 = self.equilibrium_variance()
        return 1.0 if k2 is None else k2

    def prior_variance(self, t: float | None = None, data_variance: float | None = None) -> float:
        """Variance of the Gaussian prior pi = N(0, (mu(T)^2 v + Sigma(T)^2) I) at time T.

        With v = k^2 (the default for a proper equilibrium) this is exactly the equilibrium
        N(0, k^2 I); for VE it is the docs/math.md §1.4 prior N(0, (Sigma(T)^2 + data variance) I).
        """
        t = self.t_max if t is None else t
        v = self.default_data_variance() if data_variance is None else data_variance
        tt = torch.tensor([t], dtype=torch.float64)
        return float(self.mean_scale(tt) ** 2 * v + self.variance(tt))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        t: float | None = None,
        data_variance: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draws of shape `shape` = (B, ...) from the prior at time t (default t_max)."""
        std = math.sqrt(self.prior_variance(t, data_variance))
        return std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(
        self, y: torch.Tensor, *, t: float | None = None, data_variance: float | None = None
    ) -> torch.Tensor:
        """log pi(y) in nats for the prior at time t, shape (B,)."""
        var = self.prior_variance(t, data_variance)
        d = y[0].numel()
        return -0.5 * squared_norm(y) / var - 0.5 * d * math.log(2.0 * math.pi * var)

    # ---- range checks ----
    def check_times(self, s: torch.Tensor | float, name: str = "s") -> None:
        """Raise ProcessRangeError unless every time lies in [t_min, t_max]."""
        values = torch.as_tensor(s, dtype=torch.float64)
        if values.numel() == 0:
            return
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ProcessRangeError(f"{name} must be finite")
        slack = 1e-6  # relative: float32 times at the ends (s = 1e-5 is 9.99999975e-06) pass
        if lo < self.t_min * (1 - slack) or hi > self.t_max + slack * max(self.t_max, 1e-300):
            raise ProcessRangeError(
                f"{name} must lie in [{self.t_min:g}, {self.t_max:g}] for process '{self.kind}', got [{lo:g}, {hi:g}]"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "kind")
        return f"{type(self).__name__}({args})"


class VariancePreserving(ForwardProcess):
    """a = beta(s)/2, sigma^2 = kappa^2 beta(s), Sigma^2 = kappa^2 (1 - mu^2): equilibrium N(0, kappa^2 I).

    Subclasses give the schedule: `beta(s)` and `log_mean_scale(s)` = -int_0^s beta / 2.
    """

    kappa: float

    @abstractmethod
    def beta(self, s: torch.Tensor) -> torch.Tensor:
        """beta(s) = -2 d ln mu / ds, shape (B,)."""

    def drift_rate(self, s: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.beta(s)

    def diffusion_squared(self, s: torch.Tensor) -> torch.Tensor:
        return self.kappa**2 * self.beta(s)

    def variance(self, s: torch.Tensor) -> torch.Tensor:
        return -(self.kappa**2) * torch.expm1(2.0 * self.log_mean_scale(s))

    def equilibrium_precision(self, s: torch.Tensor) -> torch.Tensor:
        return torch.full_like(s, 1.0 / self.kappa**2)

    def equilibrium_variance(self) -> float:
        return self.kappa**2


class VP(VariancePreserving):
    """Variance preserving: beta(s) linear, a = beta/2, sigma^2 = kappa^2 beta; "VPx": kappa=0.1."""

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 16.0, kappa: float = 1.0) -> None:
        if not (beta_min >= 0 and beta_max > beta_min):
            raise ValueError(f"VP needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        if not kappa > 0:
            raise ValueError(f"VP needs kappa > 0, got {kappa}")
        self.beta_min, self.beta_max, self.kappa = float(beta_min), float(beta_max), float(kappa)
        self.t_min, self.t_max = T_MIN_DEFAULT, 1.0

    def beta(self, s: torch.Tensor) -> torch.Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * s

    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta_min * s - 0.25 * (self.beta_max - self.beta_min) * s * s

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "kappa": self.kappa,
        }


class VPCosine(VariancePreserving):
    """Variance preserving, cosine schedule: mu(s) = cos(pi/2 (s+c)/(1+c)) / cos(pi/2 c/(1+c))."""

    kind = "vp_cosine"

    def __init__(self, kappa: float = 1.0, c: float = 0.008) -> None:
        if not kappa > 0:
            raise ValueError(f"vp_cosine needs kappa > 0, got {kappa}")
        if not c > 0:
            raise ValueError(f"vp_cosine needs c > 0, got {c}")
        self.kappa, self.c = float(kappa), float(c)
        self.t_min, self.t_max = T_MIN_DEFAULT, 1.0 - 1e-3

    def _angle(self, s: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * (s + self.c) / (1.0 + self.c)

    def beta(self, s: torch.Tensor) -> torch.Tensor:
        return math.pi / (1.0 + self.c) * torch.tan(self._angle(s))

    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        log_cos0 = math.log(math.cos(0.5 * math.pi * self.c / (1.0 + self.c)))
        return torch.log(torch.cos(self._angle(s))) - log_cos0

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "kappa": self.kappa, "c": self.c}


class DiscreteVP(VariancePreserving):
    """A discrete scheduler's table as a process (diffusers DDPM/DDIM, docs/diffusers.md).

    Training step k = 0 .. T-1 sits at s_k = (k + 1) / T, where mu(s_k)^2 = abar_k and
    Sigma(s_k)^2 = 1 - abar_k exactly (`models.discrete_schedules`). Between the nodes the log-SNR
    lambda = ln(abar / (1 - abar)) is linear in s, so abar(s) = sigmoid(lambda(s)); the drift rate
    comes from the same table: a(s) = beta(s) / 2 with beta(s) = -d ln abar / ds
    = -sigmoid(-lambda(s)) lambda'(s) (lambda' the slope of the segment), and sigma^2 = beta
    (kappa = 1, equilibrium N(0, I)). The range is [1/T, 1]: the first and the last training step.
    `model_timestep(s) = s T - 1` is the (fractional) timestep a diffusers UNet is fed at s.
    """

    kind = "discrete"
    kappa = 1.0

    def __init__(
        self,
        beta_schedule: str = "linear",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
    ) -> None:
        if isinstance(num_train_timesteps, bool) or int(num_train_timesteps) != num_train_timesteps:
            raise ValueError(f"num_train_timesteps must be an integer, got {num_train_timesteps!r}")
        if not (0 < beta_start and 0 < beta_end < 1):
            raise ValueError(f"discrete needs 0 < beta_start and 0 < beta_end < 1, got {beta_start}, {beta_end}")
        self.beta_schedule = str(beta_schedule)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.num_train_timesteps = int(num_train_timesteps)
        self._table = log_snr_table(self.beta_schedule, self.beta_start, self.beta_end, self.num_train_timesteps)
        self._tables: dict[torch.device, torch.Tensor] = {}
        self.t_min, self.t_max = 1.0 / self.num_train_timesteps, 1.0

    def _lambda_and_slope(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lambda(s) and d lambda / ds in float64, shape (B,); linear beyond the ends."""
        table = self._tables.get(s.device)
        if table is None:
            table = self._tables[s.device] = self._table.to(s.device)
        n = self.num_train_timesteps
        u = s.to(torch.float64) * n - 1.0  # fractional step index; node k at u = k
        k = torch.clamp(torch.floor(u), 0, n - 2).long()
        lo, hi = table[k], table[k + 1]
        return lo + (u - k) * (hi - lo), (hi - lo) * n

    def log_snr(self, s: torch.Tensor) -> torch.Tensor:
        return self._lambda_and_slope(s)[0].to(s.dtype)

    def beta(self, s: torch.Tensor) -> torch.Tensor:
        lam, slope = self._lambda_and_slope(s)
        return (-torch.sigmoid(-lam) * slope).to(s.dtype)

    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        return (0.5 * torch.nn.functional.logsigmoid(self._lambda_and_slope(s)[0])).to(s.dtype)

    def variance(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-self._lambda_and_slope(s)[0]).to(s.dtype)  # 1 - abar, without cancellation

    def alphas_cumprod(self) -> torch.Tensor:
        """abar_k at the nodes s_k = (k+1)/T (T,), float64."""
        return torch.sigmoid(self._table)

    def model_timestep(self, s: torch.Tensor) -> torch.Tensor:
        """The diffusers timestep at s: s T - 1 (fractional between training steps)."""
        return s * self.num_train_timesteps - 1.0

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "num_train_timesteps": self.num_train_timesteps,
        }


class SL(ForwardProcess):
    """Straight line: mu = 1 - s, Sigma^2 = sigma0^2 (1 - (1-s)^2), equilibrium N(0, sigma0^2 I)."""

    kind = "sl"

    def __init__(self, sigma0: float = 0.1) -> None:
        if not sigma0 > 0:
            raise ValueError(f"sl needs sigma0 > 0, got {sigma0}")
        self.sigma0 = float(sigma0)
        self.t_min, self.t_max = T_MIN_DEFAULT, 1.0 - 1e-5

    def drift_rate(self, s: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 - s)

    def diffusion_squared(self, s: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.sigma0**2 / (1.0 - s)

    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        return torch.log1p(-s)

    def variance(self, s: torch.Tensor) -> torch.Tensor:
        return self.sigma0**2 * s * (2.0 - s)

    def equilibrium_precision(self, s: torch.Tensor) -> torch.Tensor:
        return torch.full_like(s, 1.0 / self.sigma0**2)

    def equilibrium_variance(self) -> float:
        return self.sigma0**2

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "sigma0": self.sigma0}


class VE(ForwardProcess):
    """Variance exploding: no drift, Sigma^2 = sigma_min^2 (r^(2s) - 1), r = sigma_max/sigma_min."""

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"ve needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = T_MIN_DEFAULT, 1.0
        self._log_r = math.log(self.sigma_max / self.sigma_min)

    def drift_rate(self, s: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(s)

    def diffusion_squared(self, s: torch.Tensor) -> torch.Tensor:
        return 2.0 * self._log_r * self.sigma_min**2 * torch.exp(2.0 * self._log_r * s)

    def log_mean_scale(self, s: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(s)

    def variance(self, s: torch.Tensor) -> torch.Tensor:
        return self.sigma_min**2 * torch.expm1(2.0 * self._log_r * s)

    def equilibrium_precision(self, s: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(s)

    def equilibrium_variance(self) -> None:
        return None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


PROCESS_KINDS: dict[str, type[ForwardProcess]] = {p.kind: p for p in (VP, VPCosine, SL, VE, DiscreteVP)}


def process_from_spec(spec: dict[str, Any]) -> ForwardProcess:
    """Build a process from `{"kind": ..., **params}`; unknown kinds/parameters raise ValueError."""
    params = dict(spec)
    kind = params.pop("kind", "vp")
    cls = PROCESS_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown process kind {kind!r}; expected one of {sorted(PROCESS_KINDS)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for process {kind!r}: {exc}") from exc
