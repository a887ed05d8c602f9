"""The ``.safetensors`` format (format name ``safetensors``), read and written here.

The layout (a u64 little-endian header length, a JSON header, the data) is parsed and
written by this module, not by the safetensors package, which is needed only to test that
the two agree. Reading checks every offset (the tensors must cover the data area exactly,
with neither holes nor overlaps), every BOOL byte, and reads every dtype the format shares
with dcformat, bfloat16 included (through ``ml_dtypes``).

Kept: every dense tensor bit for bit, and ``__metadata__`` (str -> str; other metadata
values are written as canonical JSON strings). Lost: quantization. Quantized tensors are
dequantized on writing, and the writer returns their names.

Writing follows the safetensors library's layout (tensors ordered by dtype then name,
compact JSON padded with spaces to 8 bytes), but with sorted ``__metadata__`` keys, so
the same tensors always give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping

import numpy as np

from ..errors import EncodeError, FormatError, LimitError, UnsupportedError
from ..format import dtypes, strict_json
from ..format.constants import DTYPE_ITEMSIZE, DType
from ..io.atomic import AtomicFile
from .common import Format, Read, Written, check_names, dense, user_metadata

#: A safetensors header is at most this long (the safetensors library's own limit).
MAX_SAFETENSORS_HEADER = 100_000_000

#: The numpy dtype (as a string; "bf16" and "bool" are special) of each safetensors dtype code dcformat reads.
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bf16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "bool",
}
#: The safetensors library writes tensors by this rank of their dtype (its enum, reversed), then by name.
_SAFETENSORS_ORDER = ["U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "I8", "U8", "BOOL"]
#: The safetensors dtype code of each wire dtype (every dtype dcformat stores has one).
_SAFETENSORS_CODES = {
    DType.UINT64: "U64",
    DType.INT64: "I64",
    DType.FLOAT64: "F64",
    DType.FLOAT32: "F32",
    DType.UINT32: "U32",
    DType.INT32: "I32",
    DType.BFLOAT16: "BF16",
    DType.FLOAT16: "F16",
    DType.UINT16: "U16",
    DType.INT16: "I16",
    DType.INT8: "I8",
    DType.UINT8: "U8",
    DType.BOOL: "BOOL",
}


def _safetensors_dtype(code: str, *, field: str) -> np.dtype:
    try:
        storage = _SAFETENSORS_DTYPES[code]
    except KeyError:
        raise UnsupportedError(field + ".dtype", f"dtype {code!r} cannot be stored in a .dcf (supported: {', '.join(_SAFETENSORS_DTYPES)})") from None
    if storage == "bf16":
        return dtypes.numpy_dtype(DType.BFLOAT16, field=field)
    return np.dtype(np.bool_) if storage == "bool" else np.dtype(storage)


# ======================================================================================
# Reading
# ======================================================================================


class SafetensorsLayout:
    """Where each tensor of a ``.safetensors`` file lies, every offset checked: ``specs`` maps a
    name to ``(dtype, shape, offset of its bytes in the file)``; ``metadata`` is ``__metadata__``."""

    def __init__(self, path, specs: dict, metadata: dict, size: int):
        self.path = os.fspath(path)
        self.specs = specs
        self.metadata = metadata
        self.size = size

    def nbytes(self, name: str) -> int:
        dtype, shape, _ = self.specs[name]
        return math.prod(shape) * dtype.itemsize

    def check_bool(self, name: str, raw: np.ndarray) -> None:
        """A BOOL tensor's bytes are 0 or 1 (numpy would read any other byte as an undefined bool)."""
        dtype, _, begin = self.specs[name]
        if dtype == np.bool_ and raw.size and int(raw.max()) > 1:
            raise FormatError(f"{os.path.basename(self.path)}: tensors[{name!r}]", "a BOOL tensor holds a byte other than 0 or 1", offset=begin)


def safetensors_layout(path) -> SafetensorsLayout:
    """Parse and check the header of a ``.safetensors`` file (u64 length, JSON), reading no tensor.

    The header is parsed here, so every dtype the format shares with dcformat is read,
    bfloat16 included. Every offset is checked, and the tensors must cover the data area
    exactly.
    """
    source = os.path.basename(os.fspath(path))
    size = os.path.getsize(path)
    if size < 8:
        raise FormatError(f"{source}: header_length", f"file of {size} bytes is shorter than the 8-byte header length", offset=0)
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_SAFETENSORS_HEADER:
            raise LimitError(f"{source}: header_length", f"{length} bytes is over the limit of {MAX_SAFETENSORS_HEADER}", offset=0)
        if length > size - 8:
            raise FormatError(f"{source}: header_length", f"header of {length} bytes runs past the end of the {size}-byte file", offset=0)
        raw_header = f.read(length)
    header = strict_json.load_object(raw_header, field=f"{source}: header", offset=8)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FormatError(f"{source}: __metadata__", "must map strings to strings", offset=8)
    data_start, data_size = 8 + length, size - 8 - length
    spans = []
    specs = {}
    for name, info in header.items():
        field = f"{source}: tensors[{name!r}]"
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
            raise FormatError(field, "must be an object with dtype, shape and data_offsets", offset=8)
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(field + ".shape", f"must be a list of non-negative integers, got {str(shape)[:80]}", offset=8)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise FormatError(
                field + ".data_offsets", f"must be [begin, end] within the {data_size}-byte data area, got {str(offsets)[:80]}", offset=8
            )
        dtype = _safetensors_dtype(info["dtype"], field=field)
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise FormatError(
                field + ".data_offsets", f"{offsets[1] - offsets[0]} bytes for shape {shape} of {info['dtype']}, which needs {nbytes}", offset=8
            )
        spans.append((offsets[0], offsets[1], name))
        specs[name] = (dtype, tuple(shape), data_start + offsets[0])
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            problem = "overlaps another tensor" if begin < end else "leaves a hole before it"
            raise FormatError(
                f"{source}: tensors[{name!r}].data_offsets", f"data at {begin} {problem} (expected {end})", offset=data_start + min(begin, end)
            )
        end = stop
    if end != data_size:
        raise FormatError(f"{source}: data", f"{data_size - end} bytes after the last tensor are not covered by any", offset=data_start + end)
    return SafetensorsLayout(path, specs, dict(metadata), size)


