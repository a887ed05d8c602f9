"""The numpy decoding kernels: plans (``format/encodings.py``) into arrays.

The reference implementation every other kernel (torch, compiled) must match bit for bit.
Nothing here checks a payload's structure; that was done when the plan was made. What can
only be known after decoding is checked by calling the plans' and the codecs' checks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from .. import kernels
from ..codecs import streams
from ..codecs import zstd as zstd_frames
from ..errors import FormatError
from ..parallel import map_threads
from ..quantize import QuantizedTensor
from . import dtypes, float_split, sparse
from .constants import DTYPE_STORAGE, Coder, DType, Encoding
from .encodings import DensePlan, FloatSplitPlan, QuantPlan


def storage_array(plan: DensePlan) -> np.ndarray:
    """A raw or zstd tensor's elements in their storage type (bfloat16 as its uint16 bits),
    shaped; raw tensors are read-only views of the payload. Bool bytes are checked to be 0/1."""
    if plan.encoding == Encoding.RAW:
        raw = plan.payload
    else:
        raw = zstd_frames.decompress_exact(plan.payload, plan.nbytes, field=plan.field + ".payload", offset=plan.offset)
    array = np.frombuffer(raw, dtype=DTYPE_STORAGE[plan.dtype])
    if plan.dtype == DType.BOOL and array.size and int(array.max()) > 1:
        raise FormatError(plan.field + ".payload", "a bool tensor holds a byte other than 0 or 1", offset=plan.offset)
    return array.reshape(plan.shape)


def decode(plan: DensePlan | QuantPlan | FloatSplitPlan, *, threads: int = 1, reserve=None) -> np.ndarray:
    """The tensor a plan describes, as a numpy array of its dtype; a decoded (not raw) one in
    pages from ``reserve`` where it has enough (``kernels.output_reserve``)."""
    array, fill = start(plan, reserve=reserve)
    if fill is not None:
        fill(threads)
    return array


def start(plan: DensePlan | QuantPlan | FloatSplitPlan, *, reserve=None) -> tuple[np.ndarray, Callable[[int], None] | None]:
    """The tensor's array, and the work that writes its values: ``fill(threads)``, which
    raises as :func:`decode` does (None for raw and zstd tensors, whole at once). Until
    ``fill`` returns, the array's memory exists but its values do not: for a loader that
    hands the arrays on while a worker decodes (``io.loading.decoding``)."""
    if isinstance(plan, DensePlan):
        return _as_dtype(storage_array(plan), plan), None
    if isinstance(plan, FloatSplitPlan):
        out = kernels.output_array(plan.numel, float_split.bits_dtype(plan.dtype), reserve)
        return _as_dtype(out.view(DTYPE_STORAGE[plan.dtype]).reshape(plan.shape), plan), partial(_float_split_into, plan, out)
    values = plan.values()
    out = kernels.output_array(plan.numel, values.dtype, reserve)  # the tensor itself, in pages of its own
    if plan.gaps is None:  # quant_dense: the codes through the codebook, fused where the kernel can
        return out.reshape(plan.shape), partial(_quant_dense_into, plan, values, out)
    return out.reshape(plan.shape), partial(_quant_sparse_into, plan, values, out)


def _as_dtype(array: np.ndarray, plan: DensePlan | FloatSplitPlan) -> np.ndarray:
    """Storage elements as the tensor's dtype (bool and bfloat16 are stored as bytes and bits)."""
    if plan.dtype in (DType.BOOL, DType.BFLOAT16):
        return array.view(dtypes.numpy_dtype(plan.dtype, field=plan.field, offset=plan.offset))
    return array


def _quant_dense_into(plan: QuantPlan, values: np.ndarray, out: np.ndarray, threads: int) -> None:
    streams.decode(plan.codes, threads=threads, values=values, out=out)


def _quant_sparse_into(plan: QuantPlan, values: np.ndarray, out: np.ndarray, threads: int) -> None:
    codes, gap_symbols = decode_streams(plan, threads=threads)
    sparse.scatter(out, gap_symbols, codes, values, threads=threads)


def float_split_blocks(plan: FloatSplitPlan, *, threads: int = 1):
    """Each block's element range and its streams' symbols, checked, one block at a time."""
    for (lo, hi), block in zip(float_split.blocks(plan.numel, plan.block_elements), plan.blocks):
        yield lo, hi, [streams.decode(stream, threads=threads) for stream in block]


def _float_split_into(plan: FloatSplitPlan, out: np.ndarray, threads: int) -> None:
    native = kernels.compiled()
    if native is not None:
        _float_split_compiled(native, plan, out, threads)
    else:
        for lo, hi, symbols in float_split_blocks(plan, threads=threads):
            out[lo:hi] = float_split.join(symbols, plan.dtype, plan.head_bits)


def _float_split_compiled(native, plan: FloatSplitPlan, out: np.ndarray, threads: int) -> None:
    """Per block, on up to ``threads`` threads (a block's streams are too short to split): the
    heads decoded straight into the output (through a table of ``head << low``), then the
    planes merged into it there, bit-packed planes read from the payload as they are."""
    exponent, mantissa = float_split.fields(plan.dtype)
    low = mantissa - plan.head_bits
    widths = np.array(float_split.plane_widths(plan.dtype, plan.head_bits), dtype=np.uint8)
    head_table = np.arange(1 << (exponent + plan.head_bits), dtype=out.dtype) << out.dtype.type(low)

    def decode_block(item) -> None:
        (lo, hi), (heads, *planes) = item
        block = streams.decode(heads, values=head_table, out=out[lo:hi])
        bodies = tuple(p.body if p.coder == Coder.BITPACK else streams.decode(p) for p in planes)
        packed = np.array([p.coder == Coder.BITPACK for p in planes], dtype=np.uint8)
        native.float_split_merge(block, bodies, widths, packed, block.view(np.uint8), out.itemsize, low, exponent + mantissa)

    map_threads(decode_block, zip(float_split.blocks(plan.numel, plan.block_elements), plan.blocks), threads)


def decode_quantized(plan: QuantPlan, *, threads: int = 1) -> QuantizedTensor:
    """A quantized tensor's codebook and entries (fillers included), without dequantizing."""
    codes, gap_symbols = decode_streams(plan, threads=threads)
    positions = None if gap_symbols is None else sparse.positions(gap_symbols)
    return QuantizedTensor(plan.shape, plan.out_dtype, plan.codebook.copy(), codes, positions)


def decode_streams(plan: QuantPlan, *, threads: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """The code symbols and (quant_sparse) gap symbols, with the last position checked."""
    codes = streams.decode(plan.codes, threads=threads)
    if plan.gaps is None:
        return codes, None
    gap_symbols = streams.decode(plan.gaps, threads=threads)
    if gap_symbols.size:
        plan.check_last_position(sparse.last_position(gap_symbols))
    return codes, gap_symbols
