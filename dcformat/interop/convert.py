"""Conversions between ``.dcf`` and the formats weights travel in.

Every format has a reader and a writer with the same shape::

    tensors, metadata = read_safetensors(path)       # name -> ndarray (or QuantizedTensor), str-keyed dict
    dequantized = write_safetensors(tensors, path, metadata=metadata)

for ``safetensors``, ``torch`` (``.pt``/``.pth``/``.bin``), ``npz``, ``onnx`` (the
initializers of a model; writing needs the model's graph), ``dcf`` and the authors'
``net`` (:mod:`dcformat.caffe`; needs the ``.prototxt``). :func:`convert` joins any
reader to any writer by file extension and returns a :class:`ConvertReport`.

Dense tensors pass through bit for bit (bfloat16 included, through ``ml_dtypes``).
Quantized tensors stay quantized into ``.dcf`` and ``.net`` and are dequantized into
every other format; the writers return the names they dequantized. With ``bits`` set,
float tensors of at least ``min_elements`` elements are quantized on their way into a
``.dcf`` (k-means, :func:`dcformat.quantize`); without it nothing changes value.

The optional packages (torch, onnx, tqdm) are imported only by the functions that
need them: ``import dcformat.convert`` imports none of them. The safetensors layout
(a u64 length, a JSON header, the data) is read and written here, with every offset
checked, bfloat16 included and sorted metadata keys for deterministic bytes; the
safetensors package is needed only to test that it agrees. Nothing here unpickles:
torch files are read with ``torch.load(..., weights_only=True)`` and npz files with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from ..format import dtypes, strict_json
from ..format.rules import name_order
from ..io.atomic import AtomicFile, write_bytes
from ..io.writers import FileWriter
from ..format.constants import FLOAT_DTYPES, MAX_EXPANSION, RESERVED_KEY_PREFIX, DType
from ..format.encode import EncodeOptions
from ..format.reader import DCFile
from ..errors import DCFormatError, EncodeError, FormatError, LimitError, UnsupportedError
from ..progress import progress as _progress  # the functions here take a `progress` flag
from ..quantize import QuantizedTensor, quantize

#: Formats by file extension (lower case).
EXTENSIONS = {
    ".dcf": "dcf",
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".npz": "npz",
    ".onnx": "onnx",
    ".net": "net",
}
FORMATS = ("dcf", "safetensors", "torch", "npz", "onnx", "net")
#: With ``bits`` set, float tensors of at least this many elements are quantized (biases usually are not).
DEFAULT_MIN_ELEMENTS = 1024
#: Metadata keys a ``.dcf`` made from an ONNX model carries (spec 4.2: user keys).
ONNX_INITIALIZERS_KEY = "onnx.initializers"
ONNX_GRAPH_KEY = "onnx.graph_sha256"
#: A safetensors header is at most this long (the safetensors library's own limit).
MAX_SAFETENSORS_HEADER = 100_000_000


class MissingDependencyError(DCFormatError, ImportError):
    """A conversion needs an optional package that is not installed."""

    def __init__(self, package: str, purpose: str):
        self.package = package
        super().__init__(f"convert error: {purpose} needs the package {package!r} (pip install {package})")


def _require(module: str, purpose: str, package: str | None = None):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package or module, purpose) from None


# ======================================================================================
# Shared helpers
# ======================================================================================

def format_of(path) -> str:
    """The format a path's extension names (see :data:`EXTENSIONS`)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    try:
        return EXTENSIONS[ext]
    except KeyError:
        raise EncodeError(f"cannot tell the format of {os.fspath(path)!r} from its extension "
                          f"(known: {', '.join(sorted(EXTENSIONS))})") from None


def dense(tensors: Mapping) -> tuple[dict, list[str]]:
    """Every QuantizedTensor dequantized: (name -> ndarray, names that were dequantized)."""
    out, dequantized = {}, []
    for name, value in tensors.items():
        if isinstance(value, QuantizedTensor):
            out[name] = value.dequantize()
            dequantized.append(name)
        else:
            out[name] = np.asarray(value)
    return out, sorted(dequantized)


def _check_names(tensors: Mapping) -> None:
    for name in tensors:
        if not isinstance(name, str):
            raise EncodeError(f"tensor names must be str, got {type(name).__name__} {name!r}")


def _user_metadata(metadata: Mapping | None) -> dict:
    """Metadata without the reserved ``dcformat.*`` keys (the writer adds its own)."""
    return {k: v for k, v in (metadata or {}).items() if not str(k).startswith(RESERVED_KEY_PREFIX)}


