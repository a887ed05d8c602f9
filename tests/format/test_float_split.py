"""float_split (spec 6.6): every bit pattern of every float dtype round-trips, the encoder's
automatic choice includes it, and files declare the version their ids need (10.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dcformat
from dcformat import EncodeOptions
from dcformat.codecs import huffman
from dcformat.format import float_split
from dcformat.format.constants import DType
from dcformat.format.encode import FLOAT_SPLIT_MIN_SAVING
from tests.support.optional import needs_ml_dtypes
from tests.support.strategies import BFLOAT16, FLOAT_DTYPES, assert_bit_exact, few, parse_file, raw_arrays

CODERS = [None, "bitpack", "huffman", "zstd"]


@settings(max_examples=few(60))
@given(array=st.sampled_from(FLOAT_DTYPES).flatmap(lambda dtype: raw_arrays(dtype=dtype)), coder=st.sampled_from(CODERS))
def test_every_bit_pattern_round_trips(array, coder):
    blob = dcformat.save({"x": array}, options=EncodeOptions(dense="float_split", coder=coder))
    entry = parse_file(blob).entries[0]
    assert entry.encoding == (5 if array.size else 1)  # an empty tensor has nothing to split: raw
    with dcformat.open(blob) as f:
        assert_bit_exact(f.get("x"), array)
        assert_bit_exact(f.get_stored("x"), array)
        info = f.info("x")
        magnitude = np.ascontiguousarray(array).view(f"<u{array.dtype.itemsize}") & ((1 << (8 * array.dtype.itemsize - 1)) - 1)
        assert info.density == (np.count_nonzero(magnitude) / array.size if array.size else 0.0)
    assert_bit_exact(dcformat.load(blob)["x"], array)


@settings(max_examples=few(30))
@given(array=st.sampled_from(FLOAT_DTYPES).flatmap(lambda dtype: raw_arrays(dtype=dtype, max_elements=5000)))
def test_auto_is_the_smallest_lossless_choice_unless_float_split_saves_little(array):
    sizes = {dense: len(dcformat.save({"x": array}, options=EncodeOptions(dense=dense))) for dense in ("raw", "zstd", "float_split")}
    auto = dcformat.save({"x": array})
    assert len(auto) <= min(sizes["raw"], sizes["zstd"], sizes["float_split"] + FLOAT_SPLIT_MIN_SAVING)
    with dcformat.open(auto) as f:
        assert_bit_exact(f.get("x"), array)


def test_float_split_is_kept_where_it_saves_enough_to_be_worth_decoding():
    """A weight matrix goes float_split; a bias, which float_split would also make smaller,
    by less than FLOAT_SPLIT_MIN_SAVING, stays whole (no tiny tensor to plan and decode)."""
    rng = np.random.default_rng(5)
    weights = (rng.standard_normal((256, 256)) * 0.05).astype(np.float32)
    bias = (rng.standard_normal(1536) * 0.05).astype(np.float32)
    for array, split_kept in ((weights, True), (bias, False)):
        sizes = {dense: len(dcformat.save({"x": array}, options=EncodeOptions(dense=dense))) for dense in ("raw", "zstd", "float_split")}
        assert sizes["float_split"] < min(sizes["raw"], sizes["zstd"])
        assert (min(sizes["raw"], sizes["zstd"]) - sizes["float_split"] >= FLOAT_SPLIT_MIN_SAVING) == split_kept
        assert (parse_file(dcformat.save({"x": array})).entries[0].encoding == 5) == split_kept


@pytest.mark.parametrize(
    ("dtype", "head_bits", "widths"),
    [
        (DType.FLOAT32, 0, [8, 8, 8]),
        (DType.FLOAT32, 2, [8, 8, 6]),
        (DType.FLOAT16, 0, [8, 3]),
        (DType.FLOAT16, 2, [8, 1]),
        (DType.BFLOAT16, 0, [8]),
        (DType.BFLOAT16, 2, [6]),
        (DType.FLOAT64, 2, [8, 8, 8, 8, 8, 8, 3]),
    ],
)
def test_plane_table_matches_the_spec(dtype, head_bits, widths):
    exponent, mantissa = float_split.fields(dtype)
    assert float_split.plane_widths(dtype, head_bits) == widths and sum(widths) == 1 + mantissa - head_bits
    assert float_split.alphabets(dtype, head_bits) == [1 << (exponent + head_bits)] + [1 << w for w in widths]
    assert float_split.max_head_bits(dtype) == min(mantissa, 16 - exponent)


def test_fields_worked_by_hand():
    """float16 -1.5 = 0xBE00: sign 1, exponent 15, mantissa 0x200.
    h = 0: head 15; rest = 1 << 10 | 0x200 = 0x600, planes of 8 and 3 bits: 0xC0, 0.
    h = 2: head = 15 << 2 | 0b10 = 62; rest = 1 << 8 | 0 = 0x100, planes of 8 and 1 bits: 0x80, 0."""
    bits = np.array([0xBE00], dtype="<u2")
    for head_bits, expected in ((0, (15, 0xC0, 0)), (2, (62, 0x80, 0))):
        symbols = float_split.split(bits, DType.FLOAT16, head_bits)
        assert tuple(int(s[0]) for s in symbols) == expected
        assert float_split.join(symbols, DType.FLOAT16, head_bits).tolist() == [0xBE00]
    # float32 1.0 = 0x3F800000: exponent 127, rest 0; -0.0: exponent 0, rest 1 << 23 (the sign alone)
    heads, *planes = float_split.split(np.array([0x3F800000, 0x80000000], dtype="<u4"), DType.FLOAT32, 0)
    assert heads.tolist() == [127, 0] and [p.tolist() for p in planes] == [[0, 0x80], [0, 0], [0, 0]]


@needs_ml_dtypes
def test_bfloat16_head_and_rest():
    """bfloat16 1.25 = 0x3FA0: exponent 127, mantissa 0b0100000; with h = 2 the head is
    127 << 2 | 0b01 and the rest (sign, 5 low mantissa bits) one 6-bit plane."""
    values = np.array([1.25, -2.0, 0.0], dtype=BFLOAT16)
    heads, plane = float_split.split(values.view("<u2"), DType.BFLOAT16, 2)
    assert heads.tolist() == [127 << 2 | 1, 128 << 2, 0] and plane.tolist() == [0, 0x20, 0]


def test_the_encoder_codes_two_mantissa_bits_with_the_exponent_but_in_float32_and_bfloat16():
    """Spec 6.6.4: h = 2 (the smallest files), h = 0 in float32 (three whole bytes of rest,
    decoded faster for 0.24% more bytes), h = 1 in bfloat16 (7% faster for 0.19% more);
    never past the dtype's largest h."""
    assert float_split.default_head_bits(DType.FLOAT32) == 0
    assert float_split.plane_widths(DType.FLOAT32, 0) == [8, 8, 8]
    assert float_split.default_head_bits(DType.BFLOAT16) == 1
    assert float_split.plane_widths(DType.BFLOAT16, 1) == [7]
    for dtype in (DType.FLOAT16, DType.FLOAT64):
        assert float_split.default_head_bits(dtype) == 2 <= float_split.max_head_bits(dtype)
    weights = (np.random.default_rng(5).standard_normal(5000) * 0.05).astype(np.float32)
    for dtype, array in ((DType.FLOAT32, weights), (DType.FLOAT16, weights.astype(np.float16))):
        with dcformat.open(dcformat.save({"w": array}, options=EncodeOptions(dense="float_split"))) as f:
            assert f.plan("w").head_bits == float_split.default_head_bits(dtype)
            assert_bit_exact(f.get("w"), array)


