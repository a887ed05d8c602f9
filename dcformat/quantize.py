"""Codebook-quantized tensors and the 1-D k-means that makes them (paper stage 2).

A :class:`QuantizedTensor` is what the quantized encodings store: a codebook, and a
code for every *stored entry*. Entries sit at strictly increasing flat (C-order)
positions; every position that is not an entry decodes to exactly zero. A tensor
whose entries cover every position is dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codecs.alphabet import symbol_dtype
from .errors import EncodeError
from .format.constants import CODEBOOK_DTYPES, FLOAT_DTYPES, MAX_CODEBOOK_SIZE, DType
from .format.dtypes import bfloat16, dtype_id

INITS = ("linear", "density", "forgy")


def codebook_dtype_for(dtype: DType) -> np.dtype:
    """The codebook storage chosen for a decoded dtype: float16 for float16, else float32."""
    return np.dtype("<f2") if dtype == DType.FLOAT16 else np.dtype("<f4")


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor stored as ``codebook[code]`` at its entries and zero elsewhere.

    Build one with :meth:`from_codes`, :meth:`from_entries` or :func:`quantize`; the
    constructor is internal. ``positions`` is ``None`` when every position is an entry.
    """

    shape: tuple
    dtype: np.dtype
    codebook: np.ndarray
    codes: np.ndarray
    _positions: np.ndarray | None

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_codes(cls, codebook, codes, *, mask=None, dtype=np.float32) -> QuantizedTensor:
        """One code per element (``codes`` has the tensor's shape); ``mask`` False means pruned."""
        codes = np.asarray(codes)
        shape = tuple(int(d) for d in codes.shape)
        flat_codes = codes.reshape(-1)
        if mask is None:
            return cls._checked(shape, codebook, None, flat_codes, dtype)
        mask = np.asarray(mask)
        if mask.shape != codes.shape:
            raise EncodeError(f"mask shape {mask.shape} differs from codes shape {codes.shape}")
        positions = np.flatnonzero(mask.reshape(-1))
        return cls._checked(shape, codebook, positions, flat_codes[positions], dtype)

    @classmethod
    def from_entries(cls, shape, codebook, positions, codes, *, dtype=np.float32) -> QuantizedTensor:
        """Entries at flat C-order ``positions`` (strictly increasing) with one code each."""
        shape = tuple(int(d) for d in shape)
        positions = np.asarray(positions)
        if positions.ndim != 1 or (positions.size and not np.issubdtype(positions.dtype, np.integer)):
            raise EncodeError("positions must be a 1-D integer array")
        positions = positions.astype(np.int64, copy=False)
        numel = int(np.prod(shape, dtype=object))
        if positions.size:
            if positions[0] < 0 or positions[-1] >= numel:
                raise EncodeError(f"positions must lie in [0, {numel})")
            if positions.size > 1 and not (np.diff(positions) > 0).all():
                raise EncodeError("positions must be strictly increasing")
        return cls._checked(shape, codebook, positions, np.asarray(codes).reshape(-1), dtype)

    @classmethod
    def _checked(cls, shape, codebook, positions, codes, dtype) -> QuantizedTensor:
        dtype = np.dtype(dtype)
        wire = dtype_id(dtype)
        if wire not in FLOAT_DTYPES:
            raise EncodeError(f"a quantized tensor decodes to a float dtype, not {dtype}")
        codebook = np.asarray(codebook)
        if codebook.ndim != 1 or not 1 <= codebook.size <= MAX_CODEBOOK_SIZE:
            raise EncodeError(f"codebook must be 1-D with 1 to {MAX_CODEBOOK_SIZE} entries, got shape {codebook.shape}")
        if dtype_id(codebook.dtype) not in CODEBOOK_DTYPES:
            stored = codebook.astype(codebook_dtype_for(wire))
            if not np.array_equal(stored.astype(np.float64), codebook.astype(np.float64), equal_nan=True):
                raise EncodeError(
                    f"codebook of {codebook.dtype} is not exactly representable in {stored.dtype}, "
                    "the codebook storage (spec 6.3): round it first if that is intended"
                )
            codebook = stored
        codebook = np.ascontiguousarray(codebook, dtype=codebook.dtype.newbyteorder("<"))
        if not np.isfinite(codebook).all():
            raise EncodeError("codebook entries must be finite (no NaN or infinity)")
        if not _representable(codebook, dtype):
            raise EncodeError(f"codebook values are not exactly representable in {dtype}")
        numel = int(np.prod(shape, dtype=object))
        expected = numel if positions is None else positions.size
        if codes.size != expected:
            raise EncodeError(f"{codes.size} codes given for {expected} entries")
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            raise EncodeError(f"codes must be integers, got {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= codebook.size):
            raise EncodeError(f"codes must lie in [0, {codebook.size}) (the codebook size)")
        codes = codes.astype(symbol_dtype(codebook.size), copy=False)
        return cls(shape, dtype, codebook, codes, positions)

    # -- views ------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    @property
    def entry_count(self) -> int:
        return int(self.codes.size)

    @property
    def is_dense(self) -> bool:
        """True when every position is a stored entry."""
        return self._positions is None or self._positions.size == self.numel

    @property
    def positions(self) -> np.ndarray:
        """Flat C-order positions of the stored entries (int64)."""
        if self._positions is None:
            return np.arange(self.numel, dtype=np.int64)
        return self._positions

    @property
    def density(self) -> float:
        """Fraction of positions whose decoded value is nonzero."""
        if self.numel == 0:
            return 0.0
        nonzero_codes = self.codebook != 0
        return float(np.count_nonzero(nonzero_codes[self.codes])) / self.numel

    def dequantize(self) -> np.ndarray:
        """The decoded tensor: ``codebook[code]`` at entries, +0.0 elsewhere."""
        values = self.codebook.astype(self.dtype)[self.codes]
        if self._positions is None:
            return values.reshape(self.shape)
        out = np.zeros(self.numel, dtype=self.dtype)
        out[self._positions] = values
        return out.reshape(self.shape)

    def __repr__(self) -> str:
        return (
            f"QuantizedTensor(shape={self.shape}, dtype={self.dtype}, codebook_size={self.codebook.size}, "
            f"entries={self.entry_count}, density={self.density:.4f})"
        )


def _representable(codebook: np.ndarray, dtype: np.dtype) -> bool:
    """Every codebook value survives conversion to ``dtype`` unchanged (spec 6.3)."""
    if dtype == np.dtype(np.float64) or (dtype == np.dtype(np.float32) and codebook.dtype.itemsize <= 4):
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf just fails the comparison
        converted = codebook.astype(dtype).astype(np.float64)
    return bool(np.array_equal(converted, codebook.astype(np.float64)))


# -- k-means --------------------------------------------------------------------------


def kmeans_1d(values: np.ndarray, k: int, *, init: str = "linear", seed: int = 0, max_iter: int = 100, presorted: bool = False) -> np.ndarray:
    """Lloyd's k-means in one dimension; returns ``k`` sorted centroids (float64).

    On sorted data every cluster is an interval, so an iteration needs only a
    ``searchsorted`` of the k-1 midpoints and a prefix sum: O(k log n), not O(n k).
    Empty clusters keep their centroid (linear init can start some in empty ranges).
    ``presorted=True`` says ``values`` is already a sorted float64 array.
    """
    if init not in INITS:
        raise EncodeError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise EncodeError(f"k must be a positive integer, got {k!r}")
    xs = values if presorted else np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = xs.size
    if n == 0:
        return np.zeros(0)
    if not (np.isfinite(xs[0]) and np.isfinite(xs[-1])):  # sorted: NaN and infinities sit at the ends
        raise EncodeError("k-means needs finite values (no NaN or infinity)")
    if init == "linear":
        centroids = np.linspace(xs[0], xs[-1], k)
    elif init == "density":
        centroids = np.quantile(xs, np.linspace(0.0, 1.0, k))
    else:
        rng = np.random.default_rng(seed)
        centroids = np.sort(rng.choice(xs, size=min(k, n), replace=False))
        if centroids.size < k:
            centroids = np.concatenate([centroids, np.full(k - centroids.size, centroids[-1])])
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    for _ in range(max_iter):
        midpoints = (centroids[1:] + centroids[:-1]) / 2
        edges = np.concatenate([[0], np.searchsorted(xs, midpoints, side="right"), [n]])
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    return centroids


def assign(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted ``codebook`` for each value (ties go low)."""
    cb = codebook.astype(np.float64)
    midpoints = (cb[1:] + cb[:-1]) / 2
    return np.searchsorted(midpoints, values.astype(np.float64), side="left")


def quantize(array, /, *, bits: int, init: str = "linear", seed: int = 0, max_iter: int = 100) -> QuantizedTensor:
    """Quantize a float array to a codebook of at most ``2**bits`` entries.

    k-means runs over the nonzero entries only; entries exactly equal to zero stay
    exactly zero and are not stored (the encoder then picks sparse or dense storage,
    whichever is smaller). With at most ``2**bits`` distinct nonzero values the
    codebook holds them all, so float16, bfloat16 and float32 tensors are stored without
    loss; float64 values are rounded to the float32 codebook (spec 6.3).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise EncodeError(f"bits must be an integer in 1..16, got {bits!r}")
    array = np.asarray(array)
    wire = dtype_id(array.dtype)
    if wire not in FLOAT_DTYPES:
        raise EncodeError(f"quantize needs a float array, got {array.dtype}")
    flat = array.reshape(-1)
    as_float = flat.astype(np.float64)
    if not np.isfinite(as_float).all():
        raise EncodeError("cannot quantize an array holding NaN or infinity")
    nonzero = as_float != 0
    if nonzero.all():
        positions, values = None, as_float  # every element is stored: a dense tensor
    else:
        positions = np.flatnonzero(nonzero)
        values = as_float[positions]
    del nonzero
    cb_dtype = codebook_dtype_for(wire)
    xs = np.sort(values)
    distinct = xs[np.concatenate([[True], xs[1:] != xs[:-1]])] if xs.size else xs
    if distinct.size <= (1 << bits):
        centroids = distinct
    else:
        centroids = kmeans_1d(xs, 1 << bits, init=init, seed=seed, max_iter=max_iter, presorted=True)
    del xs
    codebook = centroids.astype(cb_dtype)
    if wire == DType.BFLOAT16:  # round centroids to values bfloat16 can hold
        codebook = codebook.astype(bfloat16()).astype(cb_dtype)
    codebook = np.unique(codebook)  # casting can merge centroids; unique also sorts (k entries: cheap)
    if codebook.size == 0:
        codebook = np.zeros(1, dtype=cb_dtype)
    codes = assign(values, codebook)
    used = np.bincount(codes, minlength=codebook.size) > 0  # drop centroids no value chose
    if used.any() and not used.all():
        codebook = codebook[used]
        codes = (np.cumsum(used) - 1)[codes]
    return QuantizedTensor._checked(tuple(array.shape), codebook, positions, codes, array.dtype)
