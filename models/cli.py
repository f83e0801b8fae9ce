"""Command line: train, measure and sample from files, without the service.

    python -m models train   --data FILE --out DIR [training options]
    python -m models measure --checkpoint DIR/model.safetensors --data FILE [--json OUT]
    python -m models sample  --checkpoint DIR/model.safetensors --n 64 --out samples.png|.npy

--data takes a .npy array (N, D) or images, a .npz with "x" (or its first array) and optional
"labels", a Gaussian-mixture JSON (`GaussianMixture.to_dict()`, or {"kind": "paper", ...} for
`GaussianMixture.paper(...)`), or the word "digits" (scikit-learn's 8x8 digits).  Arrays are read
with allow_pickle=False.  `train` writes DIR/model.safetensors (models.checkpoints.io format),
DIR/state.safetensors (a resumable TrainingState, refreshed every epoch), DIR/run.json, and
DIR/epoch_XXXX.safetensors at milestones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoints.io import CheckpointConfig, load_model, read_checkpoint, write_checkpoint
from models.data import DataSet, GaussianMixture, array_dataset, load_digits
from models.entropy.estimators import MeasurementConfig, neural_entropy, total_entropy_mixture
from models.networks import NetworkConfig, build_network, default_network_config, network_config_from_dict
from models.parametrization import PARAMETRIZATIONS
from models.processes import process_from_spec
from models.sampling import image_grid_png, sample_probability_flow, scatter_png
from models.training import NoHooks, ProgressEvent, TrainingCanceled, TrainingConfig, train
from models.training.state import TrainingState


def load_data(spec: str, n_samples: int, seed: int) -> tuple[DataSet, GaussianMixture | None]:
    """(data set, the mixture when the source is one); see the module docstring for `spec`."""
    if spec == "digits":
        return load_digits(), None
    path = Path(spec)
    if path.suffix == ".json":
        d = json.loads(path.read_text())
        if d.get("kind") == "paper":
            params = {k: v for k, v in d.items() if k != "kind"}
            mixture = GaussianMixture.paper(**params)
        else:
            mixture = GaussianMixture.from_dict({k: d[k] for k in ("weights", "means", "stds")})
        return mixture.as_dataset(n_samples, seed=seed), mixture
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            x = z["x"] if "x" in z.files else z[z.files[0]]
            labels = z["labels"] if "labels" in z.files else None
        return array_dataset(x, labels), None
    if path.suffix == ".npy":
        return array_dataset(np.load(path, allow_pickle=False)), None
    raise SystemExit(f"--data: expected .npy, .npz, .json or 'digits', got {spec!r}")


def _training_config(a: argparse.Namespace) -> TrainingConfig:
    milestones = tuple(int(m) for m in a.milestones.split(",") if m) if a.milestones else ()
    return TrainingConfig(
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        num_steps=a.num_steps,
        seed=a.seed,
        weighting=a.weighting,
        grad_clip=a.grad_clip,
        ema_decay=a.ema_decay,
        milestones=milestones,
        lr_schedule=a.lr_schedule,
    )


def _checkpoint_config(
    net_cfg: NetworkConfig, process_spec: dict[str, Any], data: DataSet, a: argparse.Namespace, epoch: int
) -> CheckpointConfig:
    return CheckpointConfig(
        network=net_cfg.to_dict(),
        process=process_spec,
        event_shape=data.event_shape,
        parametrization=a.parametrization,
        value_range=data.value_range,
        num_classes=net_cfg.num_classes,
        provenance={"source": "cli", "data": a.data, "epoch": epoch},
    )


def cmd_train(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data, _ = load_data(a.data, a.n_samples, a.data_seed)
    process = process_from_spec(json.loads(a.process_json) if a.process_json else {"kind": a.process})
    if a.network_json:
        net_cfg = network_config_from_dict(json.loads(a.network_json))
    else:
        net_cfg = default_network_config(data.event_shape, data.num_classes, seed=a.network_seed)
    config = _training_config(a)
    state_path = out / "state.safetensors"
    resume = TrainingState.load(state_path) if a.resume and state_path.exists() else None
    network = build_network(net_cfg)

    class Hooks(NoHooks):
        checkpoint_every = 1  # refresh state.safetensors after every epoch

        def on_progress(self, event: ProgressEvent) -> None:
            if not a.quiet:
                print(
                    f"epoch {event.epoch}/{event.epochs} step {event.step}/{event.steps_per_epoch} "
                    f"loss {event.loss:.5f} {event.throws_per_second:,.0f} throws/s",
                    file=sys.stderr,
                    flush=True,
                )

        def on_milestone(self, epoch: int, network: torch.nn.Module, state: TrainingState) -> None:
            cfg = _checkpoint_config(net_cfg, process.spec(), data, a, epoch)
            (out / f"epoch_{epoch:04d}.safetensors").write_bytes(write_checkpoint(network, cfg))

        def on_checkpoint(self, state: TrainingState) -> None:
            state.save(state_path)

    extra = {"network": net_cfg.to_dict(), "process": process.spec(), "data": a.data}
    started = time.time()
    try:
        result = train(
            network,
            process,
            data,
            config,
            parametrization=a.parametrization,
            device=a.device,
            hooks=Hooks(),
            resume=resume,
            extra=extra,
        )
    except TrainingCanceled as exc:  # pragma: no cover - no stop condition from the CLI
        exc.state.save(state_path)
        return 1
    result.state.save(state_path)
    cfg = _checkpoint_config(net_cfg, process.spec(), data, a, result.state.epoch)
    (out / "model.safetensors").write_bytes(write_checkpoint(result.eval_network, cfg))
    run = {
        "training": config.to_dict(),
        "network": net_cfg.to_dict(),
        "process": process.spec(),
        "parametrization": a.parametrization,
        "data": a.data,
        "n_data": len(data),
        "losses": result.losses,
        "seconds": result.seconds,
        "throws_per_second": result.throws_per_second,
        "device": str(a.device),
        "started": started,
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
    print(
        json.dumps(
            {
                "model": str(out / "model.safetensors"),
                "final_loss": result.losses[-1],
                "seconds": round(result.seconds, 2),
            }
        )
    )
    return 0


def cmd_measure(a: argparse.Namespace) -> int:
    model = load_model(Path(a.checkpoint).read_bytes(), device=a.device)
    data, mixture = load_data(a.data, a.n_samples_data, a.data_seed)
    config = MeasurementConfig(n_times=a.n_times, n_samples=a.n_samples, seed=a.seed)

    def e_theta(y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return model.e_theta(y, s, labels)

    with torch.inference_mode():
        result = neural_entropy(e_theta, model.process, data.x, config, labels=data.labels, device=a.device)
        report: dict[str, Any] = {"neural_entropy": result.to_dict()}
        if mixture is not None:
            report["total_entropy"] = total_entropy_mixture(mixture, model.process, config, device=a.device).to_dict()
    summary = {"S_NN_nats": result.total.to_dict(), "S_NN_bits": result.bits().to_dict()}
    if mixture is not None:
        summary["S_tot_nats"] = report["total_entropy"]["total_nats"]
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(summary))
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    blob = Path(a.checkpoint).read_bytes()
    model = load_model(blob, device=a.device)
    cfg, _ = read_checkpoint(blob)
    labels = None
    if cfg.num_classes:
        labels = torch.arange(a.n, device=a.device) % cfg.num_classes
    gen = torch.Generator(device=a.device).manual_seed(a.seed)
    x = sample_probability_flow(
        model.score,
        model.process,
        (a.n, *cfg.event_shape),
        solver=a.solver,
        steps=a.steps,
        generator=gen,
        labels=labels,
        device=a.device,
    )
    out = Path(a.out)
    if out.suffix == ".npy":
        np.save(out, x.cpu().numpy())
    elif out.suffix == ".png":
        if len(cfg.event_shape) == 3:
            out.write_bytes(image_grid_png(x, cfg.value_range or (-1.0, 1.0)))
        else:
            out.write_bytes(scatter_png(x))
    else:
        raise SystemExit("--out must end in .npy or .png")
    print(json.dumps({"samples": str(out), "n": a.n}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network by entropy matching")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--n-samples", type=int, default=8192, help="draws from a mixture JSON")
    t.add_argument("--data-seed", type=int, default=0)
    t.add_argument("--process", default="vp", choices=["vp", "vp_cosine", "sl", "ve"])
    t.add_argument("--process-json", help='full process spec, e.g. {"kind": "vp", "kappa": 0.1}')
    t.add_argument("--network-json", help="network config dict with arch (default: by data shape)")
    t.add_argument("--network-seed", type=int, default=0)
    t.add_argument("--parametrization", default="entropy_matching", choices=list(PARAMETRIZATIONS))
    d = TrainingConfig()
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--num-steps", type=int, default=d.num_steps)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--weighting", default=d.weighting, choices=["unit", "likelihood"])
    t.add_argument("--grad-clip", type=float)
    t.add_argument("--ema-decay", type=float)
    t.add_argument("--milestones", help="comma-separated epochs, e.g. 5,10,20")
    t.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    t.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)
    m = sub.add_parser("measure", help="measure neural entropy (and S_tot for a mixture)")
    m.add_argument("--checkpoint", required=True)
    m.add_argument("--data", required=True, help="held-out data, a mixture JSON or 'digits'")
    m.add_argument("--n-samples", type=int, default=65536, help="network evaluations in all")
    m.add_argument("--n-samples-data", type=int, default=65536, help="draws from a mixture JSON")
    m.add_argument("--data-seed", type=int, default=12345)
    m.add_argument("--n-times", type=int, default=64)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--json", help="write the full result (curves) here")
    m.add_argument("--device", default="cpu")
    m.set_defaults(func=cmd_measure)
    s = sub.add_parser("sample", help="draw samples with the probability-flow ODE")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--solver", default="heun", choices=["euler", "heun", "adaptive"])
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help=".png (grid or scatter) or .npy")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
