"""A diffusers pipeline's files -> our checkpoint (config + tensors), checked in this order:

1. the JSON files parse (plain JSON: no NaN/Infinity) and are objects;
2. the scheduler: `_class_name` DDPMScheduler or DDIMScheduler, `beta_schedule` linear,
   scaled_linear or squaredcos_cap_v2 (no `trained_betas`, no `rescale_betas_zero_snr`),
   `prediction_type` epsilon, v_prediction or sample -> the process `DiscreteVP` and the
   parametrization (`models.pipelines.adapter.FROM_DIFFUSERS`);
3. the UNet config (`models.pipelines.config.unet_config_from_json`: UNet2DModel only, bounded);
4. the parameter count of that architecture, counted on the meta device, against `max_parameters`
   — before any weight is allocated;
5. the safetensors header (`models.checkpoints.format.parse_header`: never unpickles): tensor names,
   shapes and dtypes against the architecture, before the weights are read;
6. the weights, which must be finite.

The checkpoint config: network {"arch": "diffusers_unet2d", "unet": {...}, "num_train_timesteps",
"timestep_input"}, process {"kind": "discrete", ...}, parametrization noise | v_prediction | sample,
event_shape [C, H, W], value_range [-1, 1] (diffusers' image range), num_classes = num_class_embeds,
provenance {"source": "diffusers", "scheduler": the scheduler config, "diffusers_version", ...}.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load

from models.checkpoints.config import CheckpointConfig
from models.checkpoints.format import DTYPE_CODES, CheckpointError, parse_header
from models.checkpoints.io import MAX_LISTED, expected_tensors
from models.discrete_schedules import BETA_SCHEDULES
from models.pipelines.adapter import FROM_DIFFUSERS
from models.pipelines.archive import PipelineFiles
from models.pipelines.config import ARCH, DiffusersUNetConfig, PipelineConfigError, unet_config_from_json

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
MODEL_RANGE = (-1.0, 1.0)  # diffusers' image pipelines work on images scaled to [-1, 1]


def _json(data: bytes, name: str) -> dict[str, Any]:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not plain JSON")

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{name} is not valid JSON: {exc}", code="bad_config", field="file") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{name} must hold a JSON object", code="bad_config", field="file")
    return value


def _config_error(exc: PipelineConfigError) -> CheckpointError:
    return CheckpointError(str(exc), code="bad_config", field=exc.field)


def scheduler_process(sched: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(process spec, parametrization) of a scheduler config; CheckpointError naming the key."""

    def fail(key: str, message: str) -> CheckpointError:
        return CheckpointError(f"scheduler/scheduler_config.json: {message}", code="bad_config",
                               field=f"scheduler.{key}")

    name = sched.get("_class_name")
    if name not in SCHEDULERS:
        raise fail("_class_name", f"_class_name {name!r} is not supported; expected one of {SCHEDULERS}")
    schedule = sched.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES:
        raise fail("beta_schedule", f"beta_schedule {schedule!r} is not supported; expected one of {BETA_SCHEDULES}")
    if sched.get("trained_betas") is not None:
        raise fail("trained_betas", "trained_betas is not supported; use a named beta_schedule")
    if sched.get("rescale_betas_zero_snr"):
        raise fail("rescale_betas_zero_snr", "zero terminal SNR (rescale_betas_zero_snr) is not supported: the "
                   "log-SNR of the last step would be -infinity")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in FROM_DIFFUSERS:
        raise fail("prediction_type", f"prediction_type {prediction!r} is not one of {sorted(FROM_DIFFUSERS)}")
    spec = {"kind": "discrete", "beta_schedule": schedule, "beta_start": sched.get("beta_start", 0.0001),
            "beta_end": sched.get("beta_end", 0.02), "num_train_timesteps": sched.get("num_train_timesteps", 1000)}
    for key in ("beta_start", "beta_end"):
        v = spec[key]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1):
            raise fail(key, f"{key} must be a number in (0, 1), got {v!r}")
    t = spec["num_train_timesteps"]
    if not (isinstance(t, int) and not isinstance(t, bool) and 2 <= t <= 100_000):
        raise fail("num_train_timesteps", f"num_train_timesteps must be an integer in 2..100000, got {t!r}")
    return spec, FROM_DIFFUSERS[prediction]


