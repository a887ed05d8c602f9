"""float_split (spec 6.6, format 1.1) in the frozen vectors, the reference decoder and the package.

The vectors themselves are decoded by test_vectors.py (package) and test_refdecode.py
(reference, and the two byte for byte); here: that the float_split vectors cover what they
must (every float dtype, every coder, the special values), the version rule of 10.4, and
hand-built payloads that both decoders read, or reject, alike.
"""

from __future__ import annotations

import json
import random
import struct
import sys

import numpy as np
import pytest

import dcformat
from fuzz import dcfbuild
from tests.support.optional import needs_ml_dtypes
from tests.support.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import refdecode

VECTORS = REPO_ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
FLOAT_SPLIT = 5
FLOAT_DTYPES = {"float32": 1, "float16": 2, "bfloat16": 3, "float64": 4}
#: spec 6.6.1: dtype id -> (E, M, plane widths), restated here rather than taken from either decoder
FIELDS = {1: (8, 23, [8, 8, 8]), 2: (5, 10, [8, 3]), 3: (8, 7, [8]), 4: (11, 52, [8, 8, 8, 8, 8, 8, 5])}
CODERS = {1: "bitpack", 2: "huffman", 3: "zstd"}


def _float_split_tensors():
    """(vector, name, entry, stream coders, RefFile) of every float_split tensor of the vectors."""
    out = []
    for key in sorted(MANIFEST):
        ref = refdecode.RefFile((VECTORS / MANIFEST[key]["file"]).read_bytes())
        for name, e in ref.entries.items():
            if e.encoding != FLOAT_SPLIT:
                continue
            payload = ref.data[e.payload_offset : e.payload_offset + e.payload_length]
            coders, pos = [], 0
            for _ in range(1 + len(FIELDS[e.dtype][2])):  # spec 7.1: u8 coder, u64 body_length, body
                coder, body_length = struct.unpack_from("<BQ", payload, pos)
                coders.append(CODERS[coder])
                pos += 9 + body_length
            assert pos == len(payload), (key, name)
            out.append((key, name, e, coders, ref))
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
    """For each float dtype: every coder carries every stream of some 2-D tensor, and there are
    a scalar and a tensor of no element. Realistic weights (of the dtypes whose exponents the
    encoder Huffman-codes at this size) have a Huffman exponent stream beside bit-packed planes."""
    mine = [t for t in TENSORS if t[2].dtype == FLOAT_DTYPES[dtype]]
    for coder in CODERS.values():
        assert any(len(e.shape) == 2 and e.elements > 1 and set(coders) == {coder} for _, _, e, coders, _ in mine), coder
    assert any(e.shape == () for _, _, e, _, _ in mine)
    assert any(e.elements == 0 for _, _, e, _, _ in mine)
    if dtype != "float64":  # float64's 2048-symbol exponents: zstd is smaller below some 5000 elements
        assert any(coders[0] == "huffman" and "bitpack" in coders[1:] and e.elements >= 1000 and len(e.shape) == 2 for _, _, e, coders, _ in mine)


def test_vectors_hold_empty_float_split_tensors_under_every_coder():
    for coder in CODERS.values():
        assert any(e.elements == 0 and set(coders) == {coder} for _, _, e, coders, _ in TENSORS), coder


@pytest.mark.parametrize("dtype", sorted(FLOAT_DTYPES))
def test_vectors_hold_every_special_value(dtype):
    """+-0, subnormals, +-inf, quiet and signalling NaNs of both signs, in one tensor per dtype,
    and signalling NaNs under every forced coder (the manifest hashes hold their exact bits)."""
    kinds_by_coders = {}
    for _, name, e, coders, ref in TENSORS:
        if e.dtype == FLOAT_DTYPES[dtype]:
            kinds = _kinds(ref.decode(name).data, e.dtype)
            kinds_by_coders.setdefault(frozenset(coders), []).append(kinds)
    every = {s + k for s in "+-" for k in ("0", "subnormal", "normal", "inf", "qnan", "snan")}
    assert any(kinds == every for found in kinds_by_coders.values() for kinds in found)
    for coder in CODERS.values():
        assert any({"+snan", "-snan", "+qnan"} <= kinds for kinds in kinds_by_coders.get(frozenset([coder]), [])), coder


