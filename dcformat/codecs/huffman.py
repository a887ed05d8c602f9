"""Canonical, length-limited Huffman coding in interleaved lanes (spec section 7).

Wire format of a Huffman stream body (integers little-endian); ``count`` ``n`` and
``alphabet_size`` ``A`` come from the enclosing stream header:

1. ``u32 table_symbols`` ``T``: 0 if and only if ``n == 0`` (then the body is these 4
   bytes); otherwise ``1 <= T <= A``.
2. ``code_lengths``: ``T`` lengths of 5 bits, bit-packed LSB-first (``bitpack.pack``).
   Symbols ``>= T`` have length 0; 0 means absent, 1..20 valid.
3. ``u32 lane_count`` ``C``, ``1 <= C <= n``.
4. ``u64 lane_base_bits`` ``B``, ``u8 lane_delta_width`` ``w`` (``<= 64``), then ``C``
   deltas of ``w`` bits, bit-packed LSB-first: lane ``j`` is ``B + delta_j`` bits long and
   starts where lane ``j - 1`` ends (the first at payload bit 0).
5. ``u64 payload_bits`` ``P`` (the sum of the lane lengths, ``<= 20 n``), then
   ``ceil(P / 8)`` payload bytes, padding bits zero, and nothing after them.

Codes are canonical (DEFLATE's rule) and complete (Kraft sum exactly 1), except that a
single present symbol has length 1 and code ``0``. Payload bit ``k`` is bit ``k % 8`` of
byte ``k // 8``; a code is written most significant bit first. Symbol ``i`` belongs to
lane ``i % C`` and is its ``i // C``-th symbol, so a decoder can decode all lanes in
lockstep: step ``s`` yields symbols ``s*C .. s*C + C - 1``. Each lane must consume
exactly its declared length.

The lockstep decoder gathers, for every lane at once, a 64-bit window of the payload (a
precomputed array of overlapping windows at 32-bit steps, so every gather is aligned),
shifts it and looks the low ``L`` bits up in a ``2**L``-entry table indexed by the
*bit-reversed* code (the stream is LSB-first, codes MSB-first). Complete codes leave no
invalid bit pattern, and a single present symbol is decoded by checking that the payload
is all zero, so the only check needed is the final one: every lane ends exactly where
its declared length says. Gathers clip their indices, so a corrupted lane that runs
past the payload reads zeros, nothing reads out of bounds and nothing is checked inside
the loop. Streams of few, long lanes (small streams: one lane below 2048 symbols) are
decoded instead by pointer jumping (:func:`_decode_jumping`), which gives the same
symbols and end positions without a Python step per symbol of a lane.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..errors import EncodeError, FormatError, LimitError
from ..format.constants import HUFFMAN_LENGTH_BITS, MAX_CODEBOOK_SIZE, MAX_HUFFMAN_CODE_LENGTH, MAX_LANE_SYMBOLS
from ..parallel import map_threads
from . import bitpack
from .alphabet import symbol_dtype

#: Default limit of :func:`code_lengths` (a 4096-entry decode table stays in L1 cache).
DEFAULT_MAX_LENGTH = 12
#: Lowest length limit :func:`default_lengths` considers.
MIN_DEFAULT_MAX_LENGTH = 11
#: Relative extra payload :func:`default_lengths` accepts for a shorter length limit.
LENGTH_TOLERANCE = 0.002
#: Minimum symbols per lane the default lane policy aims for: the jump table then costs
#: about ``w / (1024 * mean code length)`` of the payload (0.2 - 0.4 %).
LANE_SYMBOLS = 1024
#: Most lanes the default policy uses (beyond this numpy ops gain nothing more).
MAX_DEFAULT_LANES = 8192
#: A decoding thread gets at least this many lanes (fewer would cost more than it saves).
_MIN_LANES_PER_THREAD = 1024
#: Symbols encoded per block (bounds the encoder's int64 temporaries to a few MiB).
_ENCODE_BLOCK = 1 << 18
#: Bits decoded at once by pointer jumping (about 40 bytes of memory per bit).
_JUMP_WINDOW_BITS = 1 << 20
#: Fixed bytes of a non-empty body: T, C, B, w, P.
_FIXED_BYTES = 4 + 4 + 8 + 1 + 8


# --------------------------------------------------------------------------- lengths


def code_lengths(histogram: np.ndarray, max_length: int = DEFAULT_MAX_LENGTH) -> np.ndarray:
    """Optimal length-limited Huffman code lengths (package-merge), as ``uint8``.

    Symbols of count 0 get length 0; a single used symbol gets length 1; otherwise the
    lengths are complete (Kraft sum exactly 1), at most ``max_length``, and minimise
    ``sum(histogram * lengths)``. ``max_length`` must be at most 20 and at least
    ``ceil(log2(used symbols))``.
    """
    hist = np.asarray(histogram)
    if hist.ndim != 1:
        raise EncodeError("histogram must be one-dimensional")
    if hist.size and (not np.issubdtype(hist.dtype, np.integer) or hist.min() < 0):
        raise EncodeError("histogram must hold non-negative integers")
    max_length = int(max_length)
    if not 1 <= max_length <= MAX_HUFFMAN_CODE_LENGTH:
        raise EncodeError(f"max_length must be in 1..{MAX_HUFFMAN_CODE_LENGTH}, got {max_length}")
    lengths = np.zeros(hist.size, dtype=np.uint8)
    used = np.flatnonzero(hist)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used] = 1
        return lengths
    if used.size > (1 << max_length):
        raise EncodeError(f"{used.size} used symbols need codes longer than max_length={max_length}")
    weights = hist[used].astype(np.int64)
    order = np.argsort(weights, kind="stable")
    lengths[used[order]] = _package_merge(weights[order], max_length)
    return lengths


def _package_merge(weights: np.ndarray, limit: int) -> np.ndarray:
    """Lengths for ``weights`` sorted ascending (``2 <= n <= 2**limit``) by package-merge.

    Level ``limit`` holds the leaves; each shallower level merges the leaves with the
    pairwise packages of the level below. The first ``2n - 2`` items of level 1 form the
    optimal solution; a leaf's length is the number of levels at which it is selected.
    Selected items of a level are a prefix of it, and the leaves in a prefix are a prefix
    of the sorted leaves, so only "how many leaves in the first m items" is kept per level.
    """
    n = weights.size
    keep = 2 * n - 2
    leaf_prefix = []  # for levels limit-1 .. 1: cumulative leaf count over the merged list
    current = weights
    for _ in range(limit - 1):
        pairs = current.size // 2
        packages = current[0 : 2 * pairs : 2] + current[1 : 2 * pairs : 2]
        merged = np.concatenate([weights, packages])
        order = np.argsort(merged, kind="stable")[:keep]  # leaves win ties
        current = merged[order]
        leaf_prefix.append(np.cumsum(order < n))
    # Walk back from level 1 to the deepest level, counting selected leaves per level.
    selected_leaves = np.zeros(n + 1, dtype=np.int64)
    take = keep
    for prefix in reversed(leaf_prefix):
        leaves = int(prefix[take - 1]) if take else 0
        selected_leaves[leaves] += 1
        take = 2 * (take - leaves)
    selected_leaves[take] += 1  # deepest level: leaves only
    # length[r] = number of levels whose selected leaf count exceeds r
    return np.cumsum(selected_leaves[::-1])[::-1][1:].astype(np.uint8)


def default_lengths(histogram: np.ndarray) -> np.ndarray:
    """The code lengths :func:`encode` uses when not given ``max_length``.

    The smallest length limit ``L`` in ``max(11, ceil(log2(used))) .. 20`` whose coded
    size is within ``LENGTH_TOLERANCE`` (0.2 %) of the best possible at ``L = 20``: short
    limits keep the ``2**L``-entry decode table in cache, the tolerance keeps skewed
    distributions (8-bit Laplacian codes of large tensors) close to their entropy.
    """
    hist = np.ascontiguousarray(histogram, dtype=np.int64)
    if hist.size > _CACHED_HISTOGRAM_SIZE:  # keeps the cache small; big alphabets are rare
        return _default_lengths(hist)
    lengths = _default_lengths_cached(hist.tobytes())  # the encoder asks again for the same histograms
    return np.frombuffer(lengths, dtype=np.uint8).copy()


#: Histograms of at most this many symbols are cached (at most 256 x 8 KiB in all).
_CACHED_HISTOGRAM_SIZE = 1024


@functools.lru_cache(maxsize=256)
def _default_lengths_cached(histogram_bytes: bytes) -> bytes:
    hist = np.frombuffer(histogram_bytes, dtype=np.int64)
    return _default_lengths(hist).astype(np.uint8).tobytes()


def _default_lengths(hist: np.ndarray) -> np.ndarray:
    used = int(np.count_nonzero(hist))
    best = code_lengths(hist, MAX_HUFFMAN_CODE_LENGTH)
    low = max(MIN_DEFAULT_MAX_LENGTH, max(used - 1, 0).bit_length())
    if used <= 1 or int(best.max()) <= low:
        return best
    weights = hist.astype(np.int64)
    target = int((weights * best).sum()) * (1.0 + LENGTH_TOLERANCE)
    high = int(best.max())
    while low < high:  # the cost does not increase with the limit: bisect
        mid = (low + high) // 2
        lengths = code_lengths(hist, mid)
        if int((weights * lengths).sum()) <= target:
            high, best = mid, lengths
        else:
            low = mid + 1
    return best if int(best.max()) == low else code_lengths(hist, low)


def default_lane_count(count: int) -> int:
    """The encoder's lane count: ``clamp(count // 1024, 1, 8192)``, raised where needed so
    no lane holds more than ``MAX_LANE_SYMBOLS`` (spec 7.3.4)."""
    count = int(count)
    return max(1, min(MAX_DEFAULT_LANES, count // LANE_SYMBOLS), -(-count // MAX_LANE_SYMBOLS))


def lane_count(count: int, lane_symbols: int | None = None) -> int:
    """The lanes :func:`encode` writes for ``count`` symbols: :func:`default_lane_count`, or
    ``ceil(count / lane_symbols)`` kept within 1..count and raised where needed so no lane
    holds more than ``MAX_LANE_SYMBOLS``."""
    count = int(count)
    if lane_symbols is None:
        lanes = default_lane_count(count)
    else:
        lane_symbols = int(lane_symbols)
        if lane_symbols < 1:
            raise EncodeError(f"lane_symbols must be positive, got {lane_symbols}")
        lanes = -(-count // lane_symbols)
    return max(1, -(-count // MAX_LANE_SYMBOLS), min(lanes, count, 0xFFFFFFFF))


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """DEFLATE canonical codes (``uint32``, MSB-first values) for ``lengths``; 0 where absent."""
    lengths = np.asarray(lengths).astype(np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    present = np.flatnonzero(lengths)
    if present.size == 0:
        return codes
    order = present[np.argsort(lengths[present], kind="stable")]  # by (length, symbol)
    lens = lengths[order]
    top = int(lens.max())
    span = np.left_shift(np.int64(1), top - lens)
    start = np.concatenate([[0], np.cumsum(span)[:-1]])
    codes[order] = (start >> (top - lens)).astype(np.uint32)
    return codes


def _reverse_bits(values: np.ndarray, widths) -> np.ndarray:
    """Reverse the low ``widths`` bits of each value (``values < 2**widths``, ``widths <= 20``)."""
    values = np.asarray(values).astype(np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    out = np.zeros_like(values)
    for bit in range(int(widths.max(initial=0))):  # bits of a code, not a loop per symbol
        out |= ((values >> bit) & 1) << np.maximum(widths - 1 - bit, 0)
    return out


# --------------------------------------------------------------------------- encode


def encode(
    symbols: np.ndarray,
    alphabet_size: int,
    *,
    max_length: int | None = None,
    lane_symbols: int | None = None,
    length_limit: int | None = None,
) -> bytes:
    """The Huffman body of ``symbols`` (integers in ``0 .. alphabet_size - 1``).

    The code lengths default to :func:`default_lengths`, with codes of at most
    ``length_limit`` bits where those would be longer and the symbols in use fit (a decode
    table of ``2**length_limit`` entries), or are limited to exactly ``max_length``;
    ``lane_symbols`` (symbols per lane, so ``C = ceil(n / lane_symbols)``) defaults to
    :func:`default_lane_count`.
    """
    alphabet_size = _check_alphabet(alphabet_size)
    sym = _check_symbols(symbols, alphabet_size)
    n = sym.size
    if n == 0:
        return bytes(4)
    hist = histogram(sym, alphabet_size)
    if max_length is not None:
        lengths = code_lengths(hist, max_length)
    else:
        lengths = default_lengths(hist)
        if length_limit is not None and int(lengths.max()) > length_limit and np.count_nonzero(hist) <= 1 << length_limit:
            lengths = code_lengths(hist, length_limit)
    table_symbols = int(np.flatnonzero(lengths)[-1]) + 1
    lengths = lengths[:table_symbols]
    codes = canonical_codes(lengths)

    lanes = lane_count(n, lane_symbols)

    len_table = lengths.astype(np.uint8)
    code_table = _reverse_bits(codes, lengths.astype(np.int64))
    native = kernels.compiled()
    if native is not None:
        lane_bits = np.empty(lanes, dtype=np.int64)
        payload = native.huffman_encode(np.ascontiguousarray(sym), sym.dtype.itemsize, code_table.astype(np.uint32), len_table, lanes, lane_bits)
    else:
        lane_bits, payload = _write_codes(_lane_major(sym, lanes), len_table, code_table.astype(np.uint64), lanes, n)

    base = int(lane_bits.min())
    deltas = lane_bits - base
    width = int(deltas.max()).bit_length()
    payload_bits = int(lane_bits.sum())
    parts = [
        table_symbols.to_bytes(4, "little"),
        bitpack.pack(lengths, HUFFMAN_LENGTH_BITS),
        lanes.to_bytes(4, "little"),
        base.to_bytes(8, "little"),
        width.to_bytes(1, "little"),
        bitpack.pack(deltas.astype(np.uint64), width),
        payload_bits.to_bytes(8, "little"),
        payload,
    ]
    return b"".join(parts)


def histogram(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    """Counts (int64) of each symbol ``0 .. alphabet_size - 1`` of a flat array of unsigned symbols
    (each already checked to be in the alphabet)."""
    native = kernels.compiled()
    if native is not None and symbols.dtype in (np.uint8, np.uint16):
        counts = np.empty(alphabet_size, dtype=np.int64)
        if native.histogram(np.ascontiguousarray(symbols), symbols.dtype.itemsize, counts):
            return counts
        raise EncodeError(f"a symbol is outside the alphabet 0..{alphabet_size - 1}")
    flat = symbols.reshape(-1)
    counts = np.zeros(alphabet_size, dtype=np.int64)
    for lo in range(0, flat.size, _HISTOGRAM_CHUNK):  # bincount makes an int64 copy of what it counts
        counts += np.bincount(flat[lo : lo + _HISTOGRAM_CHUNK], minlength=alphabet_size)
    return counts


#: Symbols per ``np.bincount`` of the numpy path of :func:`histogram`.
_HISTOGRAM_CHUNK = 1 << 20


def _check_alphabet(alphabet_size) -> int:
    alphabet_size = int(alphabet_size)
    if not 1 <= alphabet_size <= MAX_CODEBOOK_SIZE:
        raise EncodeError(f"alphabet_size must be in 1..{MAX_CODEBOOK_SIZE}, got {alphabet_size}")
    return alphabet_size


def _check_symbols(symbols, alphabet_size: int) -> np.ndarray:
    """Symbols as a flat array of the smallest unsigned dtype that holds the alphabet."""
    sym = np.asarray(symbols)
    if sym.dtype == np.bool_:
        sym = sym.astype(np.uint8)
    if not np.issubdtype(sym.dtype, np.integer):
        raise EncodeError(f"symbols must be integers, got dtype {sym.dtype}")
    sym = sym.reshape(-1)
    if sym.size == 0:
        return sym.astype(np.uint8)
    lo, hi = int(sym.min()), int(sym.max())
    if lo < 0 or hi >= alphabet_size:
        bad = lo if lo < 0 else hi
        raise EncodeError(f"symbol {bad} is outside the alphabet 0..{alphabet_size - 1}")
    dtype = symbol_dtype(alphabet_size)
    return sym.astype(dtype, copy=False)


def _lane_major(sym: np.ndarray, lanes: int) -> np.ndarray:
    """Symbols reordered lane by lane (lane 0's symbols, then lane 1's, ...)."""
    n = sym.size
    full, extra = divmod(n, lanes)
    grid = sym[: full * lanes].reshape(full, lanes)
    out = np.empty(n, dtype=sym.dtype)
    head = out[: extra * (full + 1)].reshape(extra, full + 1)  # lanes with one more symbol
    _transpose(grid[:, :extra], head[:, :full])
    head[:, full] = sym[full * lanes :]
    _transpose(grid[:, extra:], out[extra * (full + 1) :].reshape(lanes - extra, full))
    return out


def _transpose(src: np.ndarray, dst: np.ndarray, tile: int = 128) -> None:
    """``dst[...] = src.T`` in square tiles (about twice as fast as numpy's strided copy)."""
    rows, cols = src.shape
    for c in range(0, cols, tile):  # tiles of a matrix, not a loop per symbol
        for r in range(0, rows, tile):
            dst[c : c + tile, r : r + tile] = src[r : r + tile, c : c + tile].T


def _write_codes(lane_major, len_table, code_table, lanes: int, n: int):
    """Lane lengths (int64) and the payload bytes of the codes of ``lane_major``."""
    full, extra = divmod(n, lanes)
    lens = len_table.take(lane_major)
    lane_starts = np.arange(lanes, dtype=np.int64) * full + np.minimum(np.arange(lanes), extra)
    lane_bits = np.add.reduceat(lens, lane_starts, dtype=np.int64)
    total_bits = int(lane_bits.sum())
    words = np.zeros((total_bits + 31) // 32 + 2, dtype=np.uint32)
    bit_base = 0
    for start in range(0, n, _ENCODE_BLOCK):  # blocks of symbols, not a loop per symbol
        stop = min(start + _ENCODE_BLOCK, n)
        block_lens = lens[start:stop]
        ends = np.cumsum(block_lens, dtype=np.int64)
        block_bits = int(ends[-1])
        first_word, first_shift = divmod(bit_base, 32)
        # positions relative to the first word of this block
        pos = ends - block_lens + first_shift
        shifted = code_table.take(lane_major[start:stop]) << (pos & 31).astype(np.uint64)
        word_of = pos >> 5
        nwords = (first_shift + block_bits + 31) // 32 + 1
        # Codes are disjoint bit ranges and sorted: the sum of a word's run of shifted
        # codes is their OR (< 2**52). Run sums come from a wrapping cumulative sum.
        run_end = np.cumsum(np.bincount(word_of, minlength=nwords))
        running = np.zeros(shifted.size + 1, dtype=np.uint64)
        np.cumsum(shifted, out=running[1:])  # wraps modulo 2**64; differences stay exact
        ends = running[run_end]
        sums = ends.copy()
        sums[1:] -= ends[:-1]
        block_words = (sums & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        block_words[1:] |= (sums[:-1] >> np.uint64(32)).astype(np.uint32)
        words[first_word : first_word + nwords] |= block_words
        bit_base += block_bits
    payload = words.astype("<u4", copy=False).tobytes()[: (total_bits + 7) // 8]
    return lane_bits, payload


# --------------------------------------------------------------------------- size


def encoded_size(histogram: np.ndarray, *, count: int | None = None, lane_symbols: int | None = None) -> int:
    """Size in bytes of the body :func:`encode` makes for this histogram (default code
    lengths; ``lane_symbols`` as :func:`encode` takes it).

    Exact except for the lane deltas' bit width ``w`` of the jump table, which depends on
    the order of the symbols: it is estimated from the expected spread of the lane
    lengths (normal approximation), usually exactly right and otherwise off by one bit per
    lane, i.e. by at most ``C / 8`` bytes (about 0.05 % of the body at the default lane
    policy). With a single lane (fewer than 2048 symbols) the result is exact.
    ``count`` defaults to ``histogram.sum()`` (they must agree).
    """
    hist = np.asarray(histogram).astype(np.int64).reshape(-1)
    n = int(hist.sum()) if count is None else int(count)
    if n == 0:
        return 4
    lengths = default_lengths(hist)
    table_symbols = int(np.flatnonzero(lengths)[-1]) + 1
    payload_bits = int((hist * lengths.astype(np.int64)).sum())
    lanes = lane_count(n, lane_symbols)
    width = _estimated_delta_width(hist, lengths, n, lanes)
    return _FIXED_BYTES + bitpack.packed_size(table_symbols, HUFFMAN_LENGTH_BITS) + bitpack.packed_size(lanes, width) + (payload_bits + 7) // 8


def _estimated_delta_width(hist, lengths, n: int, lanes: int) -> int:
    if lanes <= 1:
        return 0
    full, extra = divmod(n, lanes)
    p = hist / hist.sum()
    lens = lengths.astype(np.float64)
    mean = float((p * lens).sum())
    var = max(float((p * lens * lens).sum()) - mean * mean, 0.0)
    # expected range of `lanes` normal lane lengths (Blom's approximation of the maximum)
    z = statistics.NormalDist().inv_cdf((lanes - 0.375) / (lanes + 0.25))
    spread = 2.0 * z * math.sqrt(var * full)
    if extra:
        spread += mean
    return round(spread).bit_length()


# --------------------------------------------------------------------------- decode


class _Reader:
    """Sequential reads from the body with errors that name the field and its offset."""

    def __init__(self, buf: np.ndarray, field: str, offset: int):
        self.buf = buf
        self.pos = 0
        self.field = field
        self.offset = offset

    def where(self, pos: int | None = None) -> int:
        return self.offset + (self.pos if pos is None else pos)

    def error(self, sub: str, reason: str, pos: int | None = None, kind=FormatError):
        return kind(f"{self.field}.{sub}", reason, offset=self.where(pos))

    def take(self, size: int, sub: str) -> np.ndarray:
        left = self.buf.size - self.pos
        if size > left:
            raise self.error(sub, f"body is truncated: {size} bytes needed, {left} left")
        out = self.buf[self.pos : self.pos + size]
        self.pos += size
        return out

    def uint(self, size: int, sub: str) -> int:
        return int.from_bytes(self.take(size, sub), "little")


def _as_bytes(body) -> np.ndarray:
    if isinstance(body, np.ndarray):
        return np.ascontiguousarray(body).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(body).cast("B"), dtype=np.uint8)


@dataclass(frozen=True)
class LanePlan:
    """A Huffman body whose every field is checked, ready for a lockstep kernel.

    :func:`prepare` makes one; :func:`decode_plan` runs a kernel on it (compiled or numpy),
    and the torch decoder runs its own kernel and then :func:`check_lane_ends`. Decode
    tables are built when a kernel first asks for them, each sized for that kernel.
    """

    count: int
    dtype: np.dtype
    lanes: int
    lane_start: np.ndarray  # int64 start bit of each lane
    lane_bits: np.ndarray  # int64 declared length of each lane
    payload: np.ndarray  # uint8
    payload_bits: int
    symbols_sorted: np.ndarray | None  # present symbols in canonical order (by length, then symbol)
    lens_sorted: np.ndarray | None  # their code lengths (int64)
    max_len: int
    single_symbol: int | None  # the only present symbol, when there is just one
    reader: _Reader
    payload_at: int

    def lane_symbols(self, lane: int) -> int:
        """How many symbols lane ``lane`` holds (spec 7.3.4: the first ``count mod lanes`` one more)."""
        full, extra = divmod(self.count, self.lanes)
        return full + (lane < extra)

    @functools.cached_property
    def _full_tables(self):
        return _decode_tables(self.symbols_sorted, self.lens_sorted, self.dtype)

    @property
    def sym_table(self) -> np.ndarray:
        """The symbol of the code the next ``max_len`` bits start with (first bit lowest)."""
        return self._full_tables[0]

    @property
    def len_table(self) -> np.ndarray:
        """The length (int64) of the code the next ``max_len`` bits start with."""
        return self._full_tables[1]


def decode(body, count: int, alphabet_size: int, *, field: str = "stream", offset: int = 0, threads: int = 1) -> np.ndarray:
    """Symbols of a Huffman body: ``uint8`` when ``alphabet_size <= 256``, else ``uint16``.

    Raises :class:`FormatError` (``LimitError`` for sizes) naming ``field + ".subfield"``
    and the absolute byte offset (``offset`` is where the body starts in the file).
    """
    return decode_plan(prepare(body, count, alphabet_size, field=field, offset=offset), threads=threads)


def decode_plan(plan: LanePlan, *, threads: int = 1, values: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a prepared body and check every lane's end.

    Returns the symbols (``plan.dtype``), or with ``values`` (a table of at least
    ``max(symbol) + 1`` entries: a codebook) ``values[symbols]``, fused into the decode
    by the compiled kernel so the symbols are never stored; written into ``out`` (1-D,
    ``plan.count`` elements of ``values.dtype``) when given, else into a fresh array.
    """
    if out is not None and values is None:
        raise ValueError("out is for decoding through values (a codebook); symbols come in a fresh array")
    out_dtype = plan.dtype if values is None else values.dtype
    if plan.count == 0:
        return _output(out, 0, out_dtype)
    if plan.single_symbol is not None:
        symbols = _decode_single(plan.payload, plan.count, plan.single_symbol, plan.dtype, plan.reader, plan.payload_at)
        if values is None:
            return symbols
        return _filled(out, plan.count, values.dtype, values[plan.single_symbol])
    native = kernels.compiled()
    if native is not None:
        decoded, end = _decode_compiled(native, plan, values, threads, out)
    else:
        args = (plan.count, plan.lanes, plan.lane_start, plan.sym_table, plan.len_table, plan.max_len)
        if _prefer_jumping(plan.count, plan.lanes, plan.payload_bits):
            decoded, end = _decode_jumping(plan.payload, plan.payload_bits, *args)
        else:
            decoded, end = _decode_lanes(plan.payload, *args, threads=threads)
    check_lane_ends(plan, end)
    if values is not None and native is None:
        decoded = gather(values, decoded, out=out)
    return decoded


def _output(out: np.ndarray | None, count: int, dtype) -> np.ndarray:
    """``out``, checked to hold ``count`` elements of ``dtype``, or a fresh array for them
    (every element is written: no need to zero it)."""
    if out is None:
        return np.empty(count, dtype=dtype)
    if out.dtype != dtype or out.shape != (count,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable 1-D array of {count} {np.dtype(dtype).name}, got {out.dtype.name} {out.shape}")
    return out


def _filled(out: np.ndarray | None, count: int, dtype, value) -> np.ndarray:
    out = _output(out, count, dtype)
    out.fill(value)
    return out


def gather(values: np.ndarray, symbols: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``values[symbols]`` (symbols already checked against the table), into ``out`` when
    given, else into a fresh array.

    numpy: a chunk at a time, as np.take converts its indices to intp first (in one call
    over a whole tensor that copy would take 8 bytes per element).
    """
    out = _output(out, symbols.size, values.dtype)
    native = kernels.compiled()
    if native is not None and symbols.dtype.itemsize <= 2 and values.size:
        native.gather(_bytes_view(symbols), symbols.dtype.itemsize, _bytes_view(values), values.dtype.itemsize, _bytes_view(out))
        return out
    for lo in range(0, symbols.size, GATHER_CHUNK):
        np.take(values, symbols[lo : lo + GATHER_CHUNK], out=out[lo : lo + GATHER_CHUNK])
    return out


#: Symbols gathered per np.take call by the numpy path of :func:`gather`.
GATHER_CHUNK = 1 << 20
#: Lanes and symbols below which splitting a stream over threads is not worth a thread.
#: Measured on two otherwise idle cores with the persistent pool (parallel.py), 5-bit codes
#: to float32, two threads over one: 1.19x at 600K symbols; at 1M 1.6x or 0.7x from one
#: round to the next (a worker woken for a millisecond's work may land on the caller's
#: core); at 2M 1.2-2.0x, median 1.57x; at 4M 1.5-2.0x. So a stream splits from 1M symbols per
#: thread: in two from 2M.
_MIN_COMPILED_LANES_PER_THREAD = 64
_MIN_COMPILED_SYMBOLS_PER_THREAD = 1_000_000


def _bytes_view(array: np.ndarray) -> np.ndarray:
    """A contiguous array's bytes, for the compiled kernels (any dtype, bfloat16 included)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


#: Widths of the compiled kernel's first table: codes up to this long are one lookup, longer
#: ones a reload of the lane's window and a binary search over the canonical codes.
_PRIMARY_BITS = range(9, 13)
#: Share of a stream's symbols (estimated from the code lengths: a code of length L is taken
#: to code 2**-L of them) a narrower first table may leave to the slow path. Narrower tables
#: stay in L1 cache and let a lane decode more codes per 64-bit load (on all-MiniLM-L6-v2's
#: streams 9-11 bits decoded 10-30 % faster than 12).
_LONG_CODE_SHARE = 1 / 64
#: The same share for the vector loop (``_kernels.VECTOR_LANES`` lanes a step, where the CPU
#: has AVX-512): a step in which any of its lanes meets a longer code goes through the slow
#: path, so it takes wider tables. bfloat16's heads (10 bits) loaded 11% faster at 1/256 than
#: at 1/64, and the same from 1/256 to 1/4096.
_VECTOR_LONG_CODE_SHARE = 1 / 256


def primary_bits(lens_sorted: np.ndarray, max_len: int, long_share: float = _LONG_CODE_SHARE) -> int:
    """The compiled kernel's first-table width for a code: the narrowest of ``_PRIMARY_BITS``
    whose longer codes carry at most ``long_share`` of the symbols (every code fits when
    ``max_len`` is at most that width)."""
    if max_len <= _PRIMARY_BITS[0]:
        return int(max_len)
    # Kraft weight of the codes longer than each width, in units of 2**-max_len (exact integers)
    per_length = np.bincount(np.asarray(lens_sorted, dtype=np.int64), minlength=max_len + 1).tolist()
    longer = 0
    weights = {}
    for length in range(max_len, _PRIMARY_BITS[0], -1):
        longer += per_length[length] << (max_len - length)
        weights[length - 1] = longer
    for bits in _PRIMARY_BITS:
        if max_len <= bits:
            return int(max_len)
        if weights[bits] <= long_share * (1 << max_len):
            return bits
    return _PRIMARY_BITS[-1]


def _compiled_tables(native, plan: LanePlan, values: np.ndarray | None):
    """The compiled kernel's tables: a primary table of :func:`primary_bits` bits (length 0
    where a code is longer) and the canonical codes left-justified to 20 bits, each with the
    value to write (the symbol itself, or ``values[symbol]``), filled by the extension."""
    long_value = plan.symbols_sorted.astype(plan.dtype) if values is None else values[plan.symbols_sorted]
    long_len = plan.lens_sorted.astype(np.uint8)
    vector = getattr(native, "VECTOR_LANES", 0)
    width = primary_bits(plan.lens_sorted, plan.max_len, _VECTOR_LONG_CODE_SHARE if vector and plan.lanes >= vector else _LONG_CODE_SHARE)
    primary_len = np.empty(1 << width, dtype=np.uint8)
    primary_value = np.empty(1 << width, dtype=long_value.dtype)
    long_start = np.empty(long_len.size, dtype=np.uint32)
    if not native.huffman_tables(
        long_len, _bytes_view(long_value), long_value.dtype.itemsize, width, primary_len, _bytes_view(primary_value), long_start
    ):
        # prepare() has rejected every incomplete code; the kernel checks again rather than trust it
        raise plan.reader.error("code_lengths", "the code lengths do not make a complete code", plan.payload_at)  # pragma: no cover
    return width, primary_len, primary_value, long_start, long_len, long_value


def _decode_compiled(native, plan: LanePlan, values: np.ndarray | None, threads: int, out: np.ndarray | None):
    width, primary_len, primary_value, long_start, long_len, long_value = _compiled_tables(native, plan, values)
    out = _output(out, plan.count, long_value.dtype)
    end = np.empty(plan.lanes, dtype=np.int64)
    groups = min(max(int(threads), 1), max(min(plan.lanes // _MIN_COMPILED_LANES_PER_THREAD, plan.count // _MIN_COMPILED_SYMBOLS_PER_THREAD), 1))
    bounds = [plan.lanes * k // groups for k in range(groups + 1)]
    args = (plan.payload, plan.lane_start, plan.count, plan.lanes)
    tables = (width, plan.max_len, primary_len, _bytes_view(primary_value), long_start, long_len, _bytes_view(long_value))
    out_bytes = _bytes_view(out)

    def run(span):
        native.huffman_decode(*args, *span, *tables, long_value.dtype.itemsize, out_bytes, end)

    spans = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    map_threads(run, spans, len(spans))
    return out, end


def check_lane_ends(plan: LanePlan, end: np.ndarray) -> None:
    """Spec 7.3.4: every lane must end exactly at its declared length."""
    wrong = end != plan.lane_start + plan.lane_bits
    if bool(wrong.any()):
        j = int(np.argmax(wrong))
        if int(end[j]) > plan.payload_bits:
            what = "runs past the end of the payload"
        else:
            what = f"consumes {int(end[j] - plan.lane_start[j])} bits"
        raise plan.reader.error(
            "payload",
            f"lane {j} {what} decoding its {plan.lane_symbols(j)} symbols, its declared length is {int(plan.lane_bits[j])} bits",
            plan.payload_at + int(plan.lane_start[j]) // 8,
        )


def prepare(body, count: int, alphabet_size: int, *, field: str = "stream", offset: int = 0) -> LanePlan:
    """Check every field of a Huffman body and build its decode tables (spec 7.3).

    Every size is checked against the body before anything is allocated, so the work and
    memory are bounded by the body length (and ``count <= 8 * len(body)``).
    """
    buf = _as_bytes(body)
    n = int(count)
    alphabet_size = int(alphabet_size)
    rd = _Reader(buf, field, offset)
    if n < 0:
        raise rd.error("count", f"symbol count {n} is negative", 0)
    if not 1 <= alphabet_size <= MAX_CODEBOOK_SIZE:
        raise rd.error("alphabet_size", f"alphabet size {alphabet_size} is not in 1..{MAX_CODEBOOK_SIZE}", 0)
    dtype = symbol_dtype(alphabet_size)

    table_symbols = rd.uint(4, "table_symbols")
    if n == 0:
        if table_symbols != 0:
            raise rd.error("table_symbols", f"is {table_symbols} for an empty stream (must be 0)", 0)
        if buf.size != 4:
            raise rd.error("trailing", f"{buf.size - 4} bytes after an empty stream's table_symbols")
        empty = np.zeros(0, dtype=np.int64)
        return LanePlan(0, np.dtype(dtype), 0, empty, empty, buf[:0], 0, None, None, 0, None, rd, 4)
    if table_symbols == 0:
        raise rd.error("table_symbols", f"is 0 but the stream holds {n} symbols", 0)
    if table_symbols > alphabet_size:
        raise rd.error("table_symbols", f"{table_symbols} exceeds the alphabet size {alphabet_size}", 0)
    if n > 8 * buf.size:
        raise rd.error("count", f"{n} symbols need at least {n} payload bits, the body holds {buf.size} bytes", 0, kind=LimitError)

    # 2. code lengths
    start = rd.pos
    packed = rd.take(bitpack.packed_size(table_symbols, HUFFMAN_LENGTH_BITS), "code_lengths")
    lengths = bitpack.unpack_checked(
        packed, table_symbols, HUFFMAN_LENGTH_BITS, field=f"{field}.code_lengths", offset=rd.where(start), dtype=np.uint8
    )
    symbols_sorted, lens_sorted = _check_lengths(lengths, rd, start)

    # 3. lanes
    lanes = rd.uint(4, "lane_count")
    if not 1 <= lanes <= n:
        raise rd.error("lane_count", f"{lanes} lanes for {n} symbols (must be 1..{n})", rd.pos - 4)
    if lanes < -(-n // MAX_LANE_SYMBOLS):
        raise rd.error("lane_count", f"{lanes} lanes for {n} symbols: a lane holds at most {MAX_LANE_SYMBOLS} symbols", rd.pos - 4, kind=LimitError)
    base = rd.uint(8, "lane_base_bits")
    width = rd.uint(1, "lane_delta_width")
    if width > 64:
        raise rd.error("lane_delta_width", f"{width} exceeds 64", rd.pos - 1)
    start = rd.pos
    packed = rd.take(bitpack.packed_size(lanes, width), "lane_deltas")
    deltas = bitpack.unpack_checked(packed, lanes, width, field=f"{field}.lane_deltas", offset=rd.where(start), dtype=np.uint64)

    # 5. payload
    payload_bits = rd.uint(8, "payload_bits")
    bits_at = rd.pos - 8
    if payload_bits > MAX_HUFFMAN_CODE_LENGTH * n:
        raise rd.error("payload_bits", f"{payload_bits} bits exceed 20 bits for each of {n} symbols", bits_at)
    if payload_bits < n:
        raise rd.error("payload_bits", f"{payload_bits} bits cannot hold {n} symbols", bits_at)
    need = (payload_bits + 7) // 8
    left = buf.size - rd.pos
    if left < need:
        raise rd.error("payload", f"body is truncated: {payload_bits} payload bits need {need} bytes, {left} left")
    if left > need:
        raise rd.error("trailing", f"{left - need} bytes after the payload", rd.pos + need)
    payload_at = rd.pos
    payload = buf[payload_at:]
    if payload_bits % 8 and int(payload[-1]) >> (payload_bits % 8):
        raise rd.error("payload", "padding bits after the last code are not zero", buf.size - 1)

    # lane lengths: every lane must hold its symbols at 1..maxlen bits each, which also
    # bounds every sum below far from overflow.
    full, extra = divmod(n, lanes)
    min_len, max_len = int(lens_sorted[0]), int(lens_sorted[-1])
    if base > max_len * (full + 1):
        raise rd.error("lane_base_bits", f"{base} bits exceed what a lane of at most {full + 1} symbols can hold", start - 9)
    if width:
        cap = np.uint64(max_len * (full + 1) - base)
        if int(deltas.max()) > cap:
            j = int(np.argmax(deltas > cap))
            raise rd.error("lane_deltas", f"lane {j} is longer than {full + 1} codes of at most {max_len} bits", start)
    lane_bits = deltas.astype(np.int64) + base
    # lanes 0..extra-1 hold full + 1 symbols, the others full: each group's extremes checked
    for first, stop, symbols in ((0, extra, full + 1), (extra, lanes, full)):
        group = lane_bits[first:stop]
        if group.size and (int(group.min()) < symbols * min_len or int(group.max()) > symbols * max_len):
            j = first + int(np.argmax((group < symbols * min_len) | (group > symbols * max_len)))
            raise rd.error(
                "lane_deltas" if width else "lane_base_bits",
                f"lane {j} declares {int(lane_bits[j])} bits for {symbols} codes of {min_len}..{max_len} bits",
                start if width else start - 9,
            )
    total = int(lane_bits.sum())
    if total != payload_bits:
        raise rd.error("payload_bits", f"is {payload_bits} but the lanes add up to {total} bits", bits_at)
    lane_start = np.cumsum(lane_bits) - lane_bits

    single = int(symbols_sorted[0]) if symbols_sorted.size == 1 else None
    return LanePlan(
        n,
        np.dtype(dtype),
        lanes,
        lane_start,
        lane_bits,
        payload,
        payload_bits,
        symbols_sorted,
        lens_sorted,
        max_len,
        single,
        rd,
        payload_at,
    )


def _check_lengths(lengths: np.ndarray, rd: _Reader, start: int):
    """Present symbols in canonical order and their lengths; errors for invalid tables."""
    per_length = np.bincount(lengths)  # lengths are 5-bit fields: at most 32 counts
    if per_length.size > MAX_HUFFMAN_CODE_LENGTH + 1:
        j = int(np.argmax(lengths > MAX_HUFFMAN_CODE_LENGTH))
        raise rd.error("code_lengths", f"symbol {j} has length {int(lengths[j])} (at most {MAX_HUFFMAN_CODE_LENGTH})", start + 5 * j // 8)
    counts = per_length.tolist()
    absent = counts[0]
    if absent == lengths.size:
        raise rd.error("code_lengths", "no symbol has a code", start)
    symbols_sorted = np.argsort(lengths, kind="stable")[absent:]  # by length, then symbol; the absent first
    lens_sorted = lengths[symbols_sorted].astype(np.int64)
    if symbols_sorted.size == 1:
        if lens_sorted[0] != 1:
            raise rd.error("code_lengths", f"the only present symbol must have length 1, not {int(lens_sorted[0])}", start)
        return symbols_sorted, lens_sorted
    kraft = sum(count << (MAX_HUFFMAN_CODE_LENGTH - length) for length, count in enumerate(counts) if length)
    full = 1 << MAX_HUFFMAN_CODE_LENGTH
    if kraft > full:
        raise rd.error("code_lengths", f"code lengths are over-subscribed (Kraft sum {kraft / full:.6g} > 1)", start)
    if kraft < full:
        raise rd.error("code_lengths", f"code lengths are incomplete (Kraft sum {kraft / full:.6g} < 1)", start)
    return symbols_sorted, lens_sorted


def _decode_tables(symbols_sorted: np.ndarray, lens_sorted: np.ndarray, dtype):
    """Symbol and length tables indexed by the next ``L`` payload bits, first bit lowest."""
    top = int(lens_sorted[-1])
    reps = np.left_shift(np.int64(1), top - lens_sorted)
    by_code = np.repeat(np.arange(symbols_sorted.size), reps)  # index = code, MSB first
    entry = by_code[_reversed_index(top)]
    sym_table = symbols_sorted[entry].astype(dtype)
    len_table = lens_sorted[entry].astype(np.int64)
    return sym_table, len_table


@functools.lru_cache(maxsize=MAX_HUFFMAN_CODE_LENGTH + 1)
def _reversed_index(width: int) -> np.ndarray:
    """``i`` with its low ``width`` bits reversed, for every ``i < 2**width`` (read-only, cached:
    every stream of the same longest code length needs the same one)."""
    index = _reverse_bits(np.arange(1 << width, dtype=np.int64), width).astype(np.int32)
    index.flags.writeable = False
    return index


def _decode_single(payload, n: int, symbol: int, dtype, rd: _Reader, payload_at: int) -> np.ndarray:
    """One present symbol: every code is the single bit 0, so the payload is all zero."""
    nonzero = np.flatnonzero(payload)
    if nonzero.size:
        at = int(nonzero[0])
        raise rd.error("payload", "a 1 bit in a stream whose only code is 0", payload_at + at)
    return np.full(n, symbol, dtype=dtype)


def _windows(payload) -> np.ndarray:
    """Overlapping 64-bit windows at 32-bit steps: window ``k`` holds payload bits ``32k .. 32k+63``.

    Kept as int64 (``take`` indexes fastest with intp and aligned words), zero past the end.
    """
    nwords = (payload.size + 3) // 4 + 2
    padded = np.zeros(nwords * 4, dtype=np.uint8)
    padded[: payload.size] = payload
    words = padded.view("<u4").astype(np.int64)
    return words[:-1] | (words[1:] << 32)


def _prefer_jumping(n: int, lanes: int, payload_bits: int) -> bool:
    """Whether pointer jumping is expected to beat lockstep steps (few, long lanes).

    Measured on one core: lockstep costs about 6 us per step plus 7 ns per symbol,
    whatever the lane count, so one long lane is slow; pointer jumping about 1.1 ns per
    payload bit per doubling round, plus about 10 us per round for each lane and window.
    """
    steps = -(-n // lanes)
    if steps < 4:
        return False
    rounds = min(steps, _JUMP_WINDOW_BITS).bit_length()
    windows = lanes + payload_bits // _JUMP_WINDOW_BITS
    jumping = payload_bits * (rounds + 3) * 1.1e-9 + windows * (rounds + 2) * 10e-6
    lockstep = steps * 6e-6 + n * 7e-9
    return jumping < lockstep


def _decode_jumping(payload, payload_bits: int, n: int, lanes: int, lane_start, sym_table, len_table, max_len: int):
    """Decode lane by lane with pointer jumping: same symbols and end positions as lockstep.

    Within a window of at most ``_JUMP_WINDOW_BITS`` bits starting at a code boundary,
    one code is decoded at *every* bit position, giving ``next[p]`` (where the code
    starting at ``p`` ends; positions past the window are absorbing) and ``symbol[p]``.
    The lane's code positions in the window are ``next^t(0)``, found for all ``t`` with
    ``log2`` squarings of ``next``; the lane continues in a new window where the last
    code inside this one ends. Work is about ``P * log2(window)`` gathers, memory is
    bounded by the window, and bits past the payload read as zero (as in lockstep).
    """
    windows = _windows(payload)
    mask = np.int64((1 << max_len) - 1)
    out = np.empty(n, dtype=sym_table.dtype)
    end = np.empty(lanes, dtype=np.int64)
    limit = payload_bits + 1  # a lane past this has overrun: stop decoding it
    for lane in range(lanes):  # lanes (few of them: see _prefer_jumping)
        mine = out[lane::lanes]
        count = mine.size
        pos = int(lane_start[lane])
        done = 0
        while done < count and pos <= limit:  # windows of one lane
            todo = count - done
            size = min(_JUMP_WINDOW_BITS, todo * max_len, max(payload_bits - pos, 0) + 1)
            at = np.arange(pos, pos + size, dtype=np.int64)
            bits = (windows.take(at >> 5, mode="clip") >> (at & 31)) & mask
            nxt = np.empty(size + 1, dtype=np.int64)  # local positions; size = "left the window"
            np.minimum(at + len_table.take(bits, mode="clip") - pos, size, out=nxt[:size])
            nxt[size] = size
            chain = np.empty(min(todo, size), dtype=np.int64)
            chain[0] = 0
            jump, known = nxt, 1  # jump == next^known
            while known < chain.size:  # doubling rounds
                more = min(known, chain.size - known)
                jump.take(chain[:more], out=chain[known : known + more], mode="clip")
                known += more
                if known < chain.size:
                    jump = jump.take(jump, mode="clip")
            inside = int(np.searchsorted(chain, size))  # the chain increases until it leaves
            mine[done : done + inside] = sym_table.take(bits.take(chain[:inside]), mode="clip")
            last = int(chain[inside - 1])
            pos += last + int(len_table[bits[last]])
            done += inside
        end[lane] = pos if done == count else limit
    return out, end


def _decode_lanes(payload, n: int, lanes: int, lane_start, sym_table, len_table, max_len: int, threads: int = 1):
    """Decode all lanes in lockstep; returns the symbols and each lane's end position.

    With ``threads > 1`` the lanes are split into contiguous groups decoded by a thread
    each (numpy releases the GIL inside its kernels); every group writes its own columns
    of the shared output, so the result does not depend on the thread count.
    """
    windows = _windows(payload)
    out = np.empty(n, dtype=sym_table.dtype)
    pos = lane_start.astype(np.int64)  # a copy; advanced in place, group by group
    groups = min(max(int(threads), 1), max(lanes // _MIN_LANES_PER_THREAD, 1))
    bounds = np.linspace(0, lanes, groups + 1).astype(np.int64)
    work = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    map_threads(lambda span: _decode_lane_group(windows, out, pos, n, lanes, sym_table, len_table, max_len, *span), work, len(work))
    return out, pos


def _decode_lane_group(windows, out, pos_all, n: int, lanes: int, sym_table, len_table, max_len: int, lo: int, hi: int) -> None:
    """Lockstep over lanes ``lo .. hi - 1``: their symbols go to their columns of ``out``."""
    mask = np.int64((1 << max_len) - 1)
    full, extra = divmod(n, lanes)
    grid = out[: full * lanes].reshape(full, lanes)
    pos = pos_all[lo:hi]  # a view: the caller sees the end positions
    width = hi - lo
    index = np.empty(width, dtype=np.int64)
    shift = np.empty(width, dtype=np.int64)
    bits = np.empty(width, dtype=np.int64)
    used = np.empty(width, dtype=np.int64)
    five, low5 = np.int64(5), np.int64(31)
    for step in range(full):  # lockstep steps: a handful of numpy ops on all lanes of the group
        np.right_shift(pos, five, out=index)
        windows.take(index, out=bits, mode="clip")
        np.bitwise_and(pos, low5, out=shift)
        np.right_shift(bits, shift, out=bits)
        np.bitwise_and(bits, mask, out=bits)
        sym_table.take(bits, out=grid[step, lo:hi], mode="clip")
        len_table.take(bits, out=used, mode="clip")
        np.add(pos, used, out=pos)
    tail = min(extra, hi) - lo  # lanes of this group that hold one more symbol
    if tail > 0:
        p = pos[:tail]
        b = windows.take(p >> five, mode="clip")
        b = (b >> (p & low5)) & mask
        out[full * lanes + lo : full * lanes + lo + tail] = sym_table.take(b, mode="clip")
        p += len_table.take(b, mode="clip")
