"""Reading a diffusers pipeline folder uploaded as one .zip or .tar(.gz), member by member, bounded.

Nothing is ever extracted to disk. Every member is checked before any content is used:

- names: relative, "/"-separated, no "..", no absolute or drive paths, no backslashes or NULs;
- kinds: regular files and directories only (symbolic and hard links, devices, FIFOs refused);
- pickled weights anywhere (.bin, .pt, .pth, .ckpt, .pkl, .pickle) refuse the whole upload: only
  .safetensors weights are read;
- count (`max_members`), each member's size and the total unpacked size (`max_unpacked_bytes`):
  the declared sizes are checked first (zip: the central directory; tar: each header), and the
  bytes actually decompressed are counted as they come, so a zip or gzip bomb stops at the cap.

Of the members, `unet/config.json`, `unet/diffusion_pytorch_model.safetensors`,
`scheduler/scheduler_config.json` and the optional `model_index.json` are used (the
`save_pretrained` layout, at the top or inside one folder); others are checked and ignored.
Errors are `CheckpointError`s (code "bad_archive", "pickle_refused", ...); sizes over a cap raise
`ArchiveTooLarge`.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from models.checkpoints.format import CheckpointError, CheckpointTooLarge, NotSafetensors

UNET_CONFIG = "unet/config.json"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
MODEL_INDEX = "model_index.json"
WANTED = (UNET_CONFIG, UNET_WEIGHTS, SCHEDULER_CONFIG, MODEL_INDEX)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_JSON_BYTES = 1024 * 1024
READ_CHUNK = 1024 * 1024


class ArchiveTooLarge(CheckpointTooLarge):
    """The archive unpacks to more than a cap allows (HTTP 413); `limit`, `setting` name it."""

    def __init__(self, message: str, limit: int, setting: str) -> None:
        super().__init__(message, code="archive_too_large")
        self.limit, self.setting = limit, setting


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 64
    max_unpacked_bytes: int = 512 * 1024 * 1024  # each member and all of them together


@dataclass
class PipelineFiles:
    """The used members' bytes, and every member name seen (for the provenance record)."""

    unet_config: bytes
    unet_weights: bytes
    scheduler_config: bytes
    model_index: bytes | None
    root: str
    members: list[str] = field(default_factory=list)


def archive_kind(head: bytes) -> str | None:
    """"zip", "gzip" or "tar" from the first 512 bytes (magic numbers), else None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def bad(message: str, code: str = "bad_archive") -> CheckpointError:
    return CheckpointError(message, code=code, field="file")


def check_name(name: str) -> str:
    """The member name without a trailing "/", or CheckpointError for an unsafe one."""
    if not name or "\x00" in name or "\\" in name:
        raise bad(f"archive member {name!r}: names must be non-empty '/'-separated paths", "unsafe_member")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise bad(f"archive member {name!r} has an absolute path; only paths inside the folder are accepted",
                  "unsafe_member")
    trimmed = name[2:] if name.startswith("./") else name
    trimmed = trimmed.rstrip("/")
    parts = trimmed.split("/")
    if any(p in ("..", "") for p in parts) and trimmed != "":
        raise bad(f"archive member {name!r} points outside the folder ('..' or an empty path component)",
                  "unsafe_member")
    if trimmed.lower().endswith(PICKLE_SUFFIXES):
        raise bad(f"archive member {name!r}: pickled weights are refused, never loaded; save the pipeline with "
                  "safe_serialization=True (unet/diffusion_pytorch_model.safetensors)", "pickle_refused")
    return trimmed


class _Budget:
    """Counts unpacked bytes against the caps."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits, self.total, self.members = limits, 0, 0

    def member(self, name: str, declared: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise bad(f"the archive has more than {self.limits.max_members} members (setting MAX_ARCHIVE_MEMBERS)",
                      "too_many_members")
        self.total += max(declared, 0)
        if declared > self.limits.max_unpacked_bytes or self.total > self.limits.max_unpacked_bytes:
            raise self.too_large(name)

    def too_large(self, name: str) -> ArchiveTooLarge:
        cap = self.limits.max_unpacked_bytes
        return ArchiveTooLarge(f"the archive unpacks to more than {cap} bytes (at member {name!r}; setting "
                               "MAX_ARCHIVE_UNPACKED_BYTES)", cap, "MAX_ARCHIVE_UNPACKED_BYTES")


def _read_bounded(stream: IO[bytes], declared: int, name: str) -> bytes:
    """At most `declared` bytes (the member's declared size); more means a forged header."""
    data = stream.read(declared + 1)
    if len(data) != declared:
        raise bad(f"archive member {name!r} does not have its declared size {declared}")
    return data


def read_pipeline(path: Path, limits: ArchiveLimits) -> PipelineFiles:
    """The pipeline files in the archive at `path` (zip, tar or tar.gz; kind from its content)."""
    with path.open("rb") as f:
        kind = archive_kind(f.read(512))
    if kind == "zip":
        found, names = _read_zip(path, limits)
    elif kind in ("gzip", "tar"):
        found, names = _read_tar(path, limits, gz=kind == "gzip")
    else:
        raise bad("not a .zip or .tar(.gz) archive")
    return _pick(found, names)


# ---------------------------------------------------------------- zip
def _zip_entry_count(path: Path) -> int | None:
    """Entries in the end-of-central-directory record (before zipfile parses the directory)."""
    with path.open("rb") as f:
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65_557))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    return int.from_bytes(tail[at + 10 : at + 12], "little")


