"""Relative positions with filler entries (spec 6.5), against a pure-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dcformat
from dcformat import EncodeOptions, QuantizedTensor
from dcformat.format import sparse as gaps
from tests.support.strategies import assert_bit_exact, parse_file, ref_fillers, tail_case


@st.composite
def positions_lists(draw, max_numel=5000):
    numel = draw(st.integers(1, max_numel))
    style = draw(st.sampled_from(["random", "sparse", "tail", "dense", "head"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if style == "random":
        pos = np.flatnonzero(rng.random(numel) < draw(st.floats(0, 1)))
    elif style == "sparse":
        pos = np.unique(rng.integers(0, numel, size=draw(st.integers(0, 5))))
    elif style == "tail":
        pos = np.array([numel - 1])
    elif style == "head":
        pos = np.array([0])
    else:
        pos = np.arange(numel)
    return numel, pos.astype(np.int64)


def test_true_gaps_by_hand():
    assert gaps.true_gaps(np.array([0, 1, 5, 6, 100])).tolist() == [0, 0, 3, 0, 93]
    assert gaps.true_gaps(np.array([7])).tolist() == [7]
    assert gaps.true_gaps(np.zeros(0, dtype=np.int64)).size == 0


@pytest.mark.parametrize(
    "d, b, fillers, rest",
    [
        (0, 1, 0, 0),
        (1, 1, 0, 1),
        (2, 1, 1, 0),
        (3, 1, 1, 1),
        (5, 1, 2, 1),
        (3, 2, 0, 3),
        (4, 2, 1, 0),
        (5, 2, 1, 1),
        (15, 4, 0, 15),
        (16, 4, 1, 0),
        (33, 4, 2, 1),
        (65535, 16, 0, 65535),
        (65536, 16, 1, 0),
        (200000, 16, 3, 200000 - 3 * 65536),
    ],
)
def test_filler_rule(d, b, fillers, rest):
    """A distance d at width b: floor(d / 2**b) fillers of gap 2**b - 1, then the remainder."""
    expected_gaps = [(1 << b) - 1] * fillers + [rest]
    assert ref_fillers([d], b) == (expected_gaps, [True] * fillers + [False])  # the reference agrees with the rule
    wire_gaps, wire_codes = gaps.with_fillers(np.array([d]), np.array([7]), b, 99)
    assert wire_gaps.tolist() == expected_gaps
    assert wire_codes.tolist() == [99] * fillers + [7]
    assert int(gaps.filler_counts(np.array([d]), b)[0]) == fillers
    # positions: p = cumsum(g + 1) - 1 lands the real entry back on d
    assert int(np.cumsum(np.array(expected_gaps) + 1)[-1] - 1) == d
    assert gaps.last_position(wire_gaps) == d


@given(positions_lists(), st.integers(1, 16))
def test_with_fillers_matches_reference(case, b):
    _, pos = case
    true = gaps.true_gaps(pos)
    codes = np.arange(pos.size, dtype=np.int64) % 5 + 1
    wire_gaps, wire_codes = gaps.with_fillers(true, codes, b, 0)
    ref_gaps, is_filler = ref_fillers(pos.tolist(), b)
    assert wire_gaps.tolist() == ref_gaps
    assert wire_gaps.dtype == (np.uint8 if b <= 8 else np.uint16)
    ref_codes = []
    real = iter(codes.tolist())
    for filler in is_filler:
        ref_codes.append(0 if filler else next(real))
    assert wire_codes.tolist() == ref_codes
    assert max(ref_gaps, default=0) < (1 << b)
    # positions of the non-filler entries are the original ones
    wire_pos = np.cumsum(np.array(ref_gaps, dtype=np.int64) + 1) - 1
    assert wire_pos[~np.array(is_filler, dtype=bool)].tolist() == pos.tolist()
    hist, fillers = gaps.gap_histogram(true, b)
    assert fillers == sum(is_filler)
    assert hist.tolist() == np.bincount(np.array(ref_gaps, dtype=np.int64), minlength=1 << b).tolist()


@given(positions_lists(), st.integers(1, 16))
def test_scatter_and_last_position(case, b):
    numel, pos = case
    wire_gaps, wire_codes = gaps.with_fillers(gaps.true_gaps(pos), np.arange(pos.size) % 3 + 1, b, 0)
    table = np.array([0.0, 1.5, -2.0, 4.25], dtype=np.float32)
    out = np.zeros(numel, dtype=np.float32)
    gaps.scatter(out, wire_gaps, wire_codes, table)
    expected = np.zeros(numel, dtype=np.float32)
    expected[pos] = table[np.arange(pos.size) % 3 + 1]
    assert_bit_exact(out, expected)
    if wire_gaps.size:
        assert gaps.last_position(wire_gaps) == int(pos[-1])


def _scatter_case():
    pos = np.array([0, 3, 4, 10, 11, 12, 30, 31, 50, 51, 52, 53, 54, 60, 61, 75, 80, 81, 82, 99])
    wire_gaps, wire_codes = gaps.with_fillers(gaps.true_gaps(pos), np.arange(pos.size) % 3 + 1, 2, 0)
    assert wire_gaps.size > pos.size  # fillers present
    return pos, wire_gaps, wire_codes


@pytest.mark.parametrize("threads", [1, 2, 4, 64])
def test_scatter_blocks_and_threads(monkeypatch, threads):
    """Position carry across the internal blocks, and across the spans of several threads."""
    monkeypatch.setattr(gaps, "_BLOCK_ENTRIES", 3)
    pos, wire_gaps, wire_codes = _scatter_case()
    table = np.array([0.0, 1.0, 2.0, 3.0])
    out = np.zeros(100, dtype=np.float64)
    try:
        gaps.scatter(out, wire_gaps, wire_codes, table, threads=threads)
    except TypeError:  # an older scatter without threads
        if threads != 1:
            pytest.skip("scatter has no threads parameter")
        gaps.scatter(out, wire_gaps, wire_codes, table)
    expected = np.zeros(100)
    expected[pos] = table[np.arange(pos.size) % 3 + 1]
    assert out.tolist() == expected.tolist()


# -- fillers in written files -------------------------------------------------------------


@pytest.mark.parametrize("b", range(1, 17))
def test_written_fillers_follow_the_rule(b):
    """The entries of a written quant_sparse tensor are the reference's, fillers included."""
    pos = np.array([3, 4, 40, 41, 300, 2999])
    q = QuantizedTensor.from_entries((3000,), np.array([0.5, -1.0, 2.0], np.float32), pos, np.array([0, 1, 2, 2, 1, 0]))
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=b))
    with dcformat.open(blob) as f:
        stored = f.get_quantized("w")
        assert f.info("w").gap_width == b
    ref_gaps, is_filler = ref_fillers(pos.tolist(), b)
    assert stored.entry_count == len(ref_gaps)
    stored_gaps = np.diff(stored.positions, prepend=-1) - 1
    assert stored_gaps.tolist() == ref_gaps
    values = stored.codebook.astype(np.float32)[stored.codes]
    filler_values = values[np.array(is_filler, dtype=bool)]
    assert (filler_values == 0).all() and not np.signbit(filler_values).any()  # fillers decode to +0.0
    assert values[~np.array(is_filler, dtype=bool)].tolist() == [0.5, -1.0, 2.0, 2.0, -1.0, 0.5]
    expected = np.zeros(3000, dtype=np.float32)
    expected[pos] = [0.5, -1.0, 2.0, 2.0, -1.0, 0.5]
    assert_bit_exact(dcformat.load(blob)["w"], expected)


