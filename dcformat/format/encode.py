"""The encoder: a numpy array or :class:`QuantizedTensor` into a payload (spec section 6),
with the choices that make the file small: layout, gap width and coder per stream.

The structure it writes is the one ``format/encodings.py`` checks when reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs import huffman, streams, zstd
from ..codecs.alphabet import symbol_dtype
from ..errors import EncodeError
from ..quantize import QuantizedTensor
from . import dtypes, float_split, sparse
from .constants import FLOAT_DTYPES, MAX_CODEBOOK_SIZE, MAX_GAP_BITS, Coder, DType, Encoding
from .encodings import decoded_nbytes, within_expansion
from .structs import QUANT_HEADER_SIZE, FloatSplitHeader, QuantHeader

LAYOUTS = ("auto", "dense", "sparse")
DENSE_CHOICES = ("auto", "raw", "zstd", "float_split")
#: Plain tensors of more raw bytes than this try whole-tensor zstd on a sample first, and in
#: full only if the sample comes within ZSTD_SAMPLE_MARGIN of the best encoding so far.
ZSTD_SAMPLE_BYTES = 1 << 20
ZSTD_SAMPLE_MARGIN = 1.05


@dataclass(frozen=True)
class EncodeOptions:
    """How the writer encodes tensors; the defaults aim at the smallest file.

    With the defaults, a quantized tensor's layouts (dense, or sparse at each gap width)
    are ranked by their exact bit-packed / Huffman sizes, computed from histograms, and
    encoded in full, every stream with the smallest of the three coders (zstd included);
    the smallest payload is kept. That is every layout up to ``EXHAUSTIVE_CHOICE_ENTRIES``
    stored entries (an exact choice), the best three up to ``EXACT_CHOICE_ENTRIES``, and
    only the best-ranked one above (zstd rarely wins on big weight streams).

    layout: for quantized tensors, ``"dense"`` (a code per element), ``"sparse"`` (codes
        and gaps of the stored entries) or ``"auto"`` (whichever is smaller).
    gap_bits: for sparse storage, the gap width 1..16, or ``None`` for the smallest.
    coder: ``"bitpack"``, ``"huffman"`` or ``"zstd"`` for every symbol stream, or ``None``
        to pick the smallest per stream.
    dense: for plain (not quantized) arrays: ``"auto"`` (the smallest of raw, zstd and, for
        float dtypes, float_split where it saves at least ``FLOAT_SPLIT_MIN_SAVING`` bytes:
        nearly the smallest lossless file, with no tiny tensor to decode), ``"raw"`` (memory-mappable:
        loading is a view of the file, no decoding), ``"zstd"``, or ``"float_split"`` (float
        tensors split into Huffman-coded exponents and sign/mantissa planes; others raw).
    zstd_level: the zstd compression level.
    """

    layout: str = "auto"
    gap_bits: int | None = None
    coder: str | None = None
    dense: str = "auto"
    zstd_level: int = zstd.DEFAULT_LEVEL

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise EncodeError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.gap_bits is not None and (
            isinstance(self.gap_bits, bool) or not isinstance(self.gap_bits, int) or not 1 <= self.gap_bits <= MAX_GAP_BITS
        ):
            raise EncodeError(f"gap_bits must be an integer in 1..{MAX_GAP_BITS} or None, got {self.gap_bits!r}")
        if self.coder is not None and self.coder not in ("bitpack", "huffman", "zstd"):
            raise EncodeError(f"coder must be 'bitpack', 'huffman', 'zstd' or None, got {self.coder!r}")
        if self.dense not in DENSE_CHOICES:
            raise EncodeError(f"dense must be one of {DENSE_CHOICES}, got {self.dense!r}")

    @property
    def coder_id(self) -> Coder | None:
        return None if self.coder is None else Coder[self.coder.upper()]


@dataclass(frozen=True)
class EncodedTensor:
    dtype: DType
    encoding: Encoding
    shape: tuple
    payload: bytes


def encode_tensor(value, options: EncodeOptions, *, field: str) -> EncodedTensor:
    """Encode one tensor; falls back to raw when nothing else is both valid and readable."""
    if isinstance(value, QuantizedTensor):
        encoded = _encode_quantized(value, options, field)
        if encoded is not None:
            return encoded
        value = value.dequantize()
    array = np.asarray(value)
    dtype = dtypes.dtype_id(array.dtype, field=field)
    storage = dtypes.to_storage(array, dtype)
    raw = storage.tobytes()
    shape = tuple(int(d) for d in array.shape)
    best = EncodedTensor(dtype, Encoding.RAW, shape, raw)
    if not raw or options.dense == "raw":
        return best
    candidates = []
    if dtype in FLOAT_DTYPES and options.dense in ("auto", "float_split"):
        candidates.append(EncodedTensor(dtype, Encoding.FLOAT_SPLIT, shape, _float_split_payload(storage, dtype, options)))
    if options.dense == "zstd" or (options.dense == "auto" and _zstd_may_win(raw, min(len(c.payload) for c in [best, *candidates]), options)):
        candidates.append(EncodedTensor(dtype, Encoding.ZSTD, shape, zstd.compress(raw, level=options.zstd_level)))
    for candidate in candidates:  # forced choices keep theirs; auto keeps the smallest as it counts sizes (ties: the earlier)
        if within_expansion(len(raw), len(candidate.payload)) and (options.dense != "auto" or _counted(candidate) < _counted(best)):
            best = candidate
    return best


#: ``dense="auto"`` counts a float_split payload this many bytes larger than it is: a load
#: spends about 0.1 ms planning and decoding a float_split tensor however small it is, as long
#: as it takes to read some 100 KB. So float_split is kept where it saves at least this much
#: over raw and zstd. On all-MiniLM-L6-v2 its 63 biases and norms (384 to 1536 floats) took
#: 9 KB less as float_split than as zstd, 0.08% of the compressed file, and made its load 6-7% slower.
FLOAT_SPLIT_MIN_SAVING = 4096


def _counted(encoded: EncodedTensor) -> int:
    return len(encoded.payload) + (FLOAT_SPLIT_MIN_SAVING if encoded.encoding == Encoding.FLOAT_SPLIT else 0)


def _float_split_payload(storage: np.ndarray, dtype: DType, options: EncodeOptions) -> bytes:
    """Spec 6.6: the header, then per block the head stream and a stream per plane of the
    rest, each with its smallest coder (or the forced one)."""
    bits = np.ascontiguousarray(storage).reshape(-1).view(float_split.bits_dtype(dtype))
    head_bits = float_split.default_head_bits(dtype)
    block_elements = float_split.DEFAULT_BLOCK_ELEMENTS
    parts = [FloatSplitHeader.build(dict(head_bits=head_bits, reserved=b"\0\0\0", block_elements=block_elements))]
    alphabets = float_split.alphabets(dtype, head_bits)
    for lo, hi in float_split.blocks(bits.size, block_elements):
        for stream, alphabet in zip(float_split.split(bits[lo:hi], dtype, head_bits), alphabets):
            parts.append(
                streams.encode(
                    stream,
                    alphabet,
                    coder=options.coder_id,
                    zstd_level=options.zstd_level,
                    lane_symbols=float_split.LANE_SYMBOLS,
                    length_limit=float_split.CODE_LENGTH_LIMIT,
                    zstd_min_saving=float_split.ZSTD_MIN_SAVING,
                )
            )
    return b"".join(parts)


def _zstd_may_win(raw: bytes, best_bytes: int, options: EncodeOptions) -> bool:
    """Whether whole-tensor zstd is worth trying in full: always for small tensors, else when
    a sample of the tensor's start compresses about as well as the best encoding so far."""
    if len(raw) <= 4 * ZSTD_SAMPLE_BYTES:
        return True
    sample = len(zstd.compress(raw[:ZSTD_SAMPLE_BYTES], level=options.zstd_level))
    return sample / ZSTD_SAMPLE_BYTES <= ZSTD_SAMPLE_MARGIN * best_bytes / len(raw)


