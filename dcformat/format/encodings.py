"""The tensor encodings (spec section 6): a payload checked into a plan.

This module is the one place where a payload's structure is validated. :func:`plan_payload`
checks every field of a payload against its directory entry and its own length before
anything of the tensor's size is allocated, and returns a plan: a :class:`DensePlan` (raw,
zstd), a :class:`QuantPlan` (quant_dense, quant_sparse) or a :class:`FloatSplitPlan`
(float_split), whose streams are :class:`~dcformat.codecs.streams.StreamPlan`. Decoding kernels (numpy in
``format/decode.py``, torch in ``dcformat.torch.decode``) run only over plans, and call the
checks here and in the codecs for what can only be known after decoding (a symbol outside
its alphabet, a position past the end, a lane's end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codecs import streams
from ..errors import FormatError, LimitError
from . import dtypes, float_split
from .constants import (
    CODEBOOK_DTYPES,
    DTYPE_ITEMSIZE,
    DTYPE_STORAGE,
    EXPANSION_SLACK,
    FLOAT_DTYPES,
    MAX_CODEBOOK_SIZE,
    MAX_EXPANSION,
    MAX_GAP_BITS,
    DType,
    Encoding,
)
from .structs import FLOAT_SPLIT_HEADER_SIZE, QUANT_HEADER_SIZE, STREAM_HEADER_SIZE, parse_float_split_header, parse_quant_header


def numel_of(shape) -> int:
    return math.prod(map(int, shape))  # Python ints: no overflow however large


def decoded_nbytes(dtype: DType, shape) -> int:
    return numel_of(shape) * DTYPE_ITEMSIZE[dtype]


def within_expansion(decoded: int, payload_length: int, max_expansion: int = MAX_EXPANSION) -> bool:
    """Spec 9: a tensor decodes to at most ``max_expansion * (payload + 64)`` bytes."""
    return decoded <= max_expansion * (payload_length + EXPANSION_SLACK)


@dataclass(frozen=True)
class DensePlan:
    """A raw or zstd payload: the element bytes as stored (raw: length checked; zstd: the
    frame, checked while it is decompressed to exactly ``nbytes``)."""

    dtype: DType
    encoding: Encoding
    shape: tuple
    payload: memoryview
    field: str
    offset: int

    @property
    def nbytes(self) -> int:
        return decoded_nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class QuantPlan:
    """A quantized payload with its header and codebook checked and its streams planned."""

    dtype: DType
    encoding: Encoding
    shape: tuple
    numel: int
    codebook: np.ndarray  # as stored
    gap_bits: int  # 0 for quant_dense
    entry_count: int
    codes: streams.StreamPlan
    gaps: streams.StreamPlan | None
    field: str
    offset: int

    @property
    def out_dtype(self) -> np.dtype:
        """The numpy dtype of the decoded tensor (bfloat16 needs ml_dtypes)."""
        return dtypes.numpy_dtype(self.dtype, field=self.field, offset=self.offset)

    def values(self) -> np.ndarray:
        """The codebook converted (exactly: checked by :func:`plan_payload`) to the tensor's dtype."""
        return self.codebook.astype(self.out_dtype)

    def check_last_position(self, last: int) -> None:
        """Spec 6.5.1: the last entry must lie inside the tensor. ``last`` is the position a
        kernel computed for it (the sum of every gap plus one, minus one)."""
        if self.entry_count and last >= self.numel:
            raise FormatError(
                self.gaps.field, f"entries run to position {last}, past the end of the tensor ({self.numel} elements)", offset=self.gaps.offset
            )


@dataclass(frozen=True)
class FloatSplitPlan:
    """A float_split payload (spec 6.6): its header checked, every block's streams (the head
    stream, then one per plane of the rest) framed and planned."""

    dtype: DType
    shape: tuple
    numel: int
    head_bits: int
    block_elements: int
    blocks: tuple  # per block, a tuple of StreamPlan: heads first, then the planes
    field: str
    offset: int

    encoding = Encoding.FLOAT_SPLIT


