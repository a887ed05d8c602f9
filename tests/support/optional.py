"""Optional dependencies: markers that skip, with a reason, the tests that need one.

Whole modules that need a package skip with ``pytest.importorskip(name, reason=...)`` at
their top instead; these are for single tests and parametrizations.
"""

from __future__ import annotations

import pytest

from dcformat.format.dtypes import bfloat16

#: bfloat16 has no numpy dtype without ml_dtypes: the package refuses to return such tensors.
HAS_ML_DTYPES = bfloat16() is not None
ML_DTYPES_REASON = "bfloat16 in numpy needs ml_dtypes (pip install 'dcformat[bfloat16]')"
needs_ml_dtypes = pytest.mark.skipif(not HAS_ML_DTYPES, reason=ML_DTYPES_REASON)
