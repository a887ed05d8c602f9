"""Canonical length-limited Huffman coder in interleaved lanes (spec section 7)."""

from __future__ import annotations

import contextlib
import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcformat.codecs import bitpack, huffman
from dcformat.errors import EncodeError, FormatError, LimitError

# --------------------------------------------------------------------------- helpers


def u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little")


def u64(v: int) -> bytes:
    return int(v).to_bytes(8, "little")


def body(lengths, lanes, base, width, deltas, payload_bits, payload: bytes, table_symbols=None) -> bytes:
    """A body assembled field by field from the wire-format rules (no encoder involved)."""
    t = len(lengths) if table_symbols is None else table_symbols
    return b"".join(
        [
            u32(t),
            bitpack.pack(np.array(lengths, dtype=np.uint64), 5),
            u32(lanes),
            u64(base),
            bytes([width]),
            bitpack.pack(np.array(deltas, dtype=np.uint64), width) if width else b"",
            u64(payload_bits),
            payload,
        ]
    )


@contextlib.contextmanager
def decode_path(jumping: bool | None):
    """Force the lockstep (False) or the pointer-jumping (True) decoder; None: automatic."""
    original = huffman._prefer_jumping
    if jumping is not None:
        huffman._prefer_jumping = lambda *args: jumping
    try:
        yield
    finally:
        huffman._prefer_jumping = original


def roundtrip(symbols, alphabet, **kw) -> bytes:
    symbols = np.asarray(symbols)
    data = huffman.encode(symbols, alphabet, **kw)
    for jumping in (False, True):
        with decode_path(jumping):
            out = huffman.decode(data, symbols.size, alphabet)
        assert out.dtype == (np.uint8 if alphabet <= 256 else np.uint16)
        np.testing.assert_array_equal(out, symbols.reshape(-1))
    return data


def huffman_cost(hist) -> int:
    """Cost (sum count * length) of an unlimited Huffman code, by the textbook heap."""
    weights = [int(w) for w in hist if w > 0]
    if len(weights) <= 1:
        return sum(weights)
    heapq.heapify(weights)
    cost = 0
    while len(weights) > 1:
        a, b = heapq.heappop(weights), heapq.heappop(weights)
        cost += a + b
        heapq.heappush(weights, a + b)
    return cost


def kraft(lengths) -> float:
    lengths = np.asarray(lengths)
    return float(sum(2.0 ** -int(v) for v in lengths[lengths > 0]))


def reference_package_merge_cost(weights, limit) -> int:
    """Textbook package-merge on explicit item lists (small inputs only)."""
    n = len(weights)
    leaves = sorted((w, (i,)) for i, w in enumerate(weights))
    current = list(leaves)
    for _ in range(limit - 1):
        packages = [(current[k][0] + current[k + 1][0], current[k][1] + current[k + 1][1]) for k in range(0, len(current) - 1, 2)]
        current = sorted(leaves + packages, key=lambda item: item[0])
    lengths = [0] * n
    for _, members in current[: 2 * n - 2]:
        for i in members:
            lengths[i] += 1
    return sum(w * length for w, length in zip(weights, lengths))


# The stream [1, 0, 2, 0] over alphabet 3: counts 2, 1, 1 force lengths 1, 2, 2, so the
# canonical codes are 0 -> "0", 1 -> "10", 2 -> "11" (MSB first).
# Table: T = 3, then 1, 2, 2 in 5 bits LSB-first: bits 0-4 = 1, bits 5-9 = 2 (bit 6),
# bits 10-14 = 2 (bit 11): bytes 0x41 0x08.
HAND_TABLE = u32(3) + bytes([0x41, 0x08])
# One lane: bits in stream order 1,0 | 0 | 1,1 | 0 -> bits 0, 3, 4 set -> 0x19; P = 6.
HAND_ONE_LANE = HAND_TABLE + u32(1) + u64(6) + bytes([0]) + u64(6) + bytes([0x19])
# Two lanes: lane 0 holds symbols 0 and 2 ([1, 2] -> "10" "11"), lane 1 symbols 1 and 3
# ([0, 0] -> "0" "0"). Lane lengths 4 and 2: B = 2, w = 2, deltas 2, 0 -> byte 0x02.
# Payload bits 1,0,1,1 then 0,0 -> bits 0, 2, 3 set -> 0x0D.
HAND_TWO_LANES = HAND_TABLE + u32(2) + u64(2) + bytes([2, 0x02]) + u64(6) + bytes([0x0D])
HAND_SYMBOLS = np.array([1, 0, 2, 0])


