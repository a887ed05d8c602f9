"""The four tensor encodings: what a payload holds and how it is chosen (spec section 6).

``encode_tensor`` turns a numpy array or a :class:`QuantizedTensor` into a payload;
``decode_payload`` turns a payload back, checking every field against the directory
entry and the payload's length before it allocates anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dtypes
from .codecs import gaps, streams, zstd
from .constants import (
    CODEBOOK_DTYPES,
    DTYPE_ITEMSIZE,
    DTYPE_STORAGE,
    EXPANSION_SLACK,
    FLOAT_DTYPES,
    MAX_CODEBOOK_SIZE,
    MAX_EXPANSION,
    MAX_GAP_BITS,
    Coder,
    DType,
    Encoding,
)
from .errors import EncodeError, FormatError, LimitError
from .layout import QUANT_HEADER_SIZE, STREAM_HEADER_SIZE, QuantHeader
from .quantize import QuantizedTensor

LAYOUTS = ("auto", "dense", "sparse")
DENSE_CHOICES = ("raw", "zstd", "auto")


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
    dense: for plain arrays, ``"raw"`` (memory-mappable), ``"zstd"``, or ``"auto"`` (zstd
        when it is smaller).
    zstd_level: the zstd compression level.
    """

    layout: str = "auto"
    gap_bits: int | None = None
    coder: str | None = None
    dense: str = "raw"
    zstd_level: int = zstd.DEFAULT_LEVEL

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise EncodeError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.gap_bits is not None and (isinstance(self.gap_bits, bool) or not isinstance(self.gap_bits, int) or not 1 <= self.gap_bits <= MAX_GAP_BITS):
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


def decoded_nbytes(dtype: DType, shape) -> int:
    return int(np.prod(shape, dtype=object)) * DTYPE_ITEMSIZE[dtype]


def within_expansion(decoded: int, payload_length: int, max_expansion: int = MAX_EXPANSION) -> bool:
    """Spec 9: a tensor decodes to at most ``max_expansion * (payload + 64)`` bytes."""
    return decoded <= max_expansion * (payload_length + EXPANSION_SLACK)


# -- encoding -----------------------------------------------------------------------------

def encode_tensor(value, options: EncodeOptions, *, field: str) -> EncodedTensor:
    """Encode one tensor; falls back to raw when nothing else is both valid and readable."""
    if isinstance(value, QuantizedTensor):
        encoded = _encode_quantized(value, options, field)
        if encoded is not None:
            return encoded
        value = value.dequantize()
    array = np.asarray(value)
    dtype = dtypes.dtype_id(array.dtype, field=field)
    raw = dtypes.to_storage(array, dtype).tobytes()
    shape = tuple(int(d) for d in array.shape)
    if options.dense != "raw" and raw:
        frame = zstd.compress(raw, level=options.zstd_level)
        readable = within_expansion(len(raw), len(frame))
        if readable and (options.dense == "zstd" or len(frame) < len(raw)):
            return EncodedTensor(dtype, Encoding.ZSTD, shape, frame)
    return EncodedTensor(dtype, Encoding.RAW, shape, raw)


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


def _encode_plan(q: QuantizedTensor, plan: "_Plan", options: EncodeOptions, wire: DType) -> EncodedTensor | None:
    """The payload of one layout choice, each stream with its smallest (or forced) coder."""
    codebook, codes = q.codebook, q.codes.astype(np.uint32 if q.codebook.size >= 1 << 16 else np.uint16)
    if plan.prepend_zero:
        codebook = np.concatenate([np.zeros(1, dtype=codebook.dtype), codebook])
        codes = codes + 1
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
        wire_gaps, wire_codes = gaps.with_fillers(gaps.true_gaps(q.positions), codes, plan.gap_bits, zero if zero is not None else 0)
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
    code_hist = np.bincount(q.codes, minlength=codebook.size).astype(np.int64)
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
        true_gaps = gaps.true_gaps(q.positions)
        widths = [options.gap_bits] if options.gap_bits else range(1, MAX_GAP_BITS + 1)
        for gap_bits in widths:
            gap_hist, fillers = gaps.gap_histogram(true_gaps, gap_bits)
            cost = codes_cost(fillers)
            if cost is None:
                continue
            count = q.entry_count + fillers
            gap_cost = streams.estimate_size(gap_hist, count, 1 << gap_bits)
            plans.append(_Plan(QUANT_HEADER_SIZE + cost[0] + gap_cost, "sparse", gap_bits, cost[1]))
    return sorted(plans, key=lambda plan: plan.size)  # stable: ties keep dense, then narrower gaps


# -- decoding -----------------------------------------------------------------------------

def decode_payload(dtype: DType, encoding: Encoding, shape, payload, *, field: str, offset: int, quantized: bool = False, threads: int = 1):
    """Decode a payload (a buffer) into an ndarray, or a QuantizedTensor when ``quantized``.

    ``offset`` is the payload's file offset, used in error messages.
    """
    numel = int(np.prod(shape, dtype=object))
    nbytes = numel * DTYPE_ITEMSIZE[dtype]
    if encoding in (Encoding.RAW, Encoding.ZSTD):
        if quantized:
            raise EncodeError(f"tensor is stored {encoding.name.lower()}, not quantized", field=field)
        if encoding == Encoding.RAW:
            if len(payload) != nbytes:
                raise FormatError(field + ".payload_length", f"raw payload holds {len(payload)} bytes, shape {tuple(shape)} of {dtypes.name(dtype)} needs {nbytes}", offset=offset)
            raw = payload
        else:
            raw = zstd.decompress_exact(payload, nbytes, field=field + ".payload", offset=offset)
        return _from_storage(raw, dtype, shape, field=field, offset=offset)
    return _decode_quantized(dtype, encoding, shape, payload, field=field, offset=offset, quantized=quantized, threads=threads)


