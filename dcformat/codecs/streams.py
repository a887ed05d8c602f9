"""Symbol streams: a coder id, a body length, and a body (spec section 7).

A stream carries ``count`` symbols of an alphabet ``0 .. alphabet_size - 1``; both are
known from the enclosing payload, never stored in the stream itself. The encoder picks
the smallest of the three coders unless told which to use.

Decoding is in two steps, so that every decoder (this numpy one, the torch one, a
compiled one) runs over the same checks: :func:`plan` checks everything that can be
checked before decoding and returns a :class:`StreamPlan`; a kernel decodes the plan and
then calls :func:`check_symbols` (or, for Huffman, ``huffman.check_lane_ends``) on what it
produced. :func:`decode` is the numpy kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EncodeError, FormatError, UnsupportedError
from ..format.constants import Coder
from ..format.structs import STREAM_HEADER_SIZE, StreamHeader, parse_stream_header
from . import bitpack, huffman, zstd
from .alphabet import symbol_dtype


def estimate_size(histogram: np.ndarray, count: int, alphabet_size: int) -> int:
    """Stream bytes (header included) of the smaller of bit packing and Huffman, from a histogram.

    zstd is left out: its size is only known by compressing, which the encoder does once
    it has settled the layout (``encode`` below).
    """
    packed = bitpack.packed_size(count, bitpack.width_for(alphabet_size))
    return STREAM_HEADER_SIZE + min(packed, huffman.encoded_size(histogram, count=count))


#: Streams longer than this try zstd on a sample first (zstd at level 9 runs at tens of
#: MB/s, Huffman at 50 M symbols/s: a full trial that cannot win is the costliest step).
ZSTD_SAMPLE_SYMBOLS = 1 << 18
#: zstd is tried in full only if the sample comes within this factor of the best coder.
ZSTD_SAMPLE_MARGIN = 1.05


def encode(
    symbols: np.ndarray,
    alphabet_size: int,
    *,
    coder: Coder | None = None,
    zstd_level: int = zstd.DEFAULT_LEVEL,
    lane_symbols: int | None = None,
    length_limit: int | None = None,
    zstd_min_saving: float = 0.0,
) -> bytes:
    """Header and body of the stream; ``coder=None`` keeps the smallest (ties: the earlier id),
    zstd only where it is smaller than the best of the others by ``zstd_min_saving`` of it
    (zstd decodes slower than Huffman). ``lane_symbols`` and ``length_limit`` set a Huffman
    body's lanes and longest code (``huffman.encode``; default: its policy).

    On long streams zstd is first tried on a sample of the stream's start, and skipped
    when the sample compresses clearly worse than the best of the other two coders.
    """
    best = None
    candidates = [Coder(coder)] if coder is not None else [Coder.BITPACK, Coder.HUFFMAN]
    if coder is None and not _huffman_may_win(symbols, alphabet_size, lane_symbols):
        candidates = [Coder.BITPACK]  # it could not be smaller, and a tie keeps bit packing anyway
    for candidate in candidates:
        body = _encode_body(symbols, alphabet_size, candidate, zstd_level, lane_symbols, length_limit)
        if best is None or len(body) < len(best[1]):
            best = (candidate, body)
    beat = len(best[1]) * (1.0 - zstd_min_saving)
    if coder is None and _zstd_may_win(symbols, alphabet_size, beat, zstd_level):
        body = _encode_body(symbols, alphabet_size, Coder.ZSTD, zstd_level)
        if len(body) < beat:
            best = (Coder.ZSTD, body)
    chosen, body = best
    return StreamHeader.build(dict(coder=int(chosen), body_length=len(body))) + body


def _huffman_may_win(symbols: np.ndarray, alphabet_size: int, lane_symbols: int | None = None) -> bool:
    """False only when a Huffman body cannot be smaller than the bit-packed one.

    ``huffman.encoded_size`` is exact but for the jump table's delta width, which it may
    overestimate by a bit per lane; taking that off gives a lower bound. Uniform streams
    (the low mantissa planes of float_split) are spared a full Huffman encoding.
    """
    count = int(np.asarray(symbols).size)
    if count == 0:
        return True
    histogram = huffman.histogram(np.asarray(symbols).reshape(-1), alphabet_size)
    lower_bound = huffman.encoded_size(histogram, count=count, lane_symbols=lane_symbols) - -(-huffman.lane_count(count, lane_symbols) // 8)
    return lower_bound < bitpack.packed_size(count, bitpack.width_for(alphabet_size))


def _zstd_may_win(symbols: np.ndarray, alphabet_size: int, best_bytes: float, zstd_level: int) -> bool:
    count = symbols.size
    if count <= 4 * ZSTD_SAMPLE_SYMBOLS:
        return True
    sample = len(_encode_body(symbols.reshape(-1)[:ZSTD_SAMPLE_SYMBOLS], alphabet_size, Coder.ZSTD, zstd_level))
    return sample / ZSTD_SAMPLE_SYMBOLS <= ZSTD_SAMPLE_MARGIN * best_bytes / count


def _encode_body(
    symbols: np.ndarray, alphabet_size: int, coder: Coder, zstd_level: int, lane_symbols: int | None = None, length_limit: int | None = None
) -> bytes:
    if coder == Coder.BITPACK:
        return bitpack.pack(symbols, bitpack.width_for(alphabet_size))
    if coder == Coder.HUFFMAN:
        return huffman.encode(symbols, alphabet_size, lane_symbols=lane_symbols, length_limit=length_limit)
    if coder == Coder.ZSTD:
        return zstd.compress(np.ascontiguousarray(symbols, dtype=symbol_dtype(alphabet_size).newbyteorder("<")).tobytes(), level=zstd_level)
    raise EncodeError(f"unknown coder {coder!r}")


_CODERS = {coder.value: coder for coder in Coder}  # a dict lookup: calling the enum by value costs a microsecond


def read_header(buf, pos: int, end: int, *, field: str, base: int) -> tuple[Coder, int, int]:
    """Parse a stream header at ``buf[pos:]``; returns (coder, body start, body end).

    ``base`` is the file offset of ``buf[0]``, for error messages.
    """
    if end - pos < STREAM_HEADER_SIZE:
        raise FormatError(field, f"stream header needs {STREAM_HEADER_SIZE} bytes, {end - pos} left in the payload", offset=base + pos)
    header = parse_stream_header(buf[pos : pos + STREAM_HEADER_SIZE])
    coder = _CODERS.get(header.coder)
    if coder is None:
        raise UnsupportedError(field + ".coder", f"unknown coder id {header.coder}", offset=base + pos)
    start = pos + STREAM_HEADER_SIZE
    if header.body_length > end - start:
        raise FormatError(
            field + ".body_length",
            f"stream body of {header.body_length} bytes runs past the payload ({end - start} bytes left)",
            offset=base + pos + 1,
        )
    return coder, start, start + header.body_length


@dataclass(frozen=True)
class StreamPlan:
    """A symbol stream located, framed and checked as far as it can be before decoding."""

    coder: Coder
    body: memoryview
    count: int
    alphabet_size: int
    field: str
    offset: int  # file offset of the body
    lanes: huffman.LanePlan | None = None  # Huffman only: the checked lanes and decode tables

    @property
    def stored_bytes(self) -> int:
        """Bytes of the stream, its 9-byte header included."""
        return len(self.body) + STREAM_HEADER_SIZE

    @property
    def symbol_dtype(self) -> np.dtype:
        return symbol_dtype(self.alphabet_size)

    @property
    def bit_width(self) -> int:
        """Bits per symbol of a bit-packed stream."""
        return bitpack.width_for(self.alphabet_size)


def plan(coder: Coder, body, count: int, alphabet_size: int, *, field: str, offset: int) -> StreamPlan:
    """Check a stream body before decoding: a bit-packed body's length and padding, every
    field and lane of a Huffman body (and its decode tables built). A zstd body is checked
    while it is decompressed, against the exact size ``count`` symbols take."""
    lanes = None
    if coder == Coder.BITPACK:
        bitpack.check_packed(body, count, bitpack.width_for(alphabet_size), field=field, offset=offset)
    elif coder == Coder.HUFFMAN:
        lanes = huffman.prepare(body, count, alphabet_size, field=field, offset=offset)
    return StreamPlan(coder, body, count, alphabet_size, field, offset, lanes)


def symbols_need_checking(stream: StreamPlan) -> bool:
    """Whether a decoded symbol could fall outside the alphabet: not when the symbol dtype
    holds nothing else (256 symbols in bytes), so the scan for the largest can be skipped."""
    return stream.alphabet_size < 1 << (8 * stream.symbol_dtype.itemsize)


def check_symbols(stream: StreamPlan, largest: int) -> None:
    """Spec 7.1: every symbol a kernel decoded must be below the alphabet size.

    ``largest`` is the largest decoded symbol. Huffman kernels need not call this: their
    tables hold only symbols of the alphabet.
    """
    if largest >= stream.alphabet_size:
        raise FormatError(stream.field, f"symbol {largest} is outside the alphabet of {stream.alphabet_size}", offset=stream.offset)


def decode(stream: StreamPlan, *, threads: int = 1, values: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The stream's symbols, checked, as :attr:`StreamPlan.symbol_dtype`; with ``values`` (a
    table of ``alphabet_size`` entries, a codebook) ``values[symbols]`` instead, which the
    compiled Huffman kernel produces without storing the symbols, written into ``out``
    (``count`` elements of ``values.dtype``; only with ``values``) when given."""
    if out is not None and values is None:
        raise ValueError("out is for decoding through values (a codebook); symbols come in a fresh array")
    dtype = stream.symbol_dtype
    if stream.coder == Coder.HUFFMAN:
        return huffman.decode_plan(stream.lanes, threads=threads, values=values, out=out)
    if stream.coder == Coder.BITPACK:
        symbols = bitpack.unpack(stream.body, stream.count, stream.bit_width, dtype=dtype)
    else:
        raw = zstd.decompress_exact(stream.body, stream.count * dtype.itemsize, field=stream.field, offset=stream.offset)
        symbols = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    if symbols.size and symbols_need_checking(stream):
        check_symbols(stream, int(symbols.max()))
    return symbols if values is None else huffman.gather(values, symbols, out=out)
