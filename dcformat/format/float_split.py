"""The float_split encoding's bit arithmetic (spec 6.6): a float's bits into a *head* (its
exponent field and the ``h`` highest mantissa bits) and the planes of the rest (its sign
and the other mantissa bits), and back, for whole arrays at once.

An element of a dtype with E exponent bits and M mantissa bits is ``sign | exponent |
mantissa`` from its most significant bit down. The exponent field of trained weights
carries a few bits of information in its E, and the highest mantissa bits a little more
once the exponent is known (the values within an octave are not uniform); the sign and the
low mantissa bits are close to uniform. So the heads form one symbol stream (alphabet
``2**(E + h)``, Huffman-coded in practice), and the ``R = 1 + M - h`` remaining bits,
``rest = sign << (M - h) | low mantissa``, are cut into planes of 8 bits from the most
significant end (the last plane holds ``R mod 8`` bits when R is not a multiple of 8), each
its own symbol stream, so a plane that compresses gets zstd or Huffman and the others are
stored as they are. A tensor is coded in blocks of elements, each with its own streams, so
the Huffman tables follow the statistics along a large tensor.

Every bit pattern survives: +-0, subnormals, infinities and NaNs of any payload are only
bits to this encoding.
"""

from __future__ import annotations

import numpy as np

from .constants import DTYPE_ITEMSIZE, FLOAT_FIELDS, DType

#: Unsigned integer type holding one element's bits, per itemsize.
_BITS = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
#: The encoder's choices (spec 6.6.4): mantissa bits coded with the exponent, elements per
#: block, and symbols per lane of a block's Huffman streams. Measured on all-MiniLM-L6-v2
#: (tools/bench_lossless.py): two head bits gave the smallest files in float32, bfloat16 and
#: float16. In float32 no head bit costs 0.24% more bytes (still fewer than ZipNN's) and
#: decodes 19% faster (shorter codes, and the rest is three whole bytes, nothing to unpack),
#: so float32 takes none; in bfloat16 none would cost 0.56% and lose to ZipNN's size, but one
#: head bit costs 0.19% (55.8 KB on MiniLM, still 85 KB under ZipNN's file) and loads 7%
#: faster (36.7 against 39.5 ms on one core, the files alternating in one process), so
#: bfloat16 takes one.
#: Blocks of 2**20 elements in lanes of 4096 symbols (four times the Huffman default), against
#: 2**18 and 1024: a quarter of the streams to plan and call kernels for, and a quarter of
#: the lane tables' bytes, which pays for tables that follow the statistics less closely.
#: One core, from memory, the files alternating in one process: float16 42.5 -> 36.0 ms for
#: 89 bytes more (2**19 blocks in lanes of 1024 had cost it 8 KB, and 2**20 in lanes of 2048
#: left it 17 bytes under ZipNN's file), bfloat16 36.6 -> 34.6 ms for 10.6 KB less (from
#: 2**19 and 1024), float32 48.1 -> 47.7 ms for 12.1 KB less.
#: A stream is written with zstd only where that saves 1% of the best other coder's bytes:
#: zstd decoded float16 heads at ~0.9 G symbols/s, Huffman at ~1.5, and three head streams of
#: MiniLM's float16 file (1.3M symbols) were zstd for 0.01-0.5% fewer bytes; Huffman instead
#: cost 3.2 KB and loaded it 0.85 ms faster (35.3 -> 34.4 ms). Low mantissa planes that zstd
#: codes well (float32 weights that were once 16-bit) save far more and stay zstd.
#: Codes of at most 11 bits in a block's Huffman streams where the default would make longer
#: ones: the decode table then has at most 2**11 entries (16 KiB, half the L1 cache) and a
#: 64-bit window holds one code more. bfloat16's heads had come out at 12 bits in most
#: blocks: MiniLM loads 3% faster (32.2-32.6 -> 31.4-31.5 ms) for 9.9 KB (0.03%); float32
#: 8.3 KB, float16 0.5 KB, both loading as before.
CODE_LENGTH_LIMIT = 11
DEFAULT_HEAD_BITS = 2
FLOAT32_HEAD_BITS = 0
BFLOAT16_HEAD_BITS = 1
DEFAULT_BLOCK_ELEMENTS = 1 << 20
LANE_SYMBOLS = 4096
ZSTD_MIN_SAVING = 0.01
#: The smallest block a file may declare (spec 6.6.2): it bounds the number of blocks, and
#: so the work of a hostile payload, by the element count.
MIN_BLOCK_ELEMENTS = 1 << 12
#: Heads are at most 16 bits (spec 6.6.1), as every alphabet of the format is at most 2**16.
MAX_HEAD_SYMBOL_BITS = 16


