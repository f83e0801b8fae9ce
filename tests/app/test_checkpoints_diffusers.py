"""POST /v1/checkpoints with a diffusers pipeline folder as .zip / .tar.gz (docs/diffusers.md).

Accepted pipelines become checkpoints like any other (list, get, download, delete) with source
"diffusers" and the derived config on the document; every refused archive answers 413/422 and
leaves the database and the artifact store exactly as they were.
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as st_load

from app.main import create_app
from core.settings import Settings
from models.checkpoints.io import load_model, read_checkpoint
from tests.app.helpers import assert_problem
from tests.pipelines import save_pipeline, targz_folder, tiny_unet, zip_folder


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("pipe") / "ddpm-tiny", tiny_unet(num_class_embeds=10))


@pytest.fixture(scope="module")
def pipeline_zip(pipeline_dir: Path) -> bytes:
    return zip_folder(pipeline_dir)


def post(api: TestClient, data: bytes, name: str = "pipeline.zip") -> Any:
    return api.post("/v1/checkpoints", files={"file": (name, data, "application/octet-stream")})


def edited_copy(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def edit_json(path: Path, **changes: Any) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.fixture
def capped(settings: Settings, owner_key: tuple[str, str]) -> Iterator[Callable[..., TestClient]]:
    """A client on an app with some caps changed (e.g. max_network_parameters=1000)."""
    clients: list[TestClient] = []

    def make(**caps: Any) -> TestClient:
        c = TestClient(create_app(settings.model_copy(update=caps)), raise_server_exceptions=False)
        c.__enter__()
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# ---- accepted ----
def test_zip_upload_is_a_checkpoint_with_the_derived_config(api: TestClient, pipeline_zip: bytes,
                                                            pipeline_dir: Path) -> None:
    r = post(api, pipeline_zip)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/v1/checkpoints/{doc['id']}"
    assert doc["source"] == "diffusers" and doc["arch"] == "diffusers_unet2d"
    assert doc["parametrization"] == "noise"  # diffusers' epsilon
    assert doc["event_shape"] == [1, 8, 8] and doc["num_classes"] == 10
    cfg = doc["config"]
    assert cfg["process"] == {"kind": "discrete", "beta_schedule": "linear", "beta_start": 0.0001,
                              "beta_end": 0.02, "num_train_timesteps": 1000}
    assert cfg["network"]["unet"]["block_out_channels"] == [16, 32]
    assert cfg["network"]["timestep_input"] == "float" and cfg["value_range"] == [-1.0, 1.0]
    assert cfg["provenance"]["source"] == "diffusers"
    assert cfg["provenance"]["scheduler"]["_class_name"] == "DDPMScheduler"
    assert cfg["provenance"]["pipeline_class"] == "DDPMPipeline"
    listed = api.get("/v1/checkpoints", params={"source": "diffusers"}).json()
    assert [c["id"] for c in listed["items"]] == [doc["id"]]
    assert api.get(f"/v1/checkpoints/{doc['id']}").json() == doc
    # the download is our safetensors file: diffusers' tensor names, the config in its metadata
    blob = api.get(doc["download_url"]).content
    original = st_load((pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    stored = st_load(blob)
    assert stored.keys() == original.keys()
    assert all(torch.equal(stored[k], original[k]) for k in original)
    config, tensors = read_checkpoint(blob)
    assert config.to_dict() == cfg
    model = load_model((config, tensors))
    y, s = torch.randn(3, 1, 8, 8), torch.tensor([0.01, 0.5, 1.0])
    assert model.e_theta(y, s, torch.tensor([0, 1, 2])).shape == y.shape
    assert api.delete(f"/v1/checkpoints/{doc['id']}").status_code == 204
    assert api.get(f"/v1/checkpoints/{doc['id']}").status_code == 404


def test_tar_gz_inside_a_folder_is_accepted(api: TestClient, pipeline_dir: Path) -> None:
    r = post(api, targz_folder(pipeline_dir, "my-pipeline"), "pipeline.tar.gz")
    assert r.status_code == 201, r.text
    assert r.json()["config"]["provenance"]["archive_root"] == "my-pipeline"


def test_v_prediction_and_cosine_schedule_are_read_from_the_scheduler(api: TestClient, tmp_path: Path) -> None:
    from diffusers import DDIMScheduler

    folder = save_pipeline(tmp_path / "p", tiny_unet(), DDIMScheduler(
        num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"))
    r = post(api, zip_folder(folder))
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["parametrization"] == "v_prediction"
    assert doc["config"]["process"]["beta_schedule"] == "squaredcos_cap_v2"
    assert doc["config"]["network"]["num_train_timesteps"] == 500


# ---- refused: 4xx, nothing stored ----
def refused(api: TestClient, data: bytes, status: int, state: Callable[[], dict[str, Any]],
            reason: str | None = None, words: str = "") -> dict[str, Any]:
    before = state()
    r = post(api, data)
    doc = assert_problem(r, status)
    if reason is not None:
        assert doc.get("reason") == reason, doc
    assert words.lower() in doc["detail"].lower(), doc
    assert state() == before
    return doc


def test_bin_weights_are_refused(api: TestClient, tmp_path: Path, state: Callable[[], dict[str, Any]]) -> None:
    folder = save_pipeline(tmp_path / "p", tiny_unet(), safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    refused(api, zip_folder(folder), 422, state, "pickle_refused", "diffusion_pytorch_model.bin")


def test_dot_dot_member_is_refused(api: TestClient, pipeline_dir: Path,
                                   state: Callable[[], dict[str, Any]]) -> None:
    data = zip_folder(pipeline_dir, extra={"../evil.txt": b"x"})
    refused(api, data, 422, state, "unsafe_member", "outside the folder")


def test_absolute_member_is_refused(api: TestClient, pipeline_dir: Path,
                                    state: Callable[[], dict[str, Any]]) -> None:
    refused(api, zip_folder(pipeline_dir, extra={"/etc/evil": b"x"}), 422, state, "unsafe_member", "absolute")


def test_symlink_member_is_refused(api: TestClient, pipeline_dir: Path,
                                   state: Callable[[], dict[str, Any]]) -> None:
    buf = io.BytesIO(zip_folder(pipeline_dir))
    with zipfile.ZipFile(buf, "a") as zf:
        link = zipfile.ZipInfo("unet/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    refused(api, buf.getvalue(), 422, state, "unsafe_member", "link")


def test_zip_bomb_is_refused_by_its_declared_size(capped: Callable[..., TestClient], pipeline_dir: Path,
                                                  state: Callable[[], dict[str, Any]]) -> None:
    api = capped(max_archive_unpacked_bytes=4 * 1024 * 1024)
    bomb = zip_folder(pipeline_dir, extra={"zeros.txt": b"\0" * (32 * 1024 * 1024)})
    assert len(bomb) - len(zip_folder(pipeline_dir)) < 100_000  # 32 MiB of zeros deflate to ~32 KiB
    doc = refused(api, bomb, 413, state, "archive_too_large", "unpacks to more than")
    assert doc["limit_setting"] == "MAX_ARCHIVE_UNPACKED_BYTES"


def test_forged_sizes_stop_at_the_declared_size(api: TestClient, pipeline_dir: Path,
                                                state: Callable[[], dict[str, Any]]) -> None:
    """A zip whose headers claim a small config.json while its deflate stream holds 32 MiB:
    reading stops at the claimed size (never decompressing the rest) and the upload is refused."""
    big = b" " * (32 * 1024 * 1024)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(pipeline_dir.rglob("*")):
            if path.is_file() and path.name != "scheduler_config.json":
                zf.write(path, path.relative_to(pipeline_dir).as_posix())
        zf.writestr("scheduler/scheduler_config.json", big)
    data = bytearray(buf.getvalue())
    # patch the declared uncompressed size (local header and central directory) to 100 bytes
    size = len(big).to_bytes(4, "little")
    count = 0
    at = data.find(size)
    while at >= 0:
        data[at : at + 4] = (100).to_bytes(4, "little")
        count += 1
        at = data.find(size, at + 4)
    assert count >= 2
    refused(api, bytes(data), 422, state, None, "")


def test_tar_gz_bomb_is_refused(capped: Callable[..., TestClient], pipeline_dir: Path, tmp_path: Path,
                                state: Callable[[], dict[str, Any]]) -> None:
    api = capped(max_archive_unpacked_bytes=4 * 1024 * 1024)
    folder = edited_copy(pipeline_dir, tmp_path / "p",
                         lambda d: (d / "zeros.txt").write_bytes(b"\0" * (32 * 1024 * 1024)))
    data = targz_folder(folder)
    assert len(data) - len(targz_folder(pipeline_dir)) < 100_000
    refused(api, data, 413, state, "archive_too_large")


def test_too_many_members_are_refused(capped: Callable[..., TestClient], pipeline_dir: Path,
                                      state: Callable[[], dict[str, Any]]) -> None:
    api = capped(max_archive_members=8)
    data = zip_folder(pipeline_dir, extra={f"notes/{i}.txt": b"x" for i in range(10)})
    refused(api, data, 422, state, "too_many_members", "MAX_ARCHIVE_MEMBERS")


def test_unknown_class_name_is_refused(api: TestClient, pipeline_dir: Path, tmp_path: Path,
                                       state: Callable[[], dict[str, Any]]) -> None:
    folder = edited_copy(pipeline_dir, tmp_path / "p",
                         lambda d: edit_json(d / "unet" / "config.json", _class_name="UNet2DConditionModel"))
    doc = refused(api, zip_folder(folder), 422, state, "bad_config", "UNet2DConditionModel")
    assert doc["field"] == "unet._class_name"


def test_parameter_count_over_the_cap_is_refused(capped: Callable[..., TestClient], tmp_path: Path,
                                                 state: Callable[[], dict[str, Any]]) -> None:
    """The cap is checked on the meta device: a config implying 4 billion parameters with a tiny
    weights file is refused before anything is allocated."""
    api = capped(max_network_parameters=1_000_000)
    folder = save_pipeline(tmp_path / "p", tiny_unet())
    edit_json(folder / "unet" / "config.json", block_out_channels=[4096, 4096], layers_per_block=8,
              norm_num_groups=32)
    doc = refused(api, zip_folder(folder), 422, state, "too_many_parameters", "MAX_NETWORK_PARAMETERS")
    assert doc["field"] == "unet"


def test_mismatched_tensor_shapes_are_refused(api: TestClient, pipeline_dir: Path, tmp_path: Path,
                                              state: Callable[[], dict[str, Any]]) -> None:
    folder = edited_copy(pipeline_dir, tmp_path / "p",
                         lambda d: edit_json(d / "unet" / "config.json", block_out_channels=[16, 48]))
    doc = refused(api, zip_folder(folder), 422, state, "architecture_mismatch", "does not match")
    assert doc["offending_tensors"] and all(t["problem"] in ("wrong shape", "missing", "unexpected")
                                            for t in doc["offending_tensors"])
    assert any(t["problem"] == "wrong shape" for t in doc["offending_tensors"])


def test_unsupported_scheduler_settings_are_refused(api: TestClient, pipeline_dir: Path, tmp_path: Path,
                                                    state: Callable[[], dict[str, Any]]) -> None:
    folder = edited_copy(pipeline_dir, tmp_path / "p", lambda d: edit_json(
        d / "scheduler" / "scheduler_config.json", rescale_betas_zero_snr=True))
    doc = refused(api, zip_folder(folder), 422, state, "bad_config", "zero terminal SNR")
    assert doc["field"] == "scheduler.rescale_betas_zero_snr"


def test_missing_unet_is_refused(api: TestClient, state: Callable[[], dict[str, Any]]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.md", "hello")
    refused(api, buf.getvalue(), 422, state, "bad_layout", "unet/config.json")
