"""models.checkpoints.io: the safetensors + JSON-metadata checkpoint format.

Round trips, every kind of bad file refused with its own clear error (and never unpickled), the
architecture check listing offending tensors, config validation and overrides, the score / noise
parametrizations against docs/math.md §2.3 closed forms, and the README export example.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from models.checkpoints.io import (
    METADATA_KEY,
    CheckpointConfig,
    CheckpointError,
    CheckpointTooLarge,
    NotSafetensors,
    check_against_architecture,
    load_model,
    merge_config,
    read_checkpoint,
    write_checkpoint,
)
from models.networks import MLPConfig, UNetConfig, build_network

ROOT = Path(__file__).resolve().parents[2]
SMALL_MLP = {"arch": "mlp", "dim": 2, "fourier_features": 16, "width": 32,
             "hidden_widths": [32, 16], "seed": 3}
VP = {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0}


def small_config(**changes: Any) -> CheckpointConfig:
    d: dict[str, Any] = {"network": SMALL_MLP, "process": VP, "event_shape": [2],
                         "provenance": {"source": "test"}}
    d.update(changes)
    return CheckpointConfig.from_dict(d)


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    net = build_network(MLPConfig(**{k: v for k, v in SMALL_MLP.items() if k != "arch"}))
    with torch.no_grad():  # make the output layer non-trivial
        net.out.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        net.out.bias.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(2))
    return net.eval()


@pytest.fixture(scope="module")
def good(network: torch.nn.Module) -> bytes:
    return write_checkpoint(network, small_config())


def raw_file(header: dict[str, Any], data: bytes, header_len: int | None = None) -> bytes:
    """Hand-made safetensors bytes: length prefix (possibly lying), JSON header, data."""
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if header_len is None else header_len) + h + data


def split_file(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def refused(data: bytes, *words: str, code: str | None = None, **kwargs: Any) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(data, **kwargs)
    message = str(info.value).lower()
    for w in words:
        assert w.lower() in message, message
    if code is not None:
        assert info.value.code == code, info.value.code
    return info.value


# ---- round trip ----
def test_round_trip_keeps_config_and_tensors_bit_for_bit(network: torch.nn.Module,
                                                         good: bytes) -> None:
    config, tensors = read_checkpoint(good)
    assert config == small_config()
    state = network.state_dict()
    assert tensors.keys() == state.keys()
    for name, t in state.items():
        assert tensors[name].dtype == t.dtype and torch.equal(tensors[name], t), name


def test_writing_is_deterministic_and_idempotent(network: torch.nn.Module, good: bytes) -> None:
    assert write_checkpoint(network, small_config()) == good
    config, tensors = read_checkpoint(good)
    assert write_checkpoint(tensors, config) == good


def test_metadata_is_the_config_as_json_under_one_key(good: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(good)
    with safe_open(str(path), framework="pt") as f:  # the safetensors library's own reader
        metadata = f.metadata()
    assert list(metadata) == [METADATA_KEY]
    doc = json.loads(metadata[METADATA_KEY])
    assert doc == small_config().to_dict()
    assert doc["format_version"] == 1 and doc["parametrization"] == "entropy_matching"
    assert doc["network"]["arch"] == "mlp" and doc["network"]["fourier_scale"] == 10.0
    assert doc["process"] == VP and doc["event_shape"] == [2]


def test_config_exposes_what_the_service_reads() -> None:
    c = small_config(value_range=[-1, 1])
    assert c.event_shape == (2,) and c.dim == 2 and c.num_classes is None
    assert c.process == VP and c.network["arch"] == "mlp"
    assert c.parametrization == "entropy_matching"
    assert c.value_range == (-1.0, 1.0)
    assert c.build_process().spec() == VP
    assert CheckpointConfig.from_dict(json.loads(c.to_json())) == c


def test_load_model_reproduces_the_network(network: torch.nn.Module, good: bytes) -> None:
    model = load_model(good)
    assert not model.training
    y = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    s = torch.rand(64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    with torch.no_grad():
        assert torch.allclose(model.e_theta(y, s), network(y, s), atol=1e-6)


def test_unet_checkpoint_with_classes_round_trips() -> None:
    cfg = UNetConfig(1, 8, base_channels=8, channel_mults=(1, 2), num_classes=3, seed=1)
    net = build_network(cfg)
    config = CheckpointConfig.from_dict({"network": cfg.to_dict(), "process": {"kind": "sl"},
                                         "event_shape": [1, 8, 8], "value_range": [-1, 1]})
    assert config.num_classes == 3  # taken from the network
    read_config, tensors = read_checkpoint(write_checkpoint(net, config))
    assert read_config == config and read_config.process == {"kind": "sl", "sigma0": 0.1}
    model = load_model((read_config, tensors))
    x, s, labels = torch.randn(4, 1, 8, 8), torch.full((4,), 0.3), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.allclose(model.e_theta(x, s, labels), net.eval()(x, s, labels), atol=1e-6)


# ---- never unpickle ----
@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    yield


def test_pickle_is_refused_without_unpickling(no_unpickling: None) -> None:
    payload = pickle.dumps({"weight": [1.0, 2.0]}, protocol=4)
    err = refused(payload, "pickle", code="not_safetensors")
    assert isinstance(err, NotSafetensors)


def test_legacy_torch_save_is_refused_as_pickle(network: torch.nn.Module) -> None:
    buf = io.BytesIO()
    torch.save(network.state_dict(), buf, _use_new_zipfile_serialization=False)
    refused(buf.getvalue(), "pickle", code="not_safetensors")


def test_zip_from_torch_save_is_refused(network: torch.nn.Module, no_unpickling: None) -> None:
    buf = io.BytesIO()
    torch.serialization.save(network.state_dict(), buf)
    assert buf.getvalue()[:4] == b"PK\x03\x04"
    err = refused(buf.getvalue(), "zip", "torch.save", code="not_safetensors")
    assert isinstance(err, NotSafetensors)


def test_npy_file_is_refused() -> None:
    refused(b"\x93NUMPY\x01\x00" + b"{}" * 10, "npy", code="not_safetensors")


# ---- broken containers ----
def test_too_short_file_is_refused() -> None:
    refused(b"\x10\x00\x00", "too short", code="bad_header")
    refused(b"", "too short")


def test_truncated_file_is_refused(good: bytes, no_unpickling: None) -> None:
    refused(good[:-7], "past the end", "truncated", code="bad_header")


def test_file_cut_inside_the_header_is_refused(good: bytes) -> None:
    refused(good[:40], "header claims", code="bad_header")


def test_header_length_beyond_the_file_is_refused(good: bytes) -> None:
    n = struct.unpack("<Q", good[:8])[0]
    refused(struct.pack("<Q", n + len(good)) + good[8:], "header claims", code="bad_header")
    refused(struct.pack("<Q", 2**63) + good[8:], "not plausible", code="bad_header")


def test_header_length_too_short_is_refused_as_invalid_json(good: bytes) -> None:
    n = struct.unpack("<Q", good[:8])[0]
    refused(struct.pack("<Q", n - 20) + good[8:], "not valid json", code="bad_header")


def test_offsets_past_the_end_are_refused() -> None:
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    refused(raw_file(header, b"\0" * 8), "past the end", code="bad_header")


def test_overlapping_offsets_are_refused() -> None:
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    refused(raw_file(header, b"\0" * 16), "overlaps", code="bad_header")


def test_gap_between_tensors_is_refused() -> None:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}
    refused(raw_file(header, b"\0" * 20), "gap", code="bad_header")


def test_trailing_bytes_are_refused(good: bytes) -> None:
    refused(good + b"\0" * 4, "trailing", code="bad_header")


def test_shape_size_mismatch_is_refused() -> None:
    header = {"a": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}
    refused(raw_file(header, b"\0" * 16), "needs 24 bytes", "span 16", code="bad_header")


def test_unknown_dtype_is_refused() -> None:
    header = {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}
    refused(raw_file(header, b"\0" * 4), "dtype", "not supported", code="bad_header")


def test_malformed_entries_are_refused() -> None:
    bad_entries = [
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
        {"dtype": "F32", "shape": [1]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
    ]
    for entry in bad_entries:
        refused(raw_file({"a": entry}, b"\0" * 4), "tensor 'a'", code="bad_header")
    refused(raw_file([1, 2], b""), "json object", code="bad_header")  # type: ignore[arg-type]


def test_oversized_file_is_refused(good: bytes) -> None:
    err = refused(good, "limit", code="too_large", max_bytes=len(good) - 1)
    assert isinstance(err, CheckpointTooLarge)


# ---- metadata and config ----
def test_metadata_that_is_not_json_is_refused(network: torch.nn.Module) -> None:
    data = st_save(network.state_dict(), metadata={METADATA_KEY: "{network: mlp"})
    refused(data, "not valid json", code="bad_metadata")
    refused(data, "not valid json", overrides=small_config().to_dict())  # not papered over


def test_missing_metadata_is_refused(network: torch.nn.Module) -> None:
    refused(st_save(network.state_dict()), "no 'neural_entropy' metadata", code="bad_metadata")
    refused(st_save(network.state_dict(), metadata={"format": "pt"}), "metadata",
            code="bad_metadata")


def test_metadata_with_non_string_values_is_refused() -> None:
    header = {"__metadata__": {METADATA_KEY: {"nested": 1}},
              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    refused(raw_file(header, b"\0" * 4), "__metadata__", code="bad_header")


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"parametrization": "velocity"}, "config.parametrization", "velocity"),
    ({"process": {"kind": "subvp"}}, "config.process", "unknown process kind"),
    ({"process": {"kind": "vp", "beta_max": -1}}, "config.process", "beta"),
    ({"network": {"arch": "mlp", "dim": 2, "depth": 9}}, "config.network", "depth"),
    ({"network": {"arch": "transformer"}}, "config.network", "transformer"),
    ({"network": {**SMALL_MLP, "dim": "2"}}, "config.network.dim", "must be int"),
    ({"network": {**SMALL_MLP, "hidden_widths": [8.5]}}, "config.network.hidden_widths", "tuple"),
    ({"network": {**SMALL_MLP, "fourier_scale": math.inf}}, "config.network.fourier_scale",
     "float"),
    ({"process": {"kind": "vp", "beta_max": math.inf}}, "config.process", "finite"),
    ({"provenance": {"loss": math.nan}}, "config.provenance", "finite"),
    ({"event_shape": [3]}, "config.event_shape", "does not fit"),
    ({"event_shape": "2"}, "config.event_shape", "positive integers"),
    ({"value_range": [1, -1]}, "config.value_range", "lo < hi"),
    ({"num_classes": 0}, "config.num_classes", "positive"),
    ({"format_version": 2}, "config.format_version", "not supported"),
    ({"provenance": ["x"]}, "config.provenance", "object"),
    ({"colour": "blue"}, "config.colour", "unknown key"),
])
def test_bad_config_is_refused_naming_the_field(change: dict[str, Any], field: str,
                                                words: str) -> None:
    d = {**small_config().to_dict(), **change}
    with pytest.raises(CheckpointError) as info:
        CheckpointConfig.from_dict(d)
    assert info.value.field == field and info.value.code == "bad_config"
    assert words in str(info.value)


def test_numbers_are_normalised() -> None:
    c = small_config(network={**SMALL_MLP, "fourier_scale": 10}, value_range=[0, 1])
    assert isinstance(c.network["fourier_scale"], float) and c.value_range == (0.0, 1.0)
    assert c == small_config(network={**SMALL_MLP, "fourier_scale": 10.0}, value_range=[0.0, 1.0])


def test_nan_weights_are_refused(network: torch.nn.Module) -> None:
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["out.bias"][0] = float("nan")
    data = st_save(state, metadata={METADATA_KEY: small_config().to_json()})
    refused(data, "out.bias", "nan", code="bad_values")


# ---- architecture check ----
def test_wrong_tensor_shape_is_listed(network: torch.nn.Module) -> None:
    state = dict(network.state_dict())
    state["out.weight"] = torch.zeros(3, 16)
    data = st_save(state, metadata={METADATA_KEY: small_config().to_json()})
    err = refused(data, "out.weight", "wrong shape", "F32[2, 16]", "F32[3, 16]",
                  code="architecture_mismatch")
    assert err.offending == [{"name": "out.weight", "problem": "wrong shape",
                              "expected": "F32[2, 16]", "found": "F32[3, 16]"}]


def test_missing_unexpected_and_wrong_dtype_tensors_are_listed(network: torch.nn.Module) -> None:
    state = dict(network.state_dict())
    del state["hidden.1.bias"]
    state["head.weight"] = torch.zeros(2)
    state["norms.0.weight"] = state["norms.0.weight"].double()
    data = st_save(state, metadata={METADATA_KEY: small_config().to_json()})
    err = refused(data, "hidden.1.bias", "head.weight", "norms.0.weight",
                  code="architecture_mismatch")
    problems = {p["name"]: p["problem"] for p in err.offending}
    assert problems == {"hidden.1.bias": "missing", "head.weight": "unexpected",
                        "norms.0.weight": "wrong dtype"}


def test_only_the_first_offending_tensors_are_listed(network: torch.nn.Module) -> None:
    config = small_config(network={**SMALL_MLP, "width": 64, "hidden_widths": [64, 64]})
    with pytest.raises(CheckpointError) as info:
        check_against_architecture(config, network.state_dict())
    assert len(info.value.offending) == 10 and "more" in str(info.value)


def test_writing_a_mismatched_state_dict_is_refused(network: torch.nn.Module) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        write_checkpoint({"x_features.frequencies": torch.zeros(16, 2)}, small_config())


# ---- config overrides ----
def test_config_field_supplies_a_missing_config(network: torch.nn.Module) -> None:
    data = st_save(network.state_dict())
    config, _ = read_checkpoint(data, overrides=small_config().to_dict())
    assert config == small_config()


def test_config_field_overrides_the_metadata(good: bytes) -> None:
    config, _ = read_checkpoint(good, overrides={"parametrization": "noise",
                                                 "process": {"kappa": 0.1},
                                                 "provenance": {"epoch": 7}})
    assert config.parametrization == "noise"
    assert config.process == {**VP, "kappa": 0.1}
    assert config.provenance == {"source": "test", "epoch": 7}
    config, _ = read_checkpoint(good, overrides={"process": {"kind": "sl"}})
    assert config.process == {"kind": "sl", "sigma0": 0.1}  # another kind replaces


def test_merge_config_rules() -> None:
    base = {"network": {"arch": "mlp", "dim": 2, "width": 8}, "process": VP, "event_shape": [2]}
    merged = merge_config(base, {"network": {"width": 16}, "event_shape": [2]})
    assert merged["network"] == {"arch": "mlp", "dim": 2, "width": 16}
    merged = merge_config(base, {"network": {"arch": "unet", "in_channels": 1, "image_size": 8}})
    assert merged["network"] == {"arch": "unet", "in_channels": 1, "image_size": 8}
    assert merge_config(None, {"a": 1}) == {"a": 1} and merge_config(base, None) == base


# ---- parametrizations (docs/math.md §2.3) ----
def _vp_closed_form(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigma(s) and the equilibrium precision 1/kappa^2 of VP(0.1, 16, 1), by hand."""
    log_mu = -0.1 * s / 2 - (16.0 - 0.1) * s**2 / 4
    return torch.sqrt(1.0 - torch.exp(2 * log_mu)), torch.ones_like(s)


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return 2 * torch.randn(128, 2, generator=gen), 0.01 + 0.98 * torch.rand(128, generator=gen)