def test_fillers_prepend_a_zero_to_a_codebook_without_one():
    """Spec 6.5.3: fillers need a +0.0 codebook entry; -0.0 does not count."""
    q = QuantizedTensor.from_entries((100,), np.array([-0.0, 3.0], np.float32), [50, 99], [0, 1])
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=2))
    with dcformat.open(blob) as f:
        stored = f.get_quantized("w")
    cb = stored.codebook
    assert cb.size == 3
    zero_codes = np.flatnonzero((cb == 0) & ~np.signbit(cb))
    assert zero_codes.size == 1
    assert sorted(cb.tolist()) == sorted([0.0, -0.0, 3.0])
    out = dcformat.load(blob)["w"]
    assert np.signbit(out[50]) and out[50] == 0  # the stored -0.0 entry survives
    assert not np.signbit(np.delete(out, 50)).any()


def test_no_prepend_when_no_filler_is_needed():
    q = QuantizedTensor.from_entries((10,), np.array([3.0], np.float32), [2, 5], [0, 0])
    blob = dcformat.save({"w": q}, options=EncodeOptions(layout="sparse", gap_bits=4))
    with dcformat.open(blob) as f:
        assert f.get_quantized("w").codebook.tolist() == [3.0]
        assert f.info("w").entry_count == 2


@pytest.mark.parametrize("b", [1, 2, 3, 8, 16])
def test_single_entry_at_the_end_of_a_large_tensor(b):
    """The gap stream is almost all fillers at small widths."""
    numel = 1 << 16
    case = tail_case(numel)
    for coder in ("bitpack", "huffman", "zstd"):
        blob = dcformat.save({"w": case.q}, options=EncodeOptions(layout="sparse", gap_bits=b, coder=coder))
        entry = next(e for e in parse_file(blob).entries)
        assert entry.encoding == 4
        with dcformat.open(blob) as f:
            info = f.info("w")
            assert info.entry_count == (numel - 1) // (1 << b) + 1
            assert info.gaps_coder == coder and info.codes_coder == coder
            assert_bit_exact(f.get("w"), case.expected())