def _metadata_list(metadata: Mapping, key: str) -> list | None:
    """A list stored under ``key``: as JSON in a .dcf, or as a JSON string after a trip through safetensors."""
    value = metadata.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise EncodeError(f"metadata {key!r} must be a list of names, got {str(value)[:80]}")
    return value


# ======================================================================================
# safetensors
# ======================================================================================

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bf16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "bool",
}


def _safetensors_dtype(code: str, *, field: str) -> np.dtype:
    try:
        storage = _SAFETENSORS_DTYPES[code]
    except KeyError:
        raise UnsupportedError(field + ".dtype", f"dtype {code!r} cannot be stored in a .dcf "
                               f"(supported: {', '.join(_SAFETENSORS_DTYPES)})") from None
    if storage == "bf16":
        return dtypes.numpy_dtype(DType.BFLOAT16, field=field)
    return np.dtype(np.bool_) if storage == "bool" else np.dtype(storage)


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
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_size:
            raise FormatError(field + ".data_offsets", f"must be [begin, end] within the {data_size}-byte data area, got {str(offsets)[:80]}", offset=8)
        dtype = _safetensors_dtype(info["dtype"], field=field)
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise FormatError(field + ".data_offsets", f"{offsets[1] - offsets[0]} bytes for shape {shape} of {info['dtype']}, which needs {nbytes}", offset=8)
        spans.append((offsets[0], offsets[1], name))
        specs[name] = (dtype, tuple(shape), data_start + offsets[0])
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            problem = "overlaps another tensor" if begin < end else "leaves a hole before it"
            raise FormatError(f"{source}: tensors[{name!r}].data_offsets", f"data at {begin} {problem} (expected {end})", offset=data_start + min(begin, end))
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


def _metadata_strings(metadata: Mapping | None) -> dict:
    """safetensors metadata is str -> str: other values are written as canonical JSON."""
    out = {}
    for key, value in _user_metadata(metadata).items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return out


