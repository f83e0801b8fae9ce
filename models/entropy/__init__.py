"""Estimating entropy production (docs/math.md §3-4).

- `estimators`: S_NN curve and total, S_tot of a mixture, the density bound, the data entropy;
- `quadrature`: time grids (Gauss-Lobatto panels in log-SNR) and grid integrals;
- `montecarlo`: stratified Monte Carlo per grid node with Neyman allocation;
- `control_variates`: the sources of x0 and the features whose means are known exactly;
- `closed_forms`: S_tot of Gaussian data; entropies h(p_s) and S_tot of mixtures by grid quadrature.
"""

from models.entropy.estimators import (
    DensityBound,
    EntropyCurve,
    EntropyResult,
    Estimate,
    MeasurementConfig,
    data_entropy,
    density_bound,
    neural_entropy,
    total_entropy_mixture,
)

__all__ = [
    "DensityBound",
    "EntropyCurve",
    "EntropyResult",
    "Estimate",
    "MeasurementConfig",
    "data_entropy",
    "density_bound",
    "neural_entropy",
    "total_entropy_mixture",
]