def check_header_against(config: CheckpointConfig, weights: bytes, max_bytes: int) -> None:
    """Names, shapes and dtypes in the safetensors header vs the architecture (nothing loaded)."""
    header = parse_header(weights, max_bytes)
    expected = expected_tensors(config)
    found = {e.name: (e.shape, e.dtype) for e in header.tensors}
    problems: list[dict[str, Any]] = []
    for name in sorted(expected.keys() - found.keys()):
        shape, dtype = expected[name]
        problems.append({"name": name, "problem": "missing", "expected": f"{DTYPE_CODES[dtype]}{list(shape)}",
                         "found": None})
    for name in sorted(found.keys() - expected.keys()):
        shape_f, code = found[name]
        problems.append({"name": name, "problem": "unexpected", "expected": None, "found": f"{code}{list(shape_f)}"})
    for name in sorted(expected.keys() & found.keys()):
        shape, dtype = expected[name]
        shape_f, code = found[name]
        if tuple(shape_f) != tuple(shape) or code != DTYPE_CODES[dtype]:
            problem = "wrong shape" if tuple(shape_f) != tuple(shape) else "wrong dtype"
            problems.append({"name": name, "problem": problem,
                             "expected": f"{DTYPE_CODES[dtype]}{list(shape)}", "found": f"{code}{list(shape_f)}"})
    if problems:
        listed = "; ".join(f"{p['name']}: {p['problem']} (expected {p['expected']}, found {p['found']})"
                           for p in problems[:MAX_LISTED])
        more = f" and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise CheckpointError(f"unet/diffusion_pytorch_model.safetensors does not match the UNet2DModel in "
                              f"unet/config.json: {listed}{more}", code="architecture_mismatch",
                              offending=problems[:MAX_LISTED])


def pipeline_checkpoint(
    files: PipelineFiles, *, max_parameters: int, max_bytes: int, timestep_input: str = "float"
) -> tuple[CheckpointConfig, dict[str, torch.Tensor], int]:
    """(config, tensors, parameter count) of the pipeline; CheckpointError for anything refused."""
    unet_json = _json(files.unet_config, "unet/config.json")
    sched_json = _json(files.scheduler_config, "scheduler/scheduler_config.json")
    model_index = _json(files.model_index, "model_index.json") if files.model_index is not None else None
    process, parametrization = scheduler_process(sched_json)
    try:
        unet = unet_config_from_json(unet_json)
    except PipelineConfigError as exc:
        raise _config_error(exc) from None
    try:
        net = DiffusersUNetConfig(unet, process["num_train_timesteps"], timestep_input)
    except ValueError as exc:
        raise CheckpointError(str(exc), code="bad_config", field="unet") from None
    from models.pipelines.unet2d import count_parameters  # imports diffusers

    try:
        n_params = count_parameters(net)
    except Exception as exc:  # diffusers refuses the combination (unknown block type, ...)
        raise CheckpointError(f"unet/config.json: diffusers cannot build this UNet2DModel: {exc}",
                              code="bad_config", field="unet") from None
    if n_params > max_parameters:
        raise CheckpointError(
            f"the UNet2DModel in unet/config.json has {n_params} parameters, more than the cap {max_parameters} "
            "(setting MAX_NETWORK_PARAMETERS)", code="too_many_parameters", field="unet")
    provenance: dict[str, Any] = {
        "source": "diffusers",
        "scheduler": {k: v for k, v in sched_json.items() if k != "_use_default_values"},
        "diffusers_version": unet_json.get("_diffusers_version"),
        "parameters": n_params,
    }
    if model_index is not None:
        provenance["pipeline_class"] = model_index.get("_class_name")
    config = CheckpointConfig.from_dict({
        "network": net.to_dict(), "process": process, "parametrization": parametrization,
        "event_shape": list(net.shape), "value_range": list(MODEL_RANGE), "num_classes": net.num_classes,
        "provenance": provenance,
    })
    assert config.network["arch"] == ARCH
    check_header_against(config, files.unet_weights, max_bytes)
    tensors = st_load(files.unet_weights)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"tensor {name!r} contains NaN or infinite values", code="bad_values")
    return config, tensors, n_params
