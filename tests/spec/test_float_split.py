"""float_split (spec 6.6, format 1.1) in the frozen vectors, the reference decoder and the package.

The vectors themselves are decoded by test_vectors.py (package) and test_refdecode.py
(reference, and the two byte for byte); here: that the float_split vectors cover what they
must (every float dtype, every coder, the special values, head widths and several blocks),
the version rule of 10.4, and hand-built payloads (header, blocks, streams) that both
decoders read, or reject, alike.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest

import dcformat
from fuzz import dcfbuild
from tests.support.differential import MANIFEST, VECTORS, package_result, refdecode, reference_result
from tests.support.optional import needs_ml_dtypes

FLOAT_SPLIT = 5
FLOAT_DTYPES = {"float32": 1, "float16": 2, "bfloat16": 3, "float64": 4}
#: spec 6.6.1: dtype id -> (E, M, largest h), restated here rather than taken from either decoder
FIELDS = {1: (8, 23, 8), 2: (5, 10, 10), 3: (8, 7, 7), 4: (11, 52, 5)}
CODERS = {1: "bitpack", 2: "huffman", 3: "zstd"}
MIN_BLOCK = 4096  # spec 6.6.2


def plane_widths(dtype: int, head_bits: int) -> list[int]:
    """Spec 6.6.1: R = 1 + M - h bits, cut from the top into planes of 8 and a last of R mod 8."""
    rest = 1 + FIELDS[dtype][1] - head_bits
    return [8] * (rest // 8) + ([rest % 8] if rest % 8 else [])


@dataclass
class Layout:
    """A float_split payload's header and the coders of its streams, block by block (spec 6.6.2)."""

    head_bits: int
    block_elements: int
    blocks: list[list[str]]  # per block: the head stream's coder, then every plane's

    @property
    def coders(self) -> set[str]:
        return {c for block in self.blocks for c in block}