# --------------------------------------------------------------------------- exact bytes


def test_hand_computed_one_lane():
    assert len(HAND_ONE_LANE) == 28
    with decode_path(False):
        np.testing.assert_array_equal(huffman.decode(HAND_ONE_LANE, 4, 3), HAND_SYMBOLS)
    with decode_path(True):
        np.testing.assert_array_equal(huffman.decode(HAND_ONE_LANE, 4, 3), HAND_SYMBOLS)
    assert huffman.encode(HAND_SYMBOLS, 3) == HAND_ONE_LANE


def test_hand_computed_two_lanes():
    for jumping in (False, True):
        with decode_path(jumping):
            np.testing.assert_array_equal(huffman.decode(HAND_TWO_LANES, 4, 3), HAND_SYMBOLS)
    assert huffman.encode(HAND_SYMBOLS, 3, lane_symbols=2) == HAND_TWO_LANES


def test_empty_stream_is_four_zero_bytes():
    assert huffman.encode(np.zeros(0, dtype=np.int64), 7) == bytes(4)
    out = huffman.decode(bytes(4), 0, 7)
    assert out.size == 0 and out.dtype == np.uint8
    assert huffman.encoded_size(np.zeros(7, dtype=np.int64)) == 4


def test_single_used_symbol_bytes():
    # five copies of symbol 2: length 1 (code "0"), payload five zero bits.
    data = huffman.encode(np.full(5, 2), 4)
    assert data == u32(3) + bitpack.pack(np.array([0, 0, 1]), 5) + u32(1) + u64(5) + b"\0" + u64(5) + b"\0"


# --------------------------------------------------------------------------- canonical codes


def test_canonical_codes_rfc1951_example():
    # RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H
    codes = huffman.canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert [int(c) for c in codes] == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_canonical_codes_ties_by_symbol_and_absent_symbols():
    codes = huffman.canonical_codes(np.array([2, 0, 1, 3, 3]))
    assert [int(c) for c in codes] == [0b10, 0, 0b0, 0b110, 0b111]


def test_code_bits_are_msb_first_in_the_stream():
    # lengths 2, 2, 2, 2: codes 00, 01, 10, 11. Symbol 1 ("01") puts 0 in stream bit 0 and
    # 1 in stream bit 1 -> byte 0x02; symbol 2 ("10") -> 0x01.
    for sym, byte in ((0, 0x00), (1, 0x02), (2, 0x01), (3, 0x03)):
        data = body([2, 2, 2, 2], 1, 2, 0, [], 2, bytes([byte]))
        assert huffman.decode(data, 1, 4)[0] == sym
    # lengths 1, 2, 2: [2, 1] -> "11" "10" -> bits 1, 1, 1, 0 -> 0x07
    np.testing.assert_array_equal(huffman.decode(body([1, 2, 2], 1, 4, 0, [], 4, b"\x07"), 2, 3), [2, 1])
    assert huffman.encode(np.array([3, 2, 1, 0]), 4) == body([2, 2, 2, 2], 1, 8, 0, [], 8, bytes([0b00_10_01_11]))


# --------------------------------------------------------------------------- lengths


def test_code_lengths_basic():
    np.testing.assert_array_equal(huffman.code_lengths(np.array([0, 0, 0])), [0, 0, 0])
    np.testing.assert_array_equal(huffman.code_lengths(np.array([0, 9, 0])), [0, 1, 0])
    np.testing.assert_array_equal(huffman.code_lengths(np.array([3, 0, 1])), [1, 0, 1])
    np.testing.assert_array_equal(huffman.code_lengths(np.array([2, 1, 1])), [1, 2, 2])
    assert huffman.code_lengths(np.array([1, 2])).dtype == np.uint8


def test_code_lengths_fibonacci_is_limited():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    hist = np.array(fib, dtype=np.int64)
    unlimited = huffman.code_lengths(hist, 20)
    assert unlimited.max() == 20 and kraft(unlimited) == 1.0
    for limit in (6, 8, 12, 16):
        lengths = huffman.code_lengths(hist, limit)
        assert lengths.max() <= limit
        assert kraft(lengths) == 1.0
        assert int((hist * lengths).sum()) == reference_package_merge_cost(fib, limit)


