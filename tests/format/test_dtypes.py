"""numpy dtypes and wire ids: bfloat16 through ml_dtypes, imported only when one is met."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.support.optional import needs_ml_dtypes


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_dcformat_leaves_ml_dtypes_unloaded():
    """Importing ml_dtypes costs about 0.6 s; a process that meets no bfloat16 never pays it."""
    code = (
        "import sys, numpy as np, dcformat, dcformat.cli\n"
        "data = dcformat.save({'w': np.arange(6, dtype=np.float32)})\n"
        "dcformat.load(data)\n"
        "print('ml_dtypes' in sys.modules)"
    )
    assert _run(code) == "False"


@needs_ml_dtypes
def test_bfloat16_is_found_whenever_ml_dtypes_arrives():
    """An array of ml_dtypes' bfloat16 made after dcformat was imported is stored as bfloat16,
    and a bfloat16 tensor read in a process that never imported ml_dtypes comes back as one."""
    code = (
        "import sys, numpy as np, dcformat\n"
        "import ml_dtypes\n"
        "x = np.array([1.5, -2.0, 0.0078125], dtype=ml_dtypes.bfloat16)\n"
        "data = dcformat.save({'x': x})\n"
        "print(dcformat.open(data).info('x').dtype, dcformat.load(data)['x'].tobytes() == x.tobytes())"
    )
    assert _run(code) == "bfloat16 True"
    from dcformat.format.dtypes import bfloat16

    data = __import__("dcformat").save({"x": np.array([1.5, -2.0], dtype=bfloat16())})
    code = f"import sys, dcformat\nx = dcformat.load({data!r})['x']\nprint(x.dtype, x.tolist(), 'ml_dtypes' in sys.modules)"
    assert _run(code) == "bfloat16 [1.5, -2.0] True"


def test_unknown_dtypes_are_refused_with_the_list():
    from dcformat.errors import EncodeError
    from dcformat.format.dtypes import dtype_id

    with pytest.raises(EncodeError, match=r"complex64 cannot be stored \(supported: bfloat16, bool, float16"):
        dtype_id(np.complex64)
