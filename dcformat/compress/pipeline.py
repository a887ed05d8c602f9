"""Post-training compression of any model's weights, for models nobody will retrain.

Deep Compression retrains after pruning and after quantizing; a model downloaded for
inference gets neither. What is left is choosing, per tensor, how coarsely to quantize
it, and this module's job is to choose well::

    tensors, report = compress_tensors(arrays)                   # name -> ndarray
    report = compress_file("model.safetensors", "model.dcf")     # or a .dcf as input

**The quantizer.** Every quantized tensor gets its own codebook: the weights are cut
into the cells of a uniform grid of step ``s`` and each cell is represented by the mean
of its weights (its k-means centroid: the grid is the paper's linear initialisation,
with one centroid per non-empty cell, and one update). With the codes Huffman-coded by
the encoder this is entropy-coded scalar quantization. Measured on MiniLM's layers,
further Lloyd iterations change the error by less than 0.05 dB at equal coded size, and
Huffman-coded k-means codebooks of ``2**bits`` entries lie within about 0.3 dB of it;
what the grid adds is a size tunable in quarter-bit steps, and outliers (trained
transformers have weights 100 standard deviations out) in cells of their own instead
of stretching every cell.

**The allocation.** For each tensor a ladder of steps (quarter-bit apart, scaled to the
bulk of its weights) gives candidates whose squared error and coded size (from the
histogram of their codes, as the encoder will code them) are computed on the sorted
weights with prefix sums, so no candidate is encoded. A candidate's *distortion* is
``importance x relative error``, the relative error being ``|W - Q(W)|^2 / |W|^2``:
to first order the relative error a layer adds to its output, and through the residual
stream to the model's output. A Lagrangian search picks one candidate per tensor so the
whole file fits ``target_bits_per_weight`` (every element of every tensor counted, raw
tensors, codebooks and the file's index included) at the least total distortion.
``importance`` weights kinds of tensors by name (:data:`TRANSFORMER_IMPORTANCE` by
default; :func:`importance_from_scores` turns measured per-tensor sensitivities into
one). Without it each tensor's relative error counts the same, which already gives
small tensors more bits than large ones.

Tensors that are not floats, that have fewer than two dimensions (biases, LayerNorm),
fewer than ``min_elements`` elements, or a name matching ``keep_dense`` are stored
exactly. ``bits`` fixes the codebook size of tensors (``quantize``'s k-means with at
most ``2**bits`` centroids); ``prune`` zeroes the smallest weights first (zeros stay
exactly zero and are not quantized). Without retraining pruning costs accuracy fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..format import dtypes
from ..codecs import bitpack, huffman, streams
from ..format.constants import (
    ALIGNMENT,
    DATA_START,
    FLOAT_DTYPES,
    HUFFMAN_LENGTH_BITS,
    MAX_CODEBOOK_SIZE,
    MAX_HUFFMAN_CODE_LENGTH,
    DType,
)
from ..format.reader import DCFile
from ..format.writer import encode_metadata
from ..io.writers import FileWriter
from ..format.encode import EncodedTensor, EncodeOptions, encode_tensor
from ..errors import EncodeError
from ..format.structs import INDEX_CRC_SIZE, QUANT_HEADER_SIZE, STREAM_HEADER_SIZE, entry_size
from ..parallel import imap_bounded, resolve_threads
from ..progress import progress as _progress  # the functions here take a `progress` flag
from ..quantize import INITS, QuantizedTensor, quantize
from ..io.shards import ShardedFile, ShardedWriter
from ..interop.sources import as_array, open_source

#: Average bits per weight of the whole file that ``compress_tensors`` aims for by default.
DEFAULT_TARGET_BITS_PER_WEIGHT = 4.5
#: Float tensors with fewer elements stay exact (their codebook would cost more than it saves).
DEFAULT_MIN_ELEMENTS = 4096
#: The default distortion weights by kind of tensor, for transformer-style models:
#: ``(regex, weight)``, the first pattern found in a name (``re.search``) wins, and names
#: matching none weigh 1. Attention's query and key projections feed a softmax that
#: tolerates a small relative error in its logits far better than the value, output
#: and MLP projections tolerate one in theirs (the attention pattern barely moves).
TRANSFORMER_IMPORTANCE: tuple[tuple[str, float], ...] = (
    (r"(^|[._])(query|key|q_proj|k_proj|wq|wk|q|k)([._]|$)", 0.1),
)
#: Candidate steps per tensor: ``sigma * 2 ** (-j / 4)`` for j in this range, sigma the scale of the
#: weights' bulk (about 1 to 10.5 bits per weight; storing the tensor exactly is a candidate too).
LADDER = range(-4, 37)
#: Tensors with more elements than this are sized on a sample of them (memory and time).
SAMPLE_LIMIT = 1 << 22
#: Bits per lane the Huffman jump table is assumed to take when sizing candidates.
_JUMP_BITS = 10
#: A Huffman body's fixed fields (spec 7.3.1): table_symbols, lane_count, lane_base_bits, lane_delta_width, payload_bits.
_HUFFMAN_FIXED_BYTES = 4 + 4 + 8 + 1 + 8
# ======================================================================================
# Options
# ======================================================================================

def _patterns(value, *, option: str) -> list[re.Pattern]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise EncodeError(f"must be regular expressions (str), got {item!r}", field=option)
        try:
            out.append(re.compile(item))
        except re.error as exc:
            raise EncodeError(f"{item!r} is not a regular expression ({exc})", field=option) from None
    return out


def _rules(value, *, option: str, check: Callable[[object], object]) -> list[tuple[re.Pattern, object]]:
    """A value for every tensor, or a mapping of regex -> value (first match wins)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = [(".*", value)]
    out = []
    for pattern, item in pairs:
        (compiled,) = _patterns(pattern, option=option)
        out.append((compiled, check(item)))
    return out


