"""k-means, quantize() and QuantizedTensor construction, checked by independent computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dcformat import EncodeError, QuantizedTensor, kmeans_1d, quantize
from dcformat.format.dtypes import bfloat16
from tests.support.strategies import FLOAT_DTYPES, assert_bit_exact, quantized_cases


def lloyd_fixed_point(values: np.ndarray, centroids: np.ndarray) -> bool:
    """Every non-empty cluster's centroid is the mean of the values nearest to it (brute force)."""
    values = np.asarray(values, dtype=np.float64)
    dist = np.abs(values[:, None] - centroids[None, :])
    nearest = np.argmin(dist, axis=1)
    for j in range(centroids.size):
        members = values[nearest == j]
        if members.size and not np.isclose(members.mean(), centroids[j], rtol=1e-9, atol=1e-12):
            return False
    return True


# -- kmeans_1d --------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
def test_kmeans_separated_clusters(init):
    rng = np.random.default_rng(1)
    centres = np.array([-5.0, 0.5, 3.0, 10.0])
    values = np.concatenate([c + rng.uniform(-0.1, 0.1, 200) for c in centres])
    rng.shuffle(values)
    out = kmeans_1d(values, 4, init=init, seed=3)
    assert out.shape == (4,) and out.dtype == np.float64
    assert np.all(np.diff(out) >= 0)  # sorted
    if init != "forgy":  # forgy may start two centroids in one cluster; the others cannot
        assert np.allclose(out, centres, atol=0.02)
    assert lloyd_fixed_point(values, out)


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.sampled_from(["linear", "density", "forgy"]), st.integers(1, 500))
def test_kmeans_properties(seed, k, init, n):
    rng = np.random.default_rng(seed)
    values = rng.laplace(size=n) * rng.choice([1e-3, 1.0, 1e3])
    out = kmeans_1d(values, k, init=init, seed=seed, max_iter=500)
    assert out.shape == (k,)
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= values.min() - 1e-9 * abs(values.min()) and out.max() <= values.max() + 1e-9 * abs(values.max())
    assert lloyd_fixed_point(values, out)


def test_kmeans_linear_init_is_a_linspace():
    values = np.array([3.0, -1.0, 7.0, 0.0, 2.0])
    assert np.array_equal(kmeans_1d(values, 5, init="linear", max_iter=0), np.linspace(-1.0, 7.0, 5))


def test_kmeans_density_init_is_quantiles():
    values = np.arange(101, dtype=np.float64) ** 2
    expected = np.array([0.0, 625.0, 2500.0, 5625.0, 10000.0])  # the 0/25/50/75/100 % points
    assert np.allclose(kmeans_1d(values, 5, init="density", max_iter=0), expected)


def test_kmeans_forgy_init_samples_values():
    values = np.arange(100, dtype=np.float64) * 1.5
    start = kmeans_1d(values, 6, init="forgy", seed=11, max_iter=0)
    assert np.all(np.isin(start, values))
    assert np.unique(start).size == 6
    assert np.array_equal(start, kmeans_1d(values, 6, init="forgy", seed=11, max_iter=0))  # seeded
    others = {tuple(kmeans_1d(values, 6, init="forgy", seed=s, max_iter=0)) for s in range(10)}
    assert len(others) > 1  # the seed matters


def test_kmeans_forgy_more_clusters_than_values():
    out = kmeans_1d(np.array([1.0, 2.0]), 5, init="forgy")
    assert out.shape == (5,)
    assert set(out.tolist()) <= {1.0, 2.0}


def test_kmeans_empty_and_bad_init():
    assert kmeans_1d(np.zeros(0), 4).size == 0
    with pytest.raises(EncodeError):
        kmeans_1d(np.arange(4.0), 2, init="kmeans++")


def test_kmeans_k1_is_the_mean():
    values = np.array([1.0, 2.0, 6.0])
    assert kmeans_1d(values, 1)[0] == pytest.approx(3.0)


# -- quantize ---------------------------------------------------------------------------