def _zero_code(codebook: np.ndarray) -> int | None:
    """Index of the first +0.0 in the codebook, the code fillers and unstored elements use."""
    hits = np.flatnonzero((codebook == 0) & ~np.signbit(codebook))
    return int(hits[0]) if hits.size else None


@dataclass(frozen=True)
class _Plan:
    size: int
    layout: str
    gap_bits: int
    prepend_zero: bool


#: Up to this many stored entries, every layout is encoded in full (zstd included) and
#: the smallest kept: the choice is then exact, at a cost that does not matter.
EXHAUSTIVE_CHOICE_ENTRIES = 1 << 16
#: Up to this many, the best few layouts by the size model are encoded in full.
EXACT_CHOICE_ENTRIES = 1 << 22
EXACT_CHOICE_CANDIDATES = 3


def _encode_quantized(q: QuantizedTensor, options: EncodeOptions, field: str) -> EncodedTensor | None:
    wire = dtypes.dtype_id(q.dtype, field=field)
    plans = _rank_plans(q, options)
    if not plans:
        return None
    if q.entry_count > EXACT_CHOICE_ENTRIES:
        plans = plans[:1]
    elif q.entry_count > EXHAUSTIVE_CHOICE_ENTRIES:
        plans = plans[:EXACT_CHOICE_CANDIDATES]
    best = None
    for plan in plans:
        encoded = _encode_plan(q, plan, options, wire)
        if encoded is not None and (best is None or len(encoded.payload) < len(best.payload)):
            best = encoded
    return best


