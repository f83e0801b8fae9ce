"""The GPU path, proven on a CUDA machine in one run; prints one table.

    bench/device_check.sh              # on a CUDA machine (about 3 minutes on an H200)
    bench/device_check.sh --dry-run    # anywhere: the same steps on CPU, tiny sizes (~30 s)

1. worker end to end: what `make run` starts (SQLite, bundled Redis, the API, a worker on the
   `cpu` queue with WORKER_DEVICE=cpu) plus a second worker on the `gpu` queue with
   WORKER_DEVICE=cuda; one mixture data set; the same train job on `gpu` and on `cpu`, then
   measure jobs of the GPU-trained checkpoint on `gpu` and on `cpu` (same seed). Checks: the jobs
   ran on the devices they say, and the two measurements of that one network agree:
   |S_NN(gpu) - S_NN(cpu)| <= 4 * sqrt(se_gpu^2 + se_cpu^2) (their throws come from different
   generators, so they are independent estimates of one number; 4 combined stderr: a false
   alarm about once in 16000 runs). The S_NN of the two trainings is shown without a verdict:
   they differ by training noise (different generators draw the throws; at these sizes seeds
   differ by ~0.07 nats on CPU, hundreds of stderr).
2. U-Net training throughput on 32x32x3 images (the service's default U-Net for that shape,
   4.75 M parameters, ~6 GFLOP per image forward + backward, Adam, batch 128): float32 with TF32
   off, TF32 on, and bf16 autocast (TF32 on); images/s.
3. the bias autocast puts on S_NN: an MLP trained in float32 on a 2-D paper mixture, measured
   with the same seed (the same throws) in float32, under TF32 and under bf16 autocast; the
   differences against float32 in nats and in units of the float32 stderr.

Budget (full run): part 1 trains 20 epochs of 128 steps (2560 steps) per job and measures
262144 throws (each well under a minute on a CPU; the `cpu` job runs beside the `gpu` one), part 2
runs 3 x 112 U-Net steps (~2.6 PFLOP in all, seconds on an H200), part 3 one more 2560-step
training and three measurements. A job still unfinished after JOB_TIMEOUT_SECONDS, or a service
process that died, fails its part at once instead of eating the machine's time.

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
import traceback
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
                   unet_steps=100, bias_epochs=20)


Z_LIMIT = 4.0  # combined stderr two independent measurements of one network may differ by
JOB_TIMEOUT_SECONDS = {True: 300.0, False: 480.0}  # per job, by dry run or not
STACK_START_SECONDS = 180.0


def train_request(dataset_id: str, sizes: Sizes, queue: str) -> dict[str, Any]:
    """The body of part 1's train job on `queue`."""
    return {"type": "train", "queue": queue, "dataset_id": dataset_id, "process": VP,
            "network": {"arch": "mlp", "width": 128, "hidden_widths": [128, 64],
                        "fourier_features": 64},
            "training": {"epochs": sizes.epochs, "batch_size": sizes.batch, "lr": 1e-3,
                         "seed": 0},
            "measurement": {"n_times": 32, "n_samples": sizes.n_samples, "seed": 0}}


def measure_request(checkpoint_id: str, dataset_id: str, sizes: Sizes, queue: str,
                    seed: int) -> dict[str, Any]:
    """The body of part 1's measure job of `checkpoint_id` on `queue`."""
    return {"type": "measure", "queue": queue, "checkpoint_id": checkpoint_id,
            "dataset_id": dataset_id,
            "measurement": {"n_times": 32, "n_samples": sizes.n_samples, "seed": seed}}


def dataset_request(sizes: Sizes) -> dict[str, Any]:
    """The body of part 1's mixture data set."""
    return {"kind": "gaussian_mixture", "n_components": 5, "dim": 2, "seed": 0,
            "n_samples": sizes.dataset}


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


@dataclass
class Stack:
    """The running service of part 1: its client, DATA_DIR and processes."""

    client: httpx.Client
    data_dir: Path
    runner: subprocess.Popen[bytes]
    gpu_worker: subprocess.Popen[bytes]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.data_dir.glob("*.log")))

    def check_alive(self) -> None:
        """SystemExit (with the logs) when the runner or the `gpu` worker has exited."""
        for name, proc in (("the service (python -m runner)", self.runner),
                           ("the gpu worker", self.gpu_worker)):
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with code {proc.returncode}\n{self.logs()}")


