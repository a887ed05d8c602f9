"""Conversions between ``.dcf`` and the formats weights travel in: :func:`convert`.

Every format is one module with a reader and a writer of the same shape::

    tensors, metadata = read_safetensors(path)       # name -> ndarray (or QuantizedTensor), str-keyed dict
    dequantized = write_safetensors(tensors, path, metadata=metadata)

``safetensors`` (:mod:`~dcformat.interop.safetensors`), ``torch`` (``.pt``/``.pth``/``.bin``,
:mod:`~dcformat.interop.pt`), ``npz`` (:mod:`~dcformat.interop.npz`), ``onnx`` (the
initializers of a model; writing needs the model's graph, :mod:`~dcformat.interop.onnx`),
``dcf`` (:mod:`~dcformat.interop.dcf`) and the authors' ``net``
(:mod:`~dcformat.interop.caffe`; needs the ``.prototxt``). Each module's docstring says
what the format keeps and what it loses. :func:`convert` joins any reader to any writer
through the registry of :mod:`~dcformat.interop.formats` (formats told by file extension)
and returns a :class:`ConvertReport`.

Dense tensors pass through bit for bit (bfloat16 included, through ``ml_dtypes``).
Quantized tensors stay quantized into ``.dcf`` and ``.net`` and are dequantized into
every other format; the writers return the names they dequantized. With ``bits`` set,
float tensors of at least ``min_elements`` elements are quantized on their way into a
``.dcf`` (k-means, :func:`dcformat.quantize`); without it nothing changes value.

The optional packages (torch, onnx, tqdm) are imported only by the functions that
need them: ``import dcformat.interop.convert`` imports none of them. Nothing here
unpickles: torch files are read with ``torch.load(..., weights_only=True)`` and npz files
with ``allow_pickle=False``.

The readers and writers are re-exported here, where they lived before each format had
its own module.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..errors import EncodeError
from ..format.constants import RESERVED_KEY_PREFIX
from ..format.encode import EncodeOptions
from ..io.atomic import same_file
from . import formats
from .common import Context, MissingDependencyError, dense
from .dcf import DEFAULT_MIN_ELEMENTS, quantize_tensors, read_dcf, write_dcf
from .formats import EXTENSIONS, FORMATS, format_of
from .npz import read_npz, write_npz
from .onnx import ONNX_INITIALIZERS_KEY, read_onnx, strip_onnx, write_onnx
from .pt import read_torch, state_dict_arrays, write_torch
from .safetensors import SafetensorsLayout, read_safetensors, safetensors_layout, write_safetensors


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


def convert(
    src,
    dst,
    *,
    graph=None,
    prototxt=None,
    bits: int | None = None,
    min_elements: int = DEFAULT_MIN_ELEMENTS,
    init: str = "linear",
    options: EncodeOptions | None = None,
    strip_graph=None,
    progress: bool = False,
    src_format: str | None = None,
    dst_format: str | None = None,
) -> ConvertReport:
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
    reader, writer = formats.get(src_format), formats.get(dst_format)
    if bits is not None and dst_format != "dcf":
        raise EncodeError("bits quantizes tensors into a .dcf; the destination here is " + dst_format)
    if isinstance(min_elements, bool) or not isinstance(min_elements, int) or min_elements < 0:
        raise EncodeError(f"min_elements must be a non-negative integer, got {min_elements!r}")
    context = Context(graph=graph, prototxt=prototxt, options=options, progress=progress)
    # What each format needs from the context (a graph, a .prototxt), checked before any file is
    # read; the writer first, so that a call lacking both is told about the ONNX graph, as always.
    for fmt, role in ((writer, "write"), (reader, "read")):
        if fmt.check is not None:
            fmt.check(role, context)
    if strip_graph is not None and src_format != "onnx":
        raise EncodeError("strip_graph (--strip-graph) needs an .onnx source")
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)) or same_file(src, dst):
        raise EncodeError("the source and destination are the same file")
    read = reader.read(src, context)
    tensors, metadata = read.tensors, read.metadata
    notes, quantized = [], []
    reserved = sorted(k for k in metadata if str(k).startswith(RESERVED_KEY_PREFIX))
    if reserved:  # a .dcf's own reserved keys are dropped by read_dcf; these came from another format
        notes.append(f"metadata keys reserved by dcformat were dropped: {reserved[:10]}")
    if bits is not None:
        tensors, quantized = quantize_tensors(tensors, bits=bits, min_elements=min_elements, init=init, progress=progress)
    written = writer.write(tensors, dst, metadata, context)
    # The report lists what the writer lost before what the reader left behind.
    notes.extend(written.notes)
    notes.extend(read.notes)
    if strip_graph is not None:
        strip_onnx(src, strip_graph, names=metadata[ONNX_INITIALIZERS_KEY])
        notes.append(f"graph without the weights written to {os.fspath(strip_graph)}")
    return ConvertReport(
        source=os.fspath(src),
        destination=os.fspath(dst),
        source_format=src_format,
        destination_format=dst_format,
        tensors=len(tensors),
        bytes_in=os.path.getsize(src),
        bytes_out=os.path.getsize(dst),
        quantized=quantized,
        dequantized=list(written.dequantized),
        notes=notes,
    )


__all__ = [
    "ConvertReport",
    "DEFAULT_MIN_ELEMENTS",
    "EXTENSIONS",
    "FORMATS",
    "MissingDependencyError",
    "convert",
    "dense",
    "format_of",
    "quantize_tensors",
    "read_dcf",
    "read_npz",
    "read_onnx",
    "read_safetensors",
    "read_torch",
    "safetensors_layout",
    "SafetensorsLayout",
    "state_dict_arrays",
    "strip_onnx",
    "write_dcf",
    "write_npz",
    "write_onnx",
    "write_safetensors",
    "write_torch",
]
