"""The compiled kernels against the numpy kernels, bit for bit (issue 12).

Every other codec test runs with the default kernels (compiled where built); CI runs the
codec, format, spec and hostile tests a second time with ``DCFORMAT_KERNELS=numpy``. The
properties here compare the two paths directly on the same inputs, including the corner
cases the compiled loops treat specially: codes longer than the primary table, lanes of
one more symbol, symbol outputs of one and two bytes, value outputs of two to eight,
streams of many lanes (the vector loop's, where the CPU has AVX-512; CI runs this file
again with ``DCFORMAT_NO_AVX512=1`` for the scalar loops, float_split's unpacking
included), corrupted payloads (same symbols,
same lane ends, same error) and misuse from Python (a kernel checks its buffers against
its counts).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dcformat
from dcformat import kernels
from dcformat.codecs import bitpack, huffman
from dcformat.errors import DCFormatError
from dcformat.format import float_split, sparse
from dcformat.format.constants import DType
from dcformat.format.dtypes import bfloat16

BFLOAT16 = bfloat16()  # ml_dtypes, loaded here for the tests that draw bfloat16 arrays

native = kernels._load()[0]
pytestmark = pytest.mark.skipif(native is None, reason="dcformat._kernels is not built (tests/test_kernels.py fails in CI instead)")


def both(fn):
    """``fn()`` under the numpy kernels, then under the compiled ones: results or error messages.
    The environment is restored after each (hypothesis runs many examples per test call)."""
    results = []
    for choice in ("numpy", "compiled"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(kernels.ENV_KERNELS, choice)
            try:
                results.append(fn())
            except DCFormatError as error:
                results.append(f"{type(error).__name__}: {error}")
    return results


def assert_same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
    elif isinstance(a, bytes):
        assert a == b
    else:
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def symbol_streams(draw):
    """Symbols of a random alphabet with a skew from uniform to geometric (long codes)."""
    alphabet = draw(st.sampled_from([1, 2, 3, 17, 32, 256, 300, 4096, 65536]))
    count = draw(st.integers(0, 20_000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    skew = draw(st.sampled_from(["uniform", "laplace", "geometric"]))
    if skew == "uniform":
        symbols = rng.integers(0, alphabet, count)
    elif skew == "laplace":
        symbols = np.minimum(np.abs(rng.laplace(0, max(alphabet / 20, 0.3), count)).astype(np.int64), alphabet - 1)
    else:
        symbols = np.minimum(rng.geometric(draw(st.sampled_from([0.3, 0.5, 0.7])), count) - 1, alphabet - 1)
    return symbols, alphabet


@given(symbol_streams(), st.sampled_from([None, 1, 3, 64, 1024]), st.sampled_from([None, 20]))
def test_huffman_encode_and_decode_agree(case, lane_symbols, max_length):
    symbols, alphabet = case
    bodies = both(lambda: huffman.encode(symbols, alphabet, lane_symbols=lane_symbols, max_length=max_length))
    assert_same(*bodies)
    decoded = both(lambda: huffman.decode(bodies[0], symbols.size, alphabet, threads=2))
    assert_same(*decoded)
    assert np.array_equal(decoded[1], symbols)


@contextlib.contextmanager
def split_streams_over_threads():
    """Let the compiled decoder split even the shortest streams over threads (lane spans of
    one lane), so the properties reach the split path (real streams split from 512K symbols)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huffman, "_MIN_COMPILED_SYMBOLS_PER_THREAD", 1)
        patch.setattr(huffman, "_MIN_COMPILED_LANES_PER_THREAD", 1)
        yield


@given(symbol_streams(), st.sampled_from(["float16", "float32", "float64"]), st.integers(1, 3), st.sampled_from([None, 4, 64]))
def test_huffman_decode_through_a_codebook_agrees(case, dtype, threads, lane_symbols):
    symbols, alphabet = case
    body = huffman.encode(symbols, alphabet, max_length=20, lane_symbols=lane_symbols)
    values = np.random.default_rng(alphabet).standard_normal(alphabet).astype(dtype)
    with split_streams_over_threads():
        decoded = both(lambda: huffman.decode_plan(huffman.prepare(body, symbols.size, alphabet), threads=threads, values=values))
    assert_same(*decoded)
    assert np.array_equal(decoded[1], values[symbols])