def _from_storage(raw, dtype: DType, shape, *, field: str, offset: int) -> np.ndarray:
    array = np.frombuffer(raw, dtype=DTYPE_STORAGE[dtype])
    if dtype == DType.BOOL:
        if array.size and int(array.max()) > 1:
            raise FormatError(field + ".payload", "a bool tensor holds a byte other than 0 or 1", offset=offset)
        array = array.view(np.bool_)
    elif dtype == DType.BFLOAT16:
        array = array.view(dtypes.numpy_dtype(dtype, field=field, offset=offset))
    return array.reshape(shape)


@dataclass(frozen=True)
class StreamRef:
    """A symbol stream located and framed, not yet decoded."""

    coder: Coder
    body: memoryview
    count: int
    alphabet_size: int
    field: str
    offset: int  # file offset of the body

    @property
    def stored_bytes(self) -> int:
        """Bytes of the stream, its 9-byte header included."""
        return len(self.body) + STREAM_HEADER_SIZE

    def decode(self, *, threads: int = 1) -> np.ndarray:
        return streams.decode_body(self.coder, self.body, self.count, self.alphabet_size, field=self.field, offset=self.offset, threads=threads)


@dataclass(frozen=True)
class QuantPayload:
    """A quantized payload with its header and codebook checked and its streams framed.

    Both decoders (numpy here, torch in ``dcformat.torch``) start from this, so every
    check of the payload's structure lives in one place.
    """

    shape: tuple
    numel: int
    dtype: np.dtype  # of the decoded tensor
    codebook: np.ndarray  # as stored
    values: np.ndarray  # the codebook converted (exactly) to ``dtype``
    gap_bits: int  # 0 for quant_dense
    entry_count: int
    codes: StreamRef
    gaps: StreamRef | None

    def check_last_position(self, gap_symbols: np.ndarray) -> None:
        """Spec 6.5.1: the last entry must lie inside the tensor."""
        if gap_symbols.size and gaps.last_position(gap_symbols) >= self.numel:
            raise FormatError(self.gaps.field, f"entries run to position {gaps.last_position(gap_symbols)}, "
                              f"past the end of the tensor ({self.numel} elements)", offset=self.gaps.offset)


def parse_quantized(dtype: DType, encoding: Encoding, shape, payload, *, field: str, offset: int) -> QuantPayload:
    """Check a quantized payload's header, codebook and stream framing (spec 6.3-6.5, 7.1)."""
    numel = int(np.prod(shape, dtype=object))
    if dtype not in FLOAT_DTYPES:
        raise FormatError(field + ".dtype", f"a quantized tensor must decode to a float dtype, not {dtypes.name(dtype)}", offset=offset)
    out_dtype = dtypes.numpy_dtype(dtype, field=field, offset=offset)
    end = len(payload)
    if end < QUANT_HEADER_SIZE:
        raise FormatError(field + ".quant_header", f"payload of {end} bytes is shorter than the {QUANT_HEADER_SIZE}-byte quantized header", offset=offset)
    header = QuantHeader.parse(bytes(payload[:QUANT_HEADER_SIZE]))
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
    codes = StreamRef(coder, payload[start:stop], count, size, field + ".codes", offset + start)
    pos = stop
    gap_ref = None
    if encoding == Encoding.QUANT_SPARSE:
        coder, start, stop = streams.read_header(payload, pos, end, field=field + ".gaps", base=offset)
        gap_ref = StreamRef(coder, payload[start:stop], count, 1 << header.gap_bits, field + ".gaps", offset + start)
        pos = stop
    if pos != end:
        raise FormatError(field + ".payload", f"{end - pos} bytes follow the last stream", offset=offset + pos)
    return QuantPayload(tuple(shape), numel, out_dtype, codebook, values, header.gap_bits, count, codes, gap_ref)


#: Codes gathered per np.take call when decoding quant_dense (see _gather).
GATHER_CHUNK = 1 << 20


def _gather(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``values[codes]`` into a fresh array, a chunk at a time.

    np.take converts its indices to intp first: in one call over a whole tensor that copy
    would hold 8 bytes per element beside the 1-2 of the codes and the output itself.
    """
    out = np.empty(codes.size, dtype=values.dtype)
    for lo in range(0, codes.size, GATHER_CHUNK):
        np.take(values, codes[lo : lo + GATHER_CHUNK], out=out[lo : lo + GATHER_CHUNK])
    return out


def _decode_quantized(dtype, encoding, shape, payload, *, field, offset, quantized, threads):
    parsed = parse_quantized(dtype, encoding, shape, payload, field=field, offset=offset)
    codes = parsed.codes.decode(threads=threads)
    gap_symbols = None
    if parsed.gaps is not None:
        gap_symbols = parsed.gaps.decode(threads=threads)
        parsed.check_last_position(gap_symbols)
    if quantized:
        positions = None if gap_symbols is None else np.cumsum(gap_symbols.astype(np.int64) + 1) - 1
        return QuantizedTensor(tuple(shape), parsed.dtype, parsed.codebook.copy(), codes, positions)
    if gap_symbols is None:
        return _gather(parsed.values, codes).reshape(shape)
    out = np.zeros(parsed.numel, dtype=parsed.dtype)
    gaps.scatter(out, gap_symbols, codes, parsed.values, threads=threads)
    return out.reshape(shape)