#: The safetensors library writes tensors by this rank of their dtype (its enum, reversed), then by name.
_SAFETENSORS_ORDER = ["U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "I8", "U8", "BOOL"]
_SAFETENSORS_CODES = {
    DType.UINT64: "U64", DType.INT64: "I64", DType.FLOAT64: "F64", DType.FLOAT32: "F32", DType.UINT32: "U32", DType.INT32: "I32",
    DType.BFLOAT16: "BF16", DType.FLOAT16: "F16", DType.UINT16: "U16", DType.INT16: "I16", DType.INT8: "I8", DType.UINT8: "U8",
    DType.BOOL: "BOOL",
}


def write_safetensors(tensors: Mapping, path, *, metadata: Mapping | None = None) -> list[str]:
    """Write a ``.safetensors`` file; returns the names of the quantized tensors that were dequantized.

    The layout is the safetensors library's own (tensors ordered by dtype then name, compact
    JSON padded with spaces to 8 bytes), written here so the bytes are deterministic: the
    library writes ``__metadata__`` keys in hash order, here they are sorted.
    """
    _check_names(tensors)
    arrays, dequantized = dense(tensors)
    # dtype_id accepts only dtypes dcformat knows, and safetensors has them all
    codes = {name: _SAFETENSORS_CODES[dtypes.dtype_id(array.dtype, field=repr(name))] for name, array in arrays.items()}
    order = sorted(arrays, key=lambda n: (_SAFETENSORS_ORDER.index(codes[n]), n))
    header: dict = {}
    strings = _metadata_strings(metadata)
    if strings:
        header["__metadata__"] = dict(sorted(strings.items()))
    offset = 0
    for name in order:
        nbytes = arrays[name].nbytes
        header[name] = {"dtype": codes[name], "shape": list(arrays[name].shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_SAFETENSORS_HEADER:
        raise EncodeError(f"the safetensors header would take {len(raw)} bytes, over the limit of {MAX_SAFETENSORS_HEADER}")
    with AtomicFile(path) as out:
        f = out.file
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name in order:  # per tensor
            array = arrays[name]
            f.write(dtypes.to_storage(array, dtypes.dtype_id(array.dtype)).tobytes())
    return dequantized


# ======================================================================================
# PyTorch
# ======================================================================================

def state_dict_arrays(obj) -> dict:
    """A state dict (or an ``nn.Module``'s) as numpy arrays; bfloat16 through ml_dtypes."""
    torch = _require("torch", "reading PyTorch tensors")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise EncodeError(f"expected a state dict or an nn.Module, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise EncodeError(f"a state dict maps names to tensors; these entries do not: {[str(k) for k in bad[:5]]}")
    from .torch_arrays import to_numpy

    return {name: to_numpy(tensor, name=name) for name, tensor in obj.items()}


def read_torch(source) -> tuple[dict, dict]:
    """Tensors of a ``.pt`` file (weights only, never unpickling code), a state dict or an ``nn.Module``.

    A file may hold a state dict, or a dict with a ``"state_dict"`` or ``"model"`` entry
    that is one (a training checkpoint); its other entries are ignored.
    """
    torch = _require("torch", "reading PyTorch files")
    if isinstance(source, (str, os.PathLike)):
        name = os.path.basename(os.fspath(source))
        try:
            obj = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:  # torch raises many types for bad or unsafe files; none may escape raw
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FormatError(name, f"not a weights-only PyTorch file ({type(exc).__name__}: {reason[:200]})") from None
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                raise FormatError(name, f"holds neither a state dict nor a dict with a 'state_dict' or 'model' state dict "
                                  f"(keys: {[str(k) for k in list(obj)[:8]]})")
            obj = inner
        if not isinstance(obj, Mapping):
            raise FormatError(name, f"holds a {type(obj).__name__}, not a state dict")
        source = obj
    return state_dict_arrays(source), {}


def write_torch(tensors: Mapping, path, *, metadata: Mapping | None = None) -> list[str]:
    """``torch.save`` of a dict of tensors; returns the names that were dequantized. Metadata is not kept."""
    torch = _require("torch", "writing PyTorch files")
    _check_names(tensors)
    arrays, dequantized = dense(tensors)
    from .torch_arrays import to_torch

    state = {name: to_torch(array) for name, array in arrays.items()}
    with AtomicFile(path) as out:
        torch.save(state, out.file)
    return dequantized


# ======================================================================================
# numpy .npz
# ======================================================================================

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
                raise FormatError(field, f"shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, "
                                  f"the member holds {member.file_size - header_size}")


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
    _check_names(tensors)
    arrays, dequantized = dense(tensors)
    with AtomicFile(path) as out, zipfile.ZipFile(out.file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):  # through zipfile, not np.savez(**arrays): a tensor may be called "file"
            array = arrays[name]
            if dtypes.BFLOAT16 is not None and array.dtype == dtypes.BFLOAT16:
                array = array.astype(np.float32)
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array, order="C"), allow_pickle=False)
    return dequantized


# ======================================================================================
# ONNX
# ======================================================================================

_ONNX_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data", "external_data")


def _onnx_dtypes() -> dict:
    onnx = _require("onnx", "ONNX conversion")
    T = onnx.TensorProto
    table = {T.FLOAT: np.dtype("<f4"), T.FLOAT16: np.dtype("<f2"), T.DOUBLE: np.dtype("<f8"),
             T.INT8: np.dtype("i1"), T.INT16: np.dtype("<i2"), T.INT32: np.dtype("<i4"), T.INT64: np.dtype("<i8"),
             T.UINT8: np.dtype("u1"), T.UINT16: np.dtype("<u2"), T.UINT32: np.dtype("<u4"), T.UINT64: np.dtype("<u8"),
             T.BOOL: np.dtype(np.bool_)}
    if dtypes.BFLOAT16 is not None:
        table[T.BFLOAT16] = dtypes.BFLOAT16
    return table


def _load_onnx(path):
    onnx = _require("onnx", "ONNX conversion")
    try:
        return onnx.load(os.fspath(path))
    except OSError:
        raise
    except Exception as exc:  # protobuf and onnx raise several types on bad input
        raise FormatError(os.path.basename(os.fspath(path)), f"not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None


def _graph_digest(model, names) -> str:
    """SHA-256 of the model with the data of ``names`` removed: the same for the original and a stripped graph."""
    onnx = _require("onnx", "ONNX conversion")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _strip(copy, set(names))
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _strip(model, names: set) -> None:
    onnx = _require("onnx", "ONNX conversion")
    for init in model.graph.initializer:
        if init.name in names:
            for data_field in _ONNX_DATA_FIELDS:
                init.ClearField(data_field)
            init.data_location = onnx.TensorProto.DEFAULT


def read_onnx(path) -> tuple[dict, dict]:
    """The initializers of an ONNX model that dcformat can store, and metadata to rebuild the model.

    The metadata lists the names (``onnx.initializers``) and a digest of the graph
    without their data (``onnx.graph_sha256``); initializers of other types (strings,
    float8, ...) stay in the graph and are listed under ``onnx.kept_in_graph``.
    """
    onnx = _require("onnx", "ONNX conversion")
    from onnx import numpy_helper

    model = _load_onnx(path)
    source = os.path.basename(os.fspath(path))
    table = _onnx_dtypes()
    tensors, kept = {}, []
    for init in model.graph.initializer:  # per initializer
        field = f"{source}: initializer {init.name!r}"
        if init.name in tensors:
            raise FormatError(field, "two initializers have this name")
        if init.data_type not in table or init.data_location == onnx.TensorProto.EXTERNAL:
            kept.append(init.name)
            continue
        try:
            array = numpy_helper.to_array(init)
        except Exception as exc:  # onnx raises several types on inconsistent tensors
            raise FormatError(field, f"unreadable tensor ({type(exc).__name__}: {str(exc)[:200]})") from None
        expected = table[init.data_type]
        if array.dtype.newbyteorder("=") != expected.newbyteorder("=") or array.shape != tuple(init.dims):
            raise FormatError(field, f"decodes to {array.dtype} {array.shape}, expected {expected} {tuple(init.dims)}")
        tensors[init.name] = array
    metadata = {ONNX_INITIALIZERS_KEY: list(tensors), ONNX_GRAPH_KEY: _graph_digest(model, tensors)}
    if kept:
        metadata["onnx.kept_in_graph"] = kept
    return tensors, metadata


def write_onnx(tensors: Mapping, path, *, graph, metadata: Mapping | None = None) -> list[str]:
    """A runnable ONNX model: ``graph`` (the original model, or a stripped one) with its initializers' data replaced.

    Every tensor must name an initializer of the graph with the same shape and dtype;
    when ``metadata`` comes from :func:`read_onnx`, every listed initializer must be given
    and the graph must be the one the tensors were taken from. Returns the names that
    were dequantized.
    """
    onnx = _require("onnx", "ONNX conversion")
    _check_names(tensors)
    arrays, dequantized = dense(tensors)
    model = _load_onnx(graph)
    metadata = metadata or {}
    listed = _metadata_list(metadata, ONNX_INITIALIZERS_KEY)
    if listed is not None:
        missing = sorted(set(listed) - set(arrays))
        if missing:
            raise EncodeError(f"initializers listed in the file's metadata are missing: {missing[:5]}")
        expected_digest = metadata.get(ONNX_GRAPH_KEY)
        if expected_digest is not None and _graph_digest(model, listed) != expected_digest:
            raise EncodeError(f"the graph {os.fspath(graph)!r} is not the one these weights were taken from "
                              f"(its digest without the weights differs); pass the original .onnx")
    table = _onnx_dtypes()
    by_name = {init.name: init for init in model.graph.initializer}
    unknown = sorted(set(arrays) - set(by_name))
    if unknown:
        raise EncodeError(f"tensors that are not initializers of the graph: {unknown[:5]}")
    for name, array in arrays.items():  # per initializer
        init = by_name[name]
        expected = table.get(init.data_type)
        if expected is None or array.dtype.newbyteorder("=") != expected.newbyteorder("=") or array.shape != tuple(init.dims):
            raise EncodeError(f"is {array.dtype} {array.shape}, the graph's initializer is "
                              f"{onnx.TensorProto.DataType.Name(init.data_type)} {tuple(init.dims)}", field=repr(name))
        for data_field in _ONNX_DATA_FIELDS:
            init.ClearField(data_field)
        init.data_location = onnx.TensorProto.DEFAULT
        init.raw_data = dtypes.to_storage(array, dtypes.dtype_id(array.dtype)).tobytes()  # little-endian, as ONNX raw_data
    with AtomicFile(path) as out:
        out.file.write(model.SerializeToString())  # what onnx.save writes, without needing a path
    return dequantized


def strip_onnx(graph, path, *, names=None) -> int:
    """Write ``graph`` without the data of its initializers (or of ``names``): the template :func:`write_onnx` fills.

    Returns the size of the written file.
    """
    onnx = _require("onnx", "ONNX conversion")
    model = _load_onnx(graph)
    table = _onnx_dtypes()
    if names is None:
        names = [i.name for i in model.graph.initializer if i.data_type in table and i.data_location != onnx.TensorProto.EXTERNAL]
    _strip(model, set(names))
    with AtomicFile(path) as out:
        out.file.write(model.SerializeToString())  # what onnx.save writes, without needing a path
    return os.path.getsize(path)


# ======================================================================================
# .dcf and the authors' .net
# ======================================================================================

def read_dcf(path) -> tuple[dict, dict]:
    """Every tensor of a ``.dcf`` as stored (quantized ones as QuantizedTensor, others as
    arrays), and the user metadata."""
    with DCFile(path) as reader:
        reader.check_padding()
        out = {name: reader.get_stored(name) for name in reader.keys()}
        metadata = _user_metadata(reader.metadata())
    return out, metadata


def quantize_tensors(tensors: Mapping, *, bits: int, min_elements: int = DEFAULT_MIN_ELEMENTS, init: str = "linear",
                     progress: bool = False) -> tuple[dict, list[str]]:
    """Float arrays of at least ``min_elements`` elements quantized to ``2**bits`` clusters; (tensors, names quantized)."""
    out, names = dict(tensors), []
    candidates = [n for n, v in tensors.items() if not isinstance(v, QuantizedTensor)
                  and dtypes.dtype_id(np.asarray(v).dtype, field=repr(n)) in FLOAT_DTYPES and np.asarray(v).size >= min_elements]
    for name in _progress(candidates, enabled=progress, desc="quantize", total=len(candidates)):
        array = np.asarray(tensors[name])
        if not np.count_nonzero(array):
            continue  # nothing to cluster: an all-zero tensor stays exact (and zstd, if asked, shrinks it)
        try:
            out[name] = quantize(array, bits=bits, init=init)
        except EncodeError as exc:
            raise EncodeError(exc.reason, field=repr(name)) from None
        names.append(name)
    return out, sorted(names)


def write_dcf(tensors: Mapping, path, *, metadata: Mapping | None = None, options: EncodeOptions | None = None,
              overrides: Mapping | None = None, progress: bool = False) -> int:
    """Write a ``.dcf`` atomically, one tensor at a time (bytes equal to :func:`dcformat.save_file`'s); returns its size."""

    _check_names(tensors)
    overrides = dict(overrides or {})
    # Sorted by UTF-8 bytes as save_file does, so both give the same bytes; the writer rejects bad names.
    names = name_order(tensors)
    with FileWriter(path, metadata=_user_metadata(metadata), options=options) as out:
        for name in _progress(names, enabled=progress, desc="encode", total=len(names)):
            out.add(name, tensors[name], options=overrides.get(name))
    return out.size


def _caffe():
    from . import caffe

    return caffe


# ======================================================================================
# Any to any
# ======================================================================================

@dataclass
class ConvertReport:
    """What :func:`convert` did, for people (``str``) and programs (``as_dict``)."""

    source: str
    destination: str
    source_format: str
    destination_format: str
    tensors: int
    bytes_in: int
    bytes_out: int
    quantized: list = field(default_factory=list)
    dequantized: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _read(fmt: str, path, *, prototxt) -> tuple[dict, dict]:
    if fmt == "net":
        caffe = _caffe()
        tensors = caffe.read_net(path, prototxt)
        return tensors, {caffe.METADATA_KEY: [s.name for s in caffe.network_layers(prototxt)]}
    return {"dcf": read_dcf, "safetensors": read_safetensors, "torch": read_torch, "npz": read_npz, "onnx": read_onnx}[fmt](path)


def convert(src, dst, *, graph=None, prototxt=None, bits: int | None = None, min_elements: int = DEFAULT_MIN_ELEMENTS,
            init: str = "linear", options: EncodeOptions | None = None, strip_graph=None, progress: bool = False,
            src_format: str | None = None, dst_format: str | None = None) -> ConvertReport:
    """Convert ``src`` to ``dst``, formats told by their extensions (or ``src_format``/``dst_format``).

    graph: the original ``.onnx`` model, needed when ``dst`` is ``.onnx``.
    prototxt: the Caffe network description, needed to read or write a ``.net``.
    bits: quantize float tensors of at least ``min_elements`` elements on their way into a
        ``.dcf`` (None: store every value exactly).
    options: how the ``.dcf`` encoder stores tensors (default: the smallest file).
    strip_graph: with an ``.onnx`` source, also write the model without the weights
        that went into the ``.dcf`` here (the template to pass as ``graph`` later).
    """
    src_format = src_format or format_of(src)
    dst_format = dst_format or format_of(dst)
    for fmt in (src_format, dst_format):
        if fmt not in FORMATS:
            raise EncodeError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if bits is not None and dst_format != "dcf":
        raise EncodeError("bits quantizes tensors into a .dcf; the destination here is " + dst_format)
    if isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 0:
        raise EncodeError(f"min_elements must be a non-negative integer, got {min_elements!r}")
    if dst_format == "onnx" and graph is None:
        raise EncodeError("writing an .onnx model needs the original model's graph (graph=..., --graph ORIGINAL.onnx)")
    if "net" in (src_format, dst_format) and prototxt is None:
        raise EncodeError("reading or writing a .net file needs the network's .prototxt (prototxt=..., --prototxt)")
    if strip_graph is not None and src_format != "onnx":
        raise EncodeError("strip_graph (--strip-graph) needs an .onnx source")
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)):
        raise EncodeError("the source and destination are the same file")
    tensors, metadata = _read(src_format, src, prototxt=prototxt)
    notes, quantized = [], []
    reserved = sorted(k for k in metadata if str(k).startswith(RESERVED_KEY_PREFIX))
    if reserved:  # a .dcf's own reserved keys are dropped by read_dcf; these came from another format
        notes.append(f"metadata keys reserved by dcformat were dropped: {reserved[:10]}")
    if bits is not None:
        tensors, quantized = quantize_tensors(tensors, bits=bits, min_elements=min_elements, init=init, progress=progress)
    if dst_format == "dcf":
        write_dcf(tensors, dst, metadata=metadata, options=options, progress=progress)
        dequantized = []
    elif dst_format == "net":
        caffe = _caffe()
        layers = _metadata_list(metadata, caffe.METADATA_KEY)
        specs = caffe.network_layers(prototxt)
        if layers is not None and layers != [s.name for s in specs]:
            raise EncodeError(f"the weights come from a network with layers {layers[:3]}..., not the one in {os.fspath(prototxt)!r}")
        write_bytes(caffe.write_net(tensors, prototxt), dst)
        wanted = {s.name + suffix for s in specs for suffix in (caffe.WEIGHT, caffe.BIAS)}
        dequantized = []
        left_out = sorted(set(tensors) - wanted)
        if left_out:
            notes.append(f"not in the network, left out: {left_out[:10]}{' ...' if len(left_out) > 10 else ''}")
    elif dst_format == "onnx":
        dequantized = write_onnx(tensors, dst, graph=graph, metadata=metadata)
    else:
        writer = {"safetensors": write_safetensors, "torch": write_torch, "npz": write_npz}[dst_format]
        dequantized = writer(tensors, dst, metadata=metadata)
        if dst_format == "npz" and dtypes.BFLOAT16 is not None:
            widened = sorted(n for n, v in tensors.items() if getattr(v, "dtype", None) == dtypes.BFLOAT16)
            if widened:
                notes.append(f"npy has no bfloat16: widened to float32 (exactly): {widened[:10]}")
        if dst_format in ("torch", "npz") and _user_metadata(metadata):
            notes.append(f"{dst_format} files hold no metadata: dropped keys {sorted(_user_metadata(metadata))[:10]}")
    if src_format == "onnx" and metadata.get("onnx.kept_in_graph"):
        notes.append(f"initializers of types dcformat does not store stay in the graph: {metadata['onnx.kept_in_graph'][:10]}")
    if strip_graph is not None:
        strip_onnx(src, strip_graph, names=metadata[ONNX_INITIALIZERS_KEY])
        notes.append(f"graph without the weights written to {os.fspath(strip_graph)}")
    return ConvertReport(
        source=os.fspath(src), destination=os.fspath(dst), source_format=src_format, destination_format=dst_format,
        tensors=len(tensors), bytes_in=os.path.getsize(src), bytes_out=os.path.getsize(dst),
        quantized=quantized, dequantized=dequantized, notes=notes,
    )


__all__ = [
    "ConvertReport", "DEFAULT_MIN_ELEMENTS", "EXTENSIONS", "FORMATS", "MissingDependencyError", "convert", "dense", "format_of",
    "quantize_tensors", "read_dcf", "read_npz", "read_onnx", "read_safetensors", "read_torch", "safetensors_layout",
    "SafetensorsLayout", "state_dict_arrays", "strip_onnx", "write_dcf", "write_npz", "write_onnx", "write_safetensors", "write_torch",
]