def _encode_plan(q: QuantizedTensor, plan: _Plan, options: EncodeOptions, wire: DType) -> EncodedTensor | None:
    """The payload of one layout choice, each stream with its smallest (or forced) coder."""
    codebook, codes = q.codebook, q.codes
    if plan.prepend_zero:
        codebook = np.concatenate([np.zeros(1, dtype=codebook.dtype), codebook])
        codes = codes.astype(symbol_dtype(codebook.size)) + 1  # the narrowest type that holds the new codes (a copy)
    zero = _zero_code(codebook)
    size = codebook.size
    coder = options.coder_id
    if plan.layout == "dense":
        if q.is_dense:
            dense_codes = codes
        else:
            dense_codes = np.full(q.numel, zero, dtype=codes.dtype)
            dense_codes[q.positions] = codes
        body = streams.encode(dense_codes, size, coder=coder, zstd_level=options.zstd_level)
        header = dict(gap_bits=0, entry_count=q.numel)
    else:
        wire_gaps, wire_codes = sparse.with_fillers(sparse.true_gaps(q.positions), codes, plan.gap_bits, zero if zero is not None else 0)
        body = streams.encode(wire_codes, size, coder=coder, zstd_level=options.zstd_level)
        body += streams.encode(wire_gaps, 1 << plan.gap_bits, coder=coder, zstd_level=options.zstd_level)
        header = dict(gap_bits=plan.gap_bits, entry_count=int(wire_codes.size))
    cb_dtype = dtypes.dtype_id(codebook.dtype)
    payload = QuantHeader.build(dict(codebook_dtype=int(cb_dtype), reserved=0, codebook_size=size, **header))
    payload += codebook.astype(codebook.dtype.newbyteorder("<")).tobytes() + body
    encoding = Encoding.QUANT_DENSE if plan.layout == "dense" else Encoding.QUANT_SPARSE
    if not within_expansion(decoded_nbytes(wire, q.shape), len(payload)):
        return None
    return EncodedTensor(wire, encoding, q.shape, payload)


def _rank_plans(q: QuantizedTensor, options: EncodeOptions) -> list[_Plan]:
    """Every allowed layout and gap width, smallest estimated payload first.

    Bit packing and Huffman sizes are computed exactly from symbol histograms, so no
    candidate is encoded just to be measured; zstd is compared later, per stream.
    """
    codebook = q.codebook
    zero = _zero_code(codebook)
    itemsize = codebook.dtype.itemsize
    code_hist = huffman.histogram(q.codes, codebook.size)
    plans = []

    def codes_cost(extra_zeros: int) -> tuple[int, bool] | None:
        """Size of the codebook and codes stream when ``extra_zeros`` zero codes are added."""
        if extra_zeros and zero is None:
            if codebook.size + 1 > MAX_CODEBOOK_SIZE:
                return None
            hist = np.concatenate([[extra_zeros], code_hist])
            prepend = True
        else:
            hist = code_hist.copy()
            if extra_zeros:
                hist[zero] += extra_zeros
            prepend = False
        count = int(hist.sum())
        return (hist.size * itemsize + streams.estimate_size(hist, count, hist.size), prepend)

    if options.layout in ("auto", "dense"):
        cost = codes_cost(q.numel - q.entry_count)
        if cost is not None:
            plans.append(_Plan(QUANT_HEADER_SIZE + cost[0], "dense", 0, cost[1]))
    # A tensor that stores every element gains nothing from gaps: sparse only if asked.
    if (options.layout == "sparse" or (options.layout == "auto" and not q.is_dense)) and q.numel > 0:
        true_gaps = sparse.true_gaps(q.positions)
        widths = [options.gap_bits] if options.gap_bits else range(1, MAX_GAP_BITS + 1)
        for gap_bits in widths:
            gap_hist, fillers = sparse.gap_histogram(true_gaps, gap_bits)
            cost = codes_cost(fillers)
            if cost is None:
                continue
            count = q.entry_count + fillers
            gap_cost = streams.estimate_size(gap_hist, count, 1 << gap_bits)
            plans.append(_Plan(QUANT_HEADER_SIZE + cost[0] + gap_cost, "sparse", gap_bits, cost[1]))
    return sorted(plans, key=lambda plan: plan.size)  # stable: ties keep dense, then narrower gaps