def test_code_lengths_needs_enough_length():
    huffman.code_lengths(np.ones(16, dtype=np.int64), 4)
    with pytest.raises(EncodeError):
        huffman.code_lengths(np.ones(17, dtype=np.int64), 4)
    with pytest.raises(EncodeError):
        huffman.code_lengths(np.ones(4, dtype=np.int64), 21)
    with pytest.raises(EncodeError):
        huffman.encode(np.arange(17), 17, max_length=4)


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=12), st.integers(1, 12))
def test_code_lengths_optimal_small(weights, limit):
    hist = np.array(weights, dtype=np.int64)
    used = int(np.count_nonzero(hist))
    if used > (1 << limit):
        with pytest.raises(EncodeError):
            huffman.code_lengths(hist, limit)
        return
    lengths = huffman.code_lengths(hist, limit)
    assert ((lengths == 0) == (hist == 0)).all()
    if used == 1:
        assert lengths.max() == 1
        return
    if used == 0:
        return
    assert lengths.max() <= limit and kraft(lengths) == 1.0
    cost = int((hist * lengths).sum())
    nz = [w for w in weights if w]
    assert cost == reference_package_merge_cost(nz, limit)
    if limit >= len(nz) - 1:  # no limit binds: plain Huffman cost
        assert cost == huffman_cost(hist)


def test_code_lengths_large_alphabet_close_to_huffman():
    rng = np.random.default_rng(5)
    hist = np.bincount(np.minimum(rng.geometric(0.002, 400_000), 65535), minlength=65536)
    assert 2048 < np.count_nonzero(hist) <= 4096
    for limit in (12, 13, 14, 16, 20):
        lengths = huffman.code_lengths(hist, limit)
        assert lengths.max() <= limit and kraft(lengths) == 1.0
        ratio = int((hist * lengths).sum()) / huffman_cost(hist)
        assert 1.0 <= ratio < (1.002 if limit >= 16 else 1.1)
    assert int((hist * huffman.code_lengths(hist, 20)).sum()) == huffman_cost(hist)


def test_default_lengths_policy():
    rng = np.random.default_rng(0)
    w = rng.laplace(0, 1, 200_000)
    codes = np.rint((w - w.min()) / (w.max() - w.min()) * 255).astype(np.int64)
    hist = np.bincount(codes, minlength=256)
    lengths = huffman.default_lengths(hist)
    best = huffman.code_lengths(hist, 20)
    assert lengths.max() >= huffman.MIN_DEFAULT_MAX_LENGTH
    assert int((hist * lengths).sum()) <= int((hist * best).sum()) * (1 + huffman.LENGTH_TOLERANCE)
    np.testing.assert_array_equal(huffman.default_lengths(np.array([0, 4, 0])), [0, 1, 0])


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("alphabet", [1, 2, 3, 31, 255, 256, 257, 4096, 65535, 65536])
def test_roundtrip_alphabet_sizes(alphabet):
    rng = np.random.default_rng(alphabet)
    sym = rng.integers(0, alphabet, 3000)
    sym[0] = alphabet - 1
    roundtrip(sym, alphabet)


