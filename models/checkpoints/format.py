"""The safetensors container, checked byte by byte before any library reads it (no pickle, ever).

A safetensors file is: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON header
`{"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}`,
then the tensor bytes; offsets are relative to the first byte after the header, and the tensors
tile the data section exactly (no gaps, no overlaps, no trailing bytes).

`parse_header` refuses foreign formats (pickle, zip as written by torch.save/TorchScript, .npy,
gzip) with a specific message and every inconsistency with a `CheckpointError` naming it.
Used by models/checkpoint_io.py, which re-exports the names here.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # same default as the service's MAX_UPLOAD_BYTES
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap on the JSON header
MAX_TENSORS = 100_000

# safetensors dtype code -> (torch dtype, bytes per element); other codes are refused.
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "I32": (torch.int32, 4),
    "I64": (torch.int64, 8),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
}
DTYPE_CODES: dict[torch.dtype, str] = {dt: code for code, (dt, _) in DTYPES.items()}
_DOCS = "export the weights with safetensors (see docs/checkpoints.md)"


class CheckpointError(ValueError):
    """A checkpoint (file or config) that cannot be accepted; the message says why.

    `code`: "not_safetensors" | "too_large" | "bad_header" | "bad_metadata" | "bad_config" |
    "architecture_mismatch" | "bad_values"; `field`: "file", "config" or "config.<key>";
    `offending`: for architecture mismatches, the first offending tensors
    [{"name", "problem", "expected", "found"}].
    """

    def __init__(
        self, message: str, *, code: str = "invalid", field: str = "file", offending: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.field, self.offending = code, field, offending or []


class CheckpointTooLarge(CheckpointError):
    """The file is larger than the allowed size (HTTP 413)."""


class NotSafetensors(CheckpointError):
    """The bytes are another format: a pickle, a zip (torch.save), a .npy, gzip (HTTP 415)."""


@dataclass(frozen=True)
class TensorEntry:
    """One header entry: byte span [begin, end) relative to the start of the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str] | None
    data_start: int  # 8 + header length, in bytes


def bad_header(message: str) -> CheckpointError:
    return CheckpointError(message, code="bad_header")


def _foreign(message: str) -> NotSafetensors:
    return NotSafetensors(message, code="not_safetensors")


def sniff_foreign_format(data: bytes) -> None:
    """NotSafetensors when the bytes start like a pickle, a zip, a .npy or a gzip stream."""
    if data[:1] == b"\x80":
        raise _foreign(
            f"the file is a Python pickle (e.g. a legacy torch.save file); pickles are never loaded — {_DOCS}"
        )
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        raise _foreign(f"the file is a zip archive (torch.save's format, or TorchScript); it is never loaded — {_DOCS}")
    if data[:6] == b"\x93NUMPY":
        raise _foreign("the file is a NumPy .npy array, not a safetensors checkpoint")
    if data[:2] == b"\x1f\x8b":
        raise _foreign("the file is gzip-compressed; upload the .safetensors file itself")


def _looks_like_safetensors(data: bytes) -> bool:
    """A plausible length prefix followed by a JSON object: then a first byte 0x80 (one file in
    256 has a header length ending in 0x80) is no sign of a pickle."""
    if len(data) < 9 or data[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 0 < n <= MAX_HEADER_BYTES and 8 + n <= len(data)


def parse_header(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> SafetensorsHeader:
    """Parse and check a safetensors header without trusting it (no tensor bytes are read).

    Refuses: files over `max_bytes`, foreign formats, files shorter than the 8-byte length prefix,
    a header length beyond the file, non-UTF-8 or non-JSON headers, unknown dtypes, bad shapes,
    byte spans that overlap, leave gaps, point past the end or disagree with shape x itemsize,
    and trailing bytes.
    """
    if len(data) > max_bytes:
        raise CheckpointTooLarge(f"the file has {len(data)} bytes; the limit is {max_bytes} bytes", code="too_large")
    if not _looks_like_safetensors(data):
        sniff_foreign_format(data)
    if len(data) < 8:
        raise bad_header(f"the file is too short ({len(data)} bytes) to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n == 0 or n > MAX_HEADER_BYTES:
        raise bad_header(f"the header length {n} is not plausible (1 .. {MAX_HEADER_BYTES} bytes)")
    if 8 + n > len(data):
        raise bad_header(
            f"the header claims {n} bytes but the file has only {len(data) - 8} after "
            "the length prefix (truncated, or not a safetensors file)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_header(f"the header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise bad_header("the header must be a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise bad_header("__metadata__ must be an object mapping strings to strings")
    if len(header) > MAX_TENSORS:
        raise bad_header(f"the header lists {len(header)} tensors; at most {MAX_TENSORS} allowed")
    entries = [_entry(name, info) for name, info in header.items()]
    data_len = len(data) - 8 - n
    position = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != position:
            what = "overlaps the previous tensor" if e.begin < position else "leaves a gap"
            raise bad_header(
                f"tensor {e.name!r}: data_offsets [{e.begin}, {e.end}] {what} (expected it to start at byte {position})"
            )
        if e.end > data_len:
            raise bad_header(
                f"tensor {e.name!r}: data_offsets [{e.begin}, {e.end}] point past the "
                f"end of the data ({data_len} bytes; the file is truncated or the "
                "header lies)"
            )
        position = e.end
    if position != data_len:
        raise bad_header(f"the tensors cover {position} bytes but the data section has {data_len} (trailing bytes)")
    return SafetensorsHeader(tuple(entries), metadata, 8 + n)


def _entry(name: str, info: Any) -> TensorEntry:
    if not name:
        raise bad_header("a tensor has an empty name")
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad_header(f"tensor {name!r}: an entry needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise bad_header(f"tensor {name!r}: dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}")
    if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
        raise bad_header(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(is_int(o) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise bad_header(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
    span, expected = offsets[1] - offsets[0], math.prod(shape) * DTYPES[dtype][1]
    if span != expected:
        raise bad_header(
            f"tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes but data_offsets span {span}"
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def is_int(v: Any) -> bool:
    """A JSON integer (bool excluded)."""
    return isinstance(v, int) and not isinstance(v, bool)
