"""Fixed-width bit packing (spec 1.3, 7.2), checked against a pure-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dcformat.codecs import bitpack
from dcformat.errors import DCFormatError, FormatError
from tests.support.strategies import ref_pack, ref_unpack, ref_width


def numpy_reference_pack(values: np.ndarray, width: int) -> bytes:
    """Spec 1.3 with numpy: explode every symbol into its bits, LSB first, then pack bytes LSB first."""
    values = np.asarray(values, dtype=np.uint64)
    if width == 0 or values.size == 0:
        return b""
    bits = ((values[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little").tobytes()


# -- hand-computed vectors ------------------------------------------------------------


@pytest.mark.parametrize(
    "symbols, width, expected",
    [
        ([1, 2, 3], 2, bytes([0b00111001])),  # stream bits 1,0 | 0,1 | 1,1 -> byte bits 0..5
        ([5], 3, bytes([0b101])),
        ([1, 0, 1, 1, 0, 0, 0, 1], 1, bytes([0b10001101])),
        ([1, 0, 1, 1, 0, 0, 0, 1, 1], 1, bytes([0b10001101, 0b1])),
        ([0x1FF], 9, bytes([0xFF, 0x01])),
        ([0xABC, 0x123], 12, bytes([0xBC, 0x3A, 0x12])),
        ([0xF, 0x0, 0xF], 4, bytes([0x0F, 0x0F])),
        ([0xFFFF, 0x0001], 16, bytes([0xFF, 0xFF, 0x01, 0x00])),
        ([1] * 8, 7, bytes([0x81, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02])),
        ([2**64 - 1], 64, b"\xff" * 8),
        # symbol 0 = 1 at bit 0, symbol 1 = 2**40 at bits 41..81, so bit 81 is set: byte 10, bit 1
        ([1, 2**40], 41, bytes([1] + [0] * 9 + [0b10])),
    ],
)
def test_known_vectors(symbols, width, expected):
    assert ref_pack(symbols, width) == expected  # the reference agrees with the hand computation
    assert bitpack.pack(np.array(symbols, dtype=np.uint64), width) == expected
    assert bitpack.unpack(expected, len(symbols), width, dtype=np.uint64).tolist() == list(symbols)


@pytest.mark.parametrize(
    "alphabet, width",
    [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (255, 8), (256, 8), (257, 9), (4096, 12), (65535, 16), (65536, 16), (65537, 17)],
)
def test_width_for(alphabet, width):
    assert bitpack.width_for(alphabet) == width == ref_width(alphabet)


@pytest.mark.parametrize("count, width, size", [(0, 5, 0), (1, 1, 1), (8, 1, 1), (9, 1, 2), (3, 5, 2), (8, 5, 5), (1, 64, 8), (100, 0, 0)])
def test_packed_size(count, width, size):
    assert bitpack.packed_size(count, width) == size


def test_width_zero_is_empty():
    assert bitpack.pack(np.zeros(1000, dtype=np.uint8), 0) == b""
    assert bitpack.unpack(b"", 1000, 0).tolist() == [0] * 1000


def test_empty_input():
    assert bitpack.pack(np.zeros(0, dtype=np.uint8), 7) == b""
    assert bitpack.unpack(b"", 0, 7).size == 0


# -- properties against the references -------------------------------------------------


@st.composite
def symbols_and_width(draw, max_count=200):
    width = draw(st.integers(0, 64))
    count = draw(st.integers(0, max_count))
    top = (1 << width) - 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    style = draw(st.sampled_from(["uniform", "extremes", "small"]))
    if style == "uniform":
        values = [int(v) for v in rng.integers(0, top, size=count, dtype=np.uint64, endpoint=True)] if width else [0] * count
    elif style == "extremes":  # all-ones and zeros show misplaced bits best
        values = [top if b else 0 for b in rng.integers(0, 2, size=count)]
    else:
        values = [int(v) & top for v in rng.integers(0, 4, size=count)]
    return np.array(values, dtype=np.uint64), width


@given(symbols_and_width())
@example((np.array([2**63, 2**64 - 1, 0], dtype=np.uint64), 64))
@example((np.array([1, 0, 1], dtype=np.uint64), 17))  # the wide path (> 16 bits)
def test_pack_matches_pure_python_reference(case):
    values, width = case
    packed = bitpack.pack(values, width)
    assert packed == ref_pack(values.tolist(), width)
    assert len(packed) == (values.size * width + 7) // 8


@given(symbols_and_width())
def test_unpack_inverts_reference(case):
    values, width = case
    data = ref_pack(values.tolist(), width)
    out = bitpack.unpack(data, values.size, width, dtype=np.uint64)
    assert out.tolist() == values.tolist()
    assert ref_unpack(data, values.size, width) == values.tolist()


@given(st.integers(1, 16), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_unpack_dtypes(width, count, seed):
    values = np.random.default_rng(seed).integers(0, 1 << width, size=count)
    data = ref_pack(values.tolist(), width)
    for dtype in (np.uint16, np.uint32, np.uint64):
        out = bitpack.unpack(data, count, width, dtype=dtype)
        assert out.dtype == dtype
        assert out.tolist() == values.tolist()


def test_across_the_real_block_boundary():
    """More symbols than one internal block (2**20), compared with a numpy reference."""
    count, width = (1 << 20) + 13, 3
    values = np.random.default_rng(width).integers(0, 1 << width, size=count, dtype=np.uint64)
    packed = bitpack.pack(values, width)
    assert packed == numpy_reference_pack(values, width)
    assert np.array_equal(bitpack.unpack(packed, count, width, dtype=np.uint64), values)


@pytest.mark.parametrize("width", [1, 5, 13, 16, 17, 33, 64])
@pytest.mark.parametrize("count", [63, 64, 65, 200, 1001])
def test_small_blocks(monkeypatch, width, count):
    """The block stitching, with the block size shrunk so many blocks are cheap."""
    monkeypatch.setattr(bitpack, "_BLOCK_SYMBOLS", 64)
    values = np.random.default_rng(count * width).integers(0, (1 << width) - 1, size=count, dtype=np.uint64, endpoint=True)
    packed = bitpack.pack(values, width)
    assert packed == numpy_reference_pack(values, width)
    assert np.array_equal(bitpack.unpack(packed, count, width, dtype=np.uint64), values)


def test_numpy_reference_agrees_with_pure_python():
    values = np.arange(37, dtype=np.uint64) * 7 % 32
    assert numpy_reference_pack(values, 5) == ref_pack(values.tolist(), 5)


# -- the decoder's checks --------------------------------------------------------------


def test_padding_is_zero():
    # 3 symbols of 3 bits use 9 bits: byte 1 keeps 7 unused high bits.
    good = ref_pack([7, 7, 7], 3)
    assert good == bytes([0xFF, 0x01])
    assert bitpack.padding_is_zero(good, 3, 3)
    assert not bitpack.padding_is_zero(bytes([0xFF, 0x03]), 3, 3)
    assert not bitpack.padding_is_zero(bytes([0xFF, 0x81]), 3, 3)
    assert bitpack.padding_is_zero(bytes([0xFF]), 8, 1)  # no unused bits at all


def test_unpack_checked_wrong_length():
    data = ref_pack([1, 2, 3], 2)
    for bad in (data + b"\0", b"", data[:0]):
        with pytest.raises(FormatError) as info:
            bitpack.unpack_checked(bad, 3, 2, field="tensors['x'].codes", offset=100)
        assert "tensors['x'].codes" in str(info.value)
        assert info.value.field == "tensors['x'].codes"
        assert info.value.offset == 100
    with pytest.raises(FormatError):
        bitpack.unpack_checked(b"\0", 0, 2, field="codes", offset=0)  # zero symbols take zero bytes
    with pytest.raises(FormatError):
        bitpack.unpack_checked(b"\0", 5, 0, field="codes", offset=0)  # width 0 takes zero bytes


def test_unpack_checked_nonzero_padding():
    with pytest.raises(FormatError) as info:
        bitpack.unpack_checked(bytes([0x39 | 0x40]), 3, 2, field="codes", offset=1000)
    assert info.value.field == "codes"
    assert info.value.offset == 1000  # the last (only) byte
    assert isinstance(info.value, DCFormatError)
    with pytest.raises(FormatError) as info:
        bitpack.unpack_checked(bytes([0xFF, 0x02]), 3, 3, field="codes", offset=10)
    assert info.value.offset == 11


def test_unpack_checked_ok():
    assert bitpack.unpack_checked(bytes([0x39]), 3, 2, field="codes", offset=0).tolist() == [1, 2, 3]
