"""The GPU path, proven on a CUDA machine in one run; prints one table.

    bench/device_check.sh              # on a CUDA machine (about 5 minutes)
    bench/device_check.sh --dry-run    # anywhere: the same steps on CPU, tiny sizes

1. worker end to end: what `make run` starts (SQLite, bundled Redis, the API, a worker on the
   `cpu` queue with WORKER_DEVICE=cpu) plus a second worker on the `gpu` queue with
   WORKER_DEVICE=cuda; one mixture data set; the same train job on `gpu` and on `cpu`, then a
   measure job on `gpu` of the GPU-trained checkpoint. Checks: the jobs ran on the devices they
   say, and |S_NN(gpu) - S_NN(cpu)| <= 3 * sqrt(se_gpu^2 + se_cpu^2). (The two trainings draw
   their throws from different generators, so the difference includes training noise too.)
2. U-Net training throughput on 32x32x3 images (the service's default U-Net for that shape,
   Adam, batch 128): float32 with TF32 off, TF32 on, and bf16 autocast (TF32 on); images/s.
3. the bias autocast puts on S_NN: an MLP trained in float32 on a 2-D paper mixture, measured
   with the same seed (the same throws) in float32, under TF32 and under bf16 autocast; the
   differences against float32 in nats and in units of the float32 stderr.

With --dry-run everything runs on CPU at tiny sizes (the "gpu" worker gets WORKER_DEVICE=cpu),
which checks the plumbing, not the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.data import GaussianMixture  # noqa: E402
from models.entropy.estimators import MeasurementConfig, neural_entropy  # noqa: E402
from models.networks import build_network, default_network_config  # noqa: E402
from models.networks.factory import network_config_from_dict  # noqa: E402
from models.parametrization import EntropyMatchingModel  # noqa: E402
from models.processes import process_from_spec  # noqa: E402
from models.training import TrainingConfig, train  # noqa: E402

VP = {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0}


@dataclass
class Row:
    check: str
    value: str
    verdict: str = ""


@dataclass(frozen=True)
class Sizes:
    dataset: int
    epochs: int
    batch: int
    n_samples: int
    unet_batch: int
    unet_steps: int
    bias_epochs: int

    @classmethod
    def for_run(cls, dry: bool) -> Sizes:
        if dry:
            return cls(dataset=1024, epochs=1, batch=128, n_samples=4096, unet_batch=4,
                       unet_steps=2, bias_epochs=1)
        return cls(dataset=16384, epochs=20, batch=128, n_samples=262144, unet_batch=128,
                   unet_steps=40, bias_epochs=20)


# ---- 1. a real worker end to end ----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def _stack(dry: bool) -> Iterator[tuple[httpx.Client, Path]]:
    data_dir = Path(tempfile.mkdtemp(prefix="ne-device-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "ARTIFACT_DIR", "ARTIFACT_URL")}
    env.update(DATA_DIR=str(data_dir), PORT=str(port), WORKER_DEVICE="cpu",
               PROGRESS_INTERVAL_SECONDS="1", PYTHONUNBUFFERED="1")
    runner = subprocess.Popen([sys.executable, "-m", "runner"], cwd=ROOT, env=env,
                              stdout=(data_dir / "runner.log").open("wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    gpu_worker = None
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if runner.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the stack did not start:\n"
                                 + (data_dir / "runner.log").read_text()[-4000:])
            time.sleep(0.5)
        gpu_env = {**env, "WORKER_DEVICE": "cpu" if dry else "cuda",
                   "REDIS_URL": f"unix://{data_dir / 'redis.sock'}"}
        gpu_worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--queues", "gpu", "--name", "device-check-gpu"],
            cwd=ROOT, env=gpu_env, stdout=(data_dir / "gpu-worker.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        key = (data_dir / "api-key").read_text().strip()
        with httpx.Client(base_url=base, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            yield client, data_dir
    finally:
        _stop(gpu_worker)
        _stop(runner)
        if os.environ.get("KEEP_DEVICE_CHECK_DIR"):
            print(f"(logs kept in {data_dir})")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _wait(client: httpx.Client, job_id: str, data_dir: Path, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/v1/jobs/{job_id}").json()
        if doc["status"] in ("succeeded", "failed", "canceled"):
            return doc
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-3000:] for p in data_dir.glob("*.log"))
            raise SystemExit(f"job {job_id} still {doc['status']} after {timeout} s\n{logs}")
        time.sleep(1.0)


def worker_end_to_end(sizes: Sizes, dry: bool) -> list[Row]:
    rows: list[Row] = []
    with _stack(dry) as (c, data_dir):
        r = c.post("/v1/datasets", json={"kind": "gaussian_mixture", "n_components": 5, "dim": 2,
                                          "seed": 0, "n_samples": sizes.dataset})
        r.raise_for_status()
        dataset_id = r.json()["id"]
        train = {"type": "train", "dataset_id": dataset_id, "process": VP,
                 "network": {"arch": "mlp", "width": 128, "hidden_widths": [128, 64],
                             "fourier_features": 64},
                 "training": {"epochs": sizes.epochs, "batch_size": sizes.batch, "lr": 1e-3,
                              "seed": 0},
                 "measurement": {"n_times": 32, "n_samples": sizes.n_samples, "seed": 0}}
        t0 = time.perf_counter()
        ids = {}
        for q in ("gpu", "cpu"):
            r = c.post("/v1/jobs", json={**train, "queue": q})
            if r.status_code != 202:
                raise SystemExit(f"the {q} train job was refused: {r.status_code} {r.text}")
            ids[q] = r.json()["id"]
        docs = {q: _wait(c, job_id, data_dir) for q, job_id in ids.items()}
        for q, doc in docs.items():
            if doc["status"] != "succeeded":
                raise SystemExit(f"the {q} train job {doc['status']}: {doc.get('error')}")
        wall = time.perf_counter() - t0
        meas = {q: c.get(f"/v1/measurements/{d['measurement_id']}").json()["neural_entropy"]
                for q, d in docs.items()}
        expected = "cpu" if dry else "cuda"
        on_gpu = str(docs["gpu"]["device"]).startswith(expected)
        rows.append(Row("train job on `gpu`: device, compute s",
                        f"{docs['gpu']['device']}, {docs['gpu']['compute_seconds']:.1f}",
                        "ok" if on_gpu else f"FAIL (expected {expected})"))
        rows.append(Row("train job on `cpu`: device, compute s",
                        f"{docs['cpu']['device']}, {docs['cpu']['compute_seconds']:.1f}",
                        "ok" if docs["cpu"]["device"] == "cpu" else "FAIL"))
        g, k = meas["gpu"], meas["cpu"]
        se = math.hypot(g["stderr"], k["stderr"])
        z = abs(g["nats"] - k["nats"]) / se if se > 0 else math.inf
        rows.append(Row("S_NN nats: gpu vs cpu (± stderr)",
                        f"{g['nats']:.4f} ± {g['stderr']:.4f} vs {k['nats']:.4f} ± {k['stderr']:.4f}",
                        f"{'ok' if z <= 3 else 'FAIL'} ({z:.2f} combined stderr)"))
        r = c.post("/v1/jobs", json={"type": "measure", "queue": "gpu",
                                     "checkpoint_id": docs["gpu"]["checkpoint_id"],
                                     "dataset_id": dataset_id,
                                     "measurement": {"n_times": 32, "n_samples": sizes.n_samples,
                                                     "seed": 1}})
        if r.status_code != 202:
            raise SystemExit(f"the measure job was refused: {r.status_code} {r.text}")
        mdoc = _wait(c, r.json()["id"], data_dir)
        ok = mdoc["status"] == "succeeded" and str(mdoc["device"]).startswith(expected)
        val = "-"
        if mdoc["status"] == "succeeded":
            mm = c.get(f"/v1/measurements/{mdoc['measurement_id']}").json()["neural_entropy"]
            val = f"{mm['nats']:.4f} ± {mm['stderr']:.4f} on {mdoc['device']}"
        rows.append(Row("measure job on `gpu` (gpu checkpoint, seed 1)", val,
                        "ok" if ok else f"FAIL ({mdoc['status']}: {mdoc.get('error')})"))
        rows.append(Row("both train jobs, wall s", f"{wall:.1f}"))
    return rows


# ---- 2. U-Net throughput ----
@contextlib.contextmanager
def _precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32 (TF32 off), tf32, or bf16 (autocast to bfloat16, TF32 on for what stays float32)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = mode in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        if mode == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_throughput(device: torch.device, mode: str, batch: int, steps: int) -> float:
    """Images per second of entropy-matching training steps (forward, backward, Adam)."""
    torch.manual_seed(0)
    net = build_network(default_network_config((3, 32, 32))).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    y = torch.randn(batch, 3, 32, 32, device=device)
    z = torch.randn_like(y)
    s = torch.rand(batch, device=device) * 0.99 + 0.01

    def step() -> None:
        with _precision(mode, device):
            out = net(y, s, None)
            loss = (out.float() + z).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(2, steps // 8)):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


# ---- 3. the bias autocast puts on S_NN ----
def autocast_bias(device: torch.device, sizes: Sizes) -> list[Row]:
    mixture = GaussianMixture.paper(n_components=5, dim=2, seed=0)
    data = mixture.as_dataset(sizes.dataset, seed=0)
    process = process_from_spec(VP)
    net = build_network(network_config_from_dict(
        {"arch": "mlp", "dim": 2, "width": 128, "hidden_widths": [128, 64],
         "fourier_features": 64, "fused": False}))  # the fused kernel has no autocast path
    config = TrainingConfig(epochs=sizes.bias_epochs, batch_size=sizes.batch, lr=1e-3, seed=0)
    train(net, process, data, config, device=device)
    model = EntropyMatchingModel(net.to(device).eval(), process, "entropy_matching")
    pool = mixture.as_dataset(max(sizes.n_samples // 4, 4096), seed=1).x.to(device)
    mconfig = MeasurementConfig(n_times=32, n_samples=sizes.n_samples, seed=0)
    results: dict[str, Any] = {}
    for mode in ("fp32", "tf32", "bf16"):
        def e_theta(yy: torch.Tensor, ss: torch.Tensor, labels: torch.Tensor | None,
                    _mode: str = mode) -> torch.Tensor:
            with _precision(_mode, device), torch.no_grad():
                return model.e_theta(yy, ss, labels).float()

        results[mode] = neural_entropy(e_theta, process, pool, mconfig, device=device).total
    base = results["fp32"]
    rows = [Row("S_NN float32 (mixture, nats)", f"{base.mean:.5f} ± {base.stderr:.5f}")]
    for mode in ("tf32", "bf16"):
        d = results[mode].mean - base.mean
        rows.append(Row(f"S_NN {mode} - float32 (same throws)",
                        f"{d:+.5f} nats = {d / base.stderr:+.2f} stderr" if base.stderr > 0
                        else f"{d:+.5f} nats"))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU only, tiny sizes: the plumbing")
    p.add_argument("--skip-worker", action="store_true", help="skip part 1 (the service)")
    args = p.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device here; use --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    sizes = Sizes.for_run(dry)
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    print(f"device check on {name}, torch {torch.__version__}", flush=True)
    rows: list[Row] = []
    parts: list[tuple[str, Callable[[], list[Row]]]] = []
    if not args.skip_worker:
        parts.append(("worker end to end", lambda: worker_end_to_end(sizes, dry)))

    def throughput() -> list[Row]:
        out = []
        rates = {m: unet_throughput(device, m, sizes.unet_batch, sizes.unet_steps)
                 for m in ("fp32", "tf32", "bf16")}
        for m, rate in rates.items():
            out.append(Row(f"U-Net 32x32x3 training, {m}, batch {sizes.unet_batch}",
                           f"{rate:.0f} images/s", f"x{rate / rates['fp32']:.2f} vs fp32"))
        return out

    parts.append(("U-Net throughput", throughput))
    parts.append(("autocast bias", lambda: autocast_bias(device, sizes)))
    for title, part in parts:
        t0 = time.perf_counter()
        print(f"... {title}", flush=True)
        try:
            rows.extend(part())
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - the table still prints
            rows.append(Row(title, "did not finish", f"FAIL: {type(exc).__name__}: {str(exc)[:300]}"))
        print(f"    {time.perf_counter() - t0:.0f} s", flush=True)
    width = max(len(r.check) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print(f"\n{'check':<{width}}  {'value':<{vwidth}}  verdict")
    print(f"{'-' * width}  {'-' * vwidth}  -------")
    for r in rows:
        print(f"{r.check:<{width}}  {r.value:<{vwidth}}  {r.verdict}")
    return 1 if any(r.verdict.startswith("FAIL") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