def _layout(payload: bytes, dtype: int, elements: int) -> Layout:
    head_bits, reserved, block_elements = struct.unpack_from("<B3sI", payload)
    assert reserved == bytes(3) and head_bits <= FIELDS[dtype][2] and block_elements >= MIN_BLOCK
    blocks, pos = [], 8
    for _ in range(-(-elements // block_elements)):
        coders = []
        for _ in range(1 + len(plane_widths(dtype, head_bits))):  # spec 7.1: u8 coder, u64 body_length, body
            coder, body_length = struct.unpack_from("<BQ", payload, pos)
            coders.append(CODERS[coder])
            pos += 9 + body_length
        blocks.append(coders)
    assert pos == len(payload)
    return Layout(head_bits, block_elements, blocks)


def _float_split_tensors():
    """(vector, name, entry, layout, RefFile) of every float_split tensor of the vectors."""
    out = []
    for key in sorted(MANIFEST):
        ref = refdecode.RefFile((VECTORS / MANIFEST[key]["file"]).read_bytes())
        for name, e in ref.entries.items():
            if e.encoding != FLOAT_SPLIT:
                continue
            payload = ref.data[e.payload_offset : e.payload_offset + e.payload_length]
            out.append((key, name, e, _layout(payload, e.dtype, e.elements), ref))
    return out


TENSORS = _float_split_tensors()


def _kinds(data: bytes, dtype: int) -> set[str]:
    """The kinds of value among a tensor's elements, from their bits (spec 5.2, 6.6.1)."""
    exp_bits, man_bits, _ = FIELDS[dtype]
    size = (1 + exp_bits + man_bits) // 8
    kinds = set()
    for i in range(0, len(data), size):
        x = int.from_bytes(data[i : i + size], "little")
        sign, exponent, mantissa = x >> (exp_bits + man_bits), (x >> man_bits) & ((1 << exp_bits) - 1), x & ((1 << man_bits) - 1)
        top = "+-"[sign]
        if exponent == (1 << exp_bits) - 1:
            kinds.add(top + ("inf" if not mantissa else "qnan" if mantissa >> (man_bits - 1) else "snan"))
        elif exponent == 0:
            kinds.add(top + ("0" if not mantissa else "subnormal"))
        else:
            kinds.add(top + "normal")
    return kinds


# ------------------------------------------------------------------------- the vectors


@pytest.mark.parametrize("dtype", sorted(FLOAT_DTYPES))
def test_vectors_hold_float_split_for_every_dtype_and_coder(dtype):
    """For each float dtype: every coder carries every stream of some 2-D tensor, there are a
    scalar and a tensor of no element, h = 0, the encoder's h = 2 and the dtype's largest h.
    Realistic weights (of the dtypes whose heads the encoder Huffman-codes at this size) have
    a Huffman head stream beside bit-packed planes."""
    mine = [t for t in TENSORS if t[2].dtype == FLOAT_DTYPES[dtype]]
    for coder in CODERS.values():
        assert any(len(e.shape) == 2 and e.elements > 1 and layout.coders == {coder} for _, _, e, layout, _ in mine), coder
    assert any(e.shape == () for _, _, e, _, _ in mine)
    assert any(e.elements == 0 for _, _, e, _, _ in mine)
    largest = FIELDS[FLOAT_DTYPES[dtype]][2]
    for head_bits in (0, 2, largest):
        assert any(layout.head_bits == head_bits and e.elements > 1 for _, _, e, layout, _ in mine), head_bits
    if dtype in ("float32", "bfloat16"):  # float16's and float64's heads: zstd is smaller at these sizes
        assert any(
            e.elements >= 1000 and len(e.shape) == 2 and layout.blocks[0][0] == "huffman" and "bitpack" in layout.blocks[0][1:]
            for _, _, e, layout, _ in mine
        )


def test_vectors_hold_several_blocks():
    """Spec 6.6.2's block arithmetic: tensors of several blocks of the smallest B, with a last
    block short, of one element and full; a B that is no power of two; the largest B."""
    shapes = {(e.elements, layout.block_elements, len(layout.blocks)) for _, _, e, layout, _ in TENSORS}
    assert (2 * MIN_BLOCK + 3, MIN_BLOCK, 3) in shapes
    assert (MIN_BLOCK + 1, MIN_BLOCK, 2) in shapes
    assert (2 * MIN_BLOCK, MIN_BLOCK, 2) in shapes
    assert (2 * MIN_BLOCK + 3, 5000, 2) in shapes
    assert any(b == 2**32 - 1 and n == 1 for _, b, n in shapes)
    several = [layout for _, _, e, layout, _ in TENSORS if len(layout.blocks) > 1]
    for coder in CODERS.values():
        assert any(layout.coders == {coder} for layout in several), coder
    assert any(len({tuple(block) for block in layout.blocks}) > 1 for layout in several)  # blocks choose their coders apart


def test_empty_float_split_tensors_are_the_header_alone():
    """An empty tensor has no blocks (6.6.2): its payload is the 8-byte header, whatever h and B say."""
    empty = [(e, layout) for _, _, e, layout, _ in TENSORS if e.elements == 0]
    assert {e.dtype for e, _ in empty} == set(FLOAT_DTYPES.values())
    assert all(e.payload_length == 8 and layout.blocks == [] for e, layout in empty)
    assert len({(layout.head_bits, layout.block_elements) for _, layout in empty}) > 1


@pytest.mark.parametrize("dtype", sorted(FLOAT_DTYPES))
def test_vectors_hold_every_special_value(dtype):
    """+-0, subnormals, +-inf, quiet and signalling NaNs of both signs, in one tensor per dtype,
    signalling NaNs under every forced coder and under h = 0 and the largest h (the manifest
    hashes hold their exact bits)."""
    found = []
    for _, name, e, layout, ref in TENSORS:
        if e.dtype == FLOAT_DTYPES[dtype]:
            found.append((layout, _kinds(ref.decode(name).data, e.dtype)))
    every = {s + k for s in "+-" for k in ("0", "subnormal", "normal", "inf", "qnan", "snan")}
    assert any(kinds == every for _, kinds in found)
    nans = {"+snan", "-snan", "+qnan"}
    for coder in CODERS.values():
        assert any(nans <= kinds for layout, kinds in found if layout.coders == {coder}), coder
    for head_bits in (0, FIELDS[FLOAT_DTYPES[dtype]][2]):
        assert any(kinds == every for layout, kinds in found if layout.head_bits == head_bits), head_bits


def test_float_split_vectors_declare_1_1_and_the_others_1_0():
    """Spec 10.4: the reference encoder declares the oldest minor version that defines every id used."""
    with_float_split = {key for key, *_ in TENSORS}
    assert with_float_split == {k for k in MANIFEST if k.startswith("float_split")}
    for key in MANIFEST:
        data = (VECTORS / MANIFEST[key]["file"]).read_bytes()
        assert struct.unpack_from("<HH", data, 8) == ((1, 1) if key in with_float_split else (1, 0)), key


# ------------------------------------------------------------------------- version rule (10.4)


@pytest.mark.parametrize("key", ["float_split_bitpack", "float_split_huffman", "float_split_zstd", "float_split"])
def test_float_split_in_a_1_0_file_is_rejected(key):
    """A float_split tensor in a file whose header says 1.0 (CRC fixed) is an invalid id (10.4)."""
    data = dcfbuild.patch_header((VECTORS / MANIFEST[key]["file"]).read_bytes(), version_minor=0)
    with pytest.raises(refdecode.RefDecodeError, match="10.4"):
        refdecode.RefFile(data)
    with pytest.raises(dcformat.FormatError), dcformat.DCFile(data) as f:
        for name in f.keys():
            f.get(name)


@pytest.mark.parametrize("minor", [1, 2, 9])
def test_float_split_in_1_1_and_newer_files_is_read(minor):
    """1.1 defines encoding 5; a newer minor version keeps it (10.2)."""
    key = "float_split_zstd"
    data = (VECTORS / MANIFEST[key]["file"]).read_bytes()
    expected = reference_result(data)
    assert isinstance(expected, dict)
    mutant = dcfbuild.patch_header(data, version_minor=minor)
    assert reference_result(mutant) == expected
    assert package_result(mutant) == expected


def test_a_1_1_file_without_float_split_is_read():
    """Declaring a newer minor version than needed is a SHOULD of the encoder, not a reason to reject (10.4)."""
    data = (VECTORS / MANIFEST["quant_sparse_huffman"]["file"]).read_bytes()
    mutant = dcfbuild.patch_header(data, version_minor=1)
    with dcformat.DCFile(mutant) as f:
        names = [k for k in f.keys() if not k.startswith("bf16")]  # the package needs ml_dtypes for bfloat16
        assert {k: np.ascontiguousarray(f.get(k)).tobytes() for k in names} == {
            t.name: t.data for t in refdecode.RefFile(mutant).verify() if t.name in names
        }


# ------------------------------------------------------------------------- hand-built payloads


def _header(head_bits: int = 2, block_elements: int = MIN_BLOCK, reserved: bytes = bytes(3)) -> bytes:
    """Spec 6.6.2: u8 head_bits, 3 reserved bytes, u32 block_elements."""
    return struct.pack("<B3sI", head_bits, reserved, block_elements)


def _streams(*streams) -> bytes:
    """Bit-packed streams (spec 7.2) from (symbols, alphabet bits) pairs."""
    return b"".join(dcfbuild.stream(1, dcfbuild.pack(symbols, width)) for symbols, width in streams)


def _zstd_stream(symbols: list[int]) -> bytes:
    """A zstd-coded stream (spec 7.4, u8 symbols) holding any bytes, even out-of-alphabet ones."""
    return dcfbuild.stream(3, dcfbuild.zstd_frame(len(symbols), dcfbuild.zstd_block(0, len(symbols), bytes(symbols), last=True)))


def _file(dtype: int, shape: tuple, payload: bytes, version=(1, 1)) -> bytes:
    return dcfbuild.build([dcfbuild.T(b"x", dtype, FLOAT_SPLIT, shape, payload)], version=version)


def _block_streams(words: list[int], dtype: int, head_bits: int) -> list[tuple[list[int], int]]:
    """One block's (symbols, alphabet bits) by the arithmetic of spec 6.6.1, in plain integers."""
    exp_bits, man_bits, _ = FIELDS[dtype]
    low = man_bits - head_bits
    heads = [x >> low & ((1 << (exp_bits + head_bits)) - 1) for x in words]
    rests = [(x >> (exp_bits + man_bits)) << low | (x & ((1 << low) - 1)) for x in words]
    out, shift = [(heads, exp_bits + head_bits)], 1 + low
    for width in plane_widths(dtype, head_bits):
        shift -= width
        out.append(([r >> shift & ((1 << width) - 1) for r in rests], width))
    return out


def _payload(words: list[int], dtype: int, head_bits: int = 2, block_elements: int = MIN_BLOCK) -> bytes:
    """A bit-packed float_split payload of these element bits: the header, then every block."""
    blocks = [words[lo : lo + block_elements] for lo in range(0, len(words), block_elements)]
    return _header(head_bits, block_elements) + b"".join(_streams(*_block_streams(block, dtype, head_bits)) for block in blocks)


def _both(data: bytes):
    reference, package = reference_result(data), package_result(data)
    assert reference == package or (isinstance(reference, str) and isinstance(package, str)), (reference, package)
    return package


def test_hand_built_float16_decodes_by_the_spec_arithmetic():
    """Spec 6.6.1 by hand for float16 (E 5, M 10) with h = 2 (L 8, R 9: heads of 7 bits, planes
    of 8 and 1): 0xFCAB is sign 1, exponent 31, mantissa 0x0AB (a negative signalling NaN), so
    head 31 << 2 | 0 = 124 and rest 1 << 8 | 0xAB = 0x1AB, planes 0xD5 and 1. 0x0001 (the
    smallest subnormal) is head 0, rest 1: planes 0 and 1. 0x3C00 (1.0) is head 15 << 2 = 60,
    rest 0."""
    payload = _header(2) + _streams(([124, 0, 60], 7), ([0xD5, 0, 0], 8), ([1, 1, 0], 1))
    expected = {"x": bytes.fromhex("abfc0100003c")}
    assert _both(_file(2, (3,), payload)) == expected
    assert _payload([0xFCAB, 0x0001, 0x3C00], 2) == payload


@pytest.mark.parametrize(
    "head_bits, streams",
    [
        (0, [([31, 0, 15], 5), ([0x95, 0, 0], 8), ([3, 1, 0], 3)]),  # R 11: planes of 8 and 3
        (3, [([0xF9, 0, 0x78], 8), ([0xAB, 1, 0], 8)]),  # R 8: one plane, the sign and 7 bits
        (10, [([0x7CAB, 1, 0x3C00], 15), ([1, 0, 0], 1)]),  # the largest h: the rest is the sign alone
    ],
    ids=["h0", "h3", "h10"],
)
def test_hand_built_float16_at_other_head_widths(head_bits, streams):
    """The same three elements with other h: at h = 3, 0xFCAB's head is 31 << 3 | 1 = 0xF9 and
    its rest 1 << 7 | 0x2B = 0xAB."""
    payload = _header(head_bits) + _streams(*streams)
    assert _both(_file(2, (3,), payload)) == {"x": bytes.fromhex("abfc0100003c")}
    assert _payload([0xFCAB, 0x0001, 0x3C00], 2, head_bits) == payload


def test_hand_built_float64_and_float32_planes():
    """float64 at h = 0 has a last plane of 5 bits (R = 53): -0.0 is rest 1 << 52, so plane 0 =
    0x80, the others 0; at h = 5 (the largest) R = 48, six planes of 8. float32 0x7F800001 (a
    signalling NaN) at h = 2 has head 255 << 2 = 1020 and rest 1: planes of 8, 8 and 6, only the
    last 1; at h = 8 (the largest) head 0xFF00 (16 bits) and planes 0 and 1."""
    f64 = _header(0) + _streams(([0], 11), *[([0x80 if k == 0 else 0], 8) for k in range(6)], ([0], 5))
    assert _both(_file(4, (), f64)) == {"x": struct.pack("<Q", 1 << 63)}
    f64 = _header(5) + _streams(([0], 16), *[([0x80 if k == 0 else 0], 8) for k in range(6)])
    assert _both(_file(4, (), f64)) == {"x": struct.pack("<Q", 1 << 63)}
    f32 = _header(2) + _streams(([1020], 10), ([0], 8), ([0], 8), ([1], 6))
    assert _both(_file(1, (1, 1), f32)) == {"x": struct.pack("<I", 0x7F800001)}
    f32 = _header(8) + _streams(([0xFF00], 16), ([0], 8), ([1], 8))
    assert _both(_file(1, (1, 1), f32)) == {"x": struct.pack("<I", 0x7F800001)}


@needs_ml_dtypes
def test_hand_built_bfloat16_at_both_ends():
    """bfloat16 (E 8, M 7): h = 0 is the exponent and one plane of sign and mantissa; h = 7 (the
    largest) is a 15-bit head and a 1-bit plane. 0xFF81 is head 0xFF, rest 0x81 at h = 0."""
    assert _both(_file(3, (1,), _header(0) + _streams(([0xFF], 8), ([0x81], 8)))) == {"x": b"\x81\xff"}
    assert _both(_file(3, (1,), _header(7) + _streams(([0x7F81], 15), ([1], 1)))) == {"x": b"\x81\xff"}


#: 2 * 4096 + 3 float16 bit patterns: blocks of 4096, 4096 and 3 at the smallest B.
MANY = [(i * 40503) & 0xFFFF for i in range(2 * MIN_BLOCK + 3)]


@pytest.mark.parametrize(
    "head_bits, block_elements",
    [(2, MIN_BLOCK), (0, MIN_BLOCK), (10, MIN_BLOCK), (2, 5000), (2, 2 * MIN_BLOCK + 3), (2, 2**32 - 1)],
    ids=["3-blocks", "3-blocks-h0", "3-blocks-h10", "B-5000", "one-full-block", "largest-B"],
)
def test_hand_built_blocks(head_bits, block_elements):
    """Spec 6.6.2: block j holds elements j*B to min(N, (j+1)*B) - 1, each block its own streams."""
    data = _file(2, (len(MANY),), _payload(MANY, 2, head_bits, block_elements))
    assert _both(data) == {"x": struct.pack(f"<{len(MANY)}H", *MANY)}


@pytest.mark.parametrize("head_bits, block_elements", [(2, MIN_BLOCK), (0, 2**32 - 1), (10, 5000)])
def test_an_empty_tensor_is_the_header_alone(head_bits, block_elements):
    assert _both(_file(2, (0, 3), _header(head_bits, block_elements))) == {"x": b""}
    assert isinstance(_both(_file(2, (0, 3), _header(head_bits, block_elements) + _streams(([], 7)))), str)


F16_ONE = _payload([0x3C00], 2)  # 1.0 as a float16 float_split payload: h = 2, one block
F16_ONE_STREAMS = F16_ONE[8:]
BLOCKS = _block_streams(MANY[: 2 * MIN_BLOCK], 2, 2)  # the first two blocks' streams, joined
THREE = [_streams(*_block_streams(MANY[lo : lo + MIN_BLOCK], 2, 2)) for lo in range(0, len(MANY), MIN_BLOCK)]
TEN_BLOCKS = 10 * MIN_BLOCK  # 10 blocks of 3 streams: at least 270 bytes after the header


def _short_stream_block() -> bytes:
    """Block 1 of MANY with its first plane stream one symbol (one byte) short."""
    streams = _block_streams(MANY[MIN_BLOCK : 2 * MIN_BLOCK], 2, 2)
    streams[1] = (streams[1][0][:-1], 8)
    return _streams(*streams)


BAD = {
    "int8 dtype": _file(5, (1,), _header() + _streams(([0], 8))),
    "int16 dtype": _file(6, (1,), F16_ONE),
    "bool dtype": _file(13, (1,), _header() + _streams(([0], 8))),
    "no header": _file(2, (1,), F16_ONE_STREAMS),  # the layout of the 1.1 drafts
    "payload of 7 bytes": _file(2, (0,), _header()[:7]),
    "empty payload of an empty tensor": _file(2, (0,), b""),
    "reserved byte 1": _file(2, (1,), _header(reserved=b"\1\0\0") + F16_ONE_STREAMS),
    "reserved byte 2": _file(2, (1,), _header(reserved=b"\0\x80\0") + F16_ONE_STREAMS),
    "reserved byte 3": _file(2, (0,), _header(reserved=b"\0\0\xff")),
    "head_bits 11 for float16": _file(2, (1,), _header(11) + _streams(([0x3C00 << 1], 16))),
    "head_bits 9 for float32": _file(1, (0,), _header(9)),
    "head_bits 8 for bfloat16": _file(3, (0,), _header(8)),
    "head_bits 6 for float64": _file(4, (0,), _header(6)),
    "head_bits 255": _file(2, (0,), _header(255)),
    "block_elements 0": _file(2, (0,), _header(2, 0)),
    "block_elements 1": _file(2, (1,), _header(2, 1) + F16_ONE_STREAMS),
    "block_elements 4095": _file(2, (1,), _header(2, MIN_BLOCK - 1) + F16_ONE_STREAMS),
    "10 blocks in 269 bytes": _file(2, (TEN_BLOCKS,), _header() + bytes(269)),
    "10 blocks in 270 bytes": _file(2, (TEN_BLOCKS,), _header() + bytes(270)),  # past the bound check: stream 0's coder 0
    "4096 blocks, one block's streams": _file(2, (4096, MIN_BLOCK), _header() + THREE[0]),
    "missing block": _file(2, (len(MANY),), _header() + THREE[0] + THREE[1]),
    "missing first block": _file(2, (len(MANY),), _header() + THREE[1] + THREE[2]),
    "extra block": _file(2, (len(MANY),), _header() + b"".join(THREE) + THREE[2]),
    "blocks swapped": _file(2, (len(MANY),), _header() + THREE[0] + THREE[2] + THREE[1]),
    "block 1 with a short stream": _file(2, (len(MANY),), _header() + THREE[0] + _short_stream_block() + THREE[2]),
    "last block a stream short": _file(2, (len(MANY),), _header() + THREE[0] + THREE[1] + THREE[2][: -(9 + 1)]),
    "one block of the blocks' streams": _file(2, (len(MANY),), _header(2, 2 * MIN_BLOCK + 3) + THREE[0] + THREE[1] + THREE[2]),
    "bytes after the last stream": _file(2, (1,), F16_ONE + b"\0"),
    "an empty stream after the last": _file(2, (1,), F16_ONE + dcfbuild.stream(1, b"")),
    "a stream missing": _file(2, (1,), _header() + _streams(([60], 7), ([0], 8))),
    "float32 with float16's streams": _file(1, (1,), F16_ONE),
    "float16 at h 0 with h 2's streams": _file(2, (1,), _header(0) + F16_ONE_STREAMS),
    "head stream one symbol short": _file(2, (2,), _header() + _streams(([60], 7), ([0, 0], 8), ([0, 0], 1))),
    "head symbol 128 of float16 at h 2": _file(2, (1,), _header() + _zstd_stream([128]) + _streams(([0], 8), ([0], 1))),
    "head symbol 32 of float16 at h 0": _file(2, (1,), _header(0) + _zstd_stream([32]) + _streams(([0], 8), ([0], 3))),
    "1-bit plane symbol 2": _file(2, (1,), _header() + _streams(([60], 7), ([0], 8)) + _zstd_stream([2])),
    "plane body past the payload": _file(2, (1,), _header() + _streams(([60], 7), ([0], 8)) + dcfbuild.stream(1, b"\0", body_length=2)),
    "unused bitpack bits set": _file(2, (1,), _header() + _streams(([60], 7), ([0], 8)) + dcfbuild.stream(1, b"\x02")),
    "unknown coder": _file(2, (1,), _header() + _streams(([60], 7), ([0], 8)) + dcfbuild.stream(4, b"\0")),
    "in a 1.0 file": _file(2, (1,), F16_ONE, version=(1, 0)),
}


def test_hand_built_float16_is_valid():
    assert _both(_file(2, (1,), F16_ONE)) == {"x": b"\x00\x3c"}
    assert _both(_file(2, (len(MANY),), _header() + b"".join(THREE))) == {"x": struct.pack(f"<{len(MANY)}H", *MANY)}


@pytest.mark.parametrize("label", sorted(BAD))
def test_both_decoders_reject(label):
    """Spec 6.6.2 (dtype, header, block count, framing), 7.1-7.4 (each stream's checks) and 10.4."""
    assert isinstance(reference_result(BAD[label]), str), label
    assert isinstance(package_result(BAD[label]), str), label


def test_the_block_count_is_checked_before_any_block():
    """6.6.2: ceil(N / B) * (1 + Q) * 9 must fit in the payload after the header, checked before
    a block is read: the reference says so in its error, and 270 bytes pass that check."""
    assert "blocks of 3 streams cannot fit" in reference_result(BAD["10 blocks in 269 bytes"])
    assert "block[0].head" in reference_result(BAD["10 blocks in 270 bytes"])
    assert "cannot fit" in reference_result(BAD["4096 blocks, one block's streams"])


# ------------------------------------------------------------------------- differential


def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(6)
    tensors = {
        "a16": (rng.standard_normal(40) * 0.05).astype(np.float16),
        "b32": np.concatenate([(rng.standard_normal(30) * 0.05), [np.inf, -0.0, np.nan]]).astype(np.float32),
        "c64": (rng.standard_normal((3, 4)) * 0.05),
    }
    files = [dcformat.save(tensors, options=dcformat.EncodeOptions(dense="float_split", coder=c)) for c in ("bitpack", "huffman", "zstd")]
    # several blocks (4096, 4096, 3 elements), and other head widths, as the encoder does not write them
    few = [0x3C00] * len(MANY)
    for at in (0, 17, MIN_BLOCK - 1, MIN_BLOCK, 2 * MIN_BLOCK + 2):
        few[at] = MANY[at - 1]
    files.append(_file(2, (len(few),), _header(0) + b"".join(_zstd_block(few[lo : lo + MIN_BLOCK], 0) for lo in range(0, len(few), MIN_BLOCK))))
    files.append(_file(2, (40,), _payload(MANY[:40], 2, 10)))
    files.append(_file(1, (6,), _payload([0x7F800001, 0, 0x80000000, 0x3F800000, 0xFF812345, 1], 1, 8, 2**32 - 1)))
    return files


def _zstd_block(words: list[int], head_bits: int) -> bytes:
    """One float16 block with every stream zstd-coded (spec 7.4; heads of at most 8 bits)."""
    return b"".join(_zstd_stream(symbols) for symbols, _ in _block_streams(words, 2, head_bits))


def test_reference_and_package_agree_on_float_split_mutants():
    """Both accept or both reject each mutant of small float_split files; when both accept, the bytes are equal."""
    seeds = _seed_files()
    assert all(isinstance(_both(seed), dict) for seed in seeds)
    rnd = random.Random(1206)
    disagreements, accepted = [], 0
    for _ in range(400):
        data = bytearray(rnd.choice(seeds))
        index_offset = struct.unpack_from("<Q", data, 24)[0]
        for _ in range(rnd.randint(1, 2)):
            at = rnd.randrange(64, index_offset)  # the payloads, where float_split's framing lives
            if rnd.random() < 0.3:
                at = 64 + rnd.randrange(8)  # the first tensor's float_split header
            if rnd.random() < 0.7:
                data[at] ^= 1 << rnd.randrange(8)
            else:
                data[at] = rnd.choice([0, 1, 2, 3, 4, 5, 0x0F, 0x10, 0x1F, 0x20, 0x7F, 0x80, 0xFF])
        mutant = dcfbuild.fix_crcs(bytes(data))
        package, reference = package_result(mutant), reference_result(mutant)
        if isinstance(package, str) != isinstance(reference, str) or (isinstance(package, dict) and package != reference):
            disagreements.append((package if isinstance(package, str) else "accepted", reference if isinstance(reference, str) else "accepted"))
        accepted += isinstance(package, dict)
    assert not disagreements, disagreements[:5]
    assert 40 < accepted < 360, accepted  # neither all broken nor all harmless


@needs_ml_dtypes
def test_package_and_reference_agree_on_bfloat16_specials():
    """bfloat16 (one 8-bit plane): every 16-bit pattern survives the package's encoder and both decoders."""
    from dcformat.format.dtypes import bfloat16

    bits = np.arange(0, 1 << 16, 97, dtype=np.uint16)
    bits = np.concatenate([bits, np.array([0x7F81, 0xFF81, 0x7FC0, 0xFFFF, 0x8000, 0x0001], np.uint16)])
    data = dcformat.save({"x": bits.view(bfloat16())}, options=dcformat.EncodeOptions(dense="float_split"))
    assert reference_result(data) == {"x": bits.tobytes()}
    assert package_result(data) == {"x": bits.tobytes()}