def test_roundtrip_one_symbol_and_single_used_symbol():
    roundtrip(np.array([0]), 1)
    roundtrip(np.array([6]), 9)
    for n, lanes in ((1, None), (10, 3), (5000, None), (5000, 7)):
        data = roundtrip(np.full(n, 3), 9, lane_symbols=lanes)
        if lanes is None:  # equal lanes: w = 0; payload n zero bits
            assert len(data) == 4 + 3 + 4 + 8 + 1 + 8 + (n + 7) // 8
            assert not any(data[-((n + 7) // 8) :])


def test_roundtrip_all_65536_symbols_used():
    rng = np.random.default_rng(1)
    sym = np.concatenate([np.arange(65536), rng.integers(0, 1 << 16, 100_000) ** 2 >> 16])
    rng.shuffle(sym)
    data = roundtrip(sym, 65536)
    lengths = bitpack.unpack(data[4 : 4 + 40960], 65536, 5)
    assert lengths.min() >= 1 and kraft(lengths) == 1.0


@pytest.mark.parametrize("lane_symbols", [1, 2, 3, 7, 100, 10_000])
def test_roundtrip_lane_counts(lane_symbols):
    rng = np.random.default_rng(lane_symbols)
    for n in (1, 2, 5, 99, 1000):
        sym = np.minimum(rng.geometric(0.4, n) - 1, 15)
        roundtrip(sym, 16, lane_symbols=lane_symbols)


def test_roundtrip_skewed_and_uniform():
    rng = np.random.default_rng(2)
    roundtrip(np.minimum(rng.geometric(0.9, 20_000) - 1, 7), 8)  # mostly zeros
    roundtrip(rng.integers(0, 256, 20_000), 256)  # uniform: 8-bit codes
    roundtrip(rng.integers(0, 300, 20_000), 300)  # uniform, uint16 output


def test_roundtrip_big_stream():
    rng = np.random.default_rng(3)
    w = rng.laplace(0, 1, 3_000_000)
    sym = np.rint((w - w.min()) / (w.max() - w.min()) * 31).astype(np.uint8)
    data = huffman.encode(sym, 32)
    lanes = int.from_bytes(data[4 + 20 : 4 + 24], "little")
    assert lanes == huffman.default_lane_count(sym.size) == 2929
    np.testing.assert_array_equal(huffman.decode(data, sym.size, 32), sym)


def test_input_forms():
    data = huffman.encode([1, 0, 2, 0], 3)
    assert data == HAND_ONE_LANE
    for form in (data, bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        np.testing.assert_array_equal(huffman.decode(form, 4, 3), HAND_SYMBOLS)
    np.testing.assert_array_equal(huffman.decode(data, 4, 3), HAND_SYMBOLS)
    assert huffman.encode(np.array([[1, 0], [2, 0]], dtype=np.int16), 3) == data
    assert huffman.encode(np.array([True, False, True]), 2) == huffman.encode(np.array([1, 0, 1]), 2)


@given(
    st.integers(1, 70_000).flatmap(
        lambda a: st.tuples(
            st.just(a),
            st.lists(st.integers(0, a - 1), max_size=300),
            st.one_of(st.none(), st.integers(1, 50)),
        )
    ),
    st.booleans(),
)
def test_roundtrip_property(case, limited):
    alphabet, values, lane_symbols = case
    alphabet = min(alphabet, 65536)
    sym = np.array([v % alphabet for v in values], dtype=np.int64)
    used = len(set(sym.tolist()))
    max_length = max(used - 1, 0).bit_length() if limited and used > 1 else None
    roundtrip(sym, alphabet, lane_symbols=lane_symbols, max_length=max_length)


# --------------------------------------------------------------------------- sizes


def test_encoded_size_exact_single_lane_and_close_otherwise():
    rng = np.random.default_rng(4)
    for n in (1, 17, 2047):
        sym = rng.integers(0, 40, n) % (1 + n % 40)
        hist = np.bincount(sym, minlength=40)
        assert huffman.encoded_size(hist) == len(huffman.encode(sym, 40))
        assert huffman.encoded_size(hist, count=n) == len(huffman.encode(sym, 40))
    for n in (5000, 200_000):
        sym = np.minimum(rng.geometric(0.2, n) - 1, 31)
        hist = np.bincount(sym, minlength=32)
        lanes = huffman.default_lane_count(n)
        assert abs(huffman.encoded_size(hist) - len(huffman.encode(sym, 32))) <= lanes // 8 + 1


def entropy_bytes(sym, alphabet) -> float:
    hist = np.bincount(sym, minlength=alphabet)
    p = hist[hist > 0] / sym.size
    return float(-(p * np.log2(p)).sum() * sym.size / 8)


def test_size_close_to_entropy():
    rng = np.random.default_rng(6)
    w = rng.laplace(0, 1, 200_000)
    for bits in (5, 8):
        sym = np.rint((w - w.min()) / (w.max() - w.min()) * ((1 << bits) - 1)).astype(np.int64)
        hist = np.bincount(sym, minlength=1 << bits)
        size = len(huffman.encode(sym, 1 << bits))
        # Huffman itself can be ~2 % above entropy on uniform-level 5-bit codes; the
        # format's own overhead (tables, length limit) stays within 0.6 %.
        assert size < int((hist * huffman.code_lengths(hist, 20)).sum()) / 8 * 1.006
        if bits == 8:
            assert size < entropy_bytes(sym, 256) * 1.02
    positions = np.flatnonzero(rng.random(2_100_000) < 0.1)
    gaps = np.diff(positions, prepend=-1) - 1
    for b in (4, 5):
        fillers = gaps >> b
        wire = np.full(gaps.size + int(fillers.sum()), (1 << b) - 1)
        wire[np.arange(gaps.size) + np.cumsum(fillers)] = gaps & ((1 << b) - 1)
        wire = wire[:200_000]
        assert len(huffman.encode(wire, 1 << b)) < entropy_bytes(wire, 1 << b) * 1.02


# --------------------------------------------------------------------------- encode errors


def test_encode_rejects_bad_input():
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0, 3]), 3)
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0, -1]), 3)
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0.5]), 3)
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0]), 0)
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0]), 65537)
    with pytest.raises(EncodeError):
        huffman.encode(np.array([0]), 2, lane_symbols=0)
    with pytest.raises(ValueError):  # EncodeError is a ValueError
        huffman.encode(np.array([70000]), 65536)


