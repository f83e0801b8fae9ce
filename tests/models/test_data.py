"""Data sets and Gaussian mixtures: validation, scaling rule, splits, exact scores and densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.data import DataError, DataSet, GaussianMixture, array_dataset, load_digits
from models.processes import SL, VE, VP, ForwardProcess, VPCosine

PROCESSES = [VP(), VP(kappa=0.1), VPCosine(), SL(), VE()]
IDS = ["vp", "vpx", "vp_cosine", "sl", "ve"]


# ---- array_dataset ----
def test_vectors_are_kept_as_given() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)) * 7
    data = array_dataset(x)
    assert data.x.dtype == torch.float32 and data.x.shape == (50, 3)
    np.testing.assert_allclose(data.x.numpy(), x, rtol=1e-6)
    assert data.value_range is None and data.dim == 3 and not data.is_image and len(data) == 50


@pytest.mark.parametrize(
    ("layout", "shape"), [("nhwc", (6, 4, 5, 3)), ("nchw", (6, 3, 4, 5)), ("nhw", (6, 4, 5))]
)
def test_uint8_images_are_mapped_from_0_255_to_minus_one_one(layout: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).integers(0, 256, size=shape).astype(np.uint8)
    x.flat[0], x.flat[1] = 0, 255
    data = array_dataset(x, layout=layout)  # type: ignore[arg-type]
    assert data.is_image and data.value_range == (-1.0, 1.0)
    channels = 1 if layout == "nhw" else 3
    assert data.x.shape == (6, channels, 4, 5)
    assert float(data.x.min()) == -1.0 and float(data.x.max()) == 1.0
    back = x if layout != "nhwc" else np.transpose(x, (0, 3, 1, 2))
    back = back[:, None] if layout == "nhw" else back
    np.testing.assert_allclose(data.x.numpy(), back / 127.5 - 1.0, atol=1e-6)


def test_float_images_in_unit_interval_and_auto_layout() -> None:
    x = np.random.default_rng(2).uniform(0.2, 0.8, size=(4, 1, 8, 8))
    data = array_dataset(x)  # auto: nchw because dim 1 has 1 channel; range inferred [0, 1]
    np.testing.assert_allclose(data.x.numpy(), 2 * x - 1, atol=1e-6)
    nhwc = array_dataset(np.random.default_rng(2).uniform(size=(4, 8, 8, 3)))
    assert nhwc.x.shape == (4, 3, 8, 8)


def test_explicit_value_range_and_unit_scale() -> None:
    x = np.array([[0.0, 16.0], [8.0, 4.0]])
    data = array_dataset(x, value_range=(0.0, 16.0), scale="unit")
    np.testing.assert_allclose(data.x.numpy(), x / 16)
    assert data.value_range == (0.0, 1.0)
    with pytest.raises(DataError, match="outside value_range"):
        array_dataset(x, value_range=(0.0, 10.0), scale="unit")


def test_standardize_gives_zero_mean_unit_std() -> None:
    x = np.random.default_rng(3).normal(3.0, 5.0, size=(200, 2))
    data = array_dataset(x, scale="standardize")
    np.testing.assert_allclose(data.x.numpy().mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x.numpy().std(0), 1, atol=1e-5)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or Inf"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or Inf"),
        (np.array([["a", "b"]]), "non-numeric"),
        (np.array([[1, None]], dtype=object), "non-numeric"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros(5), "rank"),
        (np.zeros((2, 2, 2, 2, 2)), "rank"),
        (np.zeros((2, 7, 7, 7)), "cannot tell channels"),
        ([[1.0, 2.0], [3.0]], "rectangular|non-numeric"),
        (np.array([[1 + 2j, 0j]]), "non-numeric"),
    ],
)
def test_bad_data_raises_data_error_naming_the_problem(x: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        array_dataset(x)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 1], "shape"), ([[0], [1], [2]], "shape"), ([0, -1, 2], ">= 0"), ([0.5, 1, 2], "integers"),
     (["a", "b", "c"], "non-numeric"), ([True, False, True], "booleans")],
)
def test_bad_labels_raise_data_error(labels: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        array_dataset(np.zeros((3, 2)), labels)


def test_labels_and_classes() -> None:
    data = array_dataset(np.zeros((4, 2)), np.array([0, 2, 1, 2]))
    assert data.labels is not None and data.labels.dtype == torch.int64 and data.num_classes == 3


def test_split_is_deterministic_disjoint_and_complete() -> None:
    data = array_dataset(np.arange(100.0).reshape(50, 2), np.arange(50) % 5)
    train, test = data.split(0.2, seed=7)
    train2, test2 = data.split(0.2, seed=7)
    assert len(test) == 10 and len(train) == 40
    assert torch.equal(test.x, test2.x) and torch.equal(train.x, train2.x)
    both = torch.cat([train.x[:, 0], test.x[:, 0]]).sort().values
    assert torch.equal(both, data.x[:, 0].sort().values)
    assert not torch.equal(data.split(0.2, seed=8)[1].x, test.x)
    assert test.num_classes == 5 and test.value_range == data.value_range
    tiny_train, tiny_test = array_dataset(np.zeros((2, 1))).split(0.01)
    assert len(tiny_train) == 1 and len(tiny_test) == 1
    with pytest.raises(ValueError):
        data.split(1.0)


def _rows(data: DataSet) -> set[tuple[float, ...]]:
    return {tuple(r) for r in data.x.tolist()}


def test_nested_subsets_without_labels_are_nested_seeded_and_whole_at_n() -> None:
    data = DataSet(torch.arange(200, dtype=torch.float32).reshape(100, 2))
    sizes = [1, 7, 30, 64, 100]
    subsets = [data.nested_subset(n, seed=3) for n in sizes]
    assert [len(s) for s in subsets] == sizes
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert _rows(small) < _rows(large)
    assert torch.equal(subsets[-1].x, data.x)  # n = N is the whole set, in its own order
    again = data.nested_subset(30, seed=3)
    assert torch.equal(again.x, subsets[2].x)
    assert _rows(data.nested_subset(30, seed=4)) != _rows(subsets[2])
    assert sorted(data.nested_order(3).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="1 <= n <= 100"):
        data.nested_subset(101)


def test_nested_subsets_with_labels_are_class_balanced() -> None:
    # unequal classes: 50 of class 0, 30 of class 1, 20 of class 2 (shuffled)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[order]
    data = DataSet(torch.arange(100, dtype=torch.float32).reshape(100, 1), labels)
    caps = [50, 30, 20]
    previous: set[tuple[float, ...]] = set()
    for n in range(1, 101):
        sub = data.nested_subset(n, seed=1)
        counts = torch.bincount(sub.labels, minlength=3).tolist()
        # round robin: a class is at most one ahead of another that still has points left
        assert all(counts[a] <= counts[b] + 1 for a in range(3) for b in range(3)
                   if counts[b] < caps[b]), (n, counts)
        rows = _rows(sub)
        assert previous < rows and len(rows) == n
        assert torch.equal(sub.labels, labels[sub.x[:, 0].long()])  # labels stay with their points
        previous = rows
    assert torch.bincount(data.nested_subset(30, seed=1).labels).tolist() == [10, 10, 10]
    assert torch.bincount(data.nested_subset(80, seed=1).labels).tolist() == [30, 30, 20]


def test_load_digits() -> None:
    data = load_digits()
    assert data.x.shape == (1797, 1, 8, 8) and data.value_range == (-1.0, 1.0)
    assert float(data.x.min()) == -1.0 and float(data.x.max()) == 1.0
    assert data.labels is not None and data.num_classes == 10 and isinstance(data, DataSet)


# ---- GaussianMixture ----
@pytest.fixture(scope="module")
def mixture() -> GaussianMixture:
    return GaussianMixture.paper(n_components=4, dim=3, seed=3)


def test_paper_mixture_ranges_and_reproducibility() -> None:
    g = GaussianMixture.paper(n_components=5, dim=2, box=4.0, scale=2.0, seed=0)
    assert g.means.abs().max() <= 2.0 and g.stds.min() >= 1.0 and g.stds.max() <= 2.0
    assert g.weights.sum().item() == pytest.approx(1.0)
    assert torch.equal(g.means, GaussianMixture.paper(seed=0).means)
    assert not torch.equal(g.means, GaussianMixture.paper(seed=1).means)
    again = GaussianMixture.from_dict(g.to_dict())
    assert torch.equal(again.means, g.means) and torch.equal(again.weights, g.weights)


def test_sample_moments(mixture: GaussianMixture) -> None:
    x = mixture.sample(200000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert isinstance(x, torch.Tensor)
    se = x.std(0) / math.sqrt(len(x))
    assert torch.all((x.mean(0) - mixture.mean()).abs() < 4 * se)
    assert float(x.var(0).mean()) == pytest.approx(mixture.data_variance(), rel=0.01)
    torch.testing.assert_close((x * x).mean(0), mixture.second_moment(), rtol=0.02, atol=0.02)


def test_log_prob_is_normalised_and_matches_components() -> None:
    g = GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [[0.5], [1.5]])
    y = torch.linspace(-15, 15, 20001, dtype=torch.float64)[:, None]
    p = torch.exp(g.log_prob(y))
    assert float(torch.trapezoid(p, y[:, 0])) == pytest.approx(1.0, rel=1e-9)
    by_hand = 0.3 * torch.distributions.Normal(-1.0, 0.5).log_prob(y[:, 0]).exp() + 0.7 * torch.distributions.Normal(
        2.0, 1.5
    ).log_prob(y[:, 0]).exp()
    torch.testing.assert_close(p, by_hand.double())


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_exact_score_is_gradient_of_log_prob_at(mixture: GaussianMixture, process: ForwardProcess) -> None:
    y = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    s = torch.linspace(process.t_min, process.t_max, 16, dtype=torch.float64)
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob_at(y, s, process).sum(), y)
    torch.testing.assert_close(mixture.score(y.detach(), s, process), grad)


@pytest.mark.parametrize("process", [VP(), SL(sigma0=1.0)], ids=["vp", "sl"])
def test_log_prob_at_is_the_diffused_density(process: ForwardProcess) -> None:
    """p_s(y) = E_x0 N(y; mu x0, Sigma^2): Monte Carlo over x0 against the closed-form mixture."""
    g = GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], [[0.6, 0.8], [0.5, 0.4]])
    s = torch.tensor([0.3], dtype=torch.float64)
    mu, var = process.mean_scale(s), process.variance(s)
    x0 = g.sample(400000, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert isinstance(x0, torch.Tensor)
    y = torch.tensor([[0.1, 0.2], [-0.5, 0.3]], dtype=torch.float64)
    dens = torch.exp(-((y[:, None] - mu * x0[None]) ** 2).sum(2) / (2 * var)) / (2 * math.pi * var)
    torch.testing.assert_close(torch.exp(g.log_prob_at(y, s, process)), dens.mean(1), rtol=0.01, atol=0)
    assert torch.allclose(g.log_prob_at(y, torch.tensor(1e-12, dtype=torch.float64), process), g.log_prob(y))


def test_bad_mixture_parameters_raise() -> None:
    with pytest.raises(ValueError, match="need weights"):
        GaussianMixture([1.0], [[0.0, 1.0]], [[1.0]])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture([1.0], [[0.0]], [[-1.0]])
    with pytest.raises(ValueError, match="finite"):
        GaussianMixture([1.0], [[float("nan")]], [[1.0]])
    with pytest.raises(ValueError, match="expected points"):
        GaussianMixture([1.0], [[0.0]], [[1.0]]).log_prob(torch.zeros(3, 2))