def _read_zip(path: Path, limits: ArchiveLimits) -> tuple[dict[str, bytes], list[str]]:
    count = _zip_entry_count(path)
    if count is None:
        raise bad("the zip archive has no end-of-central-directory record")
    if count > limits.max_members:
        raise bad(f"the archive has more than {limits.max_members} members (setting MAX_ARCHIVE_MEMBERS)",
                  "too_many_members")
    budget = _Budget(limits)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            raw = [i.filename for i in infos]
            if any(n.endswith("data.pkl") for n in raw) and not any("unet/" in n for n in raw):
                raise NotSafetensors(
                    "the file is a zip archive written by torch.save (or TorchScript), not a diffusers pipeline; "
                    "it is never loaded — export the weights with safetensors (see docs/checkpoints.md)",
                    code="not_safetensors")
            names: list[str] = []
            for info in infos:  # every member checked before any is read
                name = check_name(info.filename)
                mode = info.external_attr >> 16
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: written without a type
                    raise bad(f"archive member {info.filename!r} is a link or special file; only regular files "
                              "are accepted", "unsafe_member")
                if info.flag_bits & 0x1:
                    raise bad(f"archive member {info.filename!r} is encrypted")
                budget.member(info.filename, info.file_size)
                names.append(name)
            found: dict[str, bytes] = {}
            for info, name in zip(infos, names, strict=True):
                if info.is_dir() or not name.endswith(_WANTED_SUFFIXES):
                    continue
                with zf.open(info) as member:
                    found[name] = _read_bounded(member, info.file_size, info.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise bad(f"the zip archive could not be read: {exc}") from None
    return found, names


# ---------------------------------------------------------------- tar
class _CountingReader(io.RawIOBase):
    """A read-only stream that raises ArchiveTooLarge once more than `limit` bytes went through."""

    def __init__(self, inner: BinaryIO, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            cap = self.limit
            raise ArchiveTooLarge(f"the archive unpacks to more than {cap} bytes (setting MAX_ARCHIVE_UNPACKED_BYTES)",
                                  cap, "MAX_ARCHIVE_UNPACKED_BYTES")
        buffer[: len(data)] = data
        return len(data)


def _read_tar(path: Path, limits: ArchiveLimits, *, gz: bool) -> tuple[dict[str, bytes], list[str]]:
    budget = _Budget(limits)
    # headers and padding count too: allow one 512-byte header and padding per member on top
    stream_cap = limits.max_unpacked_bytes + (limits.max_members + 4) * 1536 + 10240
    found: dict[str, bytes] = {}
    names: list[str] = []
    with path.open("rb") as raw:
        inner: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
        counted = io.BufferedReader(_CountingReader(inner, stream_cap), buffer_size=READ_CHUNK)
        try:
            with tarfile.open(fileobj=counted, mode="r|") as tf:
                for member in tf:  # stream mode: one pass, nothing seeks
                    name = check_name(member.name)
                    if not (member.isfile() or member.isdir()):
                        raise bad(f"archive member {member.name!r} is a link or special file; only regular files "
                                  "are accepted", "unsafe_member")
                    budget.member(member.name, member.size)
                    names.append(name)
                    if member.isfile() and name.endswith(_WANTED_SUFFIXES):
                        handle = tf.extractfile(member)
                        assert handle is not None
                        found[name] = _read_bounded(handle, member.size, member.name)
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise bad(f"the tar archive could not be read: {exc}") from None
    return found, names


# ---------------------------------------------------------------- the layout
_WANTED_SUFFIXES = tuple(WANTED)


def _pick(found: dict[str, bytes], names: list[str]) -> PipelineFiles:
    """The save_pretrained layout at the top or inside one folder."""
    files = [n for n in names if n and n != "."]
    dup = next((n for n in files if files.count(n) > 1 and n.endswith(_WANTED_SUFFIXES)), None)
    if dup is not None:
        raise bad(f"the archive holds {dup!r} more than once", "bad_layout")
    roots = sorted({n[: -len(UNET_CONFIG)] for n in names if n == UNET_CONFIG or n.endswith("/" + UNET_CONFIG)})
    if not roots:
        raise bad(f"the archive has no {UNET_CONFIG}: upload the folder written by save_pretrained "
                  "(unet/ and scheduler/)", "bad_layout")
    if len(roots) > 1:
        raise bad(f"the archive holds more than one pipeline ({[r or '.' for r in roots]})", "bad_layout")
    root = roots[0]
    if root and len(PurePosixPath(root).parts) > 1:
        raise bad("the pipeline must be at the top of the archive or inside one folder", "bad_layout")

    def get(rel: str, required: bool, cap: int | None) -> bytes | None:
        data = found.get(root + rel)
        if data is None and required:
            hint = " (.bin weights are not read: save with safe_serialization=True)" if rel == UNET_WEIGHTS else ""
            raise bad(f"the archive has no {root + rel}{hint}", "bad_layout")
        if data is not None and cap is not None and len(data) > cap:
            raise bad(f"{root + rel} is larger than {cap} bytes")
        return data

    unet_config = get(UNET_CONFIG, True, MAX_JSON_BYTES)
    weights = get(UNET_WEIGHTS, True, None)
    scheduler = get(SCHEDULER_CONFIG, True, MAX_JSON_BYTES)
    assert unet_config is not None and weights is not None and scheduler is not None
    return PipelineFiles(unet_config, weights, scheduler, get(MODEL_INDEX, False, MAX_JSON_BYTES), root.rstrip("/"),
                         names)
