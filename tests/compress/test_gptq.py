"""Error-compensated quantization (``dcformat.compress.gptq``) and the plan's use of it."""

from __future__ import annotations

import numpy as np
import pytest

from dcformat import EncodeError, QuantizedTensor
from dcformat.compress import compress_tensors
from dcformat.compress.gptq import gptq_grid, inverse_cholesky, quantize_gptq


def correlated_inputs(rng, columns: int, samples: int = 2000) -> np.ndarray:
    """Inputs whose features are strongly correlated (as a layer's inputs are)."""
    mixing = rng.normal(size=(columns, columns)) / np.sqrt(columns) + 2.0 * np.eye(columns)
    return rng.normal(size=(samples, 4)) @ rng.normal(size=(4, columns)) + rng.normal(size=(samples, columns)) @ mixing


def output_error(weights, quantized, x) -> float:
    return float(np.square((weights - quantized) @ x.T).sum())


def test_uncorrelated_inputs_give_plain_rounding():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 40))
    step = 0.3
    numbers, _ = gptq_grid(w, np.eye(40) * 5.0, step)  # nothing to compensate through
    np.testing.assert_array_equal(numbers, np.rint(w / step))


@pytest.mark.parametrize("seed", range(4))
def test_compensation_lowers_the_output_error_on_the_same_grid(seed):
    rng = np.random.default_rng(seed)
    rows, columns = 48, 96
    w = rng.laplace(scale=0.05, size=(rows, columns))
    x = correlated_inputs(rng, columns)
    h = x.T @ x
    step = 0.04
    numbers, share = gptq_grid(w, h, step)
    plain = np.rint(w / step) * step
    compensated = numbers * step
    assert output_error(w, compensated, x) < 0.7 * output_error(w, plain, x)
    assert share == pytest.approx(output_error(w, compensated, x) / float(np.square(w @ x.T).sum()), rel=1e-5)  # measured in float32
    # On the plain quantizer's grid and within its extent (the allocation sized those cells).
    assert numbers.min() >= np.rint(w.min() / step) and numbers.max() <= np.rint(w.max() / step)


@pytest.mark.parametrize("columns", [1, 5, 128, 129, 300])
def test_inverse_cholesky_is_the_upper_factor_of_the_inverse(columns):
    """U upper triangular with a positive diagonal and U^T U = H^-1 (so U is H^-1's Cholesky
    factor, unique), on either side of the size where the halving stops."""
    rng = np.random.default_rng(columns)
    x = rng.standard_normal((2 * columns + 3, columns)) * rng.gamma(1.0, 1.0, columns)
    h = x.T @ x + 0.01 * np.eye(columns)
    u = inverse_cholesky(h)
    assert np.all(np.tril(u, -1) == 0) and np.all(np.diag(u) > 0)
    np.testing.assert_allclose(u.T @ u @ h, np.eye(columns), atol=1e-8)
    np.testing.assert_allclose(u, np.linalg.cholesky(np.linalg.inv(h)).T, rtol=1e-7, atol=1e-9 * np.abs(u).max())


def test_inputs_never_seen_leave_their_columns_rounded():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 12))
    x = correlated_inputs(rng, 12)
    x[:, 5] = 0.0
    numbers, _ = gptq_grid(w, x.T @ x, 0.25)
    # Its column is decoupled from the others in H: no error reaches it, it is rounded plainly.
    np.testing.assert_array_equal(numbers[:, 5], np.rint(w[:, 5] / 0.25))


def test_quantize_gptq_is_a_quantized_tensor_of_the_grid_points():
    rng = np.random.default_rng(2)
    w = rng.normal(scale=0.1, size=(20, 30)).astype(np.float32)
    x = correlated_inputs(rng, 30)
    q, _ = quantize_gptq(w, x.T @ x, 0.02)
    assert isinstance(q, QuantizedTensor) and q.shape == w.shape and q.dequantize().dtype == np.float32
    numbers, _ = gptq_grid(w, x.T @ x, 0.02)
    np.testing.assert_array_equal(q.dequantize(), (numbers * 0.02).astype(np.float32))
    assert q.codebook.size == np.unique(numbers).size


def model(rng):
    return {
        "layer.weight": rng.laplace(scale=0.05, size=(64, 96)).astype(np.float32),
        "other.weight": rng.normal(scale=0.05, size=(64, 64)).astype(np.float32),
        "layer.bias": np.zeros(64, np.float32),
    }


def test_the_plan_compensates_the_tensors_it_has_moments_for():
    rng = np.random.default_rng(3)
    tensors = model(rng)
    x = correlated_inputs(rng, 96)
    out, report = compress_tensors(tensors, min_elements=100, target_bits_per_weight=4.0, hessians={"layer.weight": x.T @ x})
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["layer.weight"]["reason"] == "allocated, error-compensated"
    assert rows["other.weight"]["reason"] == "allocated"
    assert report["settings"]["error_compensated"] == 1
    plain, _ = compress_tensors(tensors, min_elements=100, target_bits_per_weight=4.0)
    w = tensors["layer.weight"].astype(np.float64)
    assert output_error(w, out["layer.weight"].dequantize(), x) < output_error(w, plain["layer.weight"].dequantize(), x)
    np.testing.assert_array_equal(out["other.weight"].dequantize(), plain["other.weight"].dequantize())


@pytest.mark.parametrize(
    "hessians, match",
    [
        ({"missing.weight": np.eye(3)}, "does not have"),
        ({"layer.weight": np.eye(95)}, "must be 96x96"),
        ({"layer.weight": np.full((96, 96), np.nan)}, "NaN"),
        ({"layer.bias": np.eye(64)}, None),  # a tensor stored exactly: its moments are not used
    ],
)
def test_moments_that_do_not_fit_are_refused(hessians, match):
    tensors = model(np.random.default_rng(4))
    if match is None:
        _, report = compress_tensors(tensors, min_elements=100, hessians=hessians)
        assert "error_compensated" not in report["settings"]
        return
    with pytest.raises(EncodeError, match=match):
        compress_tensors(tensors, min_elements=100, hessians=hessians)
