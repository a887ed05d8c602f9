"""The package against the reference decoder (``tools/refdecode.py``, written from the spec
alone): what each makes of the same bytes, for tests that compare them."""

from __future__ import annotations

import json
import sys

import numpy as np

import dcformat
from tests.support.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import refdecode

VECTORS = REPO_ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))


def storage_bytes(array: np.ndarray) -> bytes:
    """C-order little-endian storage bytes (bool as 0/1 bytes, bfloat16 as its 16 bits)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind in "fiu" and array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def package_result(data: bytes):
    """Every tensor's storage bytes as the package decodes them (padding checked), or the error type."""
    try:
        with dcformat.DCFile(data) as f:
            f.check_padding()
            return {name: storage_bytes(f.get(name)) for name in f.keys()}
    except dcformat.DCFormatError as exc:
        return type(exc).__name__


def reference_result(data: bytes):
    """Every tensor's bytes as the reference decoder decodes them, or its error message."""
    try:
        return {t.name: t.data for t in refdecode.RefFile(data).verify()}
    except refdecode.RefDecodeError as exc:
        return str(exc)
