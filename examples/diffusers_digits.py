"""Train a small diffusers UNet2DModel on scikit-learn's 8x8 digits with diffusers' own DDPM loop,
save it with save_pretrained and zip the folder, ready for `POST /v1/checkpoints`
(README "Measure a diffusers model"; docs/diffusers.md).

    .venv/bin/python examples/diffusers_digits.py --steps 2000 --out ddpm-digits
    # -> ddpm-digits/ (unet/, scheduler/, model_index.json) and ddpm-digits.zip

Needs only torch, diffusers and scikit-learn; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction", "sample"])
    ap.add_argument("--out", type=Path, default=Path("ddpm-digits"))
    a = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast
    images = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0 * 2.0 - 1.0).unsqueeze(1)  # [-1, 1]
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=a.prediction_type)
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr)
    start = time.perf_counter()
    for step in range(a.steps):
        x0 = images[torch.randint(0, len(images), (a.batch_size,))]
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),))
        noisy = scheduler.add_noise(x0, noise, t)
        targets = {"epsilon": noise, "v_prediction": scheduler.get_velocity(x0, noise, t), "sample": x0}
        target = targets[a.prediction_type]
        loss = torch.nn.functional.mse_loss(unet(noisy, t).sample, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == a.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(a.out)  # safetensors by default
    archive = shutil.make_archive(str(a.out), "zip", root_dir=a.out.parent, base_dir=a.out.name)
    print(f"saved {a.out}/ and {archive} ({Path(archive).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