# --------------------------------------------------------------------------- malformed bodies


def fails(data, n=4, alphabet=3, field=None, offset=None, kind=FormatError):
    for jumping in (False, True):
        with decode_path(jumping), pytest.raises(kind) as info:
            huffman.decode(data, n, alphabet, field="t", offset=100)
        if field is not None:
            assert info.value.field == "t." + field, str(info.value)
            assert f"t.{field}" in str(info.value)
        if offset is not None:
            assert info.value.offset == 100 + offset, str(info.value)
    return info.value


def test_valid_builder_matches_hand_bytes():
    assert body([1, 2, 2], 1, 6, 0, [], 6, b"\x19") == HAND_ONE_LANE
    assert body([1, 2, 2], 2, 2, 2, [2, 0], 6, b"\x0d") == HAND_TWO_LANES


def test_table_errors():
    fails(body([1, 1, 1], 1, 5, 0, [], 5, b"\0"), field="code_lengths", offset=4)  # over-subscribed
    err = fails(body([1, 2, 0], 1, 5, 0, [], 5, b"\0"), field="code_lengths")  # incomplete
    assert "incomplete" in str(err)
    err = fails(body([1, 1, 1], 1, 5, 0, [], 5, b"\0"), field="code_lengths")
    assert "over-subscribed" in str(err)
    fails(body([1, 21, 1], 1, 5, 0, [], 5, b"\0"), field="code_lengths")  # length > 20
    fails(body([0, 0, 0], 1, 5, 0, [], 5, b"\0"), field="code_lengths")  # nothing present
    fails(body([0, 2, 0], 1, 8, 0, [], 8, b"\0"), field="code_lengths")  # lone symbol not length 1
    fails(body([1, 2, 2, 0], 1, 6, 0, [], 6, b"\x19"), field="table_symbols", offset=0)  # T > A
    fails(body([], 1, 6, 0, [], 6, b"\x19", table_symbols=0), field="table_symbols", offset=0)
    fails(u32(1) + b"\x01", n=0, field="table_symbols")  # T != 0 for n == 0
    fails(bytes(5), n=0, field="trailing")
    # padding bits of the length table set
    bad = bytearray(HAND_ONE_LANE)
    bad[5] |= 0x80
    fails(bytes(bad), field="code_lengths", offset=5)


def test_lane_errors():
    fails(body([1, 2, 2], 0, 6, 0, [], 6, b"\x19"), field="lane_count", offset=6)
    fails(body([1, 2, 2], 5, 6, 0, [], 6, b"\x19"), field="lane_count", offset=6)
    fails(body([1, 2, 2], 1, 6, 65, [], 6, b"\x19"), field="lane_delta_width", offset=18)
    # jump table sum != P
    err = fails(body([1, 2, 2], 2, 3, 1, [1, 0], 6, b"\x19"), field="payload_bits", offset=20)
    assert "add up" in str(err)
    fails(body([1, 2, 2], 2, 2, 2, [2, 0], 7, b"\x0d"), field="payload_bits")
    # a lane longer than its codes can be
    fails(body([1, 2, 2], 2, 2, 3, [7, 0], 6, b"\x0d"), field="lane_deltas")
    fails(body([1, 2, 2], 1, 9, 0, [], 9, b"\x19\x00"), field="lane_base_bits", offset=10)
    fails(body([1, 2, 2], 1, 2**64 - 1, 0, [], 6, b"\x19"), field="lane_base_bits")
    fails(body([1, 2, 2], 2, 0, 64, [2**64 - 1, 6], 6, b"\x19"), field="lane_deltas")
    # three symbols in two lanes: lane 0 holds two codes (2..4 bits of codes of 1..2 bits), lane 1 one (1..2 bits)
    err = fails(body([1, 2, 2], 2, 1, 2, [0, 0], 3, b"\x00"), n=3, field="lane_deltas")
    assert "lane 0 declares 1 bits for 2 codes of 1..2 bits" in str(err)
    err = fails(body([1, 2, 2], 2, 1, 2, [1, 2], 5, b"\x00"), n=3, field="lane_deltas")
    assert "lane 1 declares 3 bits for 1 codes of 1..2 bits" in str(err)
    err = fails(body([1, 2, 2], 2, 3, 0, [], 6, b"\x00"), n=3, field="lane_base_bits")
    assert "lane 1 declares 3 bits for 1 codes of 1..2 bits" in str(err)
    # delta padding bits set
    bad = bytearray(HAND_TWO_LANES)
    bad[19] |= 0x10
    fails(bytes(bad), field="lane_deltas", offset=19)


