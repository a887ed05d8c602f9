"""numpy's ``.npz`` archives (format name ``npz``): a zip of one ``.npy`` member per tensor.

Reading never unpickles (``allow_pickle=False``), and every member's declared array size
is checked against its stored size before numpy allocates it, so a small archive cannot
claim a huge array. Writing is uncompressed, as ``np.savez``, through :mod:`zipfile` so
that a tensor may be named ``file``.

Kept: every dense tensor bit for bit, except bfloat16, which npy cannot name: it is
widened to float32 (exactly). Lost: metadata (an ``.npz`` holds none) and quantization
(quantized tensors are dequantized; the writer returns their names). A conversion's
report notes each loss.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from ..errors import FormatError, LimitError, UnsupportedError
from ..format import dtypes
from ..format.constants import MAX_EXPANSION
from ..io.atomic import AtomicFile
from .common import Format, Read, Written, check_names, dense, user_metadata


def _check_npz(path) -> None:
    """Check every member's declared array size against its stored size before numpy allocates it."""
    source = os.path.basename(os.fspath(path))
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise FormatError(source, f"not an .npz (zip) file ({exc})") from None
    with archive:
        for member in archive.infolist():
            field = f"{source}: {member.filename!r}"
            if member.file_size > MAX_EXPANSION * (member.compress_size + 64):
                raise LimitError(field, f"{member.file_size} bytes from {member.compress_size} compressed is over the expansion limit")
            try:
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    header_size = f.tell()
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise FormatError(field, f"not a .npy member ({exc})") from None
            if dtype.hasobject:
                raise UnsupportedError(field, "object arrays would need unpickling, which is never done")
            if math.prod(shape) * dtype.itemsize != member.file_size - header_size:
                raise FormatError(
                    field,
                    f"shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, the member holds {member.file_size - header_size}",
                )


def read_npz(path) -> tuple[dict, dict]:
    """The arrays of an ``.npz`` file, loaded with ``allow_pickle=False`` after checking every member's size."""
    _check_npz(path)
    source = os.path.basename(os.fspath(path))
    out = {}
    with np.load(path, allow_pickle=False) as archive:
        for name in archive.files:
            try:
                array = archive[name]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise FormatError(f"{source}: {name!r}", f"unreadable array ({exc})") from None
            dtypes.dtype_id(array.dtype, field=repr(name))
            out[name] = array
    return out, {}


def write_npz(tensors: Mapping, path, *, metadata: Mapping | None = None) -> list[str]:
    """An ``.npz`` (uncompressed, as ``np.savez``); returns the names that were dequantized.

    npy cannot name bfloat16, so bfloat16 tensors are widened to float32 (exactly).
    Metadata is not kept.
    """
    check_names(tensors)
    arrays, dequantized = dense(tensors)
    with AtomicFile(path) as out, zipfile.ZipFile(out.file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):  # through zipfile, not np.savez(**arrays): a tensor may be called "file"
            array = arrays[name]
            if dtypes.is_bfloat16(array.dtype):
                array = array.astype(np.float32)
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array, order="C"), allow_pickle=False)
    return dequantized


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _read(path, context) -> Read:
    return Read(*read_npz(path))


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    dequantized = write_npz(tensors, path, metadata=metadata)
    notes = []
    widened = sorted(n for n, v in tensors.items() if isinstance(getattr(v, "dtype", None), np.dtype) and dtypes.is_bfloat16(v.dtype))
    if widened:
        notes.append(f"npy has no bfloat16: widened to float32 (exactly): {widened[:10]}")
    if user_metadata(metadata):
        notes.append(f"npz files hold no metadata: dropped keys {sorted(user_metadata(metadata))[:10]}")
    return Written(dequantized, tuple(notes))


FORMAT = Format("npz", (".npz",), read=_read, write=_write)

__all__ = ["FORMAT", "read_npz", "write_npz"]
