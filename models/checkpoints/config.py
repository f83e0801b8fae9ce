"""The checkpoint config: what a `.safetensors` checkpoint's `neural_entropy` metadata holds.

`CheckpointConfig.from_dict` validates and normalises (every network and process field filled
in, float fields as floats, finite numbers only), raising `CheckpointError` whose `field` names
the offending key (`config.<key>`); `merge_config` is how an upload's `config` form field fills
in or overrides the metadata. Re-exported by `models.checkpoints.io`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from models.checkpoints.format import CheckpointError, is_int
from models.networks.factory import NetworkConfig, network_config_from_dict
from models.networks.mlp import MLPConfig
from models.networks.unet import UNetConfig
from models.parametrization import PARAMETRIZATIONS
from models.processes import ForwardProcess, process_from_spec

FORMAT_VERSION = 1
MAX_PROVENANCE_CHARS = 65_536


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Everything needed to rebuild and read a network, stored in the file's metadata.

    network: architecture config dict with "arch" ("mlp" | "unet"), every field filled in.
    parametrization: how the output is read — "entropy_matching" (e_theta), "scaled_entropy_matching"
        (e_theta = output / k^2), "score", or "noise"
        (score = -eps / Sigma(s)); see docs/math.md §2.3.
    process: the forward-process spec the network was trained with, every field filled in.
    event_shape: shape of one data point, (D,) or (C, H, W).
    value_range: (lo, hi) of the data the network saw, after scaling (images: [-1, 1]), or None.
    num_classes: class count for class-conditional networks, else None.
    provenance: free-form JSON object (source, job_id, epoch, dataset_sha256, code_version, ...).
    """

    network: dict[str, Any]
    process: dict[str, Any]
    event_shape: tuple[int, ...]
    parametrization: str = "entropy_matching"
    value_range: tuple[float, float] | None = None
    num_classes: int | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def dim(self) -> int:
        """D, the number of values per data point."""
        return math.prod(self.event_shape)

    def build_process(self) -> ForwardProcess:
        return process_from_spec(self.process)

    def network_config(self) -> NetworkConfig:
        """The `models.networks` config object (MLPConfig / UNetConfig)."""
        return network_config_from_dict(self.network)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "network": dict(self.network),
            "parametrization": self.parametrization,
            "process": dict(self.process),
            "event_shape": list(self.event_shape),
            "value_range": None if self.value_range is None else list(self.value_range),
            "num_classes": self.num_classes,
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointConfig:
        """Validate and normalise a config dict; CheckpointError (field "config.<key>") if bad."""
        return _config_from_dict(d)


def cfg_error(key: str, message: str) -> CheckpointError:
    return CheckpointError(f"config.{key}: {message}", code="bad_config", field=f"config.{key}")


def _config_from_dict(d: Mapping[str, Any]) -> CheckpointConfig:
    if not isinstance(d, Mapping):
        raise CheckpointError("the config must be a JSON object", code="bad_config", field="config")
    known = {
        "format_version",
        "network",
        "parametrization",
        "process",
        "event_shape",
        "value_range",
        "num_classes",
        "provenance",
    }
    unknown = sorted(set(d) - known)
    if unknown:
        raise cfg_error(unknown[0], f"unknown key; expected some of {sorted(known)}")
    version = d.get("format_version", FORMAT_VERSION)
    if not is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise cfg_error(
            "format_version", f"{version!r} is not supported (this code reads format_version {FORMAT_VERSION})"
        )
    parametrization = d.get("parametrization", "entropy_matching")
    if parametrization not in PARAMETRIZATIONS:
        raise cfg_error("parametrization", f"{parametrization!r} is not one of {PARAMETRIZATIONS}")
    event_shape = _event_shape(d.get("event_shape"))
    value_range = _value_range(d.get("value_range"))
    num_classes = d.get("num_classes")
    if num_classes is not None and not (is_int(num_classes) and num_classes >= 1):
        raise cfg_error("num_classes", f"must be a positive integer or null, got {num_classes!r}")
    provenance = d.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise cfg_error("provenance", "must be a JSON object")
    if len(_strict_json("provenance", provenance)) > MAX_PROVENANCE_CHARS:
        raise cfg_error("provenance", f"is longer than {MAX_PROVENANCE_CHARS} characters")
    process = d.get("process")
    if not isinstance(process, Mapping) or "kind" not in process:
        raise cfg_error(
            "process",
            "must be a process spec object with 'kind' (e.g. "
            '{"kind": "vp", "beta_min": 0.1, "beta_max": 16, "kappa": 1})',
        )
    try:
        process_spec = process_from_spec(dict(process)).spec()
    except ValueError as exc:
        raise cfg_error("process", str(exc)) from None
    _strict_json("process", process_spec)
    network = d.get("network")
    if not isinstance(network, Mapping) or "arch" not in network:
        raise cfg_error("network", "must be an architecture object with 'arch' ('mlp' or 'unet')")
    typed = _typed_network(network)
    try:
        net_cfg = network_config_from_dict(typed)
    except (ValueError, TypeError, KeyError) as exc:
        raise cfg_error("network", str(exc)) from None
    if (
        isinstance(net_cfg, MLPConfig)
        and net_cfg.event_shape is None
        and len(event_shape) > 1
        and math.prod(event_shape) == net_cfg.dim
    ):
        net_cfg = dataclasses.replace(net_cfg, event_shape=event_shape)  # an MLP on images
    num_classes = _check_network_fits(net_cfg, event_shape, num_classes)
    return CheckpointConfig(
        network=net_cfg.to_dict(),
        process=process_spec,
        event_shape=event_shape,
        parametrization=parametrization,
        value_range=value_range,
        num_classes=num_classes,
        provenance=dict(provenance),
        format_version=FORMAT_VERSION,
    )