def test_payload_errors():
    fails(body([1, 2, 2], 1, 81, 0, [], 81, bytes(11)), field="payload_bits", offset=19)  # P > 20 n
    fails(body([1, 2, 2], 1, 3, 0, [], 3, b"\x01"), field="payload_bits")  # P < n
    fails(HAND_ONE_LANE + b"\0", field="trailing", offset=28)
    fails(HAND_ONE_LANE[:-1], field="payload")
    bad = bytearray(HAND_ONE_LANE)
    bad[-1] |= 0x40  # padding bit 6 after the six payload bits
    fails(bytes(bad), field="payload", offset=27)


def test_truncated_bodies_all_fail():
    for data, n in ((HAND_ONE_LANE, 4), (HAND_TWO_LANES, 4), (huffman.encode(np.arange(300) % 7, 7, lane_symbols=9), 300)):
        for cut in range(len(data)):
            fails(data[:cut], n=n, alphabet=7)


def test_lane_ends_early_or_overruns():
    # Two lanes with lengths 3 and 3 instead of 4 and 2: lane 0 ("10" "11") consumes 4.
    err = fails(body([1, 2, 2], 2, 3, 0, [], 6, b"\x0d"), field="payload")
    assert "lane 0 consumes 4 bits" in str(err)
    # lengths 4 / 2 but the bits make lane 0 "0" "0" "1.." -> it ends early (2 bits).
    err = fails(body([1, 2, 2], 2, 2, 2, [2, 0], 6, b"\x3c"), field="payload")
    assert "lane 0 consumes 2 bits" in str(err)
    # the last lane runs past the end of the payload
    err = fails(body([1, 2, 2], 2, 2, 2, [2, 0], 6, b"\x3d"), field="payload")
    assert "lane 1" in str(err)
    # one lane, a code cut by the end of the payload
    fails(body([1, 2, 2], 1, 5, 0, [], 5, b"\x19"), field="payload")


def test_single_symbol_one_bit_is_error():
    good = huffman.encode(np.full(12, 2), 3)
    np.testing.assert_array_equal(huffman.decode(good, 12, 3), np.full(12, 2))
    bad = bytearray(good)
    bad[-1] |= 0x08
    fails(bytes(bad), n=12, field="payload", offset=len(good) - 1)


def test_count_and_alphabet_limits():
    err = fails(HAND_ONE_LANE, n=10**12, kind=LimitError)
    assert err.field == "t.count"
    fails(HAND_ONE_LANE, n=-1)
    fails(HAND_ONE_LANE, alphabet=0)
    fails(HAND_ONE_LANE, alphabet=65537)
    fails(b"", n=4, field="table_symbols", offset=0)


@given(st.data())
def test_corrupted_bodies_raise_only_format_errors(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    n = data.draw(st.integers(1, 400))
    alphabet = data.draw(st.sampled_from([1, 2, 5, 40, 300]))
    sym = np.minimum(rng.geometric(0.3, n) - 1, alphabet - 1)
    good = bytearray(huffman.encode(sym, alphabet, lane_symbols=data.draw(st.integers(1, 60))))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(good) - 1))
        good[at] ^= data.draw(st.integers(1, 255))
    for jumping in (False, True):
        with decode_path(jumping):
            try:
                out = huffman.decode(bytes(good), n, alphabet)
            except FormatError:
                continue
        assert out.size == n and int(out.max(initial=0)) < alphabet


