"""Error-compensated quantization of a linear layer's weights onto a grid (GPTQ's method).

A layer ``y = W x`` quantized to ``Q`` makes the output error ``(W - Q) x``; over the
calibration inputs its squared norm is ``tr((W - Q) H (W - Q)^T)`` with ``H = sum x x^T``
(the inputs' second moments, gathered by ``dcformat.torch.calibration``). Rounding every
weight to its nearest grid point ignores ``H``. GPTQ (Frantar et al., 2023) instead
quantizes the input columns one at a time and moves each column's rounding error onto
the columns not yet quantized, in the proportions that cancel it best through ``H``'s
inverse (its Cholesky factor, so the update of every later column is one row of it).
The grid is the allocation's (a step per tensor), so the codebook and the size model of
the plain quantizer still apply: a weight lands on a grid point, possibly not the nearest.

The loop runs over columns in blocks (each column's update is vectorised over the rows,
and a block's accumulated updates reach the later columns in one matrix product).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..codecs.alphabet import symbol_dtype
from ..errors import EncodeError
from ..format import dtypes
from ..format.constants import DType
from ..quantize import QuantizedTensor
from .grid import round_codebook

#: Added to H's diagonal, as a fraction of its mean: keeps the inverse well conditioned.
DAMPING = 0.01
#: Columns per block of lazy updates.
BLOCK = 128
#: Layers with at least this many input columns are quantized one at a time: each holds three
#: ``columns^2`` float64 matrices at its peak (1.5 GB for 8192 columns), and their matrix
#: products already use every core, so running two at once would only double the memory.
LARGE_COLUMNS = 4096
_ONE_LARGE_LAYER_AT_A_TIME = threading.Lock()


def check_hessian(hessian, columns: int, *, name: str) -> np.ndarray:
    """``hessian`` as a finite float ``columns x columns`` array (not copied where it is one),
    else :class:`EncodeError`."""
    h = np.asarray(hessian)
    if not np.issubdtype(h.dtype, np.floating):
        h = h.astype(np.float64)
    if h.shape != (columns, columns):
        raise EncodeError(f"the input second moments must be {columns}x{columns} for this tensor, got {list(h.shape)}", field=repr(name))
    if not np.isfinite(h).all():
        raise EncodeError("the input second moments hold NaN or infinity", field=repr(name))
    return h


def gptq_grid(weights: np.ndarray, hessian: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """The weights (``rows x columns``) moved onto the grid ``step * k`` with GPTQ;
    returns the grid numbers ``k`` (int64, the weights' shape) and the output error's
    share, ``tr(E H E^T) / tr(W H W^T)`` with ``E = W - Q`` (0 when the inputs were all zero)."""
    w = weights.astype(np.float64)  # a copy: the columns are updated in place
    columns = w.shape[1]
    # The grid's extent is the plain quantizer's (the allocation sized that many cells):
    # compensation may push a weight past it, and is clamped there, as GPTQ clamps to its grid.
    lowest, highest = (float(np.rint(v / step)) for v in (w.min(), w.max())) if w.size else (0.0, 0.0)
    h = hessian.astype(np.float64)  # a copy, damped in place
    dead = np.diag(h) <= 0  # inputs that were always zero: their columns are rounded plainly
    h[dead, dead] = 1.0
    h[np.diag_indices(columns)] += DAMPING * float(np.mean(np.diag(h)))
    # Upper Cholesky factor of H^-1 (inverse_cholesky, its steps here so that each matrix is
    # freed as soon as it is used: a large layer's are half a gigabyte each): row i holds how
    # column i's error is spread over columns > i.
    lower = np.linalg.cholesky(h[::-1, ::-1])
    del h
    inverse = _reversed_inverse(lower)
    del lower
    numbers = np.empty(w.shape, dtype=np.int64)
    for start in range(0, columns, BLOCK):  # per block of columns, vectorised over rows
        stop = min(start + BLOCK, columns)
        block = w[:, start:stop]
        errors = np.empty_like(block)
        factor = inverse[start:stop, start:stop]
        for i in range(stop - start):  # per column
            k = np.clip(np.rint(block[:, i] / step), lowest, highest)
            numbers[:, start + i] = k
            errors[:, i] = (block[:, i] - k * step) / factor[i, i]
            block[:, i + 1 :] -= np.outer(errors[:, i], factor[i, i + 1 :])
        w[:, stop:] -= errors @ inverse[start:stop, stop:]
    del w, inverse
    return numbers, _output_error(weights, numbers, step, hessian)


def _output_error(weights: np.ndarray, numbers: np.ndarray, step: float, hessian: np.ndarray) -> float:
    """``tr(E H E^T) / tr(W H W^T)`` with ``E = W - step * numbers``: a figure for the report,
    so in float32 (half the time of float64 products, which took 7 s of a 2048x8192 layer's 32;
    the moments come as float32 from their files), each trace as one matrix product (einsum
    of three operands would loop in plain C)."""
    h = hessian.astype(np.float32, copy=False)
    original = weights.astype(np.float32, copy=False)
    total = float(np.sum((original @ h) * original, dtype=np.float64))
    diff = original - (numbers * step).astype(np.float32)
    return float(np.sum((diff @ h) * diff, dtype=np.float64)) / total if total > 0 else 0.0


def inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """The upper triangular ``U`` with ``U^T U = h^-1``, for ``h`` symmetric positive definite.

    With ``J`` the reversal of rows (or columns) and ``J h J = L L^T`` (the Cholesky factor of
    ``h`` read backwards), ``h^-1 = (J L^-1 J)^T (J L^-1 J)``, and ``J L^-1 J`` is upper
    triangular with a positive diagonal: so ``U`` is one factorisation and one triangular
    inverse (about n^3 / 3 multiplications each), where inverting ``h`` and factorising the
    inverse took about 3 n^3: an 8192-column layer's in 9 s rather than 22 here. ``U`` is a
    view of ``L^-1`` read backwards (no copy)."""
    return _reversed_inverse(np.linalg.cholesky(h[::-1, ::-1]))


def _reversed_inverse(lower: np.ndarray) -> np.ndarray:
    """``J L^-1 J`` for a lower triangular ``L``: a view, rows and columns reversed."""
    inverse = np.zeros_like(lower)
    _invert_lower(lower, inverse)
    return inverse[::-1, ::-1]


#: Below this order a triangular inverse is left to LAPACK (through a general inverse).
_TRIANGULAR_BASE = 128


def _invert_lower(lower: np.ndarray, out: np.ndarray) -> None:
    """The inverse of a lower triangular matrix written into ``out`` (zeros above the diagonal),
    by halves: ``[[A, 0], [C, B]]^-1`` is ``[[A^-1, 0], [-B^-1 C A^-1, B^-1]]``, so the work
    is matrix products."""
    n = lower.shape[0]
    if n <= _TRIANGULAR_BASE:
        out[...] = np.tril(np.linalg.inv(lower))
        return
    k = n // 2
    _invert_lower(lower[:k, :k], out[:k, :k])
    _invert_lower(lower[k:, k:], out[k:, k:])
    out[k:, :k] = -(out[k:, k:] @ (lower[k:, :k] @ out[:k, :k]))


def quantize_gptq(array: np.ndarray, hessian: np.ndarray, step: float, *, name: str = "tensor") -> tuple[QuantizedTensor, float]:
    """A 2-D float tensor quantized by :func:`gptq_grid`: its codebook holds the grid
    points used. Returns the tensor and its output error's share (see :func:`gptq_grid`)."""
    if array.ndim != 2:
        raise EncodeError(f"error-compensated quantization needs a matrix, got {array.ndim} dimensions", field=repr(name))
    with _ONE_LARGE_LAYER_AT_A_TIME if array.shape[1] >= LARGE_COLUMNS else contextlib.nullcontext():
        numbers, output_error = gptq_grid(array, check_hessian(hessian, array.shape[1], name=name), step)
    used, codes = np.unique(numbers, return_inverse=True)
    codebook, merged = np.unique(round_codebook(used * step, array.dtype), return_inverse=True)  # rounding may merge points
    cb_dtype = np.float16 if dtypes.dtype_id(array.dtype) == DType.FLOAT16 else np.float32
    codes = merged.reshape(-1)[codes.reshape(-1)].astype(symbol_dtype(codebook.size))
    return QuantizedTensor.from_codes(codebook.astype(cb_dtype), codes.reshape(array.shape), dtype=array.dtype), output_error