@pytest.mark.parametrize("parametrization", ["score", "noise"])
def test_score_and_noise_checkpoints_are_read_as_math_says(network: torch.nn.Module,
                                                           parametrization: str) -> None:
    """Same weights, read as a score (e = out + y / kappa^2) or noise (e = -out / Sigma + y)."""
    data = write_checkpoint(network, small_config(parametrization=parametrization))
    model = load_model(data)
    y, s = _points()
    sigma, precision = _vp_closed_form(s.double())
    with torch.no_grad():
        out = network(y, s).double()
        got = model.e_theta(y, s).double()
    score = out if parametrization == "score" else -out / sigma[:, None]
    expected = score + precision[:, None] * y.double()  # e_theta = score - grad log p_eq
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


class _Rescaled(torch.nn.Module):
    """The same function as `inner` (an e_theta network) written as a score or noise predictor."""

    def __init__(self, inner: torch.nn.Module, parametrization: str, process: Any) -> None:
        super().__init__()
        self.inner, self.parametrization, self.process = inner, parametrization, process

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: Any = None) -> torch.Tensor:
        score = self.inner(y, s) + self.process.equilibrium_score(y, s)
        if self.parametrization == "score":
            return score
        return -self.process.std(s)[:, None] * score  # eps = -Sigma * score


