"""models.networks / models.networks.unet: shapes, configs, clear input errors, the fused MLP vs autograd."""

from __future__ import annotations

import json

import pytest
import torch

from models.networks import (
    MLPConfig,
    NetworkInputError,
    PaperMLP,
    UNetConfig,
    build_network,
    default_network_config,
    network_config_from_dict,
)

SMALL = {"fourier_features": 16, "width": 32, "hidden_widths": (32, 16)}


def test_mlp_maps_vectors_to_vectors() -> None:
    net = build_network(MLPConfig(dim=3, **SMALL))
    out = net(torch.randn(5, 3), torch.rand(5))
    assert out.shape == (5, 3)
    assert torch.isfinite(out).all()


def test_mlp_accepts_images_through_event_shape() -> None:
    net = build_network(MLPConfig(dim=64, event_shape=(1, 8, 8), **SMALL))
    assert net(torch.randn(4, 1, 8, 8), torch.rand(4)).shape == (4, 1, 8, 8)


def test_paper_mlp_has_the_papers_size() -> None:
    cfg = MLPConfig(dim=2)
    net = build_network(cfg)
    n_params = sum(p.numel() for p in net.parameters())
    # x and s embeddings 2 x (512*512 + 512); layers (512+512)*512 + 2*512 + 2*512 (LN),
    # (512+512)*256 + 2*256 + 2*256, output 256*2 + 2
    expected = 2 * (512 * 512 + 512) + (1024 * 512 + 4 * 512) + (1024 * 256 + 4 * 256) + 514
    assert n_params == expected
    assert cfg.flops_per_evaluation() == 2_624_000  # ~2.6 MFLOP per evaluation at D = 2


@pytest.mark.parametrize(
    ("config", "labels"),
    [
        (UNetConfig(1, 8, base_channels=8, channel_mults=(1, 2)), None),
        (
            UNetConfig(1, 28, base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(7,), num_classes=10),
            torch.tensor([0, 3, 9]),
        ),
        (UNetConfig(3, 32, base_channels=8, channel_mults=(1, 2), attention_resolutions=(16,), num_heads=2), None),
    ],
)
def test_unet_maps_images_to_images(config: UNetConfig, labels: torch.Tensor | None) -> None:
    net = build_network(config)
    with torch.no_grad():  # the output convolution starts at zero: perturb it to see a real output
        net.conv_out.weight.normal_(0.0, 0.1)
    x = torch.randn(3, *config.shape)
    out = net(x, torch.rand(3), labels)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_unet_starts_at_zero_output() -> None:
    net = build_network(UNetConfig(1, 8, base_channels=8, channel_mults=(1, 2)))
    assert torch.count_nonzero(net(torch.randn(2, 1, 8, 8), torch.rand(2))) == 0


def test_class_labels_change_the_output() -> None:
    net = build_network(MLPConfig(dim=2, num_classes=3, **SMALL))
    x, s = torch.randn(4, 2), torch.rand(4)
    a = net(x, s, torch.zeros(4, dtype=torch.long))
    b = net(x, s, torch.full((4,), 2, dtype=torch.long))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "config",
    [
        MLPConfig(dim=7, hidden_widths=(64, 32, 16), num_classes=4, event_shape=(7,), seed=3),
        UNetConfig(3, 28, channel_mults=(1, 2, 2), attention_resolutions=(14, 7), num_classes=10, dropout=0.1),
    ],
)
def test_config_survives_json(config: MLPConfig | UNetConfig) -> None:
    again = network_config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.to_dict()["arch"] in ("mlp", "unet")


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="arch"):
        network_config_from_dict({"arch": "transformer", "dim": 2})
    with pytest.raises(ValueError, match="unknown mlp config fields"):
        network_config_from_dict({"arch": "mlp", "dim": 2, "depth": 3})
    with pytest.raises(ValueError, match="event_shape"):
        MLPConfig(dim=5, event_shape=(2, 2))
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNetConfig(1, 28, channel_mults=(1, 2), attention_resolutions=(7,))


def test_wrong_input_dimensionality_is_a_clear_error() -> None:
    net = build_network(MLPConfig(dim=2, **SMALL))
    with pytest.raises(NetworkInputError, match=r"\(B, 2\), got \(5, 3\)"):
        net(torch.randn(5, 3), torch.rand(5))
    with pytest.raises(NetworkInputError, match="s of shape"):
        net(torch.randn(5, 2), torch.rand(4))
    with pytest.raises(NetworkInputError, match="unconditional"):
        net(torch.randn(5, 2), torch.rand(5), torch.zeros(5, dtype=torch.long))
    unet = build_network(UNetConfig(1, 8, base_channels=8, channel_mults=(1, 2), num_classes=10))
    with pytest.raises(NetworkInputError, match=r"\(B, 1, 8, 8\)"):
        unet(torch.randn(2, 3, 8, 8), torch.rand(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(NetworkInputError, match="pass labels"):
        unet(torch.randn(2, 1, 8, 8), torch.rand(2))


def test_fused_mlp_equals_autograd_reference_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    net = build_network(MLPConfig(dim=3, fourier_features=32, width=48, hidden_widths=(40, 24, 16))).double()
    assert isinstance(net, PaperMLP)
    x, s = torch.randn(17, 3, dtype=torch.float64), torch.rand(17, dtype=torch.float64)
    weight = torch.randn(17, 3, dtype=torch.float64)
    fused = net(x, s)
    reference = net._reference_forward(x, s, None)
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    params = list(net.parameters())
    g_fused = torch.autograd.grad((fused * weight).sum(), params)
    g_ref = torch.autograd.grad((reference * weight).sum(), params)
    for (name, _), a, b in zip(net.named_parameters(), g_fused, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_input_gradients_fall_back_to_autograd() -> None:
    net = build_network(MLPConfig(dim=2, **SMALL)).double()
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    s = torch.rand(3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: net(v, s), (x,))


def test_fourier_frequencies_are_seeded_buffers() -> None:
    a, b = build_network(MLPConfig(dim=2, seed=1, **SMALL)), build_network(MLPConfig(dim=2, seed=1, **SMALL))
    c = build_network(MLPConfig(dim=2, seed=2, **SMALL))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert "x_features.frequencies" in a.state_dict()
    assert not any(p is a.x_features.frequencies for p in a.parameters())
    assert not torch.equal(a.state_dict()["x_features.frequencies"], c.state_dict()["x_features.frequencies"])
    freqs = build_network(MLPConfig(dim=2, fourier_features=20000, width=4, hidden_widths=(4,))).x_features.frequencies
    # the paper's code: grf_scale 10 times Flax's default normal init (std 0.01) -> std 0.1
    assert abs(float(freqs.std()) - 0.1) < 0.002


def test_default_configs_follow_the_data_shape() -> None:
    assert default_network_config((2,)) == MLPConfig(dim=2)
    digits = default_network_config((1, 8, 8), num_classes=10)
    assert isinstance(digits, UNetConfig) and digits.num_classes == 10
    for shape in [(1, 28, 28), (3, 32, 32)]:
        cfg = default_network_config(shape)
        assert isinstance(cfg, UNetConfig) and cfg.shape == shape
        assert cfg.attention_resolutions and cfg.attention_resolutions[0] in cfg.resolutions
    with pytest.raises(ValueError):
        default_network_config((4, 4))