def test_quantize_exact_when_few_unique_values():
    a = np.array([[0.0, 0.5, -0.25, 0.5], [0.0, 0.0, 3.0, -0.25]], dtype=np.float32)
    q = quantize(a, bits=2)  # 3 distinct nonzero values <= 4
    assert sorted(q.codebook.tolist()) == [-0.25, 0.5, 3.0]
    assert_bit_exact(q.dequantize(), a)
    assert q.positions.tolist() == np.flatnonzero(a).tolist()  # zeros are not stored
    assert q.entry_count == 5


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 8), n=st.integers(1, 400), zero_fraction=st.sampled_from([0.0, 0.3, 0.9]))
def test_quantize_properties(dtype, seed, bits, n, zero_fraction):
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=n) * 0.1).astype(np.float32)
    a[rng.random(n) < zero_fraction] = 0.0
    a = a.astype(dtype)
    assume(np.count_nonzero(a.astype(np.float64)))  # all-zero input: see test_quantize_all_zero
    q = quantize(a, bits=bits)
    cb = q.codebook.astype(np.float64)
    nonzero = np.flatnonzero(a.astype(np.float64))
    # zeros stay exactly zero and are not stored
    assert q.positions.tolist() == nonzero.tolist()
    assert q.entry_count == nonzero.size
    out = q.dequantize()
    assert out.dtype == a.dtype and out.shape == a.shape
    zero_at = a.astype(np.float64) == 0
    assert (out.astype(np.float64)[zero_at] == 0).all()
    assert not np.signbit(out.astype(np.float64)[zero_at]).any()
    # codebook: sorted, unique, at most 2**bits, every entry used (when anything is stored)
    assert cb.size <= max(1 << bits, 1)
    assert np.all(np.diff(cb) > 0)
    if nonzero.size:
        assert np.unique(q.codes).size == cb.size
    # assignment = nearest codebook entry (ties either way)
    values = a.astype(np.float64)[nonzero]
    dist = np.abs(values[:, None] - cb[None, :])
    chosen = dist[np.arange(values.size), q.codes.astype(np.int64)]
    assert np.all(chosen <= dist.min(axis=1) * (1 + 1e-12) + 1e-300)
    # exact when there are few enough distinct values (float16 and bfloat16 inputs)
    if np.unique(values).size <= (1 << bits) and dtype != np.float64:
        assert_bit_exact(out, np.where(zero_at, np.zeros_like(a), a))


def test_quantize_float64_few_values_rounds_to_the_float32_codebook():
    """Documented: float64 values are rounded to the float32 codebook (spec 6.3 allows no float64 codebook)."""
    a = np.array([0.1, 0.0, -0.3], dtype=np.float64)
    q = quantize(a, bits=2)
    assert q.codebook.dtype == np.float32
    assert_bit_exact(q.dequantize(), a.astype(np.float32).astype(np.float64))


def test_from_codes_refuses_a_codebook_that_storage_would_round():
    with pytest.raises(EncodeError, match="representable"):
        QuantizedTensor.from_codes(np.array([0.1], np.float64), np.zeros(3, np.int64))
    q = QuantizedTensor.from_codes(np.array([0.5], np.float64), np.zeros(3, np.int64))  # exact in float32: fine
    assert q.codebook.dtype == np.float32


def test_quantize_more_values_than_codes():
    a = np.linspace(-1, 1, 1001).astype(np.float32)
    q = quantize(a, bits=3)
    assert q.codebook.size == 8
    assert np.abs(q.dequantize() - a).max() < 0.2


@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
def test_quantize_inits(init):
    rng = np.random.default_rng(0)
    a = rng.laplace(scale=0.05, size=2000).astype(np.float32)
    q = quantize(a, bits=4, init=init, seed=5)
    assert 1 <= q.codebook.size <= 16
    assert np.all(np.diff(q.codebook.astype(np.float64)) > 0)
    assert np.abs(q.dequantize() - a).mean() < 0.01  # 16 levels over a Laplace(0.05): far better than 0.01
    centroids = kmeans_1d(a, 16, init=init, seed=5)
    if q.codebook.size == 16:  # nothing merged or dropped: the codebook is the k-means result in float32
        assert np.array_equal(np.sort(centroids).astype(np.float32), q.codebook)


def test_quantize_all_zero():
    q = quantize(np.zeros((3, 4), dtype=np.float32), bits=4)
    assert q.entry_count == 0 and q.codebook.size >= 1
    assert_bit_exact(q.dequantize(), np.zeros((3, 4), dtype=np.float32))


def test_quantize_empty():
    q = quantize(np.zeros((0, 5), dtype=np.float16), bits=2)
    assert q.dequantize().shape == (0, 5) and q.dequantize().dtype == np.float16


def test_quantize_only_negative_zero():
    q = quantize(np.array([-0.0, 0.0], dtype=np.float32), bits=1)
    assert q.entry_count == 0
    assert q.dequantize().tolist() == [0.0, 0.0]


def test_quantize_negative_zero_is_a_zero():
    a = np.array([-0.0, 1.0], dtype=np.float32)
    q = quantize(a, bits=1)
    assert q.entry_count == 1
    assert q.dequantize()[0] == 0


def test_quantize_codebook_dtype():
    assert quantize(np.ones(3, np.float16), bits=2).codebook.dtype == np.float16
    assert quantize(np.ones(3, np.float32), bits=2).codebook.dtype == np.float32
    assert quantize(np.ones(3, np.float64), bits=2).codebook.dtype == np.float32


@pytest.mark.skipif(bfloat16() is None, reason="needs ml_dtypes")
def test_quantize_bfloat16_codebook_is_representable():
    rng = np.random.default_rng(2)
    a = rng.normal(size=500).astype(bfloat16())
    q = quantize(a, bits=3)
    cb = q.codebook.astype(np.float32)
    assert (cb.view(np.uint32) & 0xFFFF == 0).all()  # low halves zero: exact in bfloat16
    assert q.dequantize().dtype == bfloat16()


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf, 1.0]), np.array([-np.inf], dtype=np.float16)])
def test_quantize_rejects_non_finite(bad):
    with pytest.raises(EncodeError):
        quantize(bad, bits=4)


