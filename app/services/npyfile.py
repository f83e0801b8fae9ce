"""Reading uploaded `.npy` / `.npz` files without trusting them.

Never unpickles (`allow_pickle=False` everywhere). Before any array data is read:
- the format is told by its magic bytes (`\\x93NUMPY` or a zip), not by the file name;
- a `.npy` header is parsed and its dtype (numeric only: no object, structured or string dtypes),
  rank and element count are checked, and its declared size (header + shape x itemsize) must equal
  the file's size (a truncated or padded file is refused);
- for a `.npz`, every member's DECLARED uncompressed size (zip central directory `file_size`) is
  checked against the element cap, then the member's npy header is read (only its first bytes are
  decompressed) and shape x itemsize must agree with the declared size, before the member is read.
Every problem raises `UploadError` with the field it concerns.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
MAX_HEADER_BYTES = 65_536  # npy headers are tiny; numpy's own default cap is 10,000
ALLOWED_MEMBERS = ("x", "labels")
X_KINDS = "fiu"  # float, signed and unsigned integers
LABEL_KINDS = "iu"


class UploadError(ValueError):
    """An uploaded file that cannot be accepted; `status` is 422 (or 413 for sizes over a cap)."""

    def __init__(self, message: str, field: str = "file", status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    header_bytes: int  # bytes before the data (magic + version + header)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        return self.elements * self.dtype.itemsize


@dataclass(frozen=True)
class UploadedArrays:
    x: np.ndarray
    labels: np.ndarray | None
    format: str  # "npy" | "npz"
    source_dtype: str


def read_npy_header(fh: IO[bytes], name: str = "file") -> NpyHeader:
    """Parse the npy header at the start of `fh` (leaves `fh` at the start of the data)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                fh, max_header_size=MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                fh, max_header_size=MAX_HEADER_BYTES)
        elif version == (3, 0):
            reader = getattr(np.lib.format, "_read_array_header")  # noqa: B009 - private: no public 3.0 reader
            shape, fortran, dtype = reader(fh, version, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError) as exc:
        raise UploadError(f"{name}: malformed .npy header: {exc}") from None
    return NpyHeader(tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), fh.tell())


def _check_dtype(header: NpyHeader, name: str, kinds: str) -> None:
    dt = header.dtype
    field = name if name in ALLOWED_MEMBERS else "file"
    if dt.hasobject:
        raise UploadError(f"{name} has an object dtype ({dt.str}); object arrays (pickles) are "
                          "never loaded: save a numeric array", field)
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in kinds:
        allowed = {"fiu": "a float or integer", "iu": "an integer"}[kinds]
        raise UploadError(f"{name} has dtype {dt.str}; expected {allowed} dtype", field)


STORED_ITEMSIZE = 4  # x is stored as float32


def _check_size(header: NpyHeader, name: str, max_elements: int,
                max_bytes: int | None = None) -> None:
    """From the header alone: the element cap, and (with `max_bytes`) the decoded size, the
    larger of the declared data and its float32 copy, against MAX_UPLOAD_BYTES, so a small
    compressed upload cannot decode into a huge array."""
    field = name if name in ALLOWED_MEMBERS else "file"
    if any(d < 0 for d in header.shape):
        raise UploadError(f"{name}: negative dimension in shape {header.shape}")
    if header.elements > max_elements:
        raise UploadError(
            f"{name} has {header.elements} elements (shape {list(header.shape)}); the limit is "
            f"{max_elements} (setting MAX_ARRAY_ELEMENTS)", field=field)
    decoded = max(header.data_bytes, header.elements * STORED_ITEMSIZE)
    if max_bytes is not None and decoded > max_bytes:
        raise UploadError(
            f"{name} would decode to {decoded} bytes (shape {list(header.shape)}); the limit is "
            f"{max_bytes} (setting MAX_UPLOAD_BYTES)", field=field)