def _strict_json(key: str, value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise cfg_error(key, f"must be plain JSON with finite numbers: {exc}") from None


def _typed_network(network: Mapping[str, Any]) -> dict[str, Any]:
    """Check the JSON types of the network fields against the config dataclass (ints stay ints,
    floats become floats) so that a bad value is named here, not deep inside the network."""
    cls: type[MLPConfig] | type[UNetConfig] | None = {"mlp": MLPConfig, "unet": UNetConfig}.get(
        str(network.get("arch"))
    )
    if cls is None:
        return dict(network)
    out = dict(network)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        value, kind = out[f.name], str(f.type).replace(" ", "")
        optional = kind.endswith("|None")
        kind = kind.removesuffix("|None")
        if value is None and optional:
            continue
        ok = {
            "int": is_int,
            "bool": lambda v: isinstance(v, bool),
            "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
            "tuple[int,...]": lambda v: isinstance(v, list | tuple) and all(map(is_int, v)),
        }.get(kind, lambda v: True)(value)
        if not ok:
            raise cfg_error(f"network.{f.name}", f"must be {f.type}, got {value!r}")
        if kind == "float":
            out[f.name] = float(value)
    return out


def _event_shape(v: Any) -> tuple[int, ...]:
    ok = isinstance(v, list | tuple) and 1 <= len(v) <= 4
    if not (ok and all(is_int(x) and x >= 1 for x in v)):
        raise cfg_error(
            "event_shape", f"must be a list of 1 to 4 positive integers such as [2] or [1, 8, 8], got {v!r}"
        )
    return tuple(v)


def _value_range(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    ok = (
        isinstance(v, list | tuple)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    )
    if not ok or not v[0] < v[1]:
        raise cfg_error("value_range", f"must be [lo, hi] with finite lo < hi, or null, got {v!r}")
    return (float(v[0]), float(v[1]))


def _check_network_fits(
    net_cfg: NetworkConfig, event_shape: tuple[int, ...], num_classes: int | None
) -> int | None:
    """The network must take data of `event_shape`; class counts must agree. Returns num_classes."""
    expected = network_event_shape(net_cfg)
    if expected != event_shape:
        raise cfg_error("event_shape", f"{list(event_shape)} does not fit the network, which takes {list(expected)}")
    net_classes = net_cfg.num_classes
    if net_classes is not None and num_classes is not None and net_classes != num_classes:
        raise cfg_error("num_classes", f"{num_classes} but the network is conditioned on {net_classes} classes")
    return num_classes if num_classes is not None else net_classes


def network_event_shape(net_cfg: NetworkConfig) -> tuple[int, ...]:
    """The shape of one sample a network config takes: (D,) or event_shape for an MLP, (C, H, W)
    for a U-Net (its `shape`)."""
    return tuple(int(n) for n in net_cfg.shape)


_MERGED_OBJECTS = {"network": "arch", "process": "kind", "provenance": None}


def merge_config(base: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The file's metadata config with an upload's `config` fields filled in or overriding.

    Top-level keys of `overrides` replace those of `base`. For "network" and "process" the objects
    are merged key by key when the override names the same arch/kind (or none), and replaced when it
    names another; "provenance" is merged key by key. Nothing is validated here.
    """
    merged: dict[str, Any] = dict(base or {})
    if overrides is None:
        return merged
    if not isinstance(overrides, Mapping):
        raise CheckpointError("the config field must be a JSON object", code="bad_config", field="config")
    for key, value in overrides.items():
        old = merged.get(key)
        if key in _MERGED_OBJECTS and isinstance(value, Mapping) and isinstance(old, Mapping):
            tag = _MERGED_OBJECTS[key]
            if tag is None or value.get(tag, old.get(tag)) == old.get(tag):
                value = {**old, **value}
        merged[key] = value
    return merged
