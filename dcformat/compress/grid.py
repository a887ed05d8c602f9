"""The quantizer of post-training compression and its size model.

Every quantized tensor gets its own codebook: the weights are cut into the cells of a
uniform grid of step ``s`` and each cell is represented by the mean of its weights (its
k-means centroid, with one update); with the codes Huffman-coded by the encoder this is
entropy-coded scalar quantization. A *ladder* of steps per tensor gives the candidates
whose squared error and coded size the allocation (``allocate.py``) chooses among.
"""

from __future__ import annotations

import math

import numpy as np

from ..codecs import bitpack, huffman, streams
from ..codecs.alphabet import symbol_dtype
from ..format import dtypes
from ..format.constants import (
    HUFFMAN_LENGTH_BITS,
    MAX_CODEBOOK_SIZE,
    MAX_HUFFMAN_CODE_LENGTH,
    DType,
)
from ..format.structs import QUANT_HEADER_SIZE, STREAM_HEADER_SIZE
from ..quantize import QuantizedTensor

#: Candidate steps per tensor: ``sigma * 2 ** (-j / 4)`` for j in this range, sigma the scale of the
#: weights' bulk (about 1 to 10.5 bits per weight; storing the tensor exactly is a candidate too).
LADDER = range(-4, 37)
#: Tensors with more elements than this are sized on a sample of them (memory and time).
SAMPLE_LIMIT = 1 << 22
#: Bits per lane the Huffman jump table is assumed to take when sizing candidates.
_JUMP_BITS = 10
#: A Huffman body's fixed fields (spec 7.3.1): table_symbols, lane_count, lane_base_bits, lane_delta_width, payload_bits.
_HUFFMAN_FIXED_BYTES = 4 + 4 + 8 + 1 + 8


class Ladder:
    """The candidate quantizers of one tensor: steps, squared errors, estimated payload bytes."""

    def __init__(self, steps, errors, nbytes, sizes):
        self.steps = np.asarray(steps, dtype=np.float64)
        self.errors = np.asarray(errors, dtype=np.float64)
        self.nbytes = np.asarray(nbytes, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)