def plan_payload(dtype: DType, encoding: Encoding, shape, payload, *, field: str, offset: int) -> DensePlan | QuantPlan | FloatSplitPlan:
    """Check a payload (a buffer) against its entry and return its plan.

    ``offset`` is the payload's file offset, used in error messages.
    """
    shape = tuple(shape)
    if encoding in (Encoding.RAW, Encoding.ZSTD):
        nbytes = decoded_nbytes(dtype, shape)
        if encoding == Encoding.RAW and len(payload) != nbytes:
            raise FormatError(
                field + ".payload_length",
                f"raw payload holds {len(payload)} bytes, shape {shape} of {dtypes.name(dtype)} needs {nbytes}",
                offset=offset,
            )
        return DensePlan(dtype, encoding, shape, payload, field, offset)
    if encoding == Encoding.FLOAT_SPLIT:
        return _plan_float_split(dtype, shape, payload, field=field, offset=offset)
    return _plan_quantized(dtype, encoding, shape, payload, field=field, offset=offset)


def _plan_quantized(dtype: DType, encoding: Encoding, shape: tuple, payload, *, field: str, offset: int) -> QuantPlan:
    """Spec 6.3-6.5 and 7.1: header, codebook, stream framing and every stream's own checks."""
    numel = numel_of(shape)
    if dtype not in FLOAT_DTYPES:
        raise FormatError(field + ".dtype", f"a quantized tensor must decode to a float dtype, not {dtypes.name(dtype)}", offset=offset)
    out_dtype = dtypes.numpy_dtype(dtype, field=field, offset=offset)
    end = len(payload)
    if end < QUANT_HEADER_SIZE:
        raise FormatError(
            field + ".quant_header", f"payload of {end} bytes is shorter than the {QUANT_HEADER_SIZE}-byte quantized header", offset=offset
        )
    header = parse_quant_header(payload[:QUANT_HEADER_SIZE])
    try:
        cb_dtype = DType(header.codebook_dtype)
    except ValueError:
        cb_dtype = None
    if cb_dtype not in CODEBOOK_DTYPES:
        raise FormatError(field + ".codebook_dtype", f"codebook dtype id {header.codebook_dtype} is not float32 (1) or float16 (2)", offset=offset)
    if header.reserved != 0:
        raise FormatError(field + ".reserved", "reserved field is not zero", offset=offset + 2)
    size = header.codebook_size
    if not 1 <= size <= MAX_CODEBOOK_SIZE:
        raise LimitError(field + ".codebook_size", f"{size} is outside 1..{MAX_CODEBOOK_SIZE}", offset=offset + 4)
    count = header.entry_count
    if encoding == Encoding.QUANT_DENSE:
        if header.gap_bits != 0:
            raise FormatError(field + ".gap_bits", f"must be 0 for quant_dense, got {header.gap_bits}", offset=offset + 1)
        if count != numel:
            raise FormatError(field + ".entry_count", f"quant_dense stores every element: expected {numel}, got {count}", offset=offset + 8)
    else:
        if not 1 <= header.gap_bits <= MAX_GAP_BITS:
            raise FormatError(field + ".gap_bits", f"{header.gap_bits} is outside 1..{MAX_GAP_BITS}", offset=offset + 1)
        if count > numel:
            raise FormatError(field + ".entry_count", f"{count} entries cannot fit in {numel} elements", offset=offset + 8)
    pos = QUANT_HEADER_SIZE
    cb_bytes = size * DTYPE_ITEMSIZE[cb_dtype]
    if end - pos < cb_bytes:
        raise FormatError(field + ".codebook", f"codebook of {size} entries needs {cb_bytes} bytes, {end - pos} left", offset=offset + pos)
    codebook = np.frombuffer(bytes(payload[pos : pos + cb_bytes]), dtype=DTYPE_STORAGE[cb_dtype])
    if not np.isfinite(codebook).all():
        raise FormatError(field + ".codebook", "codebook holds NaN or infinity", offset=offset + pos)
    with np.errstate(over="ignore", invalid="ignore"):  # a value too big for float16 becomes inf: rejected below
        values = codebook.astype(out_dtype)
    if not np.array_equal(values.astype(np.float64), codebook.astype(np.float64)):
        raise FormatError(field + ".codebook", f"codebook values are not exactly representable in {dtypes.name(dtype)}", offset=offset + pos)
    pos += cb_bytes
    coder, start, stop = streams.read_header(payload, pos, end, field=field + ".codes", base=offset)
    codes_body, pos = payload[start:stop], stop
    gaps_header = None
    if encoding == Encoding.QUANT_SPARSE:
        gaps_header = streams.read_header(payload, pos, end, field=field + ".gaps", base=offset)
        pos = gaps_header[2]
    if pos != end:
        raise FormatError(field + ".payload", f"{end - pos} bytes follow the last stream", offset=offset + pos)
    # the framing holds: now each stream's own checks (Huffman tables and lanes, bit-packed lengths)
    codes = streams.plan(coder, codes_body, count, size, field=field + ".codes", offset=offset + start)
    gaps = None
    if gaps_header is not None:
        gap_coder, start, stop = gaps_header
        gaps = streams.plan(gap_coder, payload[start:stop], count, 1 << header.gap_bits, field=field + ".gaps", offset=offset + start)
    return QuantPlan(dtype, encoding, shape, numel, codebook, header.gap_bits, count, codes, gaps, field, offset)