def _first(rules, name: str):
    for pattern, value in rules:
        if pattern.search(name):
            return value
    return None


def _check_bits(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 16:
        raise EncodeError(f"must be an integer in 1..16, got {value!r}", field="bits")
    return int(value)


def _check_prune(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) < 1.0:
        raise EncodeError(f"must be a fraction in [0, 1), got {value!r}", field="prune")
    return float(value)


def _check_weight(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value) or value < 0:
        raise EncodeError(f"weights must be finite numbers >= 0, got {value!r}", field="importance")
    return float(value)


def importance_from_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """An ``importance`` mapping giving each named tensor exactly its score.

    ``scores`` are per-tensor sensitivities measured some other way (for example the
    loss in output similarity per unit of relative error); names are matched exactly.
    """
    return {"^" + re.escape(name) + "$": _check_weight(score) for name, score in scores.items()}


# ======================================================================================
# Per-tensor candidates
# ======================================================================================

class _Ladder:
    """The candidate quantizers of one tensor: steps, squared errors, estimated payload bytes."""

    def __init__(self, steps, errors, nbytes, sizes):
        self.steps = np.asarray(steps, dtype=np.float64)
        self.errors = np.asarray(errors, dtype=np.float64)
        self.nbytes = np.asarray(nbytes, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)


def _ladder(values: np.ndarray, zeros: int, codebook_itemsize: int, raw_bytes: int, rng: np.random.Generator) -> _Ladder:
    """Every step of :data:`LADDER`, sized on the sorted (possibly sampled) nonzero values.

    With the values sorted, a grid's cells are index ranges found by ``searchsorted``,
    and each cell's count, sum and sum of squares come from prefix sums: a candidate
    costs O(cells log n), not O(n).
    """
    n = values.size
    scale = 1.0
    if n > SAMPLE_LIMIT:  # a uniform sample, plus the extremes so no outlier's cell is missed
        pick = rng.integers(0, n, size=SAMPLE_LIMIT)
        sample = np.concatenate([values[pick], [values.min(), values.max()]])
        scale = n / sample.size
    else:
        sample = values
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
        return _Ladder(steps, errors, nbytes, sizes)
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
    return _Ladder(steps, errors, nbytes, sizes)


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
    coded = _HUFFMAN_FIXED_BYTES + bitpack.packed_size(alphabet, HUFFMAN_LENGTH_BITS) + math.ceil(lanes * _JUMP_BITS / 8) + math.ceil(payload_bits / 8)
    return STREAM_HEADER_SIZE + min(packed, coded)


def _round_codebook(codebook: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Centroids rounded to values the tensor's dtype holds exactly (spec 6.3.1), as float64."""
    wire = dtypes.dtype_id(dtype)
    if wire == DType.FLOAT16:
        return codebook.astype(np.float16).astype(np.float64)
    if wire == DType.BFLOAT16:
        return codebook.astype(np.float32).astype(dtypes.BFLOAT16).astype(np.float64)
    return codebook.astype(np.float32).astype(np.float64)


#: Elements per chunk of :func:`_quantize_step`'s passes (bounds its float64 temporaries).
QUANTIZE_CHUNK = 1 << 20
#: Grids spanning more cells than this (outliers far out) are numbered by their occupied cells instead.
_MAX_GRID_CELLS = 4 * MAX_CODEBOOK_SIZE


def _quantize_step(array: np.ndarray, step: float) -> tuple[QuantizedTensor, float]:
    """Cells of width ``step``, each represented by the mean of its weights; zeros stay zero.

    Returns the tensor and its squared error over the quantized (nonzero) entries,
    computed per cell from counts, sums and sums of squares. The passes go a chunk at a
    time, so beyond the tensor itself this holds about 5 bytes per element (cell numbers
    and codes), and no positions at all when no weight is zero.
    """
    flat = array.reshape(-1)
    dense = int(np.count_nonzero(flat)) == flat.size
    positions = None if dense else np.flatnonzero(flat)
    values = flat if dense else flat[positions]
    if values.size == 0:
        return QuantizedTensor.from_entries(array.shape, np.zeros(1), positions, np.zeros(0, np.uint8), dtype=array.dtype), 0.0
    low = int(np.rint(float(values.min()) / step))
    span = int(np.rint(float(values.max()) / step)) - low + 1
    if span > _MAX_GRID_CELLS:
        cells, counts, sums, squares = _occupied_cells(values, step)
    else:
        cells = np.empty(values.size, dtype=np.int32)
        counts = np.zeros(span, dtype=np.int64)
        sums = np.zeros(span)
        squares = np.zeros(span)
        for lo in range(0, values.size, QUANTIZE_CHUNK):
            chunk = values[lo : lo + QUANTIZE_CHUNK].astype(np.float64)
            number = np.rint(chunk / step).astype(np.int64) - low
            cells[lo : lo + QUANTIZE_CHUNK] = number
            counts += np.bincount(number, minlength=span)
            sums += np.bincount(number, weights=chunk, minlength=span)
            squares += np.bincount(number, weights=chunk * chunk, minlength=span)
    used = counts > 0
    counts, sums, squares = counts[used], sums[used], squares[used]
    centroids = _round_codebook(sums / counts, array.dtype)
    error = float(np.maximum(squares - 2 * centroids * sums + counts * centroids * centroids, 0.0).sum())
    codebook, merged = np.unique(centroids, return_inverse=True)  # rounding may make two centroids equal
    code_of_cell = merged.reshape(-1)[np.cumsum(used) - 1].astype(np.uint8 if codebook.size <= 256 else np.uint16)
    codes = np.empty(values.size, dtype=code_of_cell.dtype)
    for lo in range(0, values.size, QUANTIZE_CHUNK):
        np.take(code_of_cell, cells[lo : lo + QUANTIZE_CHUNK], out=codes[lo : lo + QUANTIZE_CHUNK])
    cb_dtype = np.float16 if dtypes.dtype_id(array.dtype) == DType.FLOAT16 else np.float32
    if dense:
        q = QuantizedTensor.from_codes(codebook.astype(cb_dtype), codes.reshape(array.shape), dtype=array.dtype)
    else:
        q = QuantizedTensor.from_entries(array.shape, codebook.astype(cb_dtype), positions, codes, dtype=array.dtype)
    return q, error


def _occupied_cells(values: np.ndarray, step: float):
    """Cell numbers, counts, sums and sums of squares when outliers stretch the grid: the
    occupied cells are numbered in order (whole-tensor temporaries; rare)."""
    v = values.astype(np.float64)
    cells = np.unique(np.rint(v / step).astype(np.int64), return_inverse=True)[1].reshape(-1)
    counts = np.bincount(cells)
    return cells, counts, np.bincount(cells, weights=v, minlength=counts.size), np.bincount(cells, weights=v * v, minlength=counts.size)


def _prune(array: np.ndarray, fraction: float) -> np.ndarray:
    """A copy with the ``floor(fraction * n)`` smallest magnitudes set to zero (ties at the threshold: any of them)."""
    flat = array.reshape(-1)
    count = math.floor(fraction * flat.size)
    if count <= 0:
        return array
    out = flat.copy()
    smallest = np.argpartition(np.abs(flat.astype(np.float64)), count - 1)[:count]
    out[smallest] = 0
    return out.reshape(array.shape)


# ======================================================================================
# The library API
# ======================================================================================

def _classify(name: str, array: np.ndarray, keep_dense, min_elements: int) -> str | None:
    """Why a tensor stays exact (None: it is quantized)."""
    if any(p.search(name) for p in keep_dense):
        return "keep-dense"
    wire = dtypes.dtype_id(array.dtype, field=repr(name))
    if wire not in FLOAT_DTYPES:
        return "not float"
    if array.ndim < 2:
        return "fewer than 2 dimensions"
    if array.size < min_elements:
        return f"fewer than {min_elements} elements"
    if not np.isfinite(array).all():
        return "holds NaN or infinity"
    return None


def _index_bytes(names, ranks, metadata_bytes: int) -> int:
    """The file's fixed cost: header, index, and on average half an alignment per payload."""
    directory = sum(entry_size(len(n.encode("utf-8")), r) for n, r in zip(names, ranks))
    return DATA_START + metadata_bytes + directory + INDEX_CRC_SIZE + (ALIGNMENT // 2) * len(names)


class _Plan:
    """What pass 1 decided for one quantized (or allocated-raw) tensor."""

    __slots__ = ("prune", "pruned_error", "energy", "bits", "step")

    def __init__(self, prune: float, pruned_error: float, energy: float, bits: int | None):
        self.prune = prune                # fraction of the smallest weights zeroed first
        self.pruned_error = pruned_error  # squared error that pruning adds
        self.energy = energy              # |W|^2 of the original tensor
        self.bits = bits                  # fixed k-means bits, or None: a step of the ladder
        self.step = None                  # the allocated step (None with bits=None: stored exactly)


class CompressionPlan:
    """What :func:`plan_compression` decided for every tensor of a model; it holds no tensor data.

    Compressing is two passes over the model: the plan looks at every tensor once (its
    statistics and candidate sizes) and allocates the size budget; :meth:`apply` then
    takes each tensor again and returns what to write. So a model is compressed
    holding one tensor at a time, whatever its size. ``names`` is the writing order.
    """

    def __init__(self, names: list[str], rows: dict[str, dict], plans: dict[str, _Plan], settings: dict, overhead: int,
                 target: float | None, init: str, seed: int):
        self.names = names
        self.settings = settings
        self._rows = rows
        self._plans = plans
        self._overhead = overhead
        self._target = target
        self._init = init
        self._seed = seed

    def apply(self, name: str, tensor) -> np.ndarray | QuantizedTensor:
        """The tensor ``name`` as it is to be written: quantized, pruned or unchanged.

        ``tensor`` must be the one the plan saw (same shape and dtype). The tensor's row of
        the report gets its measured relative error and codebook size.
        """
        row = self._rows.get(name)
        if row is None:
            raise EncodeError("the plan has no tensor of this name", field=repr(name))
        array = as_array(tensor)
        if list(array.shape) != row["shape"] or dtypes.name(dtypes.dtype_id(array.dtype, field=repr(name))) != row["dtype"]:
            raise EncodeError(f"the plan was made for {row['dtype']} {row['shape']}, got {array.dtype} {list(array.shape)}", field=repr(name))
        plan = self._plans.get(name)
        if plan is None:  # stored exactly, as classified
            return array
        work = _prune(array, plan.prune) if plan.prune else array
        energy = plan.energy
        if plan.bits is not None:
            q = quantize(work, bits=plan.bits, init=self._init, seed=self._seed)
            row.update(action="quantized", reason=f"bits={plan.bits}", estimated_bytes=_estimated_payload(q),
                       relative_error=_relative_error(array, q, energy))
        elif plan.step is None:  # exact storage was the best use of the budget
            row.update(reason="allocated raw", relative_error=plan.pruned_error / energy if energy else 0.0)
            return work
        else:
            q, error = _quantize_step(work, plan.step)
            row.update(action="quantized", reason="allocated", relative_error=(error + plan.pruned_error) / energy if energy else 0.0)
        size = int(q.codebook.size)
        row.update(codebook_size=size, code_bits=(size - 1).bit_length())
        return q

    def rows(self) -> list[dict]:
        """The report's per-tensor rows, in writing order (updated by :meth:`apply`)."""
        return [self._rows[n] for n in self.names]

    def report(self) -> dict:
        """The JSON-ready report: ``settings``, ``tensors`` and ``totals`` (byte counts are estimates)."""
        rows = self.rows()
        return {"settings": self.settings, "tensors": rows,
                "totals": _totals(rows, fixed_bytes=self._overhead, target=self._target)}


def plan_compression(
    tensors: Mapping[str, np.ndarray],
    *,
    target_bits_per_weight: float | None = None,
    bits: int | Mapping[str, int] | None = None,
    keep_dense: str | Sequence[str] | None = None,
    prune: float | Mapping[str, float] = 0.0,
    importance: Mapping[str, float] | Callable[[str], float] | None = TRANSFORMER_IMPORTANCE,
    min_elements: int = DEFAULT_MIN_ELEMENTS,
    init: str = "linear",
    metadata_bytes: int = 256,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
) -> CompressionPlan:
    """Pass 1 of :func:`compress_tensors`: look at every tensor once and decide what each becomes.

    ``tensors`` may be lazy (a :class:`~dcformat.sources.TensorSource`): each value is read
    once and dropped, ``threads`` of them at a time (default: ``$DCFORMAT_THREADS`` or every
    core; reads must then be thread-safe). The options are :func:`compress_tensors`'.
    """
    if not isinstance(tensors, Mapping):
        raise EncodeError(f"tensors must be a mapping of names to arrays, got {type(tensors).__name__}")
    if isinstance(bits, Mapping) or bits is None:
        bit_rules = _rules(bits, option="bits", check=_check_bits)
        if target_bits_per_weight is None:
            target_bits_per_weight = DEFAULT_TARGET_BITS_PER_WEIGHT
    else:
        bit_rules = _rules(_check_bits(bits), option="bits", check=_check_bits)
        if target_bits_per_weight is not None:
            raise EncodeError("give either one bit width for every tensor or a target size, not both", field="bits")
    if target_bits_per_weight is not None:
        if isinstance(target_bits_per_weight, bool) or not isinstance(target_bits_per_weight, (int, float, np.floating, np.integer)) \
                or not 0.5 <= float(target_bits_per_weight) <= 64:
            raise EncodeError(f"must be a number of bits in [0.5, 64], got {target_bits_per_weight!r}", field="target_bits_per_weight")
        target_bits_per_weight = float(target_bits_per_weight)
    keep = _patterns(keep_dense, option="keep_dense")
    prune_rules = [(p, f) for p, f in _rules(prune, option="prune", check=_check_prune) if f > 0]
    if callable(importance) and not isinstance(importance, Mapping):
        weigh = importance
    else:
        weight_rules = _rules(dict(importance or {}), option="importance", check=_check_weight)

        def weigh(name: str) -> float:
            found = _first(weight_rules, name)
            return 1.0 if found is None else found
    if isinstance(min_elements, bool) or not isinstance(min_elements, (int, np.integer)) or min_elements < 0:
        raise EncodeError(f"must be an integer >= 0, got {min_elements!r}", field="min_elements")
    if init not in INITS:
        raise EncodeError(f"must be one of {INITS}, got {init!r}", field="init")
    for name in tensors:
        if not isinstance(name, str):
            raise EncodeError(f"tensor names must be str, got {name!r}")

    names = sorted(tensors, key=lambda n: n.encode("utf-8"))
    rows: dict[str, dict] = {}
    plans: dict[str, _Plan] = {}
    ladders: dict[str, _Ladder] = {}
    def analyse(number: int, name: str) -> None:
        """Row, plan and ladder of one tensor; a function so that the tensor dies on return."""
        array = as_array(tensors[name])
        reason = _classify(name, array, keep, int(min_elements))
        rows[name] = row = dict(
            name=name, shape=list(array.shape), dtype=dtypes.name(dtypes.dtype_id(array.dtype, field=repr(name))), elements=int(array.size),
            source_bytes=int(array.nbytes), action="raw", reason=reason, importance=None, pruned=0.0, codebook_size=None,
            code_bits=None, relative_error=0.0, estimated_bytes=int(array.nbytes))
        if reason is not None:
            return
        fraction = _first(prune_rules, name) or 0.0
        work = _prune(array, fraction) if fraction else array
        flat = work.reshape(-1)
        values = flat if int(np.count_nonzero(flat)) == flat.size else flat[np.flatnonzero(flat)]
        energy = float(np.square(array.reshape(-1), dtype=np.float64).sum())
        kept = float(np.square(values, dtype=np.float64).sum())
        row["pruned"] = 1.0 - values.size / flat.size
        fixed = _first(bit_rules, name)
        plans[name] = _Plan(fraction, max(energy - kept, 0.0), energy, fixed)
        if fixed is not None:
            row.update(action="quantized", reason=f"bits={fixed}")
            if target_bits_per_weight is not None:  # its size counts in the budget of the others: quantize once to measure it
                q = quantize(work, bits=fixed, init=init, seed=seed)
                row.update(estimated_bytes=_estimated_payload(q), relative_error=_relative_error(array, q, energy))
            return
        row["importance"] = _check_weight(weigh(name))
        cb_itemsize = 2 if dtypes.dtype_id(array.dtype) == DType.FLOAT16 else 4
        rng = np.random.default_rng([seed, number])  # per tensor: the same samples whatever the thread count
        ladders[name] = _ladder(values, flat.size - values.size, cb_itemsize, int(array.nbytes), rng)

    for _ in _progress(imap_bounded(lambda item: analyse(*item), enumerate(names), resolve_threads(threads)),
                       enabled=progress, desc="analysing", total=len(names)):
        pass

    # -- the size budget, then one candidate per tensor ------------------------------------
    overhead = _index_bytes(names, [len(rows[n]["shape"]) for n in names], metadata_bytes)
    fixed_bytes = overhead + sum(rows[n]["estimated_bytes"] for n in names if n not in ladders)
    total_elements = sum(row["elements"] for row in rows.values())
    budget = None if target_bits_per_weight is None else target_bits_per_weight * total_elements / 8 - fixed_bytes
    choice = _allocate({n: (ladders[n], plans[n].pruned_error, plans[n].energy) for n in ladders}, rows, budget)
    for name, j in choice.items():
        if j is not None:
            plans[name].step = float(ladders[name].steps[j])
            rows[name].update(estimated_bytes=int(ladders[name].nbytes[j]))
    settings = dict(target_bits_per_weight=target_bits_per_weight,
                    bits=None if not bit_rules else {p.pattern: b for p, b in bit_rules},
                    keep_dense=[p.pattern for p in keep], prune={p.pattern: f for p, f in prune_rules},
                    importance=_describe_importance(importance), min_elements=int(min_elements), init=init)
    return CompressionPlan(names, rows, plans, settings, overhead, target_bits_per_weight, init, seed)


def compress_tensors(tensors: Mapping[str, np.ndarray], *, progress: bool = False, **settings) -> tuple[dict, dict]:
    """Quantize the tensors of a model; returns ``(tensors, report)``.

    ``tensors`` maps names to numpy arrays (any dtype dcformat stores). In the result,
    quantized tensors are :class:`QuantizedTensor` and all others arrays.

    target_bits_per_weight: the file's size as average bits per element over all
        tensors (raw ones, codebooks and the index included); the codebook of every
        tensor not fixed by ``bits`` is chosen to fit it (default
        :data:`DEFAULT_TARGET_BITS_PER_WEIGHT`, 32/4.5 = 7.1x smaller than fp32).
    bits: fixed k-means codebooks of at most ``2**bits`` entries, for every quantized
        tensor (an int) or for names matching a regex (a mapping; first match wins). An
        int cannot be combined with a target.
    keep_dense: regex or regexes of names stored exactly.
    prune: fraction of each quantized tensor's weights (smallest magnitudes) set to
        exactly zero before quantizing, or a mapping regex -> fraction.
    importance: distortion weight per tensor: a mapping regex -> weight (first match
        wins, unmatched names weigh 1), a callable ``name -> weight``, or ``None`` for
        equal weights.
    min_elements: float tensors with fewer elements stay exact.
    init: k-means initialisation for tensors with fixed ``bits`` (see :func:`quantize`).
    metadata_bytes: the expected size of the file's metadata, counted in the budget.
    seed: of the sampling of large tensors and of k-means.
    threads: tensors analysed at once (default ``$DCFORMAT_THREADS`` or every core).

    The report is a JSON-ready dict: ``settings``, ``tensors`` (per tensor: what was
    done, codebook size, relative squared error, estimated payload bytes) and
    ``totals``. Byte counts here are the encoder's estimates;
    :func:`compress_file` replaces them by what the file holds. This holds the whole
    model in memory; :func:`compress_file` holds one tensor at a time.
    """
    plan = plan_compression(tensors, progress=progress, **settings)
    out = {name: plan.apply(name, tensors[name]) for name in _progress(plan.names, enabled=progress, desc="quantizing")}
    return out, plan.report()


def _describe_importance(importance) -> object:
    if importance is None:
        return None
    if callable(importance) and not isinstance(importance, Mapping):
        return getattr(importance, "__name__", "callable")
    return {str(k): float(v) for k, v in dict(importance).items()}


def _estimated_payload(q: QuantizedTensor) -> int:
    zeros = q.numel - q.entry_count
    hist = np.bincount(q.codes, minlength=q.codebook.size).astype(np.int64)
    if zeros:
        hist = np.concatenate([[zeros], hist])
    return QUANT_HEADER_SIZE + hist.size * q.codebook.dtype.itemsize + streams.estimate_size(hist, int(hist.sum()), hist.size)


def _relative_error(original: np.ndarray, q: QuantizedTensor, energy: float) -> float:
    """``|W - Q(W)|^2 / |W|^2`` of the decoded tensor against the original."""
    w = original.astype(np.float64).reshape(-1)
    diff = q.dequantize().astype(np.float64).reshape(-1) - w
    return float(np.dot(diff, diff)) / energy if energy else 0.0


def _allocate(ladders: dict, rows: dict, budget: float | None) -> dict[str, int | None]:
    """One candidate per tensor (None = raw) minimising sum(importance x relative error) within ``budget`` bytes.

    The Lagrangian ``distortion + lambda x bytes`` is minimised per tensor for a lambda found
    by bisection, which gives the optimal points of the size/distortion trade-off's convex hull.
    """
    names = list(ladders)
    if not names:
        return {}
    width = 1 + max(ladders[n][0].steps.size for n in names)
    cost = np.full((len(names), width), np.inf)
    size = np.zeros((len(names), width))
    for i, name in enumerate(names):
        ladder, pruned_error, energy = ladders[name]
        weight = rows[name]["importance"]
        k = ladder.steps.size
        cost[i, 0] = weight * (pruned_error / energy if energy else 0.0) if rows[name]["pruned"] else 0.0
        size[i, 0] = rows[name]["source_bytes"]  # column 0: raw (exact unless pruned)
        if k:
            cost[i, 1 : k + 1] = weight * (ladder.errors + pruned_error) / energy if energy else 0.0
            size[i, 1 : k + 1] = ladder.nbytes
    size = np.where(np.isfinite(cost), size, 0.0)  # absent candidates: their infinite cost rules them out

    def pick(lam: float) -> np.ndarray:
        return np.argmin(cost + lam * size, axis=1)

    index = np.arange(len(names))

    def total(lam: float) -> float:
        return float(size[index, pick(lam)].sum())

    if budget is None or total(0.0) <= budget:
        chosen = pick(0.0)  # everything at its least distortion fits
    else:
        high = 1e-24
        while total(high) > budget and high < 1e24:
            high *= 4
        if total(high) > budget:  # nothing fits: the smallest candidate of every tensor
            chosen = np.argmin(np.where(np.isfinite(cost), size, np.inf), axis=1)
        else:
            low = high / 4
            for _ in range(64):  # geometric bisection: lambda spans many decades
                mid = math.sqrt(low * high)
                if total(mid) > budget:
                    low = mid
                else:
                    high = mid
            chosen = _fill(cost, size, pick(high), budget)
    return {name: (None if j == 0 else int(j) - 1) for name, j in zip(names, chosen)}


def _fill(cost: np.ndarray, size: np.ndarray, chosen: np.ndarray, budget: float) -> np.ndarray:
    """Spend what the Lagrangian left of the budget: upgrade greedily, best distortion saved per byte first.

    The hull points the bisection can reach may leave a large tensor's next step unused;
    this takes the single upgrades that still fit, one tensor per round (rounds are few:
    each spends part of what is left).
    """
    chosen = chosen.copy()
    rows = np.arange(cost.shape[0])
    for _ in range(10 * cost.size):
        left = budget - size[rows, chosen].sum()
        finite = np.isfinite(cost)
        gain = np.where(finite, cost[rows, chosen][:, None] - np.where(finite, cost, 0.0), 0.0)
        extra = np.where(finite, size - size[rows, chosen][:, None], np.inf)
        ok = finite & (gain > 0) & (extra <= left)
        if not ok.any():
            break
        value = np.where(ok, gain / np.maximum(np.where(ok, extra, 1.0), 1.0), -np.inf)
        i, j = np.unravel_index(np.argmax(value), value.shape)
        chosen[i] = j
    return chosen


def _totals(rows: list[dict], *, fixed_bytes: int, target: float | None) -> dict:
    elements = sum(r["elements"] for r in rows)
    source = sum(r["source_bytes"] for r in rows)
    estimated = fixed_bytes + sum(r["estimated_bytes"] for r in rows)
    quantized = [r for r in rows if r["action"] == "quantized"]
    return dict(tensors=len(rows), quantized=len(quantized), target_bits_per_weight=target, elements=elements, fp32_bytes=4 * elements, source_bytes=source,
                estimated_bytes=estimated, bits_per_weight=8 * estimated / elements if elements else None,
                ratio_vs_source=source / estimated if estimated else None)


# ======================================================================================
# Files
# ======================================================================================

def _writer(out_path: str, metadata: dict, options: EncodeOptions, max_shard_bytes: int | None):
    """A one-file writer, or a sharded one when a shard size is given (``out_path`` is then a folder)."""
    if max_shard_bytes is None:
        return FileWriter(out_path, metadata=metadata, options=options)
    return ShardedWriter(out_path, max_shard_bytes=max_shard_bytes, metadata=metadata, options=options)


def compress_file(in_path, out_path, *, metadata: Mapping | None = None, options=None, progress: bool = False,
                  max_shard_bytes: int | None = None, threads: int | None = None, **settings) -> dict:
    """Compress a model file into a ``.dcf`` (replaced atomically), or into dcformat shards.

    ``in_path`` is a ``.safetensors`` or ``.dcf`` file or a shard index of either
    (``model.safetensors.index.json``, ``model.dcf.index.json``). The model is read twice,
    tensor by tensor (once to plan, once to write), so memory holds about one tensor
    however large the model. With ``max_shard_bytes``, ``out_path`` is a folder that
    receives ``model-0000k-of-0000n.dcf`` shards of about that many bytes and
    ``model.dcf.index.json``. ``threads`` tensors are worked on at once (default:
    ``$DCFORMAT_THREADS`` or every core); the file is the same whatever their number.

    ``settings`` are :func:`compress_tensors`' options. ``options`` (an
    :class:`~dcformat.EncodeOptions`) tells the encoder how to store tensors; by default
    the smallest storage, zstd included for exact tensors. Returns the report of
    :func:`compress_tensors` with each tensor's ``stored_bytes`` and ``encoding`` (and
    ``shard``) and the totals (``file_bytes``: every file written, index included;
    ``ratio_vs_source``, ``ratio_vs_fp32``) measured on what was written.
    """
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    threads = resolve_threads(threads)
    if max_shard_bytes is not None and (isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, (int, np.integer))
                                        or max_shard_bytes < 1):
        raise EncodeError(f"must be a positive number of bytes, got {max_shard_bytes!r}", field="max_shard_bytes")
    with open_source(in_path) as source:
        user = dict(source.metadata)
        user.update(metadata or {})
        draft = dict(user)
        draft["dcformat_compress"] = {"source": os.path.basename(in_path)}
        # The metadata, which records the settings, counts in the size budget. Its estimate depends
        # on the settings' values only, not on how they were passed, so the command line and the
        # library write the same file for the same settings.
        importance = _describe_importance(settings.get("importance", TRANSFORMER_IMPORTANCE))
        metadata_bytes = len(encode_metadata(draft)) + len(json.dumps(importance)) + 512
        started = time.perf_counter()
        plan = plan_compression(source, progress=progress, metadata_bytes=metadata_bytes, threads=threads, **settings)
        planned = time.perf_counter()
        draft["dcformat_compress"]["settings"] = plan.settings
        options = options or EncodeOptions(dense="auto")

        def quantize_and_encode(name: str) -> EncodedTensor:
            return encode_tensor(plan.apply(name, source[name]), options, field=repr(name))

        # Tensors are quantized and encoded on the pool, written here in order: about
        # `threads` tensors in memory at a time.
        with _writer(out_path, draft, options, max_shard_bytes) as out:
            encoded = imap_bounded(quantize_and_encode, plan.names, threads)
            for name, payload in _progress(zip(plan.names, encoded), enabled=progress, desc="compressing", total=len(plan.names)):
                out.add(name, payload)
    report = plan.report()
    report["seconds"] = {"plan": planned - started, "quantize_and_write": time.perf_counter() - planned, "threads": threads}
    if max_shard_bytes is None:
        written, reader = [out_path], DCFile(out_path)
    else:
        reader = ShardedFile(out.index_path)
        written = [out.index_path] + [os.path.join(out_path, shard) for shard in reader.shards()]
        report["shards"] = reader.shards()
    with reader:
        for row in report["tensors"]:
            entry = reader.entry(row["name"])
            row["stored_bytes"] = int(entry.length)
            row["encoding"] = entry.encoding.name.lower()
            if max_shard_bytes is not None:
                row["shard"] = reader.shard_of(row["name"])
    file_bytes = sum(os.path.getsize(p) for p in written)
    totals = report["totals"]
    elements = totals["elements"]
    totals.update(file_bytes=file_bytes, stored_bytes=sum(r["stored_bytes"] for r in report["tensors"]),
                  bits_per_weight=8 * file_bytes / elements if elements else None,
                  ratio_vs_source=totals["source_bytes"] / file_bytes, ratio_vs_fp32=totals["fp32_bytes"] / file_bytes)
    report["input"] = in_path
    report["output"] = written[0]
    return report


__all__ = [
    "DEFAULT_MIN_ELEMENTS",
    "DEFAULT_TARGET_BITS_PER_WEIGHT",
    "TRANSFORMER_IMPORTANCE",
    "CompressionPlan",
    "compress_file",
    "compress_tensors",
    "importance_from_scores",
    "plan_compression",
]