@given(symbol_streams(), st.sampled_from([None, 2, 64]), st.data())
def test_corrupted_huffman_payloads_fail_alike(case, lane_symbols, data):
    """Same symbols and lane ends on any payload bits, so the same error (or none), on one
    thread or split over several, in few lanes or in many (the vector loop's)."""
    symbols, alphabet = case
    if symbols.size < 2:
        return
    body = bytearray(huffman.encode(symbols, alphabet, max_length=20, lane_symbols=lane_symbols))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(len(body) - max(len(body) // 2, 1), len(body) - 1))  # the payload is at the end
        body[at] ^= 1 << data.draw(st.integers(0, 7))
    threads = data.draw(st.integers(1, 3))
    with split_streams_over_threads():
        results = both(lambda: huffman.decode(bytes(body), symbols.size, alphabet, threads=threads))
    assert_same(*results)


@given(symbol_streams(), st.integers(1, 12), st.sampled_from([None, "float32", "float64"]), st.data())
def test_every_first_table_width_decodes_alike(case, width, dtype, data):
    """Whatever first-table width the kernel is given (codes longer than it take the slow path:
    the lane's window reloaded where the code starts), symbols and lane ends are those of
    the numpy kernels, on intact and on corrupted payloads."""
    symbols, alphabet = case
    body = bytearray(huffman.encode(symbols, alphabet, max_length=20, lane_symbols=data.draw(st.sampled_from([None, 3, 64]))))
    if symbols.size >= 2 and data.draw(st.booleans()):
        at = data.draw(st.integers(len(body) - max(len(body) // 2, 1), len(body) - 1))  # the payload is at the end
        body[at] ^= 1 << data.draw(st.integers(0, 7))
    values = None if dtype is None else np.random.default_rng(alphabet).standard_normal(alphabet).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huffman, "primary_bits", lambda lens_sorted, max_len, long_share: min(width, max_len))
        results = both(lambda: huffman.decode_plan(huffman.prepare(bytes(body), symbols.size, alphabet), values=values))
    assert_same(*results)


@pytest.mark.parametrize("choice", ["numpy", "compiled"])
@pytest.mark.parametrize("symbols", [[3, 1, 2, 3, 0] * 40, [2] * 50, []])
def test_decoding_through_a_codebook_fills_the_array_given(monkeypatch, choice, symbols):
    monkeypatch.setenv(kernels.ENV_KERNELS, choice)
    symbols = np.array(symbols, dtype=np.int64)
    plan = huffman.prepare(huffman.encode(symbols, 4), symbols.size, 4)
    values = np.array([0.5, -1.0, 2.0, 4.0], dtype=np.float32)
    out = np.full(symbols.size, np.nan, dtype=np.float32)
    assert huffman.decode_plan(plan, values=values, out=out) is out
    assert np.array_equal(out, values[symbols])
    for wrong in (np.empty(symbols.size + 1, np.float32), np.empty(symbols.size, np.float64)):
        with pytest.raises(ValueError, match="out must be"):
            huffman.decode_plan(plan, values=values, out=wrong)
    with pytest.raises(ValueError, match="out is for decoding through values"):
        huffman.decode_plan(plan, out=np.empty(symbols.size, np.uint8))


def test_first_table_width_follows_the_share_of_long_codes():
    flat = np.full(64, 6)  # every code fits a narrow table
    assert huffman.primary_bits(flat, 6) == 6
    # a skewed code: lengths 1, 2, ..., 19, 20, 20; codes longer than 9 bits carry 2**-9 of the symbols
    skewed = np.array(list(range(1, 21)) + [20])
    assert huffman.primary_bits(skewed, 20) == 9
    # 2**-5 of the symbols in 64 codes of 11 bits: too many for a table of 9 or 10 bits
    heavy = np.array([1, 2, 3, 4, 5] + [11] * 64)
    assert huffman.primary_bits(heavy, 11) == 11
    # at the limit: 16 codes of 10 bits carry exactly 2**-6 of the symbols, so 9 bits still serve
    at_limit = np.array([1, 2, 3, 4, 5, 6] + [10] * 16)
    assert huffman.primary_bits(at_limit, 10) == 9
    # twice the limit (32 codes of 10 bits): the table widens to take them
    over = np.array([1, 2, 3, 4, 5] + [10] * 32)
    assert huffman.primary_bits(over, 10) == 10
    # the vector loop's share (1/256): 2**-6 of the symbols in codes of 10 bits is too many for 9
    assert huffman.primary_bits(at_limit, 10, huffman._VECTOR_LONG_CODE_SHARE) == 10
    assert huffman.primary_bits(skewed, 20, huffman._VECTOR_LONG_CODE_SHARE) == 9  # 2**-9 is under it


def test_vector_streams_take_the_vector_share(monkeypatch):
    """Where the extension decodes VECTOR_LANES lanes a step, a stream of that many lanes gets
    the wider table; one of fewer lanes (the scalar loop) keeps the narrow one."""
    monkeypatch.setattr(native, "VECTOR_LANES", 32, raising=False)
    skewed = np.minimum(np.random.default_rng(1).geometric(0.3, 40_000) - 1, 40)  # codes of 1 to 11 bits
    widths = {}
    for lane_symbols in (64, 4000):
        plan = huffman.prepare(huffman.encode(skewed, 41, lane_symbols=lane_symbols), skewed.size, 41)
        widths[plan.lanes] = huffman._compiled_tables(native, plan, None)[0]
    assert widths == {625: 11, 10: 9}


@given(st.integers(1, 64), st.integers(0, 3000), st.integers(0, 2**32 - 1))
def test_bitpack_agrees(width, count, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, count, dtype=np.uint64) * 2 + 1 if width == 64 else rng.integers(0, 1 << width, count, dtype=np.uint64)
    packed = both(lambda: bitpack.pack(values, width))
    assert_same(*packed)
    out_dtype = np.uint64 if width > 32 else np.uint32
    unpacked = both(lambda: bitpack.unpack(packed[0], count, width, dtype=out_dtype))
    assert_same(*unpacked)
    assert np.array_equal(unpacked[1], values)


@given(st.integers(0, 5000), st.sampled_from([1, 4, 8, 16]), st.integers(0, 2**32 - 1))
def test_sparse_scatter_agrees(entries, gap_bits, seed):
    rng = np.random.default_rng(seed)
    gaps = rng.integers(0, 1 << gap_bits, entries).astype(np.uint8 if gap_bits <= 8 else np.uint16)
    codes = rng.integers(0, 7, entries).astype(np.uint8)
    table = rng.standard_normal(7).astype(np.float32)
    numel = sparse.last_position(gaps) + 1 + int(rng.integers(0, 3)) if entries else 5

    def run():
        out = np.zeros(numel, dtype=np.float32)
        sparse.scatter(out, gaps, codes, table, threads=2)
        return out

    assert_same(*both(run))


@given(st.sampled_from(["float16", "bfloat16", "float32", "float64"]), st.integers(0, 9000), st.sampled_from(["random", "weights"]), st.data())
def test_float_split_decode_agrees(dtype, count, kind, data):
    """Whole float_split tensors: heads decoded into place and planes merged (packed planes
    read in place, zstd or Huffman planes decoded first), against the numpy join."""
    if dtype == "bfloat16" and BFLOAT16 is None:
        return
    rng = np.random.default_rng(count)
    numpy_dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    word = np.dtype(f"<u{numpy_dtype.itemsize}")
    if kind == "random":  # every bit pattern: NaNs, infinities, subnormals
        array = rng.integers(0, np.iinfo(word).max, count, dtype=word, endpoint=True).view(numpy_dtype)
    else:  # weights: Huffman heads, compressible top planes
        array = (rng.laplace(scale=0.05, size=count)).astype(numpy_dtype)
    head_bits = data.draw(st.integers(0, float_split.max_head_bits(DType[dtype.upper()])))
    coder = data.draw(st.sampled_from([None, "bitpack", "huffman", "zstd"]))
    with pytest.MonkeyPatch.context() as patch:  # the encoder's choices, made smaller and varied
        patch.setattr(float_split, "default_head_bits", lambda dtype: head_bits)
        patch.setattr(float_split, "DEFAULT_BLOCK_ELEMENTS", float_split.MIN_BLOCK_ELEMENTS)
        payload = dcformat.save({"x": array}, options=dcformat.EncodeOptions(dense="float_split", coder=coder))
    threads = data.draw(st.integers(1, 3))  # blocks decoded on several threads
    results = both(lambda: dcformat.load(payload, threads=threads)["x"])
    assert_same(*results)
    assert results[1].view(word).tobytes() == array.view(word).tobytes()


def test_histogram_agrees_and_rejects_outsiders(monkeypatch):
    symbols = np.random.default_rng(0).integers(0, 300, 10_000).astype(np.uint16)
    counts = both(lambda: huffman.histogram(symbols, 300))
    assert_same(*counts)
    monkeypatch.setenv(kernels.ENV_KERNELS, "compiled")
    with pytest.raises(DCFormatError, match="outside the alphabet"):
        huffman.histogram(symbols, 200)


def _tables_reference(lens: np.ndarray, values: np.ndarray, primary_bits: int):
    """The decode tables in numpy (how they were built before the kernel built them)."""
    lens = lens.astype(np.int64)
    short = lens <= primary_bits
    reps = np.left_shift(np.int64(1), primary_bits - lens[short])
    by_code = np.full(1 << primary_bits, -1, dtype=np.int64)  # index = next bits, MSB first
    by_code[: int(reps.sum())] = np.repeat(np.flatnonzero(short), reps)
    entry = by_code[huffman._reversed_index(primary_bits)]
    primary_len = np.where(entry >= 0, lens[np.maximum(entry, 0)], 0).astype(np.uint8)
    primary_value = np.where(entry >= 0, values[np.maximum(entry, 0)], 0).astype(values.dtype)
    long_start = np.concatenate([[0], np.cumsum(np.left_shift(np.int64(1), 20 - lens))[:-1]]).astype(np.uint32)
    return primary_len, primary_value, long_start


@given(st.data())
def test_table_kernel_matches_numpy(data):
    """Complete codes of every shape (from a Huffman code of random counts), every value size,
    primary tables narrower and wider than the longest code."""
    counts = np.array(data.draw(st.lists(st.integers(1, 1 << 20), min_size=2, max_size=300)), dtype=np.int64)
    if data.draw(st.booleans()):  # geometric counts: codes up to 20 bits, past any primary table
        counts = np.left_shift(np.int64(1), np.minimum(np.arange(counts.size), 50))
    lengths = huffman.code_lengths(counts, data.draw(st.integers(max(9, int(np.ceil(np.log2(counts.size)))), 20)))
    present = np.flatnonzero(lengths)
    order = np.argsort(lengths[present], kind="stable")
    lens = lengths[present][order].astype(np.uint8)
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    values = np.arange(1, lens.size + 1).astype(dtype)
    primary_bits = data.draw(st.integers(1, 12))
    primary_len, primary_value, long_start = np.empty(1 << primary_bits, np.uint8), np.empty(1 << primary_bits, dtype), np.empty(lens.size, np.uint32)
    assert native.huffman_tables(lens, values.view(np.uint8), values.itemsize, primary_bits, primary_len, primary_value.view(np.uint8), long_start)
    expected = _tables_reference(lens, values, primary_bits)
    for got, want in zip((primary_len, primary_value, long_start), expected):
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "lens",
    [
        [2, 2, 2],  # incomplete
        [1, 2, 2, 2],  # over-subscribed
        [1, 1, 1],  # over-subscribed at once
        [2, 1, 2],  # not in canonical order
        [0, 1, 1],  # no code
        [1, 21],  # too long
    ],
)
def test_table_kernel_refuses_codes_that_are_not_complete(lens):
    lens = np.array(lens, np.uint8)
    args = (lens, np.zeros(lens.size, np.uint8), 1, 4, np.empty(16, np.uint8), np.empty(16, np.uint8), np.empty(lens.size, np.uint32))
    assert native.huffman_tables(*args) is False


def test_table_kernel_checks_its_buffers():
    lens = np.array([1, 2, 2], np.uint8)
    ok = (lens, np.zeros(3, np.uint8), 1, 4, np.empty(16, np.uint8), np.empty(16, np.uint8), np.empty(3, np.uint32))
    assert native.huffman_tables(*ok) is True
    for k, bad in [(1, np.zeros(2, np.uint8)), (2, 3), (3, 13), (4, np.empty(8, np.uint8)), (5, np.empty(15, np.uint8)), (6, np.empty(2, np.uint32))]:
        args = list(ok)
        args[k] = bad
        with pytest.raises(ValueError, match="dcformat._kernels"):
            native.huffman_tables(*args)


# --------------------------------------------------------------------------- misuse


def _decode_args(**changes):
    """Arguments of a valid huffman_decode call on a tiny stream, with some replaced."""
    plan = huffman.prepare(huffman.encode(np.array([0, 1, 2, 3, 0, 0, 1, 2]), 4, lane_symbols=3), 8, 4)
    primary_bits, primary_len, primary_value, long_start, long_len, long_value = huffman._compiled_tables(native, plan, None)
    args = dict(
        payload=plan.payload, lane_start=plan.lane_start, count=8, lanes=plan.lanes, lo=0, hi=plan.lanes, primary_bits=primary_bits,
        max_len=plan.max_len, primary_len=primary_len, primary_value=primary_value, long_start=long_start, long_len=long_len,
        long_value=long_value, value_size=1, out=np.empty(8, np.uint8), end=np.empty(plan.lanes, np.int64),
    )  # fmt: skip
    args.update(changes)
    return list(args.values())


def test_decode_kernel_runs_on_valid_arguments():
    args = _decode_args()
    native.huffman_decode(*args)
    assert args[-2].tolist() == [0, 1, 2, 3, 0, 0, 1, 2]


@pytest.mark.parametrize(
    "changes",
    [
        dict(count=9),  # more symbols than the output holds
        dict(lanes=4),  # lane arrays of another length
        dict(hi=5),  # lanes past the last
        dict(lo=2, hi=1),
        dict(value_size=3),
        dict(primary_bits=13),
        dict(max_len=21),
        dict(primary_len=np.full(4, 9, np.uint8)),  # a length longer than the table
        dict(long_start=np.array([0, 5, 5, 9], np.uint32)),  # not ascending
        dict(lane_start=np.array([-1, 0, 0], np.int64)),
        dict(out=np.empty(7, np.uint8)),
        dict(end=np.empty(1, np.int64)),
    ],
)
def test_decode_kernel_checks_its_buffers_against_its_counts(changes):
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.huffman_decode(*_decode_args(**changes))


def test_other_kernels_check_their_arguments():
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.unpack(b"\x00", 9, 1, np.empty(8, np.uint8), 1)  # output too small
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.unpack(b"\x00", 1, 65, np.empty(8, np.uint8), 1)
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.pack(np.zeros(3, np.uint8), 3, 5)  # item size 3
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.gather(np.zeros(4, np.uint8), 1, np.zeros(4, np.float32).view(np.uint8), 4, np.empty(3, np.float32).view(np.uint8))
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.scatter(np.zeros(4, np.uint8), 1, np.zeros(3, np.uint8), 1, np.zeros(8, np.uint8), 4, np.zeros(8, np.uint8))
    with pytest.raises(ValueError, match="dcformat._kernels"):
        native.huffman_encode(np.zeros(4, np.uint8), 1, np.zeros(2, np.uint32), np.ones(2, np.uint8), 5, np.empty(5, np.int64))
    with pytest.raises(ValueError, match="dcformat._kernels"):
        heads, planes, widths, packed = np.zeros(16, np.uint8), (np.zeros(3, np.uint8),) * 3, np.array([8, 8, 6], np.uint8), np.zeros(3, np.uint8)
        native.float_split_merge(heads, planes, widths, packed, np.empty(16, np.uint8), 4, 21, 31)  # planes of 3 symbols, not 4


def test_bounded_reads_past_short_buffers():
    """Unpacking and scattering never read or write past what they were given."""
    out = np.empty(4, np.uint64)
    native.unpack(b"\xff\xff", 4, 16, out.view(np.uint8), 8)  # the last two symbols read zeros
    assert out.tolist() == [0xFFFF, 0, 0, 0]
    dense = np.zeros(3, np.float32)
    native.scatter(np.array([0, 5, 0], np.uint8), 1, np.zeros(3, np.uint8), 1, np.ones(1, np.float32).view(np.uint8), 4, dense.view(np.uint8))
    assert dense.tolist() == [1.0, 0.0, 0.0]  # the second entry is past the end: writes stop


def test_wide_tables_in_many_lanes_decode_alike():
    """A first table of 2**12 entries (the vector loop then takes its lanes 128 at a time)
    over 300 lanes: the same symbols and float32 values as numpy's."""
    rng = np.random.default_rng(12)
    symbols = rng.integers(0, 4096, 300 * 64)
    body = huffman.encode(symbols, 4096, lane_symbols=64)
    plan = huffman.prepare(body, symbols.size, 4096)
    assert plan.lanes == 300 and huffman._compiled_tables(native, plan, None)[0] == 12
    values = rng.standard_normal(4096).astype(np.float32)
    for through in ({}, {"values": values}):
        assert_same(*both(lambda through=through: huffman.decode_plan(huffman.prepare(body, symbols.size, 4096), **through)))
    assert np.array_equal(huffman.decode_plan(plan), symbols)
