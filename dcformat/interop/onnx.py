"""ONNX models (format name ``onnx``): their initializers are the tensors.

Reading takes the initializers of every dtype dcformat stores (bfloat16 through
``ml_dtypes``) and records, as metadata, their names (``onnx.initializers``) and a
SHA-256 of the model without their data (``onnx.graph_sha256``). Initializers of other
types (strings, float8, ...) or with external data stay in the graph and are listed
under ``onnx.kept_in_graph``; a conversion's report notes them.

Writing needs the graph: the original model, or the template :func:`strip_onnx` writes
(the model without the initializers' data). :func:`write_onnx` fills its initializers
with the tensors, each of the same shape and dtype, and, given the metadata
:func:`read_onnx` made, checks that every listed initializer is given and that the graph
is the one the tensors came from. The result is a runnable model.

Kept: every initializer stored, bit for bit, and the graph (from the model given to the
writer). Lost: quantization (quantized tensors are dequantized; the writer returns their
names). onnx is optional and imported only inside these functions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np

from ..errors import EncodeError, FormatError
from ..format import dtypes
from ..io.atomic import AtomicFile
from .common import Format, Read, Written, check_names, dense, metadata_list, require

#: Metadata keys a ``.dcf`` made from an ONNX model carries (spec 4.2: user keys).
ONNX_INITIALIZERS_KEY = "onnx.initializers"
ONNX_GRAPH_KEY = "onnx.graph_sha256"
#: ... and the initializers it left in the graph (types dcformat does not store, external data).
ONNX_KEPT_KEY = "onnx.kept_in_graph"
#: The fields of a TensorProto that hold its data: all cleared when the data is replaced or stripped.
_ONNX_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data", "external_data")


def _onnx_dtypes() -> dict:
    """The numpy dtype of each ONNX data type dcformat stores (keyed by TensorProto.DataType)."""
    onnx = require("onnx", "ONNX conversion")
    proto = onnx.TensorProto
    table = {
        proto.FLOAT: np.dtype("<f4"),
        proto.FLOAT16: np.dtype("<f2"),
        proto.DOUBLE: np.dtype("<f8"),
        proto.INT8: np.dtype("i1"),
        proto.INT16: np.dtype("<i2"),
        proto.INT32: np.dtype("<i4"),
        proto.INT64: np.dtype("<i8"),
        proto.UINT8: np.dtype("u1"),
        proto.UINT16: np.dtype("<u2"),
        proto.UINT32: np.dtype("<u4"),
        proto.UINT64: np.dtype("<u8"),
        proto.BOOL: np.dtype(np.bool_),
    }
    if dtypes.bfloat16() is not None:
        table[proto.BFLOAT16] = dtypes.bfloat16()
    return table


def _load_onnx(path):
    onnx = require("onnx", "ONNX conversion")
    try:
        return onnx.load(os.fspath(path))
    except OSError:
        raise
    except Exception as exc:  # protobuf and onnx raise several types on bad input
        raise FormatError(os.path.basename(os.fspath(path)), f"not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None


def _graph_digest(model, names) -> str:
    """SHA-256 of the model with the data of ``names`` removed: the same for the original and a stripped graph."""
    onnx = require("onnx", "ONNX conversion")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _strip(copy, set(names))
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _strip(model, names: set) -> None:
    onnx = require("onnx", "ONNX conversion")
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
    onnx = require("onnx", "ONNX conversion")
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
        metadata[ONNX_KEPT_KEY] = kept
    return tensors, metadata


def write_onnx(tensors: Mapping, path, *, graph, metadata: Mapping | None = None) -> list[str]:
    """A runnable ONNX model: ``graph`` (the original model, or a stripped one) with its initializers' data replaced.

    Every tensor must name an initializer of the graph with the same shape and dtype;
    when ``metadata`` comes from :func:`read_onnx`, every listed initializer must be given
    and the graph must be the one the tensors were taken from. Returns the names that
    were dequantized.
    """
    onnx = require("onnx", "ONNX conversion")
    check_names(tensors)
    arrays, dequantized = dense(tensors)
    model = _load_onnx(graph)
    metadata = metadata or {}
    listed = metadata_list(metadata, ONNX_INITIALIZERS_KEY)
    if listed is not None:
        missing = sorted(set(listed) - set(arrays))
        if missing:
            raise EncodeError(f"initializers listed in the file's metadata are missing: {missing[:5]}")
        expected_digest = metadata.get(ONNX_GRAPH_KEY)
        if expected_digest is not None and _graph_digest(model, listed) != expected_digest:
            raise EncodeError(
                f"the graph {os.fspath(graph)!r} is not the one these weights were taken from "
                f"(its digest without the weights differs); pass the original .onnx"
            )
    table = _onnx_dtypes()
    by_name = {init.name: init for init in model.graph.initializer}
    unknown = sorted(set(arrays) - set(by_name))
    if unknown:
        raise EncodeError(f"tensors that are not initializers of the graph: {unknown[:5]}")
    for name, array in arrays.items():  # per initializer
        init = by_name[name]
        expected = table.get(init.data_type)
        if expected is None or array.dtype.newbyteorder("=") != expected.newbyteorder("=") or array.shape != tuple(init.dims):
            raise EncodeError(
                f"is {array.dtype} {array.shape}, the graph's initializer is {onnx.TensorProto.DataType.Name(init.data_type)} {tuple(init.dims)}",
                field=repr(name),
            )
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
    onnx = require("onnx", "ONNX conversion")
    model = _load_onnx(graph)
    table = _onnx_dtypes()
    if names is None:
        names = [i.name for i in model.graph.initializer if i.data_type in table and i.data_location != onnx.TensorProto.EXTERNAL]
    _strip(model, set(names))
    with AtomicFile(path) as out:
        out.file.write(model.SerializeToString())  # what onnx.save writes, without needing a path
    return os.path.getsize(path)


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _check(role: str, context) -> None:
    if role == "write" and context.graph is None:
        raise EncodeError("writing an .onnx model needs the original model's graph (graph=..., --graph ORIGINAL.onnx)")


def _read(path, context) -> Read:
    tensors, metadata = read_onnx(path)
    notes = ()
    if metadata.get(ONNX_KEPT_KEY):
        notes = (f"initializers of types dcformat does not store stay in the graph: {metadata[ONNX_KEPT_KEY][:10]}",)
    return Read(tensors, metadata, notes)


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    return Written(write_onnx(tensors, path, graph=context.graph, metadata=metadata))


FORMAT = Format("onnx", (".onnx",), read=_read, write=_write, check=_check)

__all__ = ["FORMAT", "ONNX_GRAPH_KEY", "ONNX_INITIALIZERS_KEY", "ONNX_KEPT_KEY", "read_onnx", "strip_onnx", "write_onnx"]