def test_blocks_cover_the_tensor():
    assert float_split.blocks(0, 4096) == []
    assert float_split.blocks(10_000, 4096) == [(0, 4096), (4096, 8192), (8192, 10_000)]
    weights = (np.random.default_rng(3).standard_normal(3 * (1 << 20) + 5) * 0.05).astype(np.float32)
    blob = dcformat.save({"w": weights}, options=EncodeOptions(dense="float_split"))
    with dcformat.open(blob) as f:
        plan = f.plan("w")
        assert len(plan.blocks) == 4 and plan.head_bits == float_split.default_head_bits(DType.FLOAT32) == 0
        assert plan.block_elements == float_split.DEFAULT_BLOCK_ELEMENTS == 1 << 20
        assert_bit_exact(f.get("w"), weights)


def test_the_encoder_keeps_codes_to_11_bits():
    """Spec 6.6.4: a block's Huffman codes are at most 11 bits long where the default would
    make them longer (float32 exponents spread over 30 octaves: 13-bit codes by default)."""
    weights = np.exp(np.random.default_rng(6).laplace(0, 6, 1 << 17)).astype(np.float32)
    heads = huffman.encode(float_split.split(weights.view(np.uint32), DType.FLOAT32, 0)[0], 256)
    assert huffman.prepare(heads, weights.size, 256).max_len > 11
    with dcformat.open(dcformat.save({"w": weights}, options=EncodeOptions(dense="float_split", coder="huffman"))) as f:
        assert f.plan("w").blocks[0][0].lanes.max_len == float_split.CODE_LENGTH_LIMIT == 11
        assert_bit_exact(f.get("w"), weights)


