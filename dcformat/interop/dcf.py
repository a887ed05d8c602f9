"""dcformat's own ``.dcf`` files (format name ``dcf``), as one format among the others.

Reading gives every tensor as stored: quantized tensors as :class:`~dcformat.QuantizedTensor`
(codebook, codes, positions), others as arrays, and the user metadata (the reserved
``dcformat.*`` keys are the file's own and are left out). The padding is checked to be zero.
Writing streams one tensor at a time through :class:`~dcformat.io.writers.FileWriter` and
gives the same bytes as :func:`dcformat.save_file`.

Kept: everything, quantized tensors staying quantized, and the user metadata. Nothing is
lost either way. With ``bits`` set, :func:`quantize_tensors` quantizes float tensors on
their way into a ``.dcf`` (the only step of a conversion that changes values).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import EncodeError
from ..format import dtypes
from ..format.constants import FLOAT_DTYPES
from ..format.encode import EncodeOptions
from ..format.reader import DCFile
from ..format.rules import name_order
from ..io.writers import FileWriter
from ..progress import progress as _progress  # the functions here take a `progress` flag
from ..quantize import QuantizedTensor, quantize
from .common import Format, Read, Written, check_names, user_metadata

#: With ``bits`` set, float tensors of at least this many elements are quantized (biases usually are not).
DEFAULT_MIN_ELEMENTS = 1024


def read_dcf(path) -> tuple[dict, dict]:
    """Every tensor of a ``.dcf`` as stored (quantized ones as QuantizedTensor, others as
    arrays), and the user metadata."""
    with DCFile(path) as reader:
        reader.check_padding()
        out = {name: reader.get_stored(name) for name in reader.keys()}
        metadata = user_metadata(reader.metadata())
    return out, metadata


def quantize_tensors(
    tensors: Mapping, *, bits: int, min_elements: int = DEFAULT_MIN_ELEMENTS, init: str = "linear", progress: bool = False
) -> tuple[dict, list[str]]:
    """Float arrays of at least ``min_elements`` elements quantized to ``2**bits`` clusters; (tensors, names quantized)."""
    out, names = dict(tensors), []
    candidates = [
        n
        for n, v in tensors.items()
        if not isinstance(v, QuantizedTensor)
        and dtypes.dtype_id(np.asarray(v).dtype, field=repr(n)) in FLOAT_DTYPES
        and np.asarray(v).size >= min_elements
    ]
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


def write_dcf(
    tensors: Mapping,
    path,
    *,
    metadata: Mapping | None = None,
    options: EncodeOptions | None = None,
    overrides: Mapping | None = None,
    progress: bool = False,
) -> int:
    """Write a ``.dcf`` atomically, one tensor at a time (bytes equal to :func:`dcformat.save_file`'s); returns its size."""

    check_names(tensors)
    overrides = dict(overrides or {})
    # Sorted by UTF-8 bytes as save_file does, so both give the same bytes; the writer rejects bad names.
    names = name_order(tensors)
    with FileWriter(path, metadata=user_metadata(metadata), options=options) as out:
        for name in _progress(names, enabled=progress, desc="encode", total=len(names)):
            out.add(name, tensors[name], options=overrides.get(name))
    return out.size


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _read(path, context) -> Read:
    return Read(*read_dcf(path))


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    write_dcf(tensors, path, metadata=metadata, options=context.options, progress=context.progress)
    return Written([])  # quantized tensors stay quantized


FORMAT = Format("dcf", (".dcf",), read=_read, write=_write)

__all__ = ["DEFAULT_MIN_ELEMENTS", "FORMAT", "quantize_tensors", "read_dcf", "write_dcf"]