def read_safetensors(path) -> tuple[dict, dict]:
    """Tensors (read-only views of the memory-mapped file) and the ``__metadata__`` of a ``.safetensors`` file.

    See :func:`safetensors_layout` for the checks made before any tensor is viewed.
    """
    layout = safetensors_layout(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r") if layout.size else np.zeros(0, np.uint8)
    tensors = {}
    for name, (dtype, shape, begin) in layout.specs.items():
        raw = mapped[begin : begin + layout.nbytes(name)]
        layout.check_bool(name, raw)
        tensors[name] = np.asarray(raw).view(dtype).reshape(shape)
    return tensors, dict(layout.metadata)


# ======================================================================================
# Writing
# ======================================================================================


def _metadata_strings(metadata: Mapping | None) -> dict:
    """safetensors metadata is str -> str: other values are written as canonical JSON."""
    out = {}
    for key, value in user_metadata(metadata).items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return out


def write_safetensors(tensors: Mapping, path, *, metadata: Mapping | None = None) -> list[str]:
    """Write a ``.safetensors`` file; returns the names of the quantized tensors that were dequantized.

    The layout is the safetensors library's own (tensors ordered by dtype then name, compact
    JSON padded with spaces to 8 bytes), written here so the bytes are deterministic: the
    library writes ``__metadata__`` keys in hash order, here they are sorted.
    """
    check_names(tensors)
    arrays, dequantized = dense(tensors)
    # dtype_id accepts only dtypes dcformat knows, and safetensors has them all
    specs = {name: (dtypes.dtype_id(array.dtype, field=repr(name)), array.shape) for name, array in arrays.items()}
    write_safetensors_lazily(specs, arrays.__getitem__, path, metadata=metadata)
    return dequantized


def write_safetensors_lazily(specs: Mapping, read: Callable[[str], np.ndarray], path, *, metadata: Mapping | None = None) -> int:
    """Write a ``.safetensors`` file one tensor at a time; returns the file's size.

    ``specs`` maps each name to its wire dtype (a :class:`DType`) and shape, which make the
    header, written first; ``read(name)`` gives the tensor's values when its turn comes, so
    memory holds one tensor however large the file (a model decoded from ``.dcf`` shards).
    """
    codes = {name: _SAFETENSORS_CODES[dtype] for name, (dtype, _) in specs.items()}
    order = sorted(specs, key=lambda n: (_SAFETENSORS_ORDER.index(codes[n]), n))
    header: dict = {}
    strings = _metadata_strings(metadata)
    if strings:
        header["__metadata__"] = dict(sorted(strings.items()))
    offset = 0
    for name in order:
        dtype, shape = specs[name]
        nbytes = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
        header[name] = {"dtype": codes[name], "shape": [int(n) for n in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_SAFETENSORS_HEADER:
        raise EncodeError(f"the safetensors header would take {len(raw)} bytes, over the limit of {MAX_SAFETENSORS_HEADER}")
    with AtomicFile(path) as out:
        f = out.file
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name in order:  # per tensor
            dtype, shape = specs[name]
            array = np.asarray(read(name))
            if array.shape != tuple(shape) or dtypes.dtype_id(array.dtype, field=repr(name)) != dtype:
                raise EncodeError(f"expected {dtypes.name(dtype)} {list(shape)}, got {array.dtype} {list(array.shape)}", field=repr(name))
            f.write(dtypes.to_storage(array, dtype).reshape(-1).view(np.uint8))  # the bytes, not a copy of them
    return 8 + len(raw) + offset


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _read(path, context) -> Read:
    return Read(*read_safetensors(path))


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    return Written(write_safetensors(tensors, path, metadata=metadata))


FORMAT = Format("safetensors", (".safetensors",), read=_read, write=_write)

__all__ = [
    "FORMAT",
    "MAX_SAFETENSORS_HEADER",
    "SafetensorsLayout",
    "read_safetensors",
    "safetensors_layout",
    "write_safetensors",
    "write_safetensors_lazily",
]