def nonzero_sample(flat: np.ndarray, nonzero: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """What :func:`ladder` sizes on: the ``nonzero`` nonzero values of ``flat``, or, beyond
    :data:`SAMPLE_LIMIT` of them, a uniform sample plus the extremes (so no outlier's cell is
    missed); and how many values one sampled value stands for.

    The nonzero values are never gathered into a copy when zeros are rare: the sample's
    k-th nonzero is found among the few zeros' positions (a large embedding with a
    handful of zeros would otherwise take its size again, and 8 bytes per element of positions).
    """
    if nonzero == flat.size:
        values = flat
    elif nonzero <= SAMPLE_LIMIT or (flat.size - nonzero) * RARE_ZEROS > flat.size:
        values = flat[flat != 0]  # few values, or many zeros: the copy is small
    else:
        zero_at, extremes = _zeros_and_extremes(flat)
        pick = rng.integers(0, nonzero, size=SAMPLE_LIMIT)
        # the k-th nonzero lies past every zero with fewer than k + 1 nonzeros before it
        pick += np.searchsorted(zero_at - np.arange(zero_at.size), pick, side="right")
        sample = np.concatenate([flat[pick], extremes])  # as the copy's sample would be, value for value
        return sample, nonzero / sample.size
    if values.size <= SAMPLE_LIMIT:
        return values, 1.0
    pick = rng.integers(0, values.size, size=SAMPLE_LIMIT)
    sample = np.concatenate([values[pick], [values.min(), values.max()]])
    return sample, values.size / sample.size


def _zeros_and_extremes(flat: np.ndarray) -> tuple[np.ndarray, list]:
    """The positions of the zeros of ``flat`` and its smallest and largest nonzero values,
    a chunk at a time (no mask of the whole array)."""
    zero_at, lows, highs = [], [], []
    for lo in range(0, flat.size, QUANTIZE_CHUNK):
        chunk = flat[lo : lo + QUANTIZE_CHUNK]
        nonzero = chunk != 0
        zero_at.append(np.flatnonzero(~nonzero) + lo)
        if nonzero.any():
            lows.append(np.min(chunk, where=nonzero, initial=np.inf))
            highs.append(np.max(chunk, where=nonzero, initial=-np.inf))
    return np.concatenate(zero_at), [min(lows), max(highs)]


def ladder(sample: np.ndarray, scale: float, zeros: int, codebook_itemsize: int, raw_bytes: int) -> Ladder:
    """Every step of :data:`LADDER`, sized on the sorted nonzero values of a tensor, or a
    sample of them (``scale`` values per sampled one; :func:`nonzero_sample`).

    With the values sorted, a grid's cells are index ranges found by ``searchsorted``,
    and each cell's count, sum and sum of squares come from prefix sums: a candidate
    costs O(cells log n), not O(n).
    """
    xs = np.sort(sample.astype(np.float64 if sample.dtype == np.float64 else np.float32))
    prefix = np.concatenate([[0.0], np.cumsum(xs, dtype=np.float64)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(np.square(xs, dtype=np.float64))])
    count = xs.size
    # the scale of the bulk (median |w| / 0.6745 is sigma for a Gaussian), not the rms, which
    # a few huge outliers would inflate until no step of the ladder resolved the bulk
    scale_of_bulk = float(np.median(np.abs(xs))) / 0.6745 if count else 0.0
    sigma = scale_of_bulk if scale_of_bulk > 0 else (math.sqrt(prefix_sq[-1] / count) if count else 0.0)
    steps, errors, nbytes, sizes = [], [], [], []
    if count == 0 or sigma == 0.0:
        return Ladder(steps, errors, nbytes, sizes)
    max_cells = MAX_CODEBOOK_SIZE - (1 if zeros else 0)  # room for the encoder's zero code
    lowest, highest = float(xs[0]), float(xs[-1])
    for j in LADDER:
        step = sigma * 2.0 ** (-j / 4)
        low, high = math.floor(lowest / step + 0.5), math.floor(highest / step + 0.5)
        if high - low < min(4 * max_cells, 8 * count):
            bounds = np.concatenate([[0], np.searchsorted(xs, (np.arange(low, high) + 0.5) * step, side="left"), [count]])
            bounds = bounds[np.concatenate([[True], np.diff(bounds) > 0])]  # drop empty cells
        else:  # outliers far out: find the occupied cells from the data, O(n)
            cells = np.floor(xs / step + 0.5)
            bounds = np.concatenate([[0], np.flatnonzero(np.diff(cells)) + 1, [count]])
        lo, hi = bounds[:-1], bounds[1:]
        counts = hi - lo
        if counts.size > max_cells:
            break
        sums = prefix[hi] - prefix[lo]
        squares = prefix_sq[hi] - prefix_sq[lo]
        error = float(np.maximum(squares - sums * sums / counts, 0.0).sum()) * scale
        hist = np.round(counts * scale).astype(np.int64)
        cells = counts.size
        if zeros:
            hist = np.concatenate([[zeros], hist])
            cells += 1
        size = QUANT_HEADER_SIZE + cells * codebook_itemsize + _stream_bytes(hist, cells)
        if size >= raw_bytes:  # finer steps only grow
            break
        steps.append(step)
        errors.append(error)
        nbytes.append(size)
        sizes.append(counts.size)
    return Ladder(steps, errors, nbytes, sizes)


def _stream_bytes(hist: np.ndarray, alphabet: int) -> int:
    """Bytes of a codes stream, close to what the encoder makes (within about 0.3 %).

    ``streams.estimate_size`` is exact but searches for the shortest Huffman length limit
    within 0.2 % of the best, several package-merges per call; here one package-merge
    at the longest limit, plus that tolerance, plus an estimated jump table, is enough
    to compare candidates, and about four times faster.
    """
    count = int(hist.sum())
    packed = bitpack.packed_size(count, bitpack.width_for(alphabet))
    lengths = huffman.code_lengths(hist, MAX_HUFFMAN_CODE_LENGTH)
    payload_bits = float((hist * lengths.astype(np.int64)).sum()) * (1.0 + huffman.LENGTH_TOLERANCE / 2)
    lanes = huffman.default_lane_count(count)
    coded = (
        _HUFFMAN_FIXED_BYTES + bitpack.packed_size(alphabet, HUFFMAN_LENGTH_BITS) + math.ceil(lanes * _JUMP_BITS / 8) + math.ceil(payload_bits / 8)
    )
    return STREAM_HEADER_SIZE + min(packed, coded)


def round_codebook(codebook: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Centroids rounded to values the tensor's dtype holds exactly (spec 6.3.1), as float64."""
    wire = dtypes.dtype_id(dtype)
    if wire == DType.FLOAT16:
        return codebook.astype(np.float16).astype(np.float64)
    if wire == DType.BFLOAT16:
        return codebook.astype(np.float32).astype(dtypes.bfloat16()).astype(np.float64)
    return codebook.astype(np.float32).astype(np.float64)


#: Elements per chunk of :func:`quantize_step`'s passes (bounds its float64 temporaries).
QUANTIZE_CHUNK = 1 << 20
#: Grids spanning more cells than this (outliers far out) are numbered by their occupied cells instead.
_MAX_GRID_CELLS = 4 * MAX_CODEBOOK_SIZE


def quantize_step(array: np.ndarray, step: float) -> tuple[QuantizedTensor, float]:
    """Cells of width ``step``, each represented by the mean of its weights; zeros stay zero.

    Returns the tensor and its squared error over the quantized (nonzero) entries,
    computed per cell from counts, sums and sums of squares. The passes go a chunk at a
    time, so beyond the tensor itself this holds 1 to 5 bytes per element (cell numbers,
    as narrow as the grid allows, and codes, which overwrite them when of one type).
    Positions (8 bytes per entry) are kept only when zeros are common (:data:`RARE_ZEROS`):
    rarer zeros get a cell of their own, whose centroid is exactly 0, and the tensor stays
    one code per element.
    """
    flat = array.reshape(-1)
    zeros = flat.size - int(np.count_nonzero(flat))
    if zeros == flat.size:
        positions = np.zeros(0, dtype=np.int64)
        return QuantizedTensor.from_entries(array.shape, np.zeros(1), positions, np.zeros(0, np.uint8), dtype=array.dtype), 0.0
    dense = zeros * RARE_ZEROS <= flat.size
    if dense:
        low = int(np.rint(float(flat.min()) / step))
        span = int(np.rint(float(flat.max()) / step)) - low + 1
        dense = zeros == 0 or span <= _MAX_GRID_CELLS  # a far-stretched grid numbers occupied cells: no room for a zero cell
    positions = None if dense else np.flatnonzero(flat)
    values = flat if dense else flat[positions]
    if not dense:
        low = int(np.rint(float(values.min()) / step))
        span = int(np.rint(float(values.max()) / step)) - low + 1
    if span > _MAX_GRID_CELLS:
        cells, counts, sums, squares = _occupied_cells(values, step)
    else:
        # with zeros among the values, cell number ``span`` is theirs: its centroid is 0/count = 0
        bins = span + (1 if zeros and dense else 0)
        cells = np.empty(values.size, dtype=np.min_scalar_type(bins - 1))
        counts = np.zeros(bins, dtype=np.int64)
        sums = np.zeros(bins)
        squares = np.zeros(bins)
        for lo in range(0, values.size, QUANTIZE_CHUNK):
            chunk = values[lo : lo + QUANTIZE_CHUNK].astype(np.float64)
            number = np.rint(chunk / step).astype(np.int64) - low
            if bins > span:
                number[chunk == 0] = span
            cells[lo : lo + QUANTIZE_CHUNK] = number
            counts += np.bincount(number, minlength=bins)
            sums += np.bincount(number, weights=chunk, minlength=bins)
            squares += np.bincount(number, weights=chunk * chunk, minlength=bins)
    used = counts > 0
    counts, sums, squares = counts[used], sums[used], squares[used]
    centroids = round_codebook(sums / counts, array.dtype)
    error = float(np.maximum(squares - 2 * centroids * sums + counts * centroids * centroids, 0.0).sum())
    codebook, merged = np.unique(centroids, return_inverse=True)  # rounding may make two centroids equal
    code_of_cell = merged.reshape(-1)[np.cumsum(used) - 1].astype(symbol_dtype(codebook.size))
    # the codes overwrite the cell numbers when both fit one type (a large tensor's size again saved)
    codes = cells if cells.dtype == code_of_cell.dtype else np.empty(values.size, dtype=code_of_cell.dtype)
    for lo in range(0, values.size, QUANTIZE_CHUNK):
        np.take(code_of_cell, cells[lo : lo + QUANTIZE_CHUNK], out=codes[lo : lo + QUANTIZE_CHUNK])
    cb_dtype = np.float16 if dtypes.dtype_id(array.dtype) == DType.FLOAT16 else np.float32
    if dense:
        q = QuantizedTensor.from_codes(codebook.astype(cb_dtype), codes.reshape(array.shape), dtype=array.dtype)
    else:
        q = QuantizedTensor.from_entries(array.shape, codebook.astype(cb_dtype), positions, codes, dtype=array.dtype)
    return q, error


#: Zeros in at most one element in this many are coded as a cell of their own, not by positions.
#: Below that share the dense layout is the smaller anyway: the gaps of a sparse one cost at
#: least a bit per entry, a zero code about ``-log2(share)`` bits per zero.
RARE_ZEROS = 64


def _occupied_cells(values: np.ndarray, step: float):
    """Cell numbers, counts, sums and sums of squares when outliers stretch the grid: the
    occupied cells are numbered in order (whole-tensor temporaries; rare)."""
    v = values.astype(np.float64)
    cells = np.unique(np.rint(v / step).astype(np.int64), return_inverse=True)[1].reshape(-1)
    counts = np.bincount(cells)
    return cells, counts, np.bincount(cells, weights=v, minlength=counts.size), np.bincount(cells, weights=v * v, minlength=counts.size)


def prune_smallest(array: np.ndarray, fraction: float) -> np.ndarray:
    """A copy with the ``floor(fraction * n)`` smallest magnitudes set to zero (ties at the threshold: any of them)."""
    flat = array.reshape(-1)
    count = math.floor(fraction * flat.size)
    if count <= 0:
        return array
    out = flat.copy()
    smallest = np.argpartition(np.abs(flat.astype(np.float64)), count - 1)[:count]
    out[smallest] = 0
    return out.reshape(array.shape)


def estimated_payload(q: QuantizedTensor) -> int:
    zeros = q.numel - q.entry_count
    hist = huffman.histogram(q.codes, q.codebook.size)
    if zeros:
        hist = np.concatenate([[zeros], hist])
    return QUANT_HEADER_SIZE + hist.size * q.codebook.dtype.itemsize + streams.estimate_size(hist, int(hist.sum()), hist.size)


def sum_of_squares(array: np.ndarray) -> float:
    """``|W|^2`` in float64, a chunk at a time (no float64 copy of a large tensor)."""
    flat = array.reshape(-1)
    return float(sum(np.square(flat[lo : lo + QUANTIZE_CHUNK], dtype=np.float64).sum() for lo in range(0, flat.size, QUANTIZE_CHUNK)))


def relative_error(original: np.ndarray, q: QuantizedTensor, energy: float) -> float:
    """``|W - Q(W)|^2 / |W|^2`` of the decoded tensor against the original."""
    w = original.astype(np.float64).reshape(-1)
    diff = q.dequantize().astype(np.float64).reshape(-1) - w
    return float(np.dot(diff, diff)) / energy if energy else 0.0
