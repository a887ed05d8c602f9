"""Test support: hypothesis strategies, and an independent writer/parser for dcformat files.

Two halves:

1. Strategies for arrays of every dtype and shape (arbitrary bit patterns, NaN, inf, -0.0)
   and for quantized tensors (codebooks of 1..65536 values, densities 0..100 %, random,
   clustered, periodic and tail-only positions). A quantized case carries its codebook,
   positions and codes, so a test computes the expected decoded array itself instead of
   trusting ``QuantizedTensor.dequantize``.

2. ``build_file`` / ``parse_file`` / ``rebuild``: a second, deliberately simple
   implementation of the container written from spec/dcformat.md with ``struct``, plus
   reference codecs (LSB-first bit packing in pure Python, fillers, zstd frames). The
   malformed-file tests use them to make precise damage with every checksum recomputed, so
   each test reaches the check it means to reach. The writer (``build_file``, ``Ent``,
   ``stream``, the wire numbers ``DT``/``ENC``/``CODER``) lives in ``fuzz/dcfbuild.py``,
   shared with the fuzz harness; tests import it from there. The parser (``parse_file``,
   ``rebuild``, ``patch_payload``), entries from arrays and the reference codecs are here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import zstandard
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dcformat.format.dtypes import bfloat16

# The hand-built-file writer and the wire numbers, restated from the spec (not imported from
# the package, so a wrong constant is caught): one home, shared with the fuzz harness.
from fuzz.dcfbuild import CODER, DT, ENC, HEADER_SIZE, Ent, build_file, quant, stream

BFLOAT16 = bfloat16()  # ml_dtypes, loaded here for the tests that draw bfloat16 arrays

NUMPY_DTYPES = [
    np.dtype(x)
    for x in (np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
]
if BFLOAT16 is not None:
    NUMPY_DTYPES.append(BFLOAT16)
FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 is not None else [])


def wire_dtype_id(dtype) -> int:
    dtype = np.dtype(dtype)
    if BFLOAT16 is not None and dtype == BFLOAT16:
        return DT["bfloat16"]
    return DT[dtype.name]


def bits_of(array: np.ndarray) -> bytes:
    """The exact bytes of an array (C order, little-endian), for bit-exact comparison."""
    array = np.asarray(array)
    if array.dtype.kind == "b" or (BFLOAT16 is not None and array.dtype == BFLOAT16):
        return np.ascontiguousarray(array).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def assert_bit_exact(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype.newbyteorder("=") or actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert bits_of(actual) == bits_of(expected)


def few(n: int) -> int:
    """``n`` examples at the ci profile's 60, scaled to the active profile (at least 3).

    For properties that are parametrized many ways or cost more per example.
    """
    from hypothesis import settings

    return max(3, settings.default.max_examples * n // 60)


# ======================================================================================
# Strategies: shapes and plain arrays
# ======================================================================================


@st.composite
def shapes(draw, max_elements: int = 3000, max_rank: int = 5, min_rank: int = 0):
    """Shapes of rank 0..max_rank with at most ``max_elements`` elements; zero dims included."""
    rank = draw(st.integers(min_rank, max_rank))
    dims = []
    budget = max_elements
    for _ in range(rank):
        if budget == 0:  # after a zero dim anything goes; keep it small
            dims.append(draw(st.integers(0, 8)))
            continue
        dim = draw(st.one_of(st.integers(0, 4), st.integers(0, max(budget, 0))))
        dims.append(dim)
        budget = budget // dim if dim else 0
    return tuple(dims)


# Bit patterns worth forcing into float arrays: quiet/signalling/negative NaN with payloads,
# infinities, -0.0, the smallest subnormal and the largest finite value.
SPECIAL_BITS = {
    2: [0x7E00, 0x7C01, 0xFE01, 0x7DFF, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x7BFF],
    4: [0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FBFFFFF, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x7F7FFFFF],
    8: [
        0x7FF8000000000000,
        0x7FF0000000000001,
        0xFFF8000000000001,
        0x7FF0000000000000,
        0xFFF0000000000000,
        0x8000000000000000,
        0x0000000000000001,
        0x7FEFFFFFFFFFFFFF,
    ],
}
BF16_SPECIAL_BITS = [0x7FC0, 0x7F81, 0xFFC1, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x7F7F]


def _uint_for(itemsize: int) -> np.dtype:
    return np.dtype(f"<u{itemsize}")


@st.composite
def raw_arrays(draw, dtype=None, shape=None, max_elements: int = 3000):
    """An array of any supported dtype with arbitrary bit patterns (NaN, inf, -0.0 included)."""
    dtype = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)) if dtype is None else dtype)
    shape = draw(shapes(max_elements=max_elements)) if shape is None else shape
    if dtype.kind == "b":
        return draw(hnp.arrays(np.bool_, shape))
    is_bf16 = BFLOAT16 is not None and dtype == BFLOAT16
    storage = _uint_for(dtype.itemsize)
    elements = st.integers(0, (1 << (8 * dtype.itemsize)) - 1)
    if dtype.kind == "f" or is_bf16:
        specials = BF16_SPECIAL_BITS if is_bf16 else SPECIAL_BITS[dtype.itemsize]
        elements = st.one_of(elements, st.sampled_from(specials))
    bits = draw(hnp.arrays(storage, shape, elements=elements))
    return bits.view(dtype)


#: Arrays in non-native byte order and non-contiguous layouts, which the encoder must
#: normalise to little-endian C order.
@st.composite
def odd_layout_arrays(draw):
    base = draw(raw_arrays(max_elements=600))
    choice = draw(st.sampled_from(["byteswap", "transpose", "stride", "fortran"]))
    if choice == "byteswap" and base.dtype.kind in "iuf" and base.dtype.itemsize > 1 and base.dtype != BFLOAT16:
        return base.astype(base.dtype.newbyteorder(">"))
    if choice == "transpose" and base.ndim >= 2:
        return base.T
    if choice == "stride" and base.ndim >= 1:
        return base[::2]
    if choice == "fortran":
        return np.asfortranarray(base)
    return base


# ======================================================================================
# Strategies: quantized tensors
# ======================================================================================


@dataclass
class QCase:
    """A quantized tensor together with the ingredients it was made from."""

    q: object  # dcformat.QuantizedTensor
    shape: tuple
    dtype: np.dtype
    codebook: np.ndarray  # as given (float16 or float32)
    positions: np.ndarray  # int64, strictly increasing
    codes: np.ndarray  # int64, one per position
    pattern: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def expected(self) -> np.ndarray:
        """The decoded tensor computed from the ingredients (spec 6.5.2), not by the package."""
        out = np.zeros(self.numel, dtype=self.dtype)
        out[self.positions] = self.codebook.astype(self.dtype)[self.codes]
        return out.reshape(self.shape)


def _codebook(rng: np.random.Generator, size: int, dtype: np.dtype, cb_kind: str, zeros: str) -> np.ndarray:
    """``size`` finite values storable in ``cb_kind`` and exactly representable in ``dtype``."""
    if cb_kind == "f16":
        bits = rng.integers(0, 1 << 16, size=size, dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] &= 0xBFFF  # clear an exponent bit: inf/NaN -> finite
        values = bits.view(np.float16)
    else:
        bits = rng.integers(0, 1 << 32, size=size, dtype=np.uint32)
        bits[(bits & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF
        if BFLOAT16 is not None and dtype == BFLOAT16:
            bits &= 0xFFFF0000  # bfloat16 holds the upper half of a binary32
        elif dtype == np.float16:  # float32 storage of float16 values
            bits = rng.integers(0, 1 << 16, size=size, dtype=np.uint16)
            bits[(bits & 0x7C00) == 0x7C00] &= 0xBFFF
            bits = bits.view(np.float16).astype(np.float32).view(np.uint32)
        values = bits.view(np.float32)
        if cb_kind == "f32-small":  # ordinary weight-like values
            values = (rng.standard_normal(size) * 0.05).astype(np.float32)
            if BFLOAT16 is not None and dtype == BFLOAT16:
                values = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
            elif dtype == np.float16:
                values = values.astype(np.float16).astype(np.float32)
    values = values.copy()
    if zeros == "pos" and size:
        values[rng.integers(0, size)] = 0.0
    elif zeros == "neg" and size:
        values[rng.integers(0, size)] = -0.0
    elif zeros == "none":
        values[values == 0] = values.dtype.type(1.0)  # no +0.0 and no -0.0: fillers need a prepended zero
    return values


def _positions(rng: np.random.Generator, numel: int, pattern: str, density: float) -> np.ndarray:
    if numel == 0 or pattern == "none":
        return np.zeros(0, dtype=np.int64)
    if pattern == "all":
        return np.arange(numel, dtype=np.int64)
    if pattern == "random":
        return np.flatnonzero(rng.random(numel) < density).astype(np.int64)
    if pattern == "clustered":  # a few runs of consecutive entries with long gaps between
        mask = np.zeros(numel, dtype=bool)
        for _ in range(int(rng.integers(1, 5))):
            start = int(rng.integers(0, numel))
            mask[start : start + int(rng.integers(1, max(2, numel // 8)))] = True
        return np.flatnonzero(mask).astype(np.int64)
    if pattern == "periodic":
        step = int(rng.integers(2, 40))
        return np.arange(int(rng.integers(0, step)), numel, step, dtype=np.int64)
    if pattern == "last":
        return np.array([numel - 1], dtype=np.int64)
    if pattern == "first":
        return np.array([0], dtype=np.int64)
    raise AssertionError(pattern)


PATTERNS = ["all", "none", "random", "clustered", "periodic", "last", "first"]


@st.composite
def quantized_cases(draw, *, dtypes=None, max_codebook: int = 65536, patterns=PATTERNS, max_elements: int | None = None):
    """A :class:`QCase`: codebook sizes 1..65536, every density, every position pattern."""
    from dcformat import QuantizedTensor

    dtype = np.dtype(draw(st.sampled_from(dtypes or FLOAT_DTYPES)))
    size = draw(
        st.one_of(
            st.integers(1, 4),
            st.integers(1, min(256, max_codebook)),
            st.integers(1, max_codebook),
            st.sampled_from(sorted({2, 16, 17, 256, 257, max_codebook})),
        )
    )
    if max_elements is None:
        max_elements = 3000 if size <= 4096 else 400
    shape = draw(shapes(max_elements=max_elements))
    numel = int(np.prod(shape, dtype=np.int64))
    pattern = draw(st.sampled_from(patterns))
    density = draw(st.one_of(st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0)))
    cb_kind = "f16" if dtype == np.float16 and draw(st.booleans()) else draw(st.sampled_from(["f16", "f32", "f32-small"]))
    if BFLOAT16 is not None and dtype == BFLOAT16:
        cb_kind = draw(st.sampled_from(["f32", "f32-small"]))  # a float16 codebook is rarely bfloat16-exact
    zeros = draw(st.sampled_from(["any", "pos", "neg", "none"]))
    code_style = draw(st.sampled_from(["uniform", "skewed", "constant"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    codebook = _codebook(rng, size, dtype, cb_kind, zeros)
    positions = _positions(rng, numel, pattern, density)
    n = positions.size
    if code_style == "uniform":
        codes = rng.integers(0, size, size=n)
    elif code_style == "skewed":
        codes = np.minimum(rng.geometric(0.3, size=n) - 1, size - 1)
    else:
        codes = np.full(n, int(rng.integers(0, size)))
    codes = codes.astype(np.int64)

    how = draw(st.sampled_from(["entries", "codes_mask", "codes_dense"])) if pattern != "all" else draw(st.sampled_from(["entries", "codes_dense"]))
    if how == "entries" or numel == 0:
        q = QuantizedTensor.from_entries(shape, codebook, positions, codes, dtype=dtype)
    elif how == "codes_mask" or pattern != "all":
        full = rng.integers(0, size, size=numel)  # values under the mask are ignored
        full[positions] = codes
        mask = np.zeros(numel, dtype=bool)
        mask[positions] = True
        q = QuantizedTensor.from_codes(codebook, full.reshape(shape), mask=mask.reshape(shape), dtype=dtype)
    else:
        q = QuantizedTensor.from_codes(codebook, codes.reshape(shape), dtype=dtype)
    return QCase(q, shape, dtype, codebook, positions, codes, pattern)


def tail_case(numel: int, *, dtype=np.float32, value: float = 0.25):
    """A large 1-D tensor whose only entry is its very last element (gap stream ~ all fillers)."""
    from dcformat import QuantizedTensor

    codebook = np.array([value], dtype=np.float32)
    positions = np.array([numel - 1], dtype=np.int64)
    codes = np.zeros(1, dtype=np.int64)
    q = QuantizedTensor.from_entries((numel,), codebook, positions, codes, dtype=dtype)
    return QCase(q, (numel,), np.dtype(dtype), codebook, positions, codes, "last")


metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
metadata_dicts = st.dictionaries(st.text(max_size=12).filter(lambda k: not k.startswith("dcformat.")), metadata_values, max_size=5)

tensor_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


# ======================================================================================
# Reference codecs (pure Python, from the spec text)
# ======================================================================================


def ref_width(alphabet_size: int) -> int:
    """Spec 7.2: ceil(log2(A)) bits, 0 for A = 1."""
    width = 0
    while (1 << width) < alphabet_size:
        width += 1
    return width


def ref_pack(symbols, width: int) -> bytes:
    """Spec 1.3 / 7.2: symbol i takes stream bits [i*w, (i+1)*w), LSB first; bit k is bit k%8 of byte k//8."""
    bits = []
    for s in symbols:
        s = int(s)
        assert 0 <= s < (1 << width) or (width == 0 and s == 0)
        bits.extend((s >> j) & 1 for j in range(width))
    out = bytearray((len(bits) + 7) // 8)
    for k, bit in enumerate(bits):
        out[k // 8] |= bit << (k % 8)
    return bytes(out)


def ref_unpack(data: bytes, count: int, width: int) -> list[int]:
    out = []
    for i in range(count):
        value = 0
        for j in range(width):
            k = i * width + j
            value |= ((data[k // 8] >> (k % 8)) & 1) << j
        out.append(value)
    return out


def ref_fillers(positions, gap_bits: int):
    """Spec 6.5.3: (wire gaps, is_filler) for strictly increasing positions."""
    gaps, fillers = [], []
    prev = -1
    limit = 1 << gap_bits
    for p in positions:
        d = int(p) - prev - 1
        for _ in range(d // limit):
            gaps.append(limit - 1)
            fillers.append(True)
        gaps.append(d % limit)
        fillers.append(False)
        prev = int(p)
    return gaps, fillers


def zstd_frame(data: bytes, *, content_size: bool = True, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_content_size=content_size).compress(bytes(data))


def bitpack_stream(symbols, alphabet_size: int) -> bytes:
    return stream(CODER["bitpack"], ref_pack(symbols, ref_width(alphabet_size)))


def quant_payload(
    codebook, streams, *, gap_bits: int = 0, entry_count: int, codebook_dtype: int | None = None, reserved: int = 0, codebook_size: int | None = None
) -> bytes:
    """Spec 6.3: the 16-byte quantized header, the codebook, then the streams."""
    cb = np.asarray(codebook)
    if codebook_dtype is None:
        codebook_dtype = DT["float16"] if cb.dtype == np.float16 else DT["float32"]
    store = "<f2" if cb.dtype == np.float16 else "<f4"
    return quant(
        cb.astype(store).tobytes(),
        cb.size if codebook_size is None else codebook_size,
        entry_count,
        b"".join(streams),
        codebook_dtype=codebook_dtype,
        gap_bits=gap_bits,
        reserved=reserved,
    )


# ======================================================================================
# The container: entries from arrays, and an independent parser (the writer is fuzz.dcfbuild's)
# ======================================================================================


def raw_ent(name, array: np.ndarray, **kw) -> Ent:
    array = np.asarray(array)
    return Ent(name, wire_dtype_id(array.dtype), ENC["raw"], array.shape, bits_of(array), **kw)


@dataclass
class Parsed:
    header: dict
    metadata: bytes
    entries: list  # of Ent, in directory order, with their real offsets
    data: bytes = field(repr=False)  # the file up to index_offset

    def entry(self, name) -> Ent:
        key = name.encode("utf-8") if isinstance(name, str) else name
        return next(e for e in self.entries if e.name_bytes == key)


def parse_file(blob: bytes) -> Parsed:
    """Split a (valid) file into header fields, metadata, directory entries and payloads,
    with the package's construct declarations of the fixed structures."""
    from dcformat.format.structs import Header, TensorEntry, entry_size

    header = dict(Header.parse(blob[:HEADER_SIZE]))
    header.pop("_io", None)
    start = header["index_offset"]
    meta_end = start + header["metadata_length"]
    metadata = blob[start:meta_end]
    directory = blob[meta_end : meta_end + header["directory_length"]]
    entries, pos = [], 0
    for _ in range(header["tensor_count"]):
        raw = TensorEntry.parse(directory[pos:])
        size = entry_size(raw.name_length, raw.rank)
        payload = blob[raw.payload_offset : raw.payload_offset + raw.payload_length]
        entries.append(Ent(bytes(raw.name), raw.dtype, raw.encoding, tuple(raw.shape), payload, raw.flags, offset=raw.payload_offset))
        pos += size
    assert pos == len(directory)
    return Parsed(header, metadata, entries, blob[:start])


def rebuild(p: Parsed, *, relayout: bool = False, **overrides) -> bytes:
    """The file of ``p`` written again with every length and checksum recomputed.

    With ``relayout`` payloads are placed afresh (use it after changing a payload's
    length); otherwise they keep their offsets. ``overrides`` go to :func:`build_file`.
    """
    order = sorted(p.entries, key=lambda e: (e.offset, len(e.payload)))
    if relayout:
        order = [replace(e, offset=None) for e in order]
    kw = dict(metadata=p.metadata, version=(p.header["version_major"], p.header["version_minor"]))
    kw.update(overrides)
    return build_file(order, **kw)


def patch_payload(blob: bytes, name, fn) -> bytes:
    """Replace one tensor's payload by ``fn(payload)`` and rebuild with honest checksums."""
    p = parse_file(blob)
    e = p.entry(name)
    e.payload = bytes(fn(bytearray(e.payload)))
    return rebuild(p, relayout=True)