def _plan_float_split(dtype: DType, shape: tuple, payload, *, field: str, offset: int) -> FloatSplitPlan:
    """Spec 6.6: a float dtype, the 8-byte header, then every block's 1 + Q streams back to back,
    ending with the payload. The number of blocks is checked against the payload's length
    before any block is looked at."""
    if dtype not in FLOAT_DTYPES:
        raise FormatError(field + ".dtype", f"float_split stores float dtypes only, not {dtypes.name(dtype)}", offset=offset)
    numel = numel_of(shape)
    end = len(payload)
    if end < FLOAT_SPLIT_HEADER_SIZE:
        raise FormatError(
            field + ".float_split_header", f"payload of {end} bytes is shorter than the {FLOAT_SPLIT_HEADER_SIZE}-byte header", offset=offset
        )
    header = parse_float_split_header(payload[:FLOAT_SPLIT_HEADER_SIZE])
    if any(header.reserved):
        raise FormatError(field + ".reserved", "reserved bytes are not zero", offset=offset + 1)
    if header.head_bits > float_split.max_head_bits(dtype):
        raise FormatError(
            field + ".head_bits", f"{header.head_bits} is over {float_split.max_head_bits(dtype)} for {dtypes.name(dtype)}", offset=offset
        )
    if header.block_elements < float_split.MIN_BLOCK_ELEMENTS:
        raise FormatError(
            field + ".block_elements", f"{header.block_elements} is under the minimum of {float_split.MIN_BLOCK_ELEMENTS}", offset=offset + 4
        )
    alphabets = float_split.alphabets(dtype, header.head_bits)
    count = -(-numel // header.block_elements)
    if count * len(alphabets) * STREAM_HEADER_SIZE > end - FLOAT_SPLIT_HEADER_SIZE:
        raise FormatError(field + ".payload", f"{count} blocks of {len(alphabets)} streams cannot fit in {end} bytes", offset=offset)
    names = ["heads"] + [f"planes[{k}]" for k in range(len(alphabets) - 1)]
    framed, pos = [], FLOAT_SPLIT_HEADER_SIZE
    for block, (lo, hi) in enumerate(float_split.blocks(numel, header.block_elements)):  # a few per million elements
        for name, alphabet in zip(names, alphabets):  # framing first: nothing is planned past a bad one
            where = f"{field}.blocks[{block}].{name}"
            coder, start, stop = streams.read_header(payload, pos, end, field=where, base=offset)
            framed.append((coder, start, stop, hi - lo, alphabet, where))
            pos = stop
    if pos != end:
        raise FormatError(field + ".payload", f"{end - pos} bytes follow the last stream", offset=offset + pos)
    planned = [
        streams.plan(coder, payload[start:stop], n, alphabet, field=where, offset=offset + start) for coder, start, stop, n, alphabet, where in framed
    ]
    per_block = tuple(tuple(planned[k : k + len(alphabets)]) for k in range(0, len(planned), len(alphabets)))
    return FloatSplitPlan(dtype, shape, numel, header.head_bits, header.block_elements, per_block, field, offset)