def _read_data(fh: IO[bytes], header: NpyHeader, name: str) -> np.ndarray:
    raw = fh.read(header.data_bytes + 1)
    if len(raw) != header.data_bytes:
        raise UploadError(f"{name}: the header declares {header.data_bytes} data bytes but the "
                          f"file holds {len(raw) if len(raw) <= header.data_bytes else 'more'} "
                          "(truncated or padded)")
    order: Literal["C", "F"] = "F" if header.fortran_order else "C"
    arr = np.frombuffer(raw, dtype=header.dtype)
    return arr.reshape(header.shape, order=order).copy()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, kinds: str,
                 max_elements: int, max_bytes: int | None = None) -> np.ndarray:
    """Member `key` ("x" or "labels"); errors name the member as their field."""
    try:
        return _read_member_unchecked(zf, info, kinds, max_elements, max_bytes)
    except UploadError as exc:
        raise UploadError(str(exc), field=key, status=exc.status) from None


def _read_member_unchecked(zf: zipfile.ZipFile, info: zipfile.ZipInfo, kinds: str,
                           max_elements: int, max_bytes: int | None = None) -> np.ndarray:
    name = info.filename
    cap = max_elements * 8 + MAX_HEADER_BYTES  # the largest file an allowed array could need
    source = f"MAX_ARRAY_ELEMENTS = {max_elements}"
    if max_bytes is not None and max_bytes + MAX_HEADER_BYTES < cap:
        cap, source = max_bytes + MAX_HEADER_BYTES, f"MAX_UPLOAD_BYTES = {max_bytes}"
    if info.file_size > cap:
        raise UploadError(f"npz member {name} declares {info.file_size} uncompressed bytes; the "
                          f"limit is {cap} (from {source})")
    with zf.open(info) as fh:
        header = read_npy_header(fh, name)  # decompresses only the first few bytes
        _check_dtype(header, name, kinds)
        _check_size(header, name, max_elements, max_bytes)
        if header.header_bytes + header.data_bytes != info.file_size:
            raise UploadError(
                f"npz member {name}: its header declares {header.data_bytes} data bytes but the "
                f"archive declares {info.file_size - header.header_bytes}")
        return _read_data(fh, header, name)


def _read_npz(path: Path, max_elements: int, max_bytes: int | None = None) -> UploadedArrays:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(f"file: not a readable .npz (zip) archive: {exc}") from None
    with zf:
        members = {i.filename: i for i in zf.infolist()}
        names = {n.removesuffix(".npy"): n for n in members}
        unknown = sorted(set(names) - set(ALLOWED_MEMBERS))
        if unknown:
            raise UploadError(f"file: unexpected .npz members {unknown}; allowed: x, labels")
        if "x" not in names:
            raise UploadError("file: the .npz archive has no array named 'x'", field="x")
        if len(members) != len(names):
            raise UploadError("file: duplicate .npz members")
        try:
            x = _read_member(zf, members[names["x"]], "x", X_KINDS, max_elements, max_bytes)
            labels = None
            if "labels" in names:
                labels = _read_member(zf, members[names["labels"]], "labels", LABEL_KINDS,
                                      max_elements, max_bytes)
        except UploadError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise UploadError(f"file: corrupt .npz archive: {exc}") from None
    return UploadedArrays(x, labels, "npz", x.dtype.str)


def _read_npy(path: Path, max_elements: int, max_bytes: int | None = None) -> UploadedArrays:
    with path.open("rb") as fh:
        header = read_npy_header(fh, "file")
        _check_dtype(header, "x", X_KINDS)
        _check_size(header, "x", max_elements, max_bytes)
        size = path.stat().st_size
        if header.header_bytes + header.data_bytes != size:
            raise UploadError(f"file: the .npy header declares {header.data_bytes} data bytes but "
                              f"the file holds {size - header.header_bytes} (truncated or padded)")
        x = _read_data(fh, header, "x")
    return UploadedArrays(x, None, "npy", x.dtype.str)


def read_uploaded_arrays(path: Path, max_elements: int,
                         max_bytes: int | None = None) -> UploadedArrays:
    """The arrays `x` (and `labels`) of an uploaded .npy / .npz file, checked as described above;
    `max_bytes` caps each array's decoded size (MAX_UPLOAD_BYTES) before it is decoded."""
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic.startswith(NPY_MAGIC):
        return _read_npy(path, max_elements, max_bytes)
    if magic[:4] in ZIP_MAGICS:
        return _read_npz(path, max_elements, max_bytes)
    if magic[:1] == b"\x80":
        raise UploadError("file: this is a Python pickle; pickles are never loaded — upload a "
                          ".npy or .npz saved with numpy (allow_pickle=False)")
    raise UploadError("file: not a .npy or .npz file (unknown magic bytes)")