def fields(dtype: DType) -> tuple[int, int]:
    """(exponent bits E, mantissa bits M) of a float dtype."""
    return FLOAT_FIELDS[dtype]


def max_head_bits(dtype: DType) -> int:
    """The largest valid ``h``: at most M, and E + h at most 16."""
    exponent, mantissa = FLOAT_FIELDS[dtype]
    return min(mantissa, MAX_HEAD_SYMBOL_BITS - exponent)


def default_head_bits(dtype: DType) -> int:
    """The ``h`` the encoder writes for a dtype."""
    if dtype == DType.FLOAT32:
        return FLOAT32_HEAD_BITS
    if dtype == DType.BFLOAT16:
        return BFLOAT16_HEAD_BITS
    return min(DEFAULT_HEAD_BITS, max_head_bits(dtype))


def plane_widths(dtype: DType, head_bits: int) -> list[int]:
    """Bits in each plane of the rest, most significant plane first."""
    _, mantissa = FLOAT_FIELDS[dtype]
    rest = 1 + mantissa - head_bits
    return [8] * (rest // 8) + ([rest % 8] if rest % 8 else [])


def alphabets(dtype: DType, head_bits: int) -> list[int]:
    """The alphabet size of every stream of a block, in order: heads, then planes."""
    exponent, _ = FLOAT_FIELDS[dtype]
    return [1 << (exponent + head_bits)] + [1 << width for width in plane_widths(dtype, head_bits)]


def bits_dtype(dtype: DType) -> np.dtype:
    """The unsigned integer type of one element's bits (little-endian)."""
    return _BITS[DTYPE_ITEMSIZE[dtype]]


def split(bits: np.ndarray, dtype: DType, head_bits: int) -> list[np.ndarray]:
    """The streams' symbols of a flat array of element bits: heads, then every plane."""
    exponent, mantissa = FLOAT_FIELDS[dtype]
    word = bits.dtype.type
    low = mantissa - head_bits  # mantissa bits left in the rest
    heads = (bits >> word(low)) & word((1 << (exponent + head_bits)) - 1)
    rest = ((bits >> word(exponent + mantissa)) << word(low)) | (bits & word((1 << low) - 1))
    symbols = [heads.astype(np.uint16 if exponent + head_bits > 8 else np.uint8)]
    shift = 1 + low
    for width in plane_widths(dtype, head_bits):
        shift -= width
        symbols.append(((rest >> word(shift)) & word((1 << width) - 1)).astype(np.uint8))
    return symbols


def join(symbols: list[np.ndarray], dtype: DType, head_bits: int) -> np.ndarray:
    """The inverse of :func:`split`: element bits from the streams' symbols (unsigned integer
    arrays of equal length, each symbol already checked against its alphabet). The numpy
    kernel; the compiled one (``format/decode.py``) merges the planes into place instead."""
    exponent, mantissa = FLOAT_FIELDS[dtype]
    word_dtype = bits_dtype(dtype)
    word = word_dtype.type
    low = mantissa - head_bits
    rest = np.zeros(symbols[0].size, dtype=word_dtype)
    for plane, width in zip(symbols[1:], plane_widths(dtype, head_bits)):
        rest <<= word(width)
        rest |= plane.astype(word_dtype, copy=False)
    out = (rest >> word(low)) << word(exponent + mantissa)  # the sign
    out |= symbols[0].astype(word_dtype, copy=False) << word(low)
    out |= rest & word((1 << low) - 1)
    return out


def is_zero(symbols: list[np.ndarray], dtype: DType, head_bits: int) -> np.ndarray:
    """Which elements are +-0 (exponent and mantissa zero), from the symbols alone."""
    _, mantissa = FLOAT_FIELDS[dtype]
    low = mantissa - head_bits
    zero = symbols[0] == 0
    shift = 1 + low
    for plane, width in zip(symbols[1:], plane_widths(dtype, head_bits)):
        shift -= width
        top = shift + width > low  # the top plane holds the sign above its mantissa bits
        mantissa_part = plane & ((1 << (low - shift)) - 1) if top else plane
        zero &= mantissa_part == 0
    return zero


def blocks(numel: int, block_elements: int) -> list[tuple[int, int]]:
    """The element ranges of the blocks, in order (none for an empty tensor)."""
    return [(lo, min(numel, lo + block_elements)) for lo in range(0, numel, block_elements)]
