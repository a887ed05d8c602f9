"""The kernel policy (``DCFORMAT_KERNELS``): compiled when built, numpy as the fallback.

In CI the extension must be built: a fallback there would hide every compiled-path test
behind the numpy kernels, so its absence fails instead of skipping.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import dcformat
from dcformat import kernels

BUILT = kernels._load()[0] is not None


def test_extension_is_built_where_ci_runs():
    if not BUILT and os.environ.get("CI"):
        pytest.fail(f"dcformat._kernels is not built ({kernels._load()[1]}): CI must test the compiled kernels")
    if not BUILT:
        pytest.skip("dcformat._kernels is not built here (pip install -e . builds it)")
    assert kernels.in_use() == "compiled" or kernels.choice() == "numpy"


@pytest.mark.parametrize("value, expected", [("", "auto"), ("auto", "auto"), ("NUMPY", "numpy"), (" compiled ", "compiled")])
def test_choice_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(kernels.ENV_KERNELS, value)
    assert kernels.choice() == expected


def test_a_bad_choice_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(kernels.ENV_KERNELS, "rust")
    with pytest.raises(dcformat.DCFormatError, match="DCFORMAT_KERNELS must be one of auto, compiled, numpy"):
        kernels.compiled()


def test_numpy_forces_the_reference_kernels(monkeypatch):
    monkeypatch.setenv(kernels.ENV_KERNELS, "numpy")
    assert kernels.compiled() is None and kernels.in_use() == "numpy"


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(kernels, "_loaded", (None, "No module named 'dcformat._kernels'"))
    monkeypatch.setattr(kernels, "_warned", False)
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    with pytest.warns(RuntimeWarning, match="compiled kernels unavailable .*decoding with numpy"):
        assert kernels.compiled() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use does not warn again
        data = dcformat.save({"x": np.arange(5000, dtype=np.float32)})
        assert np.array_equal(dcformat.load(data)["x"], np.arange(5000, dtype=np.float32))


def test_missing_extension_is_an_error_when_compiled_is_required(monkeypatch):
    monkeypatch.setattr(kernels, "_loaded", (None, "No module named 'dcformat._kernels'"))
    monkeypatch.setenv(kernels.ENV_KERNELS, "compiled")
    with pytest.raises(dcformat.DCFormatError, match="DCFORMAT_KERNELS=compiled but dcformat._kernels is not built"):
        kernels.compiled()
