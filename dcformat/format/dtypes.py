"""Mapping between numpy dtypes and the wire's dtype ids (spec section 5.2).

bfloat16 has no numpy dtype of its own; when the optional package ``ml_dtypes`` is
installed its ``bfloat16`` is used, otherwise bfloat16 tensors cannot be handed to or
returned from the numpy API (the torch adapter handles them natively). ml_dtypes is
imported only when a bfloat16 tensor is met: importing it takes about 0.6 s here (it
registers the loops of all its types with numpy), which every ``dcformat`` command paid
before, bfloat16 or not.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import EncodeError, UnsupportedError
from .constants import DTYPE_STORAGE, DType

_FROM_NUMPY = {
    np.dtype(np.float32): DType.FLOAT32,
    np.dtype(np.float16): DType.FLOAT16,
    np.dtype(np.float64): DType.FLOAT64,
    np.dtype(np.int8): DType.INT8,
    np.dtype(np.int16): DType.INT16,
    np.dtype(np.int32): DType.INT32,
    np.dtype(np.int64): DType.INT64,
    np.dtype(np.uint8): DType.UINT8,
    np.dtype(np.uint16): DType.UINT16,
    np.dtype(np.uint32): DType.UINT32,
    np.dtype(np.uint64): DType.UINT64,
    np.dtype(np.bool_): DType.BOOL,
}

_bfloat16: np.dtype | None | bool = False  # False: ml_dtypes not looked for yet


def bfloat16() -> np.dtype | None:
    """numpy's bfloat16 dtype (the optional package ml_dtypes'), or None without the package;
    the package is imported on the first call."""
    global _bfloat16
    if _bfloat16 is False:
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - depends on the environment
            _bfloat16 = None
        else:
            _bfloat16 = np.dtype(ml_dtypes.bfloat16)
    return _bfloat16


def is_bfloat16(dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16, without importing ml_dtypes for the answer (a
    value of that dtype exists only once the package is loaded)."""
    return "ml_dtypes" in sys.modules and bfloat16() is not None and np.dtype(dtype) == bfloat16()


def dtype_id(dtype, *, field: str = "tensor") -> DType:
    """The wire id of a numpy dtype (byte order ignored: storage is always little-endian)."""
    dtype = np.dtype(dtype)
    key = dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        if is_bfloat16(key):
            return DType.BFLOAT16
        supported = ", ".join(sorted(["bfloat16", *(str(d) for d in _FROM_NUMPY)]))
        raise EncodeError(f"dtype {dtype} cannot be stored (supported: {supported})", field=field) from None


def numpy_dtype(dtype: DType, *, field: str = "tensor", offset: int | None = None) -> np.dtype:
    """The numpy dtype a decoded tensor of wire dtype ``dtype`` is returned as."""
    if dtype == DType.BFLOAT16:
        found = bfloat16()
        if found is None:
            raise UnsupportedError(
                field, "bfloat16 tensors need the package ml_dtypes for numpy (pip install ml_dtypes), or use dcformat.torch", offset=offset
            )
        return found
    if dtype == DType.BOOL:
        return np.dtype(np.bool_)
    return DTYPE_STORAGE[dtype]


def to_storage(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A C-contiguous little-endian view or copy of ``array`` in the wire's storage type."""
    storage = DTYPE_STORAGE[dtype]
    if dtype in (DType.BFLOAT16, DType.BOOL):
        return np.ascontiguousarray(array).view(storage)
    return np.ascontiguousarray(array, dtype=storage)


def name(dtype: DType) -> str:
    """The lowercase name used in the spec, the CLI and ``info()``."""
    return dtype.name.lower()