@pytest.mark.parametrize("parametrization", ["score", "noise"])
def test_rescaled_networks_give_the_same_e_theta_and_s_nn(network: torch.nn.Module,
                                                          parametrization: str) -> None:
    from models.entropy.estimators import MeasurementConfig, neural_entropy
    from models.parametrization import EntropyMatchingModel

    config = small_config()
    process = config.build_process()
    reference = load_model(write_checkpoint(network, config))
    rescaled = EntropyMatchingModel(_Rescaled(network, parametrization, process), process,
                                    parametrization).eval()
    y, s = _points()
    with torch.no_grad():
        assert torch.allclose(rescaled.e_theta(y, s), reference.e_theta(y, s), rtol=1e-4,
                              atol=1e-4)
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(9))
    measure = MeasurementConfig(n_times=16, n_samples=8192, seed=3)
    with torch.no_grad():
        a = neural_entropy(reference.e_theta, process, x0, measure)
        b = neural_entropy(rescaled.e_theta, process, x0, measure)
    assert math.isclose(a.total.mean, b.total.mean, rel_tol=1e-4)
    assert math.isclose(a.total.stderr, b.total.stderr, rel_tol=1e-2, abs_tol=1e-6)


# ---- the README export example ----
def _example() -> Any:
    spec = importlib.util.spec_from_file_location("export_checkpoint",
                                                  ROOT / "examples" / "export_checkpoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_example_output_is_accepted_and_computes_the_plain_module(tmp_path: Path) -> None:
    example = _example()
    path = tmp_path / "my_model.safetensors"
    example.main(str(path))
    config, tensors = read_checkpoint(path.read_bytes())
    assert config.network["width"] == 128 and config.provenance["source"].endswith(".py")
    torch.manual_seed(0)  # the demo's own module, rebuilt as it was exported
    plain = example.MyMLP(dim=2, n_freq=64, width=128, hidden=(128, 64)).eval()
    model = load_model((config, tensors))
    y, s = _points()
    with torch.no_grad():
        assert torch.allclose(model.e_theta(y, s), plain(y, s), atol=1e-5)


def test_header_length_ending_in_byte_0x80_is_not_mistaken_for_a_pickle(good: bytes) -> None:
    """The length prefix's first byte is 0x80 for one file in 256: still a valid safetensors file."""
    header, data = split_file(good)
    text = json.dumps(header).encode()
    padded = text + b" " * ((0x80 - len(text)) % 256)  # safetensors pads headers with spaces too
    assert len(padded) % 256 == 0x80
    relength = struct.pack("<Q", len(padded)) + padded + data
    assert relength[:1] == b"\x80"
    config, tensors = read_checkpoint(relength)
    config_good, tensors_good = read_checkpoint(good)
    assert config == config_good
    assert all(torch.equal(tensors[k], tensors_good[k]) for k in tensors_good)
