"""The convergence verdict: a trend against log(epoch) judged against the estimates' noise."""

from __future__ import annotations

import math

import pytest

from models.training.convergence import (
    TrajectoryPoint,
    convergence_verdict,
    evaluation_epochs,
)


def trajectory(values: dict[int, float], stderr: float = 0.002) -> list[TrajectoryPoint]:
    return [TrajectoryPoint(e, v, stderr) for e, v in sorted(values.items())]


def test_evaluation_epochs_are_log_spaced_and_end_at_the_last() -> None:
    assert evaluation_epochs(20) == [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 19, 20]
    assert evaluation_epochs(100)[-4:] == [58, 73, 91, 100]
    assert 50 in evaluation_epochs(100, extra=(50, 200))
    assert 200 not in evaluation_epochs(100, extra=(50, 200))


def test_a_flat_trajectory_has_converged() -> None:
    epochs = evaluation_epochs(40)
    noise = [0.002 * math.sin(3.0 * e) for e in epochs]  # deterministic jitter of 0.2 %
    v = convergence_verdict(trajectory({e: 1.0 + n for e, n in zip(epochs, noise, strict=True)}))
    assert v.verdict == "converged"
    assert abs(v.relative_drift or 1.0) < 0.005 and v.window == (10, 40)


def test_a_steady_log_climb_is_not_convergence_and_its_extrapolation_is_the_line() -> None:
    # +2.9 % per doubling of the epochs, with tiny noise: each neighbouring pair agrees within 1 %
    climb = {e: 1.0 + 0.029 / math.log(2) * math.log(e / 10) for e in evaluation_epochs(60)}
    v = convergence_verdict(trajectory(climb, stderr=0.001))
    assert v.verdict == "not_converged"
    assert v.relative_drift == pytest.approx(0.029 / climb[60], rel=1e-9)
    assert v.extrapolated == pytest.approx(1.0 + 0.029 / math.log(2) * math.log(12), rel=1e-9)
    assert "per doubling" in v.reason


def test_the_slowly_climbing_ema_run_of_the_issue_is_not_converged() -> None:
    # S_NN of an EMA run at epochs 10 ... 60 (from the issue that asked for this verdict)
    run = {10: 0.885, 20: 0.926, 30: 0.963, 40: 0.968, 50: 0.975, 60: 0.992}
    assert convergence_verdict(trajectory(run)).verdict == "not_converged"


def test_noise_larger_than_the_tolerance_is_not_called_converged() -> None:
    flat = {e: 1.0 for e in evaluation_epochs(40)}
    assert convergence_verdict(trajectory(flat, stderr=0.05)).verdict == "not_converged"


def test_too_few_estimates_are_too_short() -> None:
    v = convergence_verdict(trajectory({1: 0.5, 2: 0.7, 3: 0.8}))
    assert v.verdict == "too_short" and v.relative_drift is None
    assert convergence_verdict([]).verdict == "too_short"
    with pytest.raises(ValueError, match="tolerance"):
        convergence_verdict(trajectory({1: 1.0}), tolerance=0.0)
