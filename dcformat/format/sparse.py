"""The quant_sparse index: relative positions with filler entries, the paper's sparse-index
scheme (spec sections 6.4 and 6.5).

Entry ``i`` stores a gap ``g[i]`` in ``0 .. 2**b - 1``; its position is
``p[i] = p[i-1] + g[i] + 1`` with ``p[-1] = -1``, i.e. ``p = cumsum(g + 1) - 1``.
When the distance to the next stored entry is too long for ``b`` bits, the encoder
inserts *fillers*: entries of gap ``2**b - 1`` (advancing ``2**b`` positions) whose code
decodes to zero. Fillers are ordinary entries to a decoder.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..codecs.alphabet import symbol_dtype
from ..parallel import map_threads

#: Entries turned into positions per block while decoding, bounding the int64 temporaries.
_BLOCK_ENTRIES = 1 << 18


def true_gaps(positions: np.ndarray) -> np.ndarray:
    """Zero-based distance of each position from the previous one (``p[i] - p[i-1] - 1``)."""
    if positions.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.diff(positions, prepend=-1) - 1


def filler_counts(gaps: np.ndarray, gap_bits: int) -> np.ndarray:
    """Fillers needed before each entry at gap width ``gap_bits``."""
    return gaps >> gap_bits


def gap_histogram(gaps: np.ndarray, gap_bits: int) -> tuple[np.ndarray, int]:
    """Histogram of the gap symbols at width ``gap_bits`` (fillers included), and the filler count."""
    fillers = int(filler_counts(gaps, gap_bits).sum())
    hist = np.bincount(gaps & ((1 << gap_bits) - 1), minlength=1 << gap_bits).astype(np.int64)
    hist[-1] += fillers
    return hist, fillers


def with_fillers(gaps: np.ndarray, codes: np.ndarray, gap_bits: int, filler_code: int) -> tuple[np.ndarray, np.ndarray]:
    """The entry sequence on the wire: fillers inserted before the entries that need them."""
    fillers = filler_counts(gaps, gap_bits)
    max_gap = (1 << gap_bits) - 1
    wire_dtype = symbol_dtype(1 << gap_bits)
    if not fillers.any():
        return gaps.astype(wire_dtype), codes
    total = gaps.size + int(fillers.sum())
    real_index = np.arange(gaps.size) + np.cumsum(fillers)  # fillers come first
    wire_gaps = np.full(total, max_gap, dtype=wire_dtype)
    wire_gaps[real_index] = gaps & max_gap
    wire_codes = np.full(total, filler_code, dtype=codes.dtype)
    wire_codes[real_index] = codes
    return wire_gaps, wire_codes


def scatter(out: np.ndarray, gap_symbols: np.ndarray, codes: np.ndarray, table: np.ndarray, *, threads: int = 1) -> None:
    """Write ``table[codes]`` at the positions the gaps give.

    Works in blocks so the int64 positions and gathered values never take more than a
    few MiB per thread. With ``threads > 1`` the entries are cut into spans whose first
    positions come from the sums of the gaps before them, and each thread fills its span.
    The caller has checked the last position against the tensor size (via
    :func:`last_position`), so every index is in range.
    """
    count = gap_symbols.size
    native = kernels.compiled()
    symbol_types = (np.dtype(np.uint8), np.dtype(np.uint16))
    if native is not None and out.flags.c_contiguous and table.size and gap_symbols.dtype in symbol_types and codes.dtype in symbol_types:
        # one sequential pass, no positions stored: fast enough that threads would not pay
        contiguous = np.ascontiguousarray
        native.scatter(
            contiguous(gap_symbols), gap_symbols.dtype.itemsize, contiguous(codes), codes.dtype.itemsize, contiguous(table).view(np.uint8), table.dtype.itemsize,
            out.reshape(-1).view(np.uint8),
        )  # fmt: skip
        return
    spans = max(1, min(int(threads), count // _BLOCK_ENTRIES))
    edges = np.linspace(0, count, spans + 1).astype(np.int64)
    # position before each span = sum of (gap + 1) over the entries before it, minus one
    span_sums = [int(gap_symbols[lo:hi].sum(dtype=np.int64)) + int(hi - lo) for lo, hi in zip(edges[:-1], edges[1:])]
    before = np.concatenate([[0], np.cumsum(span_sums)[:-1]]) - 1

    def fill(span: int) -> None:
        carry = int(before[span])
        for start in range(int(edges[span]), int(edges[span + 1]), _BLOCK_ENTRIES):
            stop = min(start + _BLOCK_ENTRIES, int(edges[span + 1]))
            block = gap_symbols[start:stop].astype(np.int64)
            block += 1
            np.cumsum(block, out=block)
            block += carry
            out[block] = np.take(table, codes[start:stop])
            carry = int(block[-1])

    map_threads(fill, range(spans), spans)


def last_position(gap_symbols: np.ndarray) -> int:
    """Position of the last entry, ``n - 1 + sum(g)``, exact (spec 6.5.1), without a big temporary.

    The gaps are summed as uint64, which cannot overflow: n <= N <= 2**48 gaps of at most
    2**16 - 1 sum to at most 2**64 - 2**48 (an int64 sum could wrap past 2**63 and pass the
    check). The ``n - 1`` is added as a Python int. Only once this is below N are the
    int64 cumulative sums of :func:`scatter` and :func:`positions` taken, which then stay
    below 2**48.
    """
    return int(gap_symbols.sum(dtype=np.uint64)) + gap_symbols.size - 1


def positions(gap_symbols: np.ndarray) -> np.ndarray:
    """Every entry's position (int64), fillers included: ``cumsum(g + 1) - 1``."""
    return np.cumsum(gap_symbols.astype(np.int64) + 1) - 1