def test_the_encoder_writes_long_lanes():
    """Spec 6.6.4: a block's Huffman streams have lanes of 4096 symbols (the last one
    shorter), four times the default of other streams."""
    for dtype in (np.float16, np.float32):
        weights = (np.random.default_rng(4).standard_normal((1 << 20) + 5000) * 0.05).astype(dtype)
        with dcformat.open(dcformat.save({"w": weights}, options=EncodeOptions(dense="float_split", coder="huffman"))) as f:
            (first, *_), (last, *_) = f.plan("w").blocks
            assert (first.lanes.lanes, last.lanes.lanes) == (256, 2), dtype
            assert_bit_exact(f.get("w"), weights)


def test_version_follows_the_ids_used():
    weights = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    split = dcformat.save({"w": weights})
    raw = dcformat.save({"w": weights}, options=EncodeOptions(dense="raw"))
    assert parse_file(split).entries[0].encoding == 5
    assert split[8:12] == b"\x01\x00\x01\x00"  # 1.1: float_split is defined from 1.1 (spec 10.4)
    assert raw[8:12] == b"\x01\x00\x00\x00"  # 1.0: readable by every 1.x decoder
    with dcformat.open(split) as f:
        assert f.version == (1, 1)


def test_raw_option_keeps_tensors_memory_mappable(tmp_path):
    weights = np.random.default_rng(1).standard_normal((32, 32)).astype(np.float32)
    path = tmp_path / "raw.dcf"
    dcformat.save_file({"w": weights}, path, options=EncodeOptions(dense="raw"))
    with dcformat.open(path) as f:
        view = f.get("w")
        assert f.info("w").encoding == "raw" and not view.flags.writeable  # a view of the mapped file
        assert_bit_exact(view, weights)


def test_trained_like_weights_shrink():
    """Weights of a trained layer's scale: float32's heads (the exponent alone) take about 2.6
    of their 8 bits; float16's (exponent and two mantissa bits) about 2.6 + 2 of their 7."""
    weights = (np.random.default_rng(2).standard_normal((256, 256)) * 0.05).astype(np.float32)
    with dcformat.open(dcformat.save({"w": weights})) as f:
        info = f.info("w")
        assert info.encoding == "float_split" and 2.3 < info.code_bits < 3.0 and info.bits_per_element < 27.0
    with dcformat.open(dcformat.save({"w": weights.astype(np.float16)})) as f:
        info = f.info("w")
        assert info.encoding == "float_split" and 4.3 < info.code_bits < 5.0 and info.bits_per_element < 14.0