def test_float_split_vectors_declare_1_1_and_the_others_1_0():
    """Spec 10.4: the reference encoder declares the oldest minor version that defines every id used."""
    with_float_split = {key for key, *_ in TENSORS}
    assert with_float_split == {k for k in MANIFEST if k.startswith("float_split")}
    for key in MANIFEST:
        data = (VECTORS / MANIFEST[key]["file"]).read_bytes()
        assert struct.unpack_from("<HH", data, 8) == ((1, 1) if key in with_float_split else (1, 0)), key


# ------------------------------------------------------------------------- version rule (10.4)


def _package(data: bytes):
    """Every tensor's storage bytes as the package decodes them, or the error type."""
    try:
        with dcformat.DCFile(data) as f:
            f.check_padding()
            return {name: np.ascontiguousarray(f.get(name)).tobytes() for name in f.keys()}
    except dcformat.DCFormatError as exc:
        return type(exc).__name__


def _reference(data: bytes):
    try:
        return {t.name: t.data for t in refdecode.RefFile(data).verify()}
    except refdecode.RefDecodeError as exc:
        return str(exc)


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
    expected = _reference(data)
    assert isinstance(expected, dict)
    mutant = dcfbuild.patch_header(data, version_minor=minor)
    assert _reference(mutant) == expected
    assert _package(mutant) == expected


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


def _streams(*streams) -> bytes:
    """Bit-packed streams (spec 7.2) from (symbols, alphabet bits) pairs."""
    return b"".join(dcfbuild.stream(1, dcfbuild.pack(symbols, width)) for symbols, width in streams)


def _file(dtype: int, shape: tuple, payload: bytes, version=(1, 1)) -> bytes:
    return dcfbuild.build([dcfbuild.T(b"x", dtype, FLOAT_SPLIT, shape, payload)], version=version)


def test_hand_built_float16_decodes_by_the_spec_arithmetic():
    """Spec 6.6.1 by hand for float16 (E 5, M 10, planes 8 + 3): 0xFCAB is sign 1, exponent 31,
    mantissa 0xAB (a negative signalling NaN); rest = 1 << 10 | 0xAB = 0x4AB, planes 0x95 and 3.
    0x0001 (the smallest subnormal) is exponent 0, rest 1: planes 0 and 1. 0x3C00 (1.0) is
    exponent 15, rest 0."""
    payload = _streams(([31, 0, 15], 5), ([0x95, 0, 0], 8), ([3, 1, 0], 3))
    data = _file(2, (3,), payload)
    expected = {"x": bytes.fromhex("abfc0100003c")}
    assert _reference(data) == expected
    assert _package(data) == expected


def test_hand_built_float64_and_float32_planes():
    """float64's last plane is 5 bits (R = 53): -0.0 is rest 1 << 52, so plane 0 = 0x80, others 0;
    float32 0x7F800001 (a signalling NaN) has exponent 255 and rest 1: only plane 2 = 1."""
    f64 = _streams(([0], 11), *[([0x80 if k == 0 else 0], 8) for k in range(6)], ([0], 5))
    assert _reference(_file(4, (), f64)) == {"x": struct.pack("<Q", 1 << 63)}
    assert _package(_file(4, (), f64)) == {"x": struct.pack("<Q", 1 << 63)}
    f32 = _streams(([255], 8), ([0], 8), ([0], 8), ([1], 8))
    assert _reference(_file(1, (1, 1), f32)) == {"x": struct.pack("<I", 0x7F800001)}
    assert _package(_file(1, (1, 1), f32)) == {"x": struct.pack("<I", 0x7F800001)}


def _zstd_stream(symbols: list[int]) -> bytes:
    """A zstd-coded stream (spec 7.4, u8 symbols) holding any bytes, even out-of-alphabet ones."""
    return dcfbuild.stream(3, dcfbuild.zstd_frame(len(symbols), dcfbuild.zstd_block(0, len(symbols), bytes(symbols), last=True)))


F16_ONE = _streams(([15], 5), ([0], 8), ([0], 3))  # 1.0 as a float16 float_split payload