@contextlib.contextmanager
def _stack(dry: bool) -> Iterator[Stack]:
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
        deadline = time.monotonic() + STACK_START_SECONDS
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
            yield Stack(client, data_dir, runner, gpu_worker)
    finally:
        _stop(gpu_worker)
        _stop(runner)
        if os.environ.get("KEEP_DEVICE_CHECK_DIR"):
            print(f"(logs kept in {data_dir})")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _wait(stack: Stack, job_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """The final documents of `job_ids` (run side by side), waiting at most `timeout` s in all;
    SystemExit at once when a service process dies."""
    deadline = time.monotonic() + timeout
    docs: dict[str, dict[str, Any]] = {}
    while True:
        for job_id in job_ids:
            if job_id not in docs:
                doc = stack.client.get(f"/v1/jobs/{job_id}").json()
                if doc["status"] in ("succeeded", "failed", "canceled"):
                    docs[job_id] = doc
        if len(docs) == len(job_ids):
            return [docs[j] for j in job_ids]
        stack.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs {sorted(set(job_ids) - set(docs))} unfinished after "
                             f"{timeout:.0f} s\n{stack.logs()}")
        time.sleep(0.5)


def _submit(stack: Stack, body: dict[str, Any]) -> str:
    r = stack.client.post("/v1/jobs", json=body)
    if r.status_code != 202:
        raise SystemExit(f"the {body['type']} job on `{body['queue']}` was refused: "
                         f"{r.status_code} {r.text}")
    return str(r.json()["id"])


def _nats(stack: Stack, doc: dict[str, Any]) -> dict[str, float]:
    m = stack.client.get(f"/v1/measurements/{doc['measurement_id']}").json()
    return dict(m["neural_entropy"])


def _fmt(m: dict[str, float]) -> str:
    return f"{m['nats']:.4f} ± {m['stderr']:.4f}"


def worker_end_to_end(sizes: Sizes, dry: bool) -> list[Row]:
    rows: list[Row] = []
    timeout = JOB_TIMEOUT_SECONDS[dry]
    expected = "cpu" if dry else "cuda"
    with _stack(dry) as stack:
        r = stack.client.post("/v1/datasets", json=dataset_request(sizes))
        r.raise_for_status()
        dataset_id = r.json()["id"]
        t0 = time.perf_counter()
        ids = [_submit(stack, train_request(dataset_id, sizes, q)) for q in ("gpu", "cpu")]
        gpu, cpu = _wait(stack, ids, timeout)
        wall = time.perf_counter() - t0
        for q, doc in (("gpu", gpu), ("cpu", cpu)):
            if doc["status"] != "succeeded":
                raise SystemExit(f"the {q} train job {doc['status']}: {doc.get('error')}")
        rows.append(Row("train job on `gpu`: device, compute s",
                        f"{gpu['device']}, {gpu['compute_seconds']:.1f}",
                        "ok" if str(gpu["device"]).startswith(expected)
                        else f"FAIL (expected {expected})"))
        rows.append(Row("train job on `cpu`: device, compute s",
                        f"{cpu['device']}, {cpu['compute_seconds']:.1f}",
                        "ok" if cpu["device"] == "cpu" else "FAIL"))
        rows.append(Row("S_NN nats: gpu-trained vs cpu-trained",
                        f"{_fmt(_nats(stack, gpu))} vs {_fmt(_nats(stack, cpu))}",
                        "(training noise: no verdict)"))
        rows.append(Row("both train jobs, wall s", f"{wall:.1f}"))

        ids = [_submit(stack, measure_request(gpu["checkpoint_id"], dataset_id, sizes, q, 1))
               for q in ("gpu", "cpu")]
        on_gpu, on_cpu = _wait(stack, ids, timeout)
        for q, doc in (("gpu", on_gpu), ("cpu", on_cpu)):
            want = expected if q == "gpu" else "cpu"
            if doc["status"] != "succeeded" or not str(doc["device"]).startswith(want):
                rows.append(Row(f"measure job on `{q}` (gpu checkpoint, seed 1)", "-",
                                f"FAIL ({doc['status']} on {doc.get('device')}: "
                                f"{doc.get('error')})"))
                return rows
        g, k = _nats(stack, on_gpu), _nats(stack, on_cpu)
        se = math.hypot(g["stderr"], k["stderr"])
        z = abs(g["nats"] - k["nats"]) / se if se > 0 else math.inf
        rows.append(Row("gpu checkpoint measured on `gpu` vs `cpu`",
                        f"{_fmt(g)} on {on_gpu['device']} vs {_fmt(k)} on {on_cpu['device']}",
                        f"{'ok' if z <= Z_LIMIT else 'FAIL'} ({z:.2f} combined stderr)"))
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

    for _ in range(max(2, steps // 8)):  # warm-up: cuDNN algorithm choice, allocator
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
            # the whole story (service logs, traceback) on stderr: a GPU run is not easily repeated
            print(f"--- {title} failed:", file=sys.stderr)
            if isinstance(exc, SystemExit):
                print(exc, file=sys.stderr)
            else:
                traceback.print_exc(file=sys.stderr)
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
