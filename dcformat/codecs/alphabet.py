"""The one rule for the integer type of decoded symbols (spec 7.1).

Symbols of an alphabet of at most 256 come back as ``uint8``, larger ones (codebooks up
to 65,536 entries, gap widths above 8 bits) as ``uint16``; zstd streams store them in
that type, little-endian.
"""

from __future__ import annotations

import numpy as np


def symbol_dtype(alphabet_size: int) -> np.dtype:
    """``uint8`` for alphabets of at most 256 symbols, else ``uint16``."""
    return np.dtype(np.uint8) if alphabet_size <= 256 else np.dtype(np.uint16)