def test_both_decoders_agree_on_lane_ends():
    rng = np.random.default_rng(9)
    sym = np.minimum(rng.geometric(0.3, 5000) - 1, 20)
    data = bytearray(huffman.encode(sym, 21, lane_symbols=500))
    messages = set()
    for at in range(len(data) - 200, len(data)):
        bad = bytearray(data)
        bad[at] ^= 0x5A
        for jumping in (False, True):
            with decode_path(jumping):
                try:
                    huffman.decode(bytes(bad), sym.size, 21)
                    messages.add((at, jumping, "ok"))
                except FormatError as e:
                    messages.add((at, jumping, str(e)))
    by_at = {}
    for at, _, msg in messages:
        by_at.setdefault(at, set()).add(msg)
    assert all(len(v) == 1 for v in by_at.values())


def test_jumping_in_small_windows_matches_lockstep():
    original = huffman._JUMP_WINDOW_BITS
    huffman._JUMP_WINDOW_BITS = 40  # many windows per lane
    try:
        rng = np.random.default_rng(10)
        sym = np.minimum(rng.geometric(0.25, 3000) - 1, 40)
        for lane_symbols in (None, 1, 3, 50, 1000):
            roundtrip(sym, 41, lane_symbols=lane_symbols)
        data = huffman.encode(sym, 41, lane_symbols=700)
        for at in range(len(data) - 120, len(data), 3):
            bad = bytearray(data)
            bad[at] ^= 0x21
            results = []
            for jumping in (False, True):
                with decode_path(jumping):
                    try:
                        results.append(huffman.decode(bytes(bad), sym.size, 41).tobytes())
                    except FormatError as e:
                        results.append(str(e))
            assert results[0] == results[1]
    finally:
        huffman._JUMP_WINDOW_BITS = original


def test_itertools_exhaustive_tiny_tables():
    # every table of 3 lengths in 0..3 either decodes the stream it was made for or is rejected
    for lengths in itertools.product(range(4), repeat=3):
        present = [v for v in lengths if v]
        valid = (len(present) == 1 and present[0] == 1) or (len(present) > 1 and sum(2.0**-v for v in present) == 1.0)
        try:
            huffman.decode(body(list(lengths), 1, 4, 0, [], 4, b"\x00"), 4, 3)
            ok = True
        except FormatError:
            ok = False
        # 4 zero bits decode as 4 copies of the all-zero code when its length is 1.
        if valid and min(present) == 1:
            assert ok, lengths
        if not valid:
            assert not ok, lengths


def test_lane_holding_more_than_65536_symbols_is_rejected():
    """Spec 7.3.4: C >= ceil(n / 65536); a body with one lane for 65537 symbols is invalid."""
    n = 65537
    symbols = np.zeros(n, dtype=np.uint8)
    symbols[::2] = 1
    # Build the body by hand: lengths 1,1; one lane of n bits; codes 0 and 1 alternate.
    lengths = bitpack.pack(np.array([1, 1]), 5)
    payload = np.packbits(symbols.astype(np.uint8), bitorder="little").tobytes()
    body = (2).to_bytes(4, "little") + lengths + (1).to_bytes(4, "little") + n.to_bytes(8, "little") + bytes([0])
    body += n.to_bytes(8, "little") + payload
    with pytest.raises(LimitError, match="lane_count"):
        huffman.decode(body, n, 2)
    # the same symbols in two lanes decode fine
    assert np.array_equal(huffman.decode(huffman.encode(symbols, 2), n, 2), symbols)


def test_a_length_limit_caps_the_default_codes_where_the_symbols_fit():
    """encode's ``length_limit``: the default lengths, with none longer than the limit where
    they would be; left alone where they already fit, and where the symbols in use need
    longer codes than the limit allows (more than 2**limit of them)."""
    rng = np.random.default_rng(3)
    skewed = np.minimum(rng.geometric(0.5, 200_000) - 1, 511)  # default codes run past 11 bits
    wide = rng.integers(0, 4096, 50_000)  # 4096 symbols in use: 11 bits cannot code them

    def longest(symbols, alphabet, **limit):
        body = huffman.encode(symbols, alphabet, **limit)
        assert np.array_equal(huffman.decode(body, symbols.size, alphabet), symbols)
        return int(huffman.prepare(body, symbols.size, alphabet).max_len)

    assert longest(skewed, 512) > 11 and longest(skewed, 512, length_limit=11) == 11
    assert longest(skewed, 512, length_limit=20) == longest(skewed, 512)
    assert longest(wide, 4096, length_limit=11) == longest(wide, 4096) >= 12
