"""Wire constants: the tables of spec/dcformat.md, in code.

Every number here is normative and pinned by ``tests/test_constants.py`` against the
spec's own tables. Ids are never reused: a retired id stays here as a tombstone.
"""

from __future__ import annotations

import enum

import numpy as np

#: Spec section 3. The first byte is non-ASCII and the CR LF / SUB / LF tail catches
#: text-mode transfers (the PNG trick).
MAGIC = b"\x89DCF\r\n\x1a\n"
VERSION_MAJOR = 1
#: The newest minor version this package reads and writes (1.1 added the float_split encoding).
VERSION_MINOR = 1
HEADER_SIZE = 40
#: Payloads start on multiples of this, so raw tensors can be memory-mapped in place.
ALIGNMENT = 64
#: The first payload starts here: the header padded to the alignment.
DATA_START = 64
#: Reserved metadata keys start with this prefix; user keys must not.
RESERVED_KEY_PREFIX = "dcformat."


class DType(enum.IntEnum):
    """Element type of a decoded tensor (spec section 5.2)."""

    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    FLOAT64 = 4
    INT8 = 5
    INT16 = 6
    INT32 = 7
    INT64 = 8
    UINT8 = 9
    UINT16 = 10
    UINT32 = 11
    UINT64 = 12
    BOOL = 13


#: Bytes per element, and the little-endian numpy storage type of each dtype.
#: bfloat16 is stored as its raw 16 bits; see ``dtypes.py`` for how it is exposed.
DTYPE_ITEMSIZE = {
    DType.FLOAT32: 4,
    DType.FLOAT16: 2,
    DType.BFLOAT16: 2,
    DType.FLOAT64: 8,
    DType.INT8: 1,
    DType.INT16: 2,
    DType.INT32: 4,
    DType.INT64: 8,
    DType.UINT8: 1,
    DType.UINT16: 2,
    DType.UINT32: 4,
    DType.UINT64: 8,
    DType.BOOL: 1,
}

DTYPE_STORAGE = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.BFLOAT16: np.dtype("<u2"),
    DType.FLOAT64: np.dtype("<f8"),
    DType.INT8: np.dtype("i1"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.UINT8: np.dtype("u1"),
    DType.UINT16: np.dtype("<u2"),
    DType.UINT32: np.dtype("<u4"),
    DType.UINT64: np.dtype("<u8"),
    DType.BOOL: np.dtype("u1"),
}

#: Dtypes a quantized encoding may decode to (spec section 6.3).
FLOAT_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64})
#: Dtypes a codebook may be stored in (spec section 6.3).
CODEBOOK_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16})


class Encoding(enum.IntEnum):
    """How a tensor's payload is laid out (spec section 6)."""

    RAW = 1
    ZSTD = 2
    QUANT_DENSE = 3
    QUANT_SPARSE = 4
    FLOAT_SPLIT = 5  # format 1.1


#: The minor version that defined each encoding id (spec 10.2): a file MUST NOT use an id
#: newer than the version it declares, and a writer declares the oldest version that
#: defines every id it used, so files without new ids stay 1.0 byte for byte.
ENCODING_SINCE = {
    Encoding.RAW: 0,
    Encoding.ZSTD: 0,
    Encoding.QUANT_DENSE: 0,
    Encoding.QUANT_SPARSE: 0,
    Encoding.FLOAT_SPLIT: 1,
}

#: Spec 6.6: the exponent and mantissa widths of each float dtype (the sign is one bit).
FLOAT_FIELDS = {
    DType.FLOAT32: (8, 23),
    DType.FLOAT16: (5, 10),
    DType.BFLOAT16: (8, 7),
    DType.FLOAT64: (11, 52),
}


class Coder(enum.IntEnum):
    """How a symbol stream (codes, gaps) is coded (spec section 7)."""

    BITPACK = 1
    HUFFMAN = 2
    ZSTD = 3


# Limits a decoder enforces (spec section 9).
MAX_METADATA_BYTES = 16 * 1024 * 1024
MAX_DIRECTORY_BYTES = 256 * 1024 * 1024
MAX_TENSORS = 1 << 24
MAX_NAME_BYTES = 1024
MAX_RANK = 32
MAX_ELEMENTS = 1 << 48
MAX_CODEBOOK_SIZE = 1 << 16
MAX_GAP_BITS = 16
MAX_HUFFMAN_CODE_LENGTH = 20
#: A Huffman lane holds at most this many symbols (so lane_count >= ceil(n / this)).
MAX_LANE_SYMBOLS = 1 << 16
#: Bits per code length in a stored Huffman table.
HUFFMAN_LENGTH_BITS = 5
#: A tensor may decode to at most this many bytes per (payload byte + 64); a reader may
#: be told to allow more. It bounds what a small hostile file can make a reader allocate.
MAX_EXPANSION = 1 << 16
EXPANSION_SLACK = 64
