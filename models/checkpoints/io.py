"""Checkpoint files: one `.safetensors` file whose metadata carries the model's config as JSON.

Format (documented for users in docs/checkpoints.md): a standard safetensors file — 8-byte
little-endian header length N, N bytes of JSON header, then the raw tensor bytes — whose
`__metadata__` has ONE key, `"neural_entropy"`, holding `CheckpointConfig.to_dict()` as a JSON
string: format_version, network (a `models.networks` config dict with "arch"), parametrization,
process (a `models.processes` spec), event_shape, value_range, num_classes, provenance.

Stable API (used by the service and the worker):
- `CheckpointConfig` (frozen): `.network` (dict), `.process` (dict), `.parametrization`,
  `.event_shape` (tuple), `.value_range`, `.num_classes`, `.provenance`; `to_dict()`, `from_dict(d)`
  (validates and normalises: every network and process field filled in), `dim`,
  `build_process()`, `network_config()`.
- `write_checkpoint(network_or_state_dict, config) -> bytes` (deterministic for equal inputs).
- `read_checkpoint(data, max_bytes=..., *, overrides=None, check_architecture=True)
  -> (CheckpointConfig, dict[str, Tensor])`: never unpickles; the header is parsed and checked
  here before `safetensors.torch.load` sees the bytes.
- `check_against_architecture(config, tensors)`: names, shapes, dtypes vs the built network.
- `load_model(data | (config, tensors), device="cpu") -> EntropyMatchingModel` in eval mode.
- `merge_config(base, overrides)`: how an upload's `config` form field fills in / overrides.
Every problem raises `CheckpointError(ValueError)` (`code`, `field`, `offending`); a file over the
size cap raises its subclass `CheckpointTooLarge`; pickles/zips/other formats `NotSafetensors`.
The container checks live in `models.checkpoints.format` and the config in
`models.checkpoints.config`; import everything from here.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from models.checkpoints.config import (
    FORMAT_VERSION,
    PARAMETRIZATIONS,
    CheckpointConfig,
    cfg_error,
    merge_config,
)
from models.checkpoints.format import (
    DEFAULT_MAX_BYTES,
    DTYPE_CODES,
    CheckpointError,
    CheckpointTooLarge,
    NotSafetensors,
    SafetensorsHeader,
    bad_header,
    parse_header,
)
from models.networks.factory import build_network, network_config_from_dict
from models.parametrization import EntropyMatchingModel

METADATA_KEY = "neural_entropy"
MAX_LISTED = 10  # offending tensors listed in an architecture-mismatch error

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "PARAMETRIZATIONS",
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointTooLarge",
    "NotSafetensors",
    "SafetensorsHeader",
    "check_against_architecture",
    "load_model",
    "merge_config",
    "metadata_config",
    "parse_header",
    "read_checkpoint",
    "write_checkpoint",
]


# ---------------------------------------------------------------- writing and reading
StateSource = torch.nn.Module | Mapping[str, torch.Tensor]


def _state_dict_of(network_or_state_dict: StateSource) -> dict[str, torch.Tensor]:
    if isinstance(network_or_state_dict, torch.nn.Module):
        state = network_or_state_dict.state_dict()
    else:
        state = dict(network_or_state_dict)
    # own, contiguous CPU copies: safetensors refuses tensors that share storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def write_checkpoint(
    network_or_state_dict: StateSource, config: CheckpointConfig | Mapping[str, Any], *, check: bool = True
) -> bytes:
    """The checkpoint file's bytes: the weights with `config` as JSON metadata.

    Deterministic: equal weights and config give equal bytes. With `check` (default) the weights
    are first compared with the architecture (CheckpointError on a mismatch).
    """
    cfg = config if isinstance(config, CheckpointConfig) else CheckpointConfig.from_dict(config)
    tensors = _state_dict_of(network_or_state_dict)
    if check:
        check_against_architecture(cfg, tensors)
    return _st_save(tensors, metadata={METADATA_KEY: cfg.to_json()})


def metadata_config(header: SafetensorsHeader) -> dict[str, Any] | None:
    """The config dict in the header's metadata (None when absent); CheckpointError if not JSON."""
    raw = (header.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"the metadata key {METADATA_KEY!r} is not valid JSON: {exc}", code="bad_metadata"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"the metadata key {METADATA_KEY!r} must hold a JSON object", code="bad_metadata")
    return value


