"""The float_split encoding's bit arithmetic (spec 6.6): a float's bits into its exponent
field and the planes of its sign and mantissa, and back, for whole arrays at once.

An element of a dtype with E exponent bits and M mantissa bits is ``sign | exponent |
mantissa`` from its most significant bit down. The exponent field of trained weights
carries a few bits of information in its E; the sign and mantissa are close to uniform.
So the exponents form one symbol stream (alphabet ``2**E``, Huffman-coded in practice),
and the R = 1 + M remaining bits, ``rest = sign << M | mantissa``, are cut into planes of
8 bits from the most significant end (the last plane holds ``R mod 8`` bits when R is not
a multiple of 8), each its own symbol stream: a plane that compresses (the top mantissa
bits of float32 do, a little) gets zstd or Huffman, the others are stored as they are.

| dtype | E | M | planes (bits) |
|---|---|---|---|
| float32 | 8 | 23 | 8, 8, 8 |
| bfloat16 | 8 | 7 | 8 |
| float16 | 5 | 10 | 8, 3 |
| float64 | 11 | 52 | 8, 8, 8, 8, 8, 8, 5 |

Every bit pattern survives: +-0, subnormals, infinities and NaNs of any payload are only
bits to this encoding.
"""

from __future__ import annotations

import numpy as np

from .constants import DTYPE_ITEMSIZE, FLOAT_FIELDS, DType

#: Unsigned integer type holding one element's bits, per itemsize.
_BITS = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def fields(dtype: DType) -> tuple[int, int]:
    """(exponent bits E, mantissa bits M) of a float dtype."""
    return FLOAT_FIELDS[dtype]


def plane_widths(dtype: DType) -> list[int]:
    """Bits in each plane of ``sign << M | mantissa``, most significant plane first."""
    _, mantissa = FLOAT_FIELDS[dtype]
    rest = 1 + mantissa
    return [8] * (rest // 8) + ([rest % 8] if rest % 8 else [])


def alphabets(dtype: DType) -> list[int]:
    """The alphabet size of every stream of the payload, in order: exponents, then planes."""
    exponent, _ = FLOAT_FIELDS[dtype]
    return [1 << exponent] + [1 << width for width in plane_widths(dtype)]


def bits_dtype(dtype: DType) -> np.dtype:
    """The unsigned integer type of one element's bits (little-endian)."""
    return _BITS[DTYPE_ITEMSIZE[dtype]]


def split(bits: np.ndarray, dtype: DType) -> list[np.ndarray]:
    """The streams' symbols of a flat array of element bits: exponents, then every plane."""
    exponent, mantissa = FLOAT_FIELDS[dtype]
    word = bits.dtype.type
    total = exponent + mantissa  # the sign sits at this bit
    exponents = (bits >> word(mantissa)) & word((1 << exponent) - 1)
    rest = ((bits >> word(total)) << word(mantissa)) | (bits & word((1 << mantissa) - 1))
    symbols = [exponents.astype(np.uint16 if exponent > 8 else np.uint8)]
    shift = 1 + mantissa
    for width in plane_widths(dtype):
        shift -= width
        symbols.append(((rest >> word(shift)) & word((1 << width) - 1)).astype(np.uint8))
    return symbols


def join(symbols: list[np.ndarray], dtype: DType) -> np.ndarray:
    """The inverse of :func:`split`: element bits from the streams' symbols (any unsigned
    integer arrays of equal length, each symbol already checked against its alphabet)."""
    exponent, mantissa = FLOAT_FIELDS[dtype]
    word_dtype = bits_dtype(dtype)
    word = word_dtype.type
    rest = np.zeros(symbols[0].size, dtype=word_dtype)
    for plane, width in zip(symbols[1:], plane_widths(dtype)):
        rest <<= word(width)
        rest |= plane.astype(word_dtype, copy=False)
    out = (rest >> word(mantissa)) << word(exponent + mantissa)  # the sign
    out |= symbols[0].astype(word_dtype, copy=False) << word(mantissa)
    out |= rest & word((1 << mantissa) - 1)
    return out


def is_zero(symbols: list[np.ndarray], dtype: DType) -> np.ndarray:
    """Which elements are +-0 (exponent and mantissa zero), from the symbols alone."""
    _, mantissa = FLOAT_FIELDS[dtype]
    zero = symbols[0] == 0
    shift = 1 + mantissa
    for plane, width in zip(symbols[1:], plane_widths(dtype)):
        shift -= width
        top = shift + width > mantissa  # the top plane holds the sign above its mantissa bits
        mantissa_part = plane & ((1 << (mantissa - shift)) - 1) if top else plane
        zero &= mantissa_part == 0
    return zero
