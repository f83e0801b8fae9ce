"""`python -m models`: train, measure and sample from files; resume through the saved state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.checkpoints.io import load_model
from models.cli import main
from models.training.state import TrainingState

TINY_NET = json.dumps({"arch": "mlp", "dim": 2, "fourier_features": 8, "width": 16, "hidden_widths": [16, 8]})


def train_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--network-json",
        TINY_NET,
        "--batch-size",
        "16",
        "--num-steps",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.fixture
def mixture_file(tmp_path: Path) -> Path:
    path = tmp_path / "mixture.json"
    path.write_text(json.dumps({"kind": "paper", "n_components": 3, "dim": 2, "seed": 1}))
    return path


def test_train_measure_and_sample_a_mixture(
    tmp_path: Path, mixture_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(train_args(mixture_file, out, "--n-samples", "64", "--epochs", "2", "--milestones", "1,2")) == 0
    for name in (
        "model.safetensors",
        "state.safetensors",
        "run.json",
        "epoch_0001.safetensors",
        "epoch_0002.safetensors",
    ):
        assert (out / name).exists(), name
    model = load_model((out / "model.safetensors").read_bytes())
    assert model.process.kind == "vp" and model.parametrization == "entropy_matching"
    run = json.loads((out / "run.json").read_text())
    assert len(run["losses"]) == 2 and run["n_data"] == 64
    capsys.readouterr()

    assert (
        main(
            [
                "measure",
                "--checkpoint",
                str(out / "model.safetensors"),
                "--data",
                str(mixture_file),
                "--n-samples",
                "2048",
                "--n-samples-data",
                "512",
                "--n-times",
                "9",
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["S_NN_nats"]["mean"] > 0 and summary["S_tot_nats"]["mean"] > 0
    assert "curve" in json.loads((tmp_path / "m.json").read_text())["neural_entropy"]

    for name in ("s.png", "s.npy"):
        assert (
            main(
                [
                    "sample",
                    "--checkpoint",
                    str(out / "model.safetensors"),
                    "--n",
                    "10",
                    "--steps",
                    "5",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    assert np.load(tmp_path / "s.npy").shape == (10, 2)


def test_resumed_cli_run_equals_a_straight_run(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(train_args(tmp_path / "x.npy", tmp_path / "straight", "--epochs", "2")) == 0
    assert main(train_args(tmp_path / "x.npy", tmp_path / "halves", "--epochs", "1")) == 0
    assert TrainingState.load(tmp_path / "halves" / "state.safetensors").epoch == 1
    assert main(train_args(tmp_path / "x.npy", tmp_path / "halves", "--epochs", "2", "--resume")) == 0
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    b = (tmp_path / "halves" / "model.safetensors").read_bytes()
    assert a == b


def test_npz_with_labels_and_pickled_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2)) + np.arange(6)[:, None], labels=np.arange(6) % 2)
    assert main(train_args(tmp_path / "d.npz", tmp_path / "run", "--epochs", "1")) == 0
    np.save(tmp_path / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        main(train_args(tmp_path / "bad.npy", tmp_path / "run2", "--epochs", "1"))


def test_module_entry_point_shows_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "models", "--help"], capture_output=True, text=True, check=True)
    assert "train" in proc.stdout and "measure" in proc.stdout and "sample" in proc.stdout