def read_checkpoint(
    data: bytes,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    overrides: Mapping[str, Any] | None = None,
    check_architecture: bool = True,
) -> tuple[CheckpointConfig, dict[str, torch.Tensor]]:
    """Validate a checkpoint file and return its config and tensors (CPU). Never unpickles.

    `overrides` (an upload's `config` field) fills in or overrides the metadata (`merge_config`);
    a file without metadata is accepted only when `overrides` supplies the whole config. Floating
    tensors must be finite. With `check_architecture` the tensors are compared with the network.
    """
    header = parse_header(bytes(data), max_bytes)
    base = metadata_config(header)
    if base is None and not overrides:
        raise CheckpointError(
            f"the file has no {METADATA_KEY!r} metadata with the model config; add it when writing "
            "the file (docs/checkpoints.md) or send the config in the 'config' field",
            code="bad_metadata",
        )
    config = CheckpointConfig.from_dict(merge_config(base, overrides))
    try:
        tensors = _st_load(bytes(data))
    except Exception as exc:  # the checks above should make this unreachable
        raise bad_header(f"the safetensors library refused the file: {exc}") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"tensor {name!r} contains NaN or infinite values", code="bad_values")
    if check_architecture:
        check_against_architecture(config, tensors)
    return config, tensors


def expected_tensors(config: CheckpointConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of the state dict of the network `config` describes."""
    return dict(_expected_for(json.dumps(config.network, sort_keys=True)))


@functools.lru_cache(maxsize=32)
def _expected_for(network_json: str) -> tuple[tuple[str, tuple[tuple[int, ...], torch.dtype]], ...]:
    net_cfg = network_config_from_dict(json.loads(network_json))
    try:
        with torch.device("meta"):  # shapes only: no memory for the weights
            net = build_network(net_cfg)
    except Exception:  # an initialiser that needs real tensors
        net = build_network(net_cfg)
    return tuple((k, (tuple(v.shape), v.dtype)) for k, v in net.state_dict().items())


def check_against_architecture(config: CheckpointConfig, tensors: Mapping[str, torch.Tensor]) -> None:
    """CheckpointError (code "architecture_mismatch") listing the first offending tensors."""
    try:
        expected = expected_tensors(config)
    except Exception as exc:  # a config that validated but still cannot be built
        raise cfg_error("network", f"the network cannot be built: {exc}") from None
    problems: list[dict[str, Any]] = []
    for name in sorted(expected.keys() - tensors.keys()):
        shape, dtype = expected[name]
        problems.append({"name": name, "problem": "missing", "expected": _describe(shape, dtype), "found": None})
    for name in sorted(tensors.keys() - expected.keys()):
        problems.append(
            {
                "name": name,
                "problem": "unexpected",
                "expected": None,
                "found": _describe(tuple(tensors[name].shape), tensors[name].dtype),
            }
        )
    for name in sorted(expected.keys() & tensors.keys()):
        shape, dtype = expected[name]
        t = tensors[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            problem = "wrong shape" if tuple(t.shape) != shape else "wrong dtype"
            problems.append(
                {
                    "name": name,
                    "problem": problem,
                    "expected": _describe(shape, dtype),
                    "found": _describe(tuple(t.shape), t.dtype),
                }
            )
    if problems:
        listed = "; ".join(_problem_text(p) for p in problems[:MAX_LISTED])
        more = f" and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise CheckpointError(
            f"the tensors do not match the {config.network.get('arch')} architecture in the config: {listed}{more}",
            code="architecture_mismatch",
            offending=problems[:MAX_LISTED],
        )


def _problem_text(p: dict[str, Any]) -> str:
    parts = [f"expected {p['expected']}" if p["expected"] else "", f"found {p['found']}" if p["found"] else ""]
    detail = ", ".join(x for x in parts if x)
    return f"{p['name']}: {p['problem']} ({detail})"


def _describe(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    return f"{DTYPE_CODES.get(dtype, str(dtype))}{list(shape)}"


def load_model(
    source: bytes | tuple[CheckpointConfig, Mapping[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> EntropyMatchingModel:
    """An `EntropyMatchingModel` (eval mode, on `device`) from file bytes or (config, tensors)."""
    if isinstance(source, bytes | bytearray | memoryview):
        config, tensors = read_checkpoint(bytes(source), max_bytes)
    else:
        config, given = source
        check_against_architecture(config, given)
        tensors = {k: v.detach().clone() for k, v in given.items()}  # the model owns its weights
    network = _network_with(config, tensors)
    model = EntropyMatchingModel(network, config.build_process(), config.parametrization)  # type: ignore[arg-type]
    return model.to(device).eval()


def _network_with(config: CheckpointConfig, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network of `config` holding `tensors` (checked), built without random initialisation
    (meta device, then the tensors are assigned) when the architecture allows it."""
    net_cfg = config.network_config()
    try:
        with torch.device("meta"):
            network = build_network(net_cfg)
        network.load_state_dict(tensors, strict=True, assign=True)
        if any(t.is_meta for t in itertools.chain(network.parameters(), network.buffers())):
            raise RuntimeError("a tensor outside the state dict stayed on the meta device")
    except Exception:  # an architecture that needs real tensors at construction
        network = build_network(net_cfg)
        network.load_state_dict(tensors, strict=True)
    return network
