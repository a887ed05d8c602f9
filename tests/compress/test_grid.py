"""``dcformat.compress.grid.quantize_step``: zeros stay exactly zero whether they are coded as a
cell of their own (rare) or by positions (common), with the same values and error."""

from __future__ import annotations

import numpy as np
import pytest

from dcformat.compress import grid
from dcformat.compress.grid import quantize_step, sum_of_squares
from dcformat.format import dtypes


def weights(seed: int, size: int, zeros: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(size) * 0.05).astype(dtype)
    w[rng.choice(size, zeros, replace=False)] = 0
    return w.reshape(-1, 50)


def reference(array: np.ndarray, step: float):
    """Per cell of the nonzero values, the mean (rounded to the dtype), written here from the definition."""
    flat = array.reshape(-1).astype(np.float64)
    nonzero = flat != 0
    cells = np.rint(flat[nonzero] / step)
    out = np.zeros_like(flat)
    error = 0.0
    for cell in np.unique(cells):  # per cell of a small test tensor
        members = flat[nonzero][cells == cell]
        mean = float(grid.round_codebook(np.array([members.mean()]), array.dtype)[0])
        out[np.flatnonzero(nonzero)[cells == cell]] = mean
        error += float(np.square(members - mean).sum())
    return out.reshape(array.shape), error


@pytest.mark.parametrize("zeros", [0, 3, 40, 2000])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16"])
def test_zeros_stay_zero_and_cells_hold_their_means(zeros, dtype):
    dtype = dtypes.bfloat16() if dtype == "bfloat16" else dtype
    array = weights(zeros, 10_000, zeros, dtype)
    q, error = quantize_step(array, 0.01)
    expected, expected_error = reference(array, 0.01)
    np.testing.assert_array_equal(q.dequantize().astype(np.float64), expected)
    assert error == pytest.approx(expected_error, rel=1e-9)
    # zeros in at most 1 element in RARE_ZEROS: one code per element; more: positions
    assert q.is_dense == (zeros * grid.RARE_ZEROS <= array.size)


def test_rare_zeros_and_positions_agree(monkeypatch):
    array = weights(7, 20_000, 100, np.float32)
    rare, rare_error = quantize_step(array, 0.004)
    assert rare.is_dense and 0.0 in rare.codebook
    monkeypatch.setattr(grid, "RARE_ZEROS", 10**9)  # any zero: positions
    positioned, positioned_error = quantize_step(array, 0.004)
    assert not positioned.is_dense and positioned.entry_count == array.size - 100
    np.testing.assert_array_equal(rare.dequantize(), positioned.dequantize())
    assert rare_error == pytest.approx(positioned_error, rel=1e-12)


@pytest.mark.parametrize("zeros", [0, 10])
def test_memory_beyond_the_tensor_is_one_byte_per_element_on_a_small_grid(zeros, monkeypatch):
    """Cell numbers as narrow as the grid (uint8 for about 40 cells), overwritten by the
    codes: 1 byte per element; rare zeros add no positions (8 bytes per element)."""
    import tracemalloc

    monkeypatch.setattr(grid, "QUANTIZE_CHUNK", 1 << 14)  # temporaries of about 0.5 MB
    array = weights(1, 4_000_000, zeros)
    tracemalloc.start()
    try:
        quantize_step(array, 0.01)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < array.size + (2 << 20), peak


def test_sum_of_squares_in_chunks(monkeypatch):
    monkeypatch.setattr(grid, "QUANTIZE_CHUNK", 7)
    array = weights(3, 1000, 10)
    assert sum_of_squares(array) == pytest.approx(float(np.square(array.astype(np.float64)).sum()), rel=1e-12)


@pytest.mark.parametrize("zeros", [0, 3])
def test_a_grid_stretched_by_outliers(zeros):
    """Cells numbered by occupancy: without zeros the tensor stays one code per element; its
    rare zeros then take positions (no grid cell is free to hold them)."""
    array = weights(11, 10_000, zeros)
    array[0, 0] = 5000.0  # about 500,000 cells of 0.01 apart
    assert (5000.0 - float(array.min())) / 0.01 > grid._MAX_GRID_CELLS
    q, error = quantize_step(array, 0.01)
    expected, expected_error = reference(array, 0.01)
    np.testing.assert_array_equal(q.dequantize().astype(np.float64), expected)
    assert error == pytest.approx(expected_error, rel=1e-9)
    assert q.is_dense == (zeros == 0)
