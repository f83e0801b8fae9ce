"""Diffusers pipelines for the tests: tiny UNet2DModels saved with `save_pretrained`, archived as
zip / tar.gz bytes, and a few seconds of diffusers' own DDPM training on the 8x8 digits."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

TINY_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": (16, 32),
    "down_block_types": ("DownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1, "norm_num_groups": 8,
}


def tiny_unet(seed: int = 0, **overrides: Any) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET, **overrides})


def save_pipeline(folder: Path, unet: UNet2DModel, scheduler: DDPMScheduler | None = None, *,
                  safe_serialization: bool = True) -> Path:
    """The save_pretrained layout: folder/unet/, folder/scheduler/ (and model_index.json)."""
    scheduler = scheduler or DDPMScheduler(num_train_timesteps=1000)
    unet.save_pretrained(folder / "unet", safe_serialization=safe_serialization)
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        '{"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1", '
        '"scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}')
    return folder


def zip_folder(folder: Path, extra: dict[str, bytes] | None = None, prefix: str = "") -> bytes:
    """The folder's files as zip bytes (names relative to it, under `prefix`), plus `extra` members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def targz_folder(folder: Path, arcname: str = "pipeline") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return buf.getvalue()


def train_digits_pipeline(folder: Path, *, steps: int = 300, prediction_type: str = "epsilon",
                          seed: int = 0) -> tuple[Path, list[float]]:
    """diffusers' own DDPM training loop (DDPMScheduler.add_noise, MSE on the prediction) on
    scikit-learn's 8x8 digits scaled to [-1, 1]; saved with save_pretrained. Returns the folder
    and the loss every 50 steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and never spins on a busy machine
    try:
        return _train(folder, steps, prediction_type, seed)
    finally:
        torch.set_num_threads(threads)


def _train(folder: Path, steps: int, prediction_type: str, seed: int) -> tuple[Path, list[float]]:
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    images = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0 * 2.0 - 1.0).unsqueeze(1)
    unet = tiny_unet(seed)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    unet.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (64,), generator=gen)
        x0 = images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
        noisy = scheduler.add_noise(x0, noise, t)
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        loss = torch.nn.functional.mse_loss(unet(noisy, t).sample, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append(float(loss))
    unet.eval()
    return save_pipeline(folder, unet, scheduler), losses