@pytest.mark.parametrize("bits", [0, 17, -1, True, 2.5, "4", None])
def test_quantize_rejects_bad_bits(bits):
    with pytest.raises(EncodeError):
        quantize(np.ones(4, dtype=np.float32), bits=bits)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64])
def test_quantize_rejects_non_float(dtype):
    with pytest.raises(EncodeError):
        quantize(np.ones(4, dtype=dtype), bits=4)


def test_quantize_bits_16_and_numpy_int():
    a = np.arange(1, 70000, dtype=np.float32)
    q = quantize(a, bits=np.int64(16))
    assert q.codebook.size <= 65536


# -- QuantizedTensor constructors -----------------------------------------------------------


def test_from_codes_dense():
    cb = np.array([0.0, 1.5, -2.0], np.float32)
    codes = np.array([[0, 1], [2, 1]])
    q = QuantizedTensor.from_codes(cb, codes)
    assert q.shape == (2, 2) and q.is_dense and q.entry_count == 4
    assert q.positions.tolist() == [0, 1, 2, 3]
    assert_bit_exact(q.dequantize(), np.array([[0.0, 1.5], [-2.0, 1.5]], np.float32))
    assert q.density == pytest.approx(0.75)


def test_from_codes_with_mask():
    cb = np.array([1.5, -2.0], np.float32)
    codes = np.array([[0, 1, 1], [1, 0, 0]])
    mask = np.array([[True, False, True], [False, False, True]])
    q = QuantizedTensor.from_codes(cb, codes, mask=mask, dtype=np.float16)
    assert q.positions.tolist() == [0, 2, 5]
    assert q.codes.tolist() == [0, 1, 0]
    assert_bit_exact(q.dequantize(), np.array([[1.5, 0, -2.0], [0, 0, 1.5]], np.float16))
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(cb, codes, mask=mask[:, :2])


def test_from_entries():
    q = QuantizedTensor.from_entries((2, 3), np.array([4.0, 8.0], np.float32), [1, 5], [1, 0], dtype=np.float64)
    assert_bit_exact(q.dequantize(), np.array([[0, 8.0, 0], [0, 0, 4.0]], np.float64))
    assert not q.is_dense and q.numel == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(positions=[[1, 2]], codes=[0, 0]),  # 2-D positions
        dict(positions=[0.0, 1.0], codes=[0, 0]),  # float positions
        dict(positions=[-1, 2], codes=[0, 0]),
        dict(positions=[2, 10], codes=[0, 0]),  # past the end (numel 10)
        dict(positions=[3, 3], codes=[0, 0]),  # not strictly increasing
        dict(positions=[5, 2], codes=[0, 0]),
        dict(positions=[1, 2], codes=[0]),  # count mismatch
        dict(positions=[1, 2], codes=[0, 2]),  # code >= codebook size
        dict(positions=[1, 2], codes=[0, -1]),
        dict(positions=[1, 2], codes=[0.0, 1.0]),  # float codes
        dict(positions=[1], codes=[0], codebook=[]),  # empty codebook
        dict(positions=[1], codes=[0], codebook=[[1.0]]),  # 2-D codebook
        dict(positions=[1], codes=[0], codebook=[np.nan, 1.0]),
        dict(positions=[1], codes=[0], codebook=[np.inf, 1.0]),
        dict(positions=[1], codes=[0], dtype=np.int32),  # not a float dtype
        dict(positions=[1], codes=[0], codebook=np.array([0.1], np.float32), dtype=np.float16),  # not representable
        dict(positions=[1], codes=[0], codebook=np.zeros(65537, np.float32)),
    ],
)
def test_from_entries_validation(kwargs):
    kwargs = dict(kwargs)
    codebook = kwargs.pop("codebook", np.array([1.0, 2.0], np.float32))
    with pytest.raises(EncodeError):
        QuantizedTensor.from_entries((10,), codebook, kwargs.pop("positions"), kwargs.pop("codes"), **kwargs)


def test_from_codes_validation():
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(np.array([1.0], np.float32), np.array([0, 1]))
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(np.array([1.0], np.float32), np.array([0.0, 0.0]))
    with pytest.raises(EncodeError):
        QuantizedTensor.from_codes(np.array([1.0], np.float32), np.array([0]), dtype=np.complex64)


def test_codebook_of_65536_entries():
    cb = np.arange(65536, dtype=np.float32)
    codes = np.array([0, 65535, 1234])
    q = QuantizedTensor.from_codes(cb, codes)
    assert q.codes.tolist() == [0, 65535, 1234]
    assert q.dequantize().tolist() == [0.0, 65535.0, 1234.0]


@given(quantized_cases())
def test_dequantize_matches_ingredients(case):
    assert_bit_exact(case.q.dequantize(), case.expected())
    assert case.q.entry_count == case.positions.size
    assert case.q.positions.tolist() == case.positions.tolist()
    numel = case.numel
    expected_density = np.count_nonzero(case.expected().astype(np.float64)) / numel if numel else 0.0
    assert case.q.density == pytest.approx(expected_density)