BAD = {
    "int8 dtype": _file(5, (1,), _streams(([0], 8))),
    "int16 dtype": _file(6, (1,), F16_ONE),
    "bool dtype": _file(13, (1,), _streams(([0], 8))),
    "bytes after the last stream": _file(2, (1,), F16_ONE + b"\0"),
    "an empty stream after the last": _file(2, (1,), F16_ONE + dcfbuild.stream(1, b"")),
    "a stream missing": _file(2, (1,), _streams(([15], 5), ([0], 8))),
    "float32 with float16's streams": _file(1, (1,), F16_ONE),
    "exponent stream one symbol short": _file(2, (2,), _streams(([15], 5), ([0, 0], 8), ([0, 0], 3))),
    "exponent symbol 32 of float16": _file(2, (1,), _zstd_stream([32]) + _streams(([0], 8), ([0], 3))),
    "3-bit plane symbol 8": _file(2, (1,), _streams(([15], 5), ([0], 8)) + _zstd_stream([8])),
    "plane body past the payload": _file(2, (1,), _streams(([15], 5), ([0], 8)) + dcfbuild.stream(1, b"\0", body_length=2)),
    "unused bitpack bits set": _file(2, (1,), _streams(([15], 5), ([0], 8)) + dcfbuild.stream(1, b"\x08")),
    "unknown coder": _file(2, (1,), _streams(([15], 5), ([0], 8)) + dcfbuild.stream(4, b"\0")),
    "in a 1.0 file": _file(2, (1,), F16_ONE, version=(1, 0)),
}


def test_hand_built_float16_is_valid():
    assert _reference(_file(2, (1,), F16_ONE)) == {"x": b"\x00\x3c"}
    assert _package(_file(2, (1,), F16_ONE)) == {"x": b"\x00\x3c"}


@pytest.mark.parametrize("label", sorted(BAD))
def test_both_decoders_reject(label):
    """Spec 6.6.2 (dtype, framing), 7.1-7.4 (each stream's checks) and 10.4."""
    assert isinstance(_reference(BAD[label]), str), label
    assert isinstance(_package(BAD[label]), str), label


# ------------------------------------------------------------------------- differential


def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(6)
    tensors = {
        "a16": (rng.standard_normal(40) * 0.05).astype(np.float16),
        "b32": np.concatenate([(rng.standard_normal(30) * 0.05), [np.inf, -0.0, np.nan]]).astype(np.float32),
        "c64": (rng.standard_normal((3, 4)) * 0.05),
    }
    return [dcformat.save(tensors, options=dcformat.EncodeOptions(dense="float_split", coder=c)) for c in ("bitpack", "huffman", "zstd")]


def test_reference_and_package_agree_on_float_split_mutants():
    """Both accept or both reject each mutant of small float_split files; when both accept, the bytes are equal."""
    seeds = _seed_files()
    rnd = random.Random(1206)
    disagreements = []
    for _ in range(400):
        data = bytearray(rnd.choice(seeds))
        index_offset = struct.unpack_from("<Q", data, 24)[0]
        for _ in range(rnd.randint(1, 2)):
            at = rnd.randrange(64, index_offset)  # the payloads, where float_split's framing lives
            if rnd.random() < 0.7:
                data[at] ^= 1 << rnd.randrange(8)
            else:
                data[at] = rnd.choice([0, 1, 2, 3, 4, 5, 0x1F, 0x20, 0x7F, 0x80, 0xFF])
        mutant = dcfbuild.fix_crcs(bytes(data))
        package, reference = _package(mutant), _reference(mutant)
        if isinstance(package, str) != isinstance(reference, str) or (isinstance(package, dict) and package != reference):
            disagreements.append((package if isinstance(package, str) else "accepted", reference if isinstance(reference, str) else "accepted"))
    assert not disagreements, disagreements[:5]


@needs_ml_dtypes
def test_package_and_reference_agree_on_bfloat16_specials():
    """bfloat16 (one 8-bit plane): every 16-bit pattern survives the package's encoder and both decoders."""
    from dcformat.format.dtypes import BFLOAT16

    bits = np.arange(0, 1 << 16, 97, dtype=np.uint16)
    bits = np.concatenate([bits, np.array([0x7F81, 0xFF81, 0x7FC0, 0xFFFF, 0x8000, 0x0001], np.uint16)])
    data = dcformat.save({"x": bits.view(BFLOAT16)}, options=dcformat.EncodeOptions(dense="float_split"))
    assert _reference(data) == {"x": bits.tobytes()}
    assert _package(data) == {"x": bits.tobytes()}
