"""Malformed files: one test per class of damage, each asserting the error type and the field named.

Bad files are made from good ones by patching bytes, with every checksum that covers the
patch recomputed (header CRC, index CRC, payload CRC) so that each test reaches the check
it is about, not an earlier checksum. ``fuzz.dcfbuild.build_file`` builds files from scratch
where patching would be clumsy.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dcformat
from dcformat import (
    ChecksumError,
    DCFormatError,
    EncodeError,
    EncodeOptions,
    FormatError,
    LimitError,
    QuantizedTensor,
    UnsupportedError,
)
from dcformat.format.constants import VERSION_MINOR
from dcformat.format.structs import HEADER_CRC_COVERS, Header
from fuzz.dcfbuild import DT, ENC, Ent, build_file, crc32, stream, zstd_block
from fuzz.dcfbuild import zstd_frame as zstd_frame_by_hand
from tests.support.optional import needs_ml_dtypes
from tests.support.strategies import (
    bitpack_stream,
    parse_file,
    patch_payload,
    quant_payload,
    raw_ent,
    rebuild,
    ref_pack,
    zstd_frame,
)

# ======================================================================================
# Helpers: patch a good file and recompute the checksums that cover the patch
# ======================================================================================


def set_header(blob: bytes, *, fix_crc: bool = True, **fields) -> bytes:
    """Change header fields (by name, parsed with ``layout.Header``) and recompute the header CRC."""
    header = dict(Header.parse(blob[:40]))
    header.pop("_io", None)
    header.update(fields)
    raw = bytearray(Header.build(header))
    if fix_crc:
        raw[HEADER_CRC_COVERS:40] = struct.pack("<I", zlib.crc32(raw[:HEADER_CRC_COVERS]) & 0xFFFFFFFF)
    return bytes(raw) + blob[40:]


def fix_index_crc(blob: bytes) -> bytes:
    """Recompute the index CRC (the last 4 bytes) over metadata || directory."""
    index = Header.parse(blob[:40]).index_offset
    return blob[:-4] + struct.pack("<I", crc32(blob[index:-4]))


def patch(blob: bytes, offset: int, new: bytes) -> bytes:
    return blob[:offset] + new + blob[offset + len(new) :]


def set_entry(blob: bytes, name: str, **fields) -> bytes:
    """Change directory fields of one entry (Ent attributes) and rebuild, payloads in place."""
    p = parse_file(blob)
    e = p.entry(name)
    for key, value in fields.items():
        setattr(e, key, value)
    return rebuild(p)


def set_metadata(blob: bytes, metadata: bytes) -> bytes:
    p = parse_file(blob)
    return rebuild(p, metadata=metadata)


def expect(blob: bytes, exc: type, field: str, *, get: str | None = None, verify: bool = False) -> DCFormatError:
    """``blob`` must fail with exactly ``exc`` naming ``field``: on open, or only at ``get(name)``/``verify()``."""
    if get is None and not verify:
        with pytest.raises(DCFormatError) as info:
            dcformat.open(blob)
    else:
        with dcformat.open(blob) as f:  # opening must succeed: the damage is inside a payload
            with pytest.raises(DCFormatError) as info:
                f.get(get) if get is not None else f.verify()
    error = info.value
    assert type(error) is exc, f"{type(error).__name__} instead of {exc.__name__}: {error}"
    assert field in str(error), f"{field!r} not named in: {error}"
    assert isinstance(error, FormatError)
    assert error.offset is None or 0 <= error.offset <= len(blob)
    return error


def good_file() -> bytes:
    """A small file with every encoding and coder."""
    rng = np.random.default_rng(0)
    q = QuantizedTensor.from_entries(
        (10, 12), np.array([0.0, 0.5, -1.0, 2.0], np.float32), np.sort(rng.choice(120, 20, replace=False)), rng.integers(1, 4, 20)
    )
    tensors = {
        "raw": np.arange(6, dtype=np.int16),
        "flag": np.array([True, False, True]),
        "zs": np.tile(np.arange(4, dtype=np.float32), 8),
        "qb": q,
        "qh": q,
        "qz": q,
        "qd": q,
    }
    overrides = {
        "zs": EncodeOptions(dense="zstd"),
        "qb": EncodeOptions(layout="sparse", gap_bits=3, coder="bitpack"),
        "qh": EncodeOptions(layout="sparse", gap_bits=4, coder="huffman"),
        "qz": EncodeOptions(layout="sparse", gap_bits=2, coder="zstd"),
        "qd": EncodeOptions(layout="dense", coder="bitpack"),
    }
    return dcformat.save(tensors, metadata={"note": "good"}, overrides=overrides)


GOOD = good_file()


def test_good_file_and_helpers_are_sound():
    with dcformat.open(GOOD) as f:
        assert f.verify() == ["flag", "qb", "qd", "qh", "qz", "raw", "zs"]
        assert {n: f.entry(n).encoding.name for n in f.keys()} == {
            "flag": "RAW",
            "qb": "QUANT_SPARSE",
            "qd": "QUANT_DENSE",
            "qh": "QUANT_SPARSE",
            "qz": "QUANT_SPARSE",
            "raw": "RAW",
            "zs": "ZSTD",
        }
        assert f.info("qh").codes_coder == "huffman" and f.info("qz").gaps_coder == "zstd"
    # the helpers change nothing when asked to change nothing
    assert set_header(GOOD) == GOOD
    assert fix_index_crc(GOOD) == GOOD
    assert rebuild(parse_file(GOOD)) == GOOD
    assert set_entry(GOOD, "raw") == GOOD
    assert patch_payload(GOOD, "qb", lambda b: b) == GOOD


def quant_file(payload: bytes, *, encoding="quant_sparse", dtype="float32", shape=(20,)) -> bytes:
    return build_file([Ent("q", DT[dtype], ENC[encoding], shape, payload)])


CB = np.array([0.0, 0.5, -1.0], np.float32)


def sparse_payload(**kw) -> bytes:
    """A valid quant_sparse payload for shape (20,): entries at 1 and 6 (gap width 2: gaps 1, 3, 0)."""
    args = dict(codebook=CB, streams=[bitpack_stream([1, 0, 2], 3), bitpack_stream([1, 3, 0], 4)], gap_bits=2, entry_count=3)
    args.update(kw)
    return quant_payload(args.pop("codebook"), args.pop("streams"), **args)


def test_quant_helpers_make_a_valid_file():
    expected = np.zeros(20, np.float32)
    expected[[1, 6]] = [0.5, -1.0]
    assert dcformat.load(quant_file(sparse_payload()))["q"].tolist() == expected.tolist()


# ======================================================================================
# Header
# ======================================================================================


def test_empty_file(tmp_path):
    expect(b"", FormatError, "header")
    path = tmp_path / "empty.dcf"
    path.write_bytes(b"")
    with pytest.raises(FormatError) as info:
        dcformat.open(path)
    assert "header" in str(info.value)


@pytest.mark.parametrize("size", [1, 8, 39])
def test_shorter_than_the_header(size):
    expect(GOOD[:size], FormatError, "header")


@pytest.mark.parametrize("index", range(8))
def test_bad_magic(index):
    blob = patch(GOOD, index, bytes([GOOD[index] ^ 0x20]))
    expect(blob, FormatError, "header.magic")


def test_text_mode_transfer_breaks_the_magic():
    expect(GOOD.replace(b"\r\n", b"\n", 1), FormatError, "header.magic")
    expect(b"PK\x03\x04" + GOOD[4:], FormatError, "header.magic")


@pytest.mark.parametrize("major", [0, 2, 0xFFFF])
def test_unknown_major_version(major):
    expect(set_header(GOOD, version_major=major), UnsupportedError, "header.version_major")


#: A minor version newer than this reader's: its unknown ids fail only the tensors using them (5.3).
NEWER_MINOR = VERSION_MINOR + 1


@pytest.mark.parametrize("minor", [1, NEWER_MINOR, 0xFFFF])
def test_newer_minor_version_opens(minor):
    blob = set_header(GOOD, version_minor=minor)
    with dcformat.open(blob) as f:
        assert f.version == (1, minor)
        f.verify()


@pytest.mark.parametrize("what, value", [("encoding", 9), ("dtype", 99)])
def test_unknown_id_in_a_newer_minor_file_fails_only_at_get(what, value):
    blob = set_header(set_entry(GOOD, "raw", **{what: value}), version_minor=NEWER_MINOR)
    with dcformat.open(blob) as f:
        assert "raw" in f.keys()
        for name in ("flag", "qb", "zs"):  # every other tensor still reads
            f.get(name)
            f.info(name)
    expect(blob, UnsupportedError, f"tensors['raw'].{what}", get="raw")
    expect(blob, UnsupportedError, f"tensors['raw'].{what}", verify=True)
    with pytest.raises(UnsupportedError):
        dcformat.load(blob)
    # the same id in a file of this reader's minor version is simply invalid, at open
    expect(set_entry(GOOD, "raw", **{what: value}), UnsupportedError, f"directory[5].{what}")


def test_unknown_coder_in_a_newer_minor_file_fails_at_get():
    blob = set_header(patch_payload(GOOD, "qb", lambda b: patch(bytes(b), 16 + 16, b"\x09")), version_minor=NEWER_MINOR)
    expect(blob, UnsupportedError, "tensors['qb'].codes.coder", get="qb")


@pytest.mark.parametrize("flags", [1, 0x80, 0x80000000])
def test_reserved_header_flags(flags):
    expect(set_header(GOOD, flags=flags), FormatError, "header.flags")


def test_header_crc_mismatch():
    expect(set_header(GOOD, header_crc32=Header.parse(GOOD[:40]).header_crc32 ^ 1, fix_crc=False), ChecksumError, "header.header_crc32")
    for field, value in [("tensor_count", 6), ("metadata_length", 1), ("index_offset", 128), ("directory_length", 3), ("flags", 1)]:
        expect(set_header(GOOD, fix_crc=False, **{field: value}), ChecksumError, "header.header_crc32")


@pytest.mark.parametrize("index", [40, 50, 63])
def test_nonzero_header_padding(index):
    expect(patch(GOOD, index, b"\x01"), FormatError, "header.padding")


def section_boundaries(blob: bytes) -> dict:
    head = Header.parse(blob[:40])
    meta_end = head.index_offset + head.metadata_length
    return {
        "in header": 20,
        "after header": 40,
        "in header padding": 50,
        "after header padding": 64,
        "in payloads": 100,
        "at index": head.index_offset,
        "in metadata": head.index_offset + 3,
        "at directory": meta_end,
        "in directory": meta_end + 5,
        "at index crc": len(blob) - 4,
        "in index crc": len(blob) - 2,
        "last byte": len(blob) - 1,
    }


@pytest.mark.parametrize("where", list(section_boundaries(GOOD)))
def test_truncation_at_section_boundaries(where):
    size = section_boundaries(GOOD)[where]
    field = "header" if size < 40 else "header.padding" if size < 64 else "header.index_offset"
    expect(GOOD[:size], FormatError, field)


def test_every_prefix_is_an_error():
    small = dcformat.save(
        {"a": np.arange(3, dtype=np.int8), "q": QuantizedTensor.from_entries((30,), CB, [2, 29], [1, 2])},
        metadata={"m": 1},
        overrides={"q": EncodeOptions(layout="sparse", gap_bits=2, coder="bitpack")},
    )
    for size in range(len(small)):
        with pytest.raises(DCFormatError):
            with dcformat.open(small[:size]) as f:
                f.verify()
    dcformat.open(small).verify()


@pytest.mark.parametrize("index_offset", [0, 63, 64 + 1, 2**63, 2**64 - 1])
def test_index_offset_out_of_range(index_offset):
    expect(set_header(GOOD, index_offset=index_offset), FormatError, "header.index_offset")


def test_index_offset_not_at_the_end_of_the_payloads():
    # a hole of 64 zero bytes between the last payload and the index: lengths still add up
    p = parse_file(GOOD)
    blob = build_file([e for e in sorted(p.entries, key=lambda e: e.offset)], metadata=p.metadata)
    head = Header.parse(blob[:40])
    index = head.index_offset
    moved = set_header(blob[:index] + bytes(64) + blob[index:], index_offset=index + 64)
    expect(moved, FormatError, "header.index_offset")
    # and a file without tensors must have its index at 64
    empty = build_file([], index_offset=128)
    expect(empty[:64] + bytes(64) + empty[64:], FormatError, "header.index_offset")


def test_tensor_count():
    expect(set_header(GOOD, tensor_count=(1 << 24) + 1), LimitError, "header.tensor_count")
    expect(set_header(GOOD, tensor_count=8), FormatError, "directory[7]")  # one more than the directory holds
    expect(set_header(GOOD, tensor_count=6), FormatError, "directory")  # one less: trailing bytes
    expect(set_header(GOOD, tensor_count=0), FormatError, "directory")


def test_metadata_and_directory_too_large():
    expect(set_header(GOOD, metadata_length=(16 << 20) + 1), LimitError, "header.metadata_length")
    expect(set_header(GOOD, directory_length=(256 << 20) + 1), LimitError, "header.directory_length")


# ======================================================================================
# Index: metadata and directory
# ======================================================================================


@pytest.mark.parametrize(
    "metadata",
    [
        b'{"a":"\xff"}',  # not UTF-8
        b'{"a":"\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        b'{"a":"\xc0\xaf"}',  # overlong encoding
        b'{"a":',  # not JSON
        b"",
        b"{} {}",
        b"[1, 2]",  # not an object
        b'"text"',
        b"null",
        b"3",
        b'{"a":1,"a":2}',  # duplicate keys
        b'{"a":{"b":1,"b":2}}',
        b'{"a":NaN}',  # non-standard constants
        b'{"a":[Infinity]}',
        b'{"a":-Infinity}',
        b"[" * 100000 + b"]" * 100000,  # nesting deep enough to exhaust a recursive parser
        b"\xef\xbb\xbf{}",  # a byte-order mark (spec 4.1)
        b'{"a":' * 64 + b"{}" + b"}" * 64,  # 65 levels deep, the top-level object counting as 1 (4.1.1)
        b'{"a":' + b"[" * 64 + b"]" * 64 + b"}",
        b'{"a":1e400}',  # overflows a binary64 (4.1.2)
        b'{"a":[-1e400]}',
        b'{"a":1' + b"0" * 400 + b"}",  # an integer of 401 digits
        b'{"a":' + str(2**1024 - 2**970).encode() + b"}",  # the smallest integer that rounds to infinity
        b'{"a":' + b"9" * 5000 + b"}",  # past Python's 4300-digit int limit too
    ],
    ids=[
        "not-utf8",
        "surrogate",
        "overlong",
        "truncated-json",
        "empty",
        "two-values",
        "array",
        "string",
        "null",
        "number",
        "duplicate-key",
        "nested-duplicate",
        "nan",
        "infinity",
        "minus-infinity",
        "deep-nesting",
        "bom",
        "depth-65-objects",
        "depth-65-arrays",
        "1e400",
        "minus-1e400",
        "integer-401-digits",
        "integer-2**1024-2**970",
        "integer-5000-digits",
    ],
)
def test_bad_metadata(metadata):
    expect(set_metadata(GOOD, metadata), FormatError, "metadata")


@pytest.mark.parametrize(
    "metadata, check",
    [
        (b'{"a":' * 63 + b"{}" + b"}" * 63, lambda m: True),  # 64 levels: the most allowed
        (b'{"a":' + b"[" * 63 + b"]" * 63 + b"}", lambda m: True),
        (b'{"a":"' + b"[{" * 100 + b'\\"[[[\\\\"}', lambda m: m["a"].startswith("[{")),  # brackets in strings do not count
        (b'{"a":1e-400}', lambda m: m["a"] == 0.0),  # underflow rounds to 0: finite
        (b'{"a":' + str(2**1024 - 2**970 - 1).encode() + b"}", lambda m: m["a"] == 2**1024 - 2**970 - 1),  # rounds to the largest finite
        (b'{"a":-1.7976931348623157e308}', lambda m: m["a"] == -1.7976931348623157e308),
    ],
    ids=["depth-64-objects", "depth-64-arrays", "brackets-in-strings", "1e-400", "largest-integer", "largest-float"],
)
def test_metadata_at_the_json_limits_opens(metadata, check):
    """Spec 4.1.1 and 4.1.2 from the accepting side: the limits themselves are valid."""
    with dcformat.open(set_metadata(GOOD, metadata)) as f:
        assert check(f.metadata())


def test_metadata_is_parsed_after_its_crc():
    # corrupt metadata without fixing the CRC: the CRC check comes first
    index = Header.parse(GOOD[:40]).index_offset
    expect(patch(GOOD, index, b"["), ChecksumError, "index.crc32")


@pytest.mark.parametrize("where", ["metadata", "directory", "crc"])
def test_index_crc_mismatch(where):
    head = Header.parse(GOOD[:40])
    offset = {"metadata": head.index_offset + 2, "directory": head.index_offset + head.metadata_length + 3, "crc": len(GOOD) - 1}[where]
    expect(patch(GOOD, offset, bytes([GOOD[offset] ^ 0x04])), ChecksumError, "index.crc32")


def test_directory_trailing_bytes():
    expect(rebuild(parse_file(GOOD), directory_suffix=b"\0"), FormatError, "directory")
    expect(rebuild(parse_file(GOOD), directory_suffix=b"\x01\x00a"), FormatError, "directory")


@pytest.mark.parametrize("name", [b"", b"x" * 1025, b"x" * 0xFFFF], ids=["0", "1025", "65535"])
def test_name_length(name):
    blob = build_file([Ent(name, DT["int8"], ENC["raw"], (1,), b"\x01")])
    expect(blob, LimitError, "directory[0].name_length")


@pytest.mark.parametrize("name", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])
def test_invalid_utf8_name(name):
    expect(build_file([Ent(name, DT["int8"], ENC["raw"], (1,), b"\x01")]), FormatError, "directory[0].name")


def test_duplicate_names():
    blob = build_file([raw_ent("same", np.zeros(1, np.int8)), raw_ent("same", np.ones(1, np.int8))])
    error = expect(blob, FormatError, "directory[1].name")
    assert "duplicate" in str(error)


@pytest.mark.parametrize("names", [["b", "a"], ["a", "B"], ["ab", "a"], ["é", "z"]])
def test_unsorted_names(names):
    blob = build_file([raw_ent(n, np.zeros(1, np.int8)) for n in names], sort=False)
    expect(blob, FormatError, "directory[1].name")


def test_sorted_by_bytes_not_by_anything_else():
    # bytes order: "B" (0x42) < "a" (0x61) < "z" < "é" (0xc3 0xa9)
    blob = build_file([raw_ent(n, np.zeros(1, np.int8)) for n in ["B", "a", "z", "é"]], sort=False)
    assert dcformat.open(blob).keys() == ["B", "a", "z", "é"]


def test_rank_over_32():
    expect(build_file([Ent("r", DT["int8"], ENC["raw"], (1,) * 33, b"\x01")]), LimitError, "directory[0].rank")
    expect(build_file([Ent("r", DT["int8"], ENC["raw"], (1,) * 255, b"\x01")]), LimitError, "directory[0].rank")
    dcformat.load(build_file([Ent("r", DT["int8"], ENC["raw"], (1,) * 32, b"\x01")]))


@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**48 + 1,), (2**63, 2**63, 2**63), (2**64 - 1, 2), (2**25, 2**24)])
def test_element_count_overflow(shape):
    expect(build_file([Ent("s", DT["int8"], ENC["raw"], shape, b"")]), LimitError, "directory[0].shape")


def test_element_count_at_the_limit_opens():
    blob = build_file([Ent("s", DT["int8"], ENC["raw"], (2**24, 2**24), b"")])  # exactly 2**48 elements
    expect(blob, LimitError, "tensors['s']", get="s")  # but cannot decode from 0 bytes


@pytest.mark.parametrize(
    "shape, encoding, payload",
    [
        ((0, 2**62), "raw", b""),
        ((0, 2**63), "raw", b""),
        ((0, 2**31, 2**31), "zstd", zstd_frame(b"")),
        ((0, 2**62), "quant_dense", quant_payload(np.array([0.5], np.float32), [stream(1, b"")], entry_count=0)),
    ],
    ids=["raw-2**62", "raw-2**63", "zstd-2**62", "quant_dense-2**62"],
)
def test_zero_element_tensor_with_huge_dimensions(shape, encoding, payload):
    """Spec 5.1.2 bounds the product of the nonzero dimensions: holding no element does not
    make (0, 2**62) or (0, 2**31, 2**31) valid (numpy cannot even represent them)."""
    blob = build_file([Ent("e", DT["float32"], ENC[encoding], shape, payload)])
    expect(blob, LimitError, "directory[0].shape")


def test_zero_element_tensor_with_a_large_dimension_is_refused_by_the_writer():
    with pytest.raises(EncodeError, match="dimension"):
        dcformat.save({"e": np.empty((2**50, 0), dtype=np.float32)})
    out = dcformat.load(dcformat.save({"e": np.empty((2**48, 0), dtype=np.float32)}))["e"]
    assert out.shape == (2**48, 0) and out.dtype == np.float32


def test_unaligned_payload_offset():
    blob = build_file([Ent("a", DT["int8"], ENC["raw"], (3,), b"\x01\x02\x03", offset=65)])
    expect(blob, FormatError, "directory[0].payload_offset")
    blob = build_file([raw_ent("a", np.arange(3, dtype=np.int8)), raw_ent("b", np.arange(5, dtype=np.int8), offset=96)])
    expect(blob, FormatError, "directory[1].payload_offset")


def test_first_payload_not_at_64():
    expect(build_file([raw_ent("a", np.arange(3, dtype=np.int8), offset=128)]), FormatError, "tensors['a'].payload_offset")


def test_overlapping_payloads():
    a = np.arange(100, dtype=np.int8)
    blob = build_file([raw_ent("a", a), raw_ent("b", a, offset=128)])  # "a" ends at 164: "b" must start at 192
    error = expect(blob, FormatError, "tensors['b'].payload_offset")
    assert "overlaps" in str(error)
    blob = build_file([raw_ent("a", a), raw_ent("b", a, offset=64)])  # both at 64
    expect(blob, FormatError, ".payload_offset")


def test_hole_between_payloads():
    blob = build_file([raw_ent("a", np.arange(3, dtype=np.int8)), raw_ent("b", np.arange(3, dtype=np.int8), offset=192)])
    error = expect(blob, FormatError, "tensors['b'].payload_offset")
    assert "hole" in str(error)


def test_payload_running_into_the_index():
    blob = build_file([raw_ent("a", np.arange(3, dtype=np.int8), length=300)])
    expect(blob, FormatError, "tensors['a'].payload_offset")
    blob = set_entry(GOOD, "zs", length=len(parse_file(GOOD).entry("zs").payload) + 10**12)
    expect(blob, FormatError, "tensors['zs'].payload_offset")


def test_trailing_bytes_after_the_index():
    expect(GOOD + b"\0", FormatError, "header.index_offset")
    expect(rebuild(parse_file(GOOD), trailing=b"extra"), FormatError, "header.index_offset")


@pytest.mark.parametrize("name", ["raw", "flag", "zs", "qb", "qh", "qz", "qd"])
def test_payload_crc_mismatch(name):
    e = parse_file(GOOD).entry(name)
    blob = patch(GOOD, e.offset + len(e.payload) - 1, bytes([e.payload[-1] ^ 0x10]))
    expect(blob, ChecksumError, f"tensors['{name}'].payload_crc32", get=name)
    expect(set_entry(GOOD, name, crc=crc32(e.payload) ^ 1), ChecksumError, f"tensors['{name}'].payload_crc32", get=name)


def test_nonzero_padding_between_payloads_fails_verify():
    p = parse_file(GOOD)
    first = min(p.entries, key=lambda e: e.offset)
    end = first.offset + len(first.payload)
    assert end % 64  # there is padding after it
    blob = patch(GOOD, end, b"\x01")
    with dcformat.open(blob) as f:
        f.get(first.name.decode())  # the tensors themselves are intact
    expect(blob, FormatError, ".padding", verify=True)
    with pytest.raises(FormatError):
        dcformat.load(blob)


def padded_badly() -> tuple[bytes, str]:
    """GOOD with one padding byte after its first payload set to 1, and the field named."""
    p = parse_file(GOOD)
    first = min(p.entries, key=lambda e: e.offset)
    after = sorted(p.entries, key=lambda e: e.offset)[1]
    end = first.offset + len(first.payload)
    return patch(GOOD, end, b"\x01"), f"tensors['{after.name.decode()}'].padding"


def test_nonzero_padding_fails_load_and_load_file(tmp_path):
    """Spec 8: decoding every tensor counts as verifying the whole file, so ``load`` and
    ``load_file`` check every padding run although every tensor decodes."""
    blob, field = padded_badly()
    path = tmp_path / "padded.dcf"
    path.write_bytes(blob)
    for run in (lambda: dcformat.load(blob), lambda: dcformat.load_file(path), lambda: dcformat.load_file(path, threads=1)):
        with pytest.raises(DCFormatError) as info:
            run()
        assert type(info.value) is FormatError and field in str(info.value)
    with dcformat.open(path) as f:
        for name in f.keys():
            f.get(name)  # each tensor alone is intact: only a whole-file read sees the padding


def test_nonzero_padding_in_a_shard_fails_load_file(tmp_path):
    blob, field = padded_badly()
    (tmp_path / "m-00001-of-00001.dcf").write_bytes(blob)
    names = parse_file(blob).entries
    index = {"metadata": {}, "weight_map": {e.name.decode(): "m-00001-of-00001.dcf" for e in names}}
    (tmp_path / "m.dcf.index.json").write_text(json.dumps(index))
    with pytest.raises(DCFormatError) as info:
        dcformat.load_file(tmp_path / "m.dcf.index.json")
    assert type(info.value) is FormatError and field in str(info.value)


@pytest.mark.parametrize("dtype", [0, 14, 255])
def test_unknown_dtype_id(dtype):
    expect(set_entry(GOOD, "raw", dtype=dtype), UnsupportedError, "directory[5].dtype")


@pytest.mark.parametrize("encoding", [0, 6, 255])
def test_unknown_encoding_id(encoding):
    expect(set_entry(GOOD, "raw", encoding=encoding), UnsupportedError, "directory[5].encoding")


@pytest.mark.parametrize("flags", [1, 0x80])
def test_entry_flags(flags):
    expect(set_entry(GOOD, "raw", flags=flags), FormatError, "directory[5].flags")


# ======================================================================================
# raw and zstd payloads
# ======================================================================================


@pytest.mark.parametrize("delta", [-1, 1, -12])
def test_raw_payload_length_mismatch(delta):
    shape = parse_file(GOOD).entry("raw").shape
    blob = set_entry(GOOD, "raw", shape=(shape[0] + delta,) if shape[0] + delta >= 0 else (0,))
    expect(blob, FormatError, "tensors['raw'].payload_length", get="raw")
    blob = build_file([Ent("r", DT["float64"], ENC["raw"], (2, 2), bytes(31))])
    expect(blob, FormatError, "tensors['r'].payload_length", get="r")


@pytest.mark.parametrize("byte", [2, 0xFF])
def test_bool_byte_other_than_0_or_1(byte):
    blob = patch_payload(GOOD, "flag", lambda b: patch(bytes(b), 1, bytes([byte])))
    expect(blob, FormatError, "tensors['flag'].payload", get="flag")
    blob = build_file([Ent("z", DT["bool"], ENC["zstd"], (4,), zstd_frame(bytes([0, 1, byte, 1])))])
    expect(blob, FormatError, "tensors['z'].payload", get="z")


def zstd_file(frame: bytes, numel: int = 32) -> bytes:
    return build_file([Ent("z", DT["float32"], ENC["zstd"], (numel,), frame)])


RAW32 = np.arange(32, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    "frame",
    [
        zstd_frame(RAW32 + bytes(4)),  # declares (and holds) more than the tensor
        zstd_frame(RAW32[:-4]),  # less
        zstd_frame(RAW32, content_size=False),  # no content size
        zstd_frame(RAW32) + b"\0",  # trailing garbage
        zstd_frame(RAW32) + zstd_frame(b""),  # a second frame
        zstd_frame(RAW32) + struct.pack("<II", 0x184D2A50, 2) + b"ab",  # a skippable frame after
        struct.pack("<II", 0x184D2A50, 128) + bytes(128) + zstd_frame(RAW32),  # a skippable frame before
        zstd_frame(RAW32)[:-3],  # truncated
        b"not a zstd frame at all",
        b"",
    ],
    ids=[
        "larger",
        "smaller",
        "no-content-size",
        "trailing-garbage",
        "two-frames",
        "skippable-after",
        "skippable-before",
        "truncated",
        "not-zstd",
        "empty",
    ],
)
def test_bad_zstd_frames(frame):
    assert dcformat.load(zstd_file(zstd_frame(RAW32)))["z"].tobytes() == RAW32
    expect(zstd_file(frame), FormatError, "tensors['z'].payload", get="z")


def test_zstd_frame_whose_content_size_lies():
    frame = bytearray(zstd_frame(RAW32[:-8]))
    assert frame[4] == 0x20 and frame[5] == 120  # single segment, 1-byte content size
    frame[5] = 128  # now it claims the 128 bytes the tensor needs
    expect(zstd_file(bytes(frame)), FormatError, "tensors['z'].payload", get="z")


def window_byte(log: int, mantissa: int = 0) -> int:
    """RFC 8878 Window_Descriptor: Window_Size = 2**log + mantissa * 2**log / 8 (log 10..41)."""
    return (log - 10) << 3 | mantissa


def raw_blocks(data: bytes, size: int) -> bytes:
    """``data`` as raw blocks of ``size`` bytes (the last one marked last)."""
    cuts = list(range(0, len(data), size)) or [0]
    return b"".join(zstd_block(0, len(data[i : i + size]), data[i : i + size], last=i == cuts[-1]) for i in cuts)


@pytest.mark.parametrize(
    "log, mantissa",
    [(27, 1), (28, 0), (31, 0), (41, 7)],
    ids=["2**27+2**24", "2**28", "2**31", "largest"],
)
def test_zstd_window_over_the_limit(log, mantissa):
    """Spec 6.2.1: Window_Size MUST NOT exceed max(content size, 2**27); libzstd's one-shot
    decoder accepts these frames, so the decoder checks the window itself."""
    frame = zstd_frame_by_hand(len(RAW32), raw_blocks(RAW32, 128), single_segment=False, window_byte=window_byte(log, mantissa))
    error = expect(zstd_file(frame), FormatError, "tensors['z'].payload", get="z")
    assert "window" in str(error) or "too much memory" in str(error)  # libzstd's own words past 2**31


def test_zstd_window_at_the_limit_decodes():
    frame = zstd_frame_by_hand(len(RAW32), raw_blocks(RAW32, 128), single_segment=False, window_byte=window_byte(27))
    assert dcformat.load(zstd_file(frame))["z"].tobytes() == RAW32


def test_zstd_window_over_the_limit_in_a_stream():
    """7.4: a zstd-coded stream is a frame "as in 6.2", window rule included."""
    frame = zstd_frame_by_hand(3, raw_blocks(bytes([1, 0, 2]), 3), single_segment=False, window_byte=window_byte(28))
    payload = sparse_payload(streams=[stream(3, frame), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")
    ok = zstd_frame_by_hand(3, raw_blocks(bytes([1, 0, 2]), 3), single_segment=False, window_byte=window_byte(27))
    assert dcformat.load(quant_file(sparse_payload(streams=[stream(3, ok), bitpack_stream([1, 3, 0], 4)])))["q"][1] == 0.5


@pytest.mark.parametrize("level", [1, 9, 19, 22])
@pytest.mark.parametrize("size", [1, 100, 1000, 1025, 100_000, 131_073, 300_000])
def test_frames_the_package_writes_keep_the_window_and_block_rules(level, size):
    """libzstd writes a single-segment frame (window = content size) whenever its window
    covers the content, so its frames keep 6.2.1 at any level, small content included."""
    import zstandard

    from dcformat.codecs import zstd as zstd_codec

    data = np.random.default_rng(size).integers(0, 4, size, dtype=np.uint8).tobytes()
    frame = zstd_codec.compress(data, level=level)
    params = zstandard.get_frame_parameters(frame)
    assert params.window_size <= max(size, 2**27)
    zstd_codec.check_frame(frame, size, field="f", offset=0)  # the block walk too
    assert zstd_codec.decompress_exact(frame, size, field="f", offset=0) == data


BIG = 200_000  # over 128 KiB: one block of this is over every frame's Block_Maximum_Size
RAW_BIG = np.arange(BIG // 4, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    "frame, numel",
    [
        (zstd_frame_by_hand(BIG, zstd_block(0, BIG, RAW_BIG, last=True)), BIG // 4),
        (zstd_frame_by_hand(BIG, zstd_block(1, BIG, b"\x00", last=True)), BIG // 4),
        # window 1 KiB: blocks may hold at most 1 KiB, although the content is 2000 bytes
        (zstd_frame_by_hand(2000, zstd_block(0, 2000, bytes(2000), last=True), single_segment=False, window_byte=window_byte(10)), 500),
        (
            zstd_frame_by_hand(
                2000,
                zstd_block(1, 1025, b"\x00", last=False) + zstd_block(0, 975, bytes(975), last=True),
                single_segment=False,
                window_byte=window_byte(10),
            ),
            500,
        ),
        # single segment: the window is the content size, so a block cannot exceed it either
        (zstd_frame_by_hand(128, zstd_block(2, 129, bytes(129), last=True)), 32),
    ],
    ids=["raw-over-128KiB", "rle-over-128KiB", "raw-over-the-window", "rle-over-the-window", "compressed-over-the-content"],
)
def test_zstd_block_over_block_maximum_size(frame, numel):
    """Spec 6.2.1: every Block_Size within min(Window_Size, 128 KiB) (RFC 8878 3.1.1.2);
    libzstd's one-shot decoder accepts the raw and RLE cases, so the decoder walks the blocks."""
    error = expect(zstd_file(frame, numel), FormatError, "tensors['z'].payload", get="z")
    assert "Block_Maximum_Size" in str(error)


def test_zstd_blocks_at_block_maximum_size_decode():
    data = np.arange(BIG // 4, dtype="<f4").tobytes()
    assert dcformat.load(zstd_file(zstd_frame_by_hand(BIG, raw_blocks(data, 128 * 1024)), BIG // 4))["z"].tobytes() == data
    rle = zstd_block(1, 128 * 1024, b"\x00", last=False) + zstd_block(1, BIG - 128 * 1024, b"\x00", last=True)
    assert not dcformat.load(zstd_file(zstd_frame_by_hand(BIG, rle), BIG // 4))["z"].any()
    small_window = zstd_frame_by_hand(2000, raw_blocks(bytes(2000), 1024), single_segment=False, window_byte=window_byte(10))
    assert not dcformat.load(zstd_file(small_window, 500))["z"].any()


@pytest.mark.parametrize(
    "frame",
    [
        zstd_frame_by_hand(128, zstd_block(3, 128, RAW32, last=True)),  # the reserved block type
        zstd_frame_by_hand(128, zstd_block(0, 128, RAW32, last=False)),  # no last block
        zstd_frame_by_hand(128, zstd_block(0, 128, RAW32, last=True)[:-1]),  # a block cut short
        zstd_frame_by_hand(128, zstd_block(0, 128, RAW32, last=True), checksum=True),  # the checksum missing
        zstd_frame_by_hand(128, zstd_block(0, 128, RAW32, last=True) + zstd_block(0, 0, b"", last=True)),  # a block after the last
        zstd_frame_by_hand(128, zstd_block(0, 0, b"", last=False) * 1000 + zstd_block(0, 128, RAW32, last=True) + b"\x00"),
    ],
    ids=["reserved-type", "no-last-block", "block-cut-short", "checksum-missing", "block-after-the-last", "garbage-after-empty-blocks"],
)
def test_zstd_block_walk(frame):
    expect(zstd_file(frame), FormatError, "tensors['z'].payload", get="z")


def test_zstd_empty_blocks_are_valid_and_the_walk_is_bounded():
    """Empty blocks are valid (RFC 8878), so only the payload bounds their number: the walk
    takes a step per 3 bytes at most, and reads nothing past the payload."""
    frame = zstd_frame_by_hand(128, zstd_block(0, 0, b"", last=False) * 10_000 + zstd_block(0, 128, RAW32, last=True))
    assert dcformat.load(zstd_file(frame))["z"].tobytes() == RAW32


# ======================================================================================
# Quantized payloads
# ======================================================================================


@pytest.mark.parametrize("codebook_dtype", [0, 3, 4, 5, 13, 255])
def test_bad_codebook_dtype(codebook_dtype):
    expect(quant_file(sparse_payload(codebook_dtype=codebook_dtype)), FormatError, "tensors['q'].codebook_dtype", get="q")


@pytest.mark.parametrize("reserved", [1, 0x8000])
def test_quant_reserved_nonzero(reserved):
    expect(quant_file(sparse_payload(reserved=reserved)), FormatError, "tensors['q'].reserved", get="q")


@pytest.mark.parametrize("size", [0, 65537, 2**32 - 1])
def test_codebook_size_out_of_range(size):
    expect(quant_file(sparse_payload(codebook_size=size)), LimitError, "tensors['q'].codebook_size", get="q")


def test_dense_with_gap_bits():
    payload = quant_payload(CB, [bitpack_stream([0] * 20, 3)], gap_bits=2, entry_count=20)
    expect(quant_file(payload, encoding="quant_dense"), FormatError, "tensors['q'].gap_bits", get="q")


@pytest.mark.parametrize("count", [19, 21, 0])
def test_dense_entry_count_not_numel(count):
    payload = quant_payload(CB, [bitpack_stream([1] * count, 3)], entry_count=count)
    expect(quant_file(payload, encoding="quant_dense"), FormatError, "tensors['q'].entry_count", get="q")


@pytest.mark.parametrize("gap_bits", [0, 17, 255])
def test_sparse_gap_bits_out_of_range(gap_bits):
    expect(quant_file(sparse_payload(gap_bits=gap_bits)), FormatError, "tensors['q'].gap_bits", get="q")


def test_sparse_entry_count_over_numel():
    payload = sparse_payload(streams=[bitpack_stream([1] * 21, 3), bitpack_stream([0] * 21, 4)], entry_count=21)
    expect(quant_file(payload), FormatError, "tensors['q'].entry_count", get="q")


def test_quantized_payload_shorter_than_its_header():
    expect(quant_file(sparse_payload()[:15]), FormatError, "tensors['q'].quant_header", get="q")


def test_codebook_truncated():
    payload = quant_payload(CB, [], gap_bits=2, entry_count=3)[:-1]
    expect(quant_file(payload), FormatError, "tensors['q'].codebook", get="q")
    expect(quant_file(sparse_payload(codebook_size=1000)), FormatError, "tensors['q'].codebook", get="q")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cb_dtype", [np.float32, np.float16])
def test_non_finite_codebook(bad, cb_dtype):
    codebook = np.array([0.0, bad, 1.0], dtype=cb_dtype)
    expect(quant_file(sparse_payload(codebook=codebook)), FormatError, "tensors['q'].codebook", get="q")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("value, dtype", [(0.1, "float16"), (1e-8, "float16"), (70000.0, "float16"), (1.0 + 2**-10, "bfloat16")])
def test_codebook_value_not_representable(value, dtype):
    codebook = np.array([0.0, 0.5, value], dtype=np.float32)
    blob = quant_file(sparse_payload(codebook=codebook), dtype=dtype)
    with dcformat.open(blob) as f:
        with pytest.raises(FormatError) as info:
            f.get("q")
    if dtype == "bfloat16" and dcformat.format.dtypes.bfloat16() is None:
        assert type(info.value) is UnsupportedError
    else:
        assert type(info.value) is FormatError and "tensors['q'].codebook" in str(info.value)


def test_float16_codebook_for_float16_and_float64_tensors_is_fine():
    codebook = np.array([0.0, 0.1, -3.0], dtype=np.float16)
    for dtype in ("float16", "float32", "float64"):
        out = dcformat.load(quant_file(sparse_payload(codebook=codebook), dtype=dtype))["q"]
        assert out[6] == np.float16(-3.0) and out[1] == np.float16(0.1)


@pytest.mark.parametrize("dtype", ["int8", "int32", "uint16", "bool"])
def test_quantized_encoding_of_a_non_float_dtype(dtype):
    expect(quant_file(sparse_payload(), dtype=dtype), FormatError, "tensors['q'].dtype", get="q")


@pytest.mark.parametrize("coder", [0, 4, 255])
@pytest.mark.parametrize("stream_name", ["codes", "gaps"])
def test_unknown_coder(coder, stream_name):
    body_codes, body_gaps = ref_pack([1, 0, 2], 2), ref_pack([1, 3, 0], 2)
    streams = [stream(coder if stream_name == "codes" else 1, body_codes), stream(coder if stream_name == "gaps" else 1, body_gaps)]
    expect(quant_file(sparse_payload(streams=streams)), UnsupportedError, f"tensors['q'].{stream_name}.coder", get="q")


@pytest.mark.parametrize("stream_name", ["codes", "gaps"])
def test_stream_body_length_past_the_payload(stream_name):
    codes, gaps = ref_pack([1, 0, 2], 2), ref_pack([1, 3, 0], 2)
    streams = [
        stream(1, codes, body_length=len(codes) + (50 if stream_name == "codes" else 0)),
        stream(1, gaps, body_length=len(gaps) + (1 if stream_name == "gaps" else 0)),
    ]
    expect(quant_file(sparse_payload(streams=streams)), FormatError, f"tensors['q'].{stream_name}.body_length", get="q")
    streams[0 if stream_name == "codes" else 1] = stream(1, b"", body_length=2**64 - 1)
    expect(quant_file(sparse_payload(streams=streams)), FormatError, f"tensors['q'].{stream_name}.body_length", get="q")


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_stream_header_truncated(cut):
    payload = sparse_payload()
    gaps_at = len(payload) - 9 - 1
    expect(quant_file(payload[: gaps_at + 9 - cut]), FormatError, "tensors['q'].gaps", get="q")
    expect(quant_file(payload[: 16 + 12 + 9 - cut]), FormatError, "tensors['q'].codes", get="q")


@pytest.mark.parametrize("extra", [b"\0", b"\x01\x02\x03"])
def test_bytes_after_the_last_stream(extra):
    expect(quant_file(sparse_payload() + extra), FormatError, "tensors['q'].payload", get="q")
    dense = quant_payload(CB, [bitpack_stream([1] * 20, 3)], entry_count=20)
    expect(quant_file(dense + extra, encoding="quant_dense"), FormatError, "tensors['q'].payload", get="q")


@pytest.mark.parametrize("body", [b"", ref_pack([1, 0, 2], 2) + b"\0", b"\0" * 10], ids=["short", "one-extra", "long"])
def test_bitpack_wrong_length(body):
    payload = sparse_payload(streams=[stream(1, body), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")


def test_bitpack_nonzero_padding_bits():
    body = bytearray(ref_pack([1, 0, 2], 2))  # 6 bits used of 8
    body[-1] |= 0x80
    expect(quant_file(sparse_payload(streams=[stream(1, bytes(body)), bitpack_stream([1, 3, 0], 4)])), FormatError, "tensors['q'].codes", get="q")
    gaps = bytearray(ref_pack([1, 3, 0], 2))
    gaps[-1] |= 0x40
    expect(quant_file(sparse_payload(streams=[bitpack_stream([1, 0, 2], 3), stream(1, bytes(gaps))])), FormatError, "tensors['q'].gaps", get="q")


def test_code_out_of_range_bitpack():
    # codebook of 3: codes take 2 bits, so the bit pattern 3 is possible and must be rejected
    payload = sparse_payload(streams=[stream(1, ref_pack([1, 3, 2], 2)), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")
    dense = quant_payload(CB, [stream(1, ref_pack([0] * 19 + [3], 2))], entry_count=20)
    expect(quant_file(dense, encoding="quant_dense"), FormatError, "tensors['q'].codes", get="q")


def test_code_out_of_range_zstd():
    payload = sparse_payload(streams=[stream(3, zstd_frame(bytes([1, 200, 2]))), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")
    big_cb = np.arange(300, dtype=np.float32)  # u16 symbols
    payload = quant_payload(
        big_cb, [stream(3, zstd_frame(np.array([5, 300], "<u2").tobytes())), bitpack_stream([0, 0], 4)], gap_bits=2, entry_count=2
    )
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")


def test_gap_out_of_range_zstd():
    payload = sparse_payload(streams=[bitpack_stream([1, 0, 2], 3), stream(3, zstd_frame(bytes([1, 4, 0])))])
    expect(quant_file(payload), FormatError, "tensors['q'].gaps", get="q")


@pytest.mark.parametrize("content", [bytes(3 * 2), bytes(2)], ids=["2n-for-u8", "short"])
def test_zstd_stream_wrong_content_size(content):
    payload = sparse_payload(streams=[stream(3, zstd_frame(content)), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")


def test_huffman_table_larger_than_the_alphabet():
    body = struct.pack("<I", 4) + ref_pack([1, 1, 0, 0], 5) + struct.pack("<IQB", 1, 3, 0) + struct.pack("<Q", 3) + b"\x00"
    payload = sparse_payload(streams=[stream(2, body), bitpack_stream([1, 3, 0], 4)])
    expect(quant_file(payload), FormatError, "tensors['q'].codes", get="q")


@pytest.mark.parametrize("gaps", [[1, 3, 14], [15, 3, 0], [15, 15, 15]])
def test_gaps_running_past_the_end(gaps):
    payload = sparse_payload(gap_bits=4, streams=[bitpack_stream([1, 0, 2], 3), bitpack_stream(gaps, 16)])
    error = expect(quant_file(payload), FormatError, "tensors['q'].gaps", get="q")
    assert "past the end" in str(error)
    last_ok = [1, 3, 13]  # ends exactly at position 19
    assert dcformat.load(quant_file(sparse_payload(gap_bits=4, streams=[bitpack_stream([1, 0, 2], 3), bitpack_stream(last_ok, 16)])))


def test_get_quantized_checks_the_same():
    with dcformat.open(quant_file(sparse_payload(gap_bits=4, streams=[bitpack_stream([1, 0, 2], 3), bitpack_stream([15, 3, 0], 16)]))) as f:
        with pytest.raises(FormatError):
            f.get_quantized("q")


def test_gap_sum_past_the_tensor_is_spec_6_5_1():
    """Spec 6.5.1 (positions exact, the last one < N): the catalogue's case is
    ``test_gaps_running_past_the_end``; here the largest gaps of the widest gap_bits."""
    payload = sparse_payload(gap_bits=16, streams=[bitpack_stream([1, 0, 2], 3), bitpack_stream([65535] * 3, 1 << 16)])
    expect(quant_file(payload), FormatError, "tensors['q'].gaps", get="q")
    assert dcformat.format.sparse.last_position(np.full(3, 65535, np.uint16)) == 3 * 65536 - 1


# ======================================================================================
# float_split (spec 6.6)
# ======================================================================================

FLOAT_SPLIT = 5
F16 = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, np.inf, np.nan], dtype="<f2")
MIN_BLOCK = 4096  # spec 6.6.2: the smallest block_elements
#: 2 * 4096 + 3 float16 values: three blocks (4096, 4096, 3) at the smallest B
F16_MANY = (np.arange(2 * MIN_BLOCK + 3, dtype=np.uint16) * np.uint16(40503)).view("<f2")


def fs_header(head_bits: int = 2, block_elements: int = MIN_BLOCK, reserved: bytes = bytes(3)) -> bytes:
    """Spec 6.6.2: u8 head_bits, 3 reserved bytes, u32 block_elements."""
    return struct.pack("<B3sI", head_bits, reserved, block_elements)


def f16_streams(values: np.ndarray = F16, head_bits: int = 2) -> list[bytes]:
    """One block's streams by spec 6.6.1 for float16 (E = 5, M = 10), worked by hand: with
    L = 10 - h, the head stream (alphabet 2**(5 + h)) of ``x >> L``, then the planes of the
    R = 1 + L bits ``sign << L | low mantissa``, 8 bits from the top, then R mod 8."""
    bits = values.view("<u2").astype(np.int64)
    low = 10 - head_bits
    heads = (bits >> low) & ((1 << (5 + head_bits)) - 1)
    rest = (bits >> 15) << low | (bits & ((1 << low) - 1))
    out, shift = [bitpack_stream(heads.tolist(), 1 << (5 + head_bits))], 1 + low
    for width in [8] * ((1 + low) // 8) + ([(1 + low) % 8] if (1 + low) % 8 else []):
        shift -= width
        out.append(bitpack_stream(((rest >> shift) & ((1 << width) - 1)).tolist(), 1 << width))
    return out


def f16_payload(values: np.ndarray = F16, head_bits: int = 2, block_elements: int = MIN_BLOCK) -> bytes:
    """The header, then every block's streams."""
    blocks = [values[lo : lo + block_elements] for lo in range(0, values.size, block_elements)]
    return fs_header(head_bits, block_elements) + b"".join(b"".join(f16_streams(block, head_bits)) for block in blocks)


def many_blocks() -> list[bytes]:
    """F16_MANY's three blocks, each its streams joined."""
    return [b"".join(f16_streams(F16_MANY[lo : lo + MIN_BLOCK])) for lo in range(0, F16_MANY.size, MIN_BLOCK)]


def float_split_file(payload: bytes, *, dtype: str = "float16", numel: int | tuple = F16.size, version=(1, 1)) -> bytes:
    shape = numel if isinstance(numel, tuple) else (numel,)
    return build_file([Ent("f", DT[dtype], FLOAT_SPLIT, shape, payload)], version=version)


def test_float_split_helpers_make_a_valid_file():
    assert dcformat.load(float_split_file(f16_payload()))["f"].tobytes() == F16.tobytes()
    for head_bits in (0, 3, 10):  # planes of 8 and 3; one of 8; one of 1
        assert dcformat.load(float_split_file(f16_payload(head_bits=head_bits)))["f"].tobytes() == F16.tobytes()
    many = float_split_file(fs_header() + b"".join(many_blocks()), numel=F16_MANY.size)
    assert dcformat.load(many)["f"].tobytes() == F16_MANY.tobytes()
    with dcformat.open(many) as f:
        assert f.info("f").encoding == "float_split"


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int8", "bool"])
def test_float_split_of_a_non_float_dtype(dtype):
    """6.6.2: the dtype MUST be a float; an int16 tensor has the same width but no exponent."""
    expect(float_split_file(f16_payload(), dtype=dtype), FormatError, "tensors['f'].dtype", get="f")


@pytest.mark.parametrize("size", [0, 1, 7])
def test_float_split_payload_shorter_than_its_header(size):
    expect(float_split_file(fs_header()[:size], numel=0), FormatError, "tensors['f'].float_split_header", get="f")


@pytest.mark.parametrize("reserved", [b"\1\0\0", b"\0\x80\0", b"\0\0\xff", b"\xff\xff\xff"])
def test_float_split_reserved_not_zero(reserved):
    """6.6.2: the 3 reserved bytes MUST be zero, whatever follows (here an empty tensor's header alone)."""
    error = expect(float_split_file(fs_header(reserved=reserved), numel=0), FormatError, "tensors['f'].reserved", get="f")
    assert error.offset is not None
    good = float_split_file(fs_header(), numel=0)
    assert dcformat.load(good)["f"].size == 0


@pytest.mark.parametrize(
    "dtype, head_bits",
    [("float32", 9), ("float16", 11), ("bfloat16", 8), ("float64", 6), ("float16", 255), ("float64", 52)],
)
def test_float_split_head_bits_too_large(dtype, head_bits):
    """6.6.2: h is at most min(M, 16 - E): 8, 10, 7 and 5 (heads of at most 16 bits)."""
    expect(float_split_file(fs_header(head_bits), numel=0, dtype=dtype), FormatError, "tensors['f'].head_bits", get="f")


@pytest.mark.parametrize("dtype, head_bits", [("float32", 8), ("float16", 10), pytest.param("bfloat16", 7, marks=needs_ml_dtypes), ("float64", 5)])
def test_float_split_largest_head_bits_is_valid(dtype, head_bits):
    assert dcformat.load(float_split_file(fs_header(head_bits), numel=(0, 2), dtype=dtype))["f"].shape == (0, 2)


@pytest.mark.parametrize("block_elements", [0, 1, 1024, MIN_BLOCK - 1])
def test_float_split_block_elements_too_small(block_elements):
    """6.6.2: B is at least 4096, which bounds the number of blocks by the element count."""
    payload = fs_header(block_elements=block_elements) + b"".join(f16_streams())
    expect(float_split_file(payload), FormatError, "tensors['f'].block_elements", get="f")
    expect(float_split_file(fs_header(block_elements=block_elements), numel=0), FormatError, "tensors['f'].block_elements", get="f")


@pytest.mark.parametrize("block_elements", [MIN_BLOCK, 5000, F16.size * 1000, 2**32 - 1])
def test_float_split_block_elements_at_and_above_the_minimum(block_elements):
    assert dcformat.load(float_split_file(f16_payload(block_elements=block_elements)))["f"].tobytes() == F16.tobytes()


@pytest.mark.parametrize("shape", [(10 * MIN_BLOCK,), (4096, MIN_BLOCK), (2**19, 256)])
def test_float_split_block_count_that_cannot_fit(shape):
    """6.6.2: ceil(N / B) * (1 + Q) * 9 bytes of stream headers must fit after the header; a
    decoder checks it before reading any block (here 10 blocks of 3 streams in 269 bytes, and
    4096 blocks behind one block's streams)."""
    payload = fs_header() + (bytes(269) if shape[0] == 10 * MIN_BLOCK else many_blocks()[0])
    error = expect(float_split_file(payload, numel=shape), FormatError, "tensors['f'].payload", get="f")
    assert "blocks" in str(error)


def test_float_split_block_count_bound_is_exact():
    """With 270 bytes the bound of 10 blocks of 3 streams holds, so the first stream is read
    (its coder 0 is unknown) before anything else is said."""
    expect(float_split_file(fs_header() + bytes(270), numel=10 * MIN_BLOCK), UnsupportedError, "tensors['f'].blocks[0].heads.coder", get="f")


def test_float_split_missing_block():
    """Three blocks declared by N = 2 * 4096 + 3 and B = 4096; the payload holds two."""
    blocks = many_blocks()
    expect(float_split_file(fs_header() + blocks[0] + blocks[1], numel=F16_MANY.size), FormatError, "tensors['f'].blocks[2].heads", get="f")


def test_float_split_extra_block():
    blocks = many_blocks()
    payload = fs_header() + b"".join(blocks) + blocks[2]
    expect(float_split_file(payload, numel=F16_MANY.size), FormatError, "tensors['f'].payload", get="f")


def test_float_split_blocks_out_of_order():
    """Block 1 holds 4096 symbols per stream: the 3-element block in its place is too short for it."""
    blocks = many_blocks()
    payload = fs_header() + blocks[0] + blocks[2] + blocks[1]
    expect(float_split_file(payload, numel=F16_MANY.size), FormatError, "tensors['f'].blocks[1].heads", get="f")


@pytest.mark.parametrize("stream", [0, 1, 2])
def test_float_split_block_with_a_short_stream(stream):
    """A stream of block 1 one symbol short (its bit-packed body of the wrong length)."""
    streams = f16_streams(F16_MANY[MIN_BLOCK : 2 * MIN_BLOCK])
    short = f16_streams(F16_MANY[MIN_BLOCK : 2 * MIN_BLOCK - 8])[stream]  # 8 symbols: whole bytes even for the 1-bit plane
    streams[stream] = short
    blocks = many_blocks()
    payload = fs_header() + blocks[0] + b"".join(streams) + blocks[2]
    name = "heads" if stream == 0 else f"planes[{stream - 1}]"
    expect(float_split_file(payload, numel=F16_MANY.size), FormatError, f"tensors['f'].blocks[1].{name}", get="f")


@pytest.mark.parametrize("kept, missing", [(2, "blocks[0].planes[1]"), (1, "payload")])
def test_float_split_too_few_streams(kept, missing):
    """6.6.2: a block is 1 + Q streams (3 for float16 at h = 2); the payload ends where a
    stream header should start, or (one stream of 14 bytes) before the 27 bytes of one
    block's stream headers, which the block count check sees first."""
    expect(float_split_file(fs_header() + b"".join(f16_streams()[:kept])), FormatError, f"tensors['f'].{missing}", get="f")


def test_float_split_no_stream_at_all():
    """The header alone for a tensor of 8 elements: one block's 27 bytes of stream headers cannot fit."""
    expect(float_split_file(fs_header()), FormatError, "tensors['f'].payload", get="f")


def test_float_split_without_its_header():
    """The layout of the 1.1 drafts (streams only): the first stream's header read as 6.6.2's is
    head_bits 1, then reserved bytes holding the body length."""
    expect(float_split_file(b"".join(f16_streams())), FormatError, "tensors['f'].reserved", get="f")


def test_float_split_float32_streams_for_a_float16_tensor():
    streams = f16_streams() + [bitpack_stream([0] * F16.size, 256)]  # four streams: a float32's count
    expect(float_split_file(fs_header() + b"".join(streams)), FormatError, "tensors['f'].payload", get="f")


def test_float_split_streams_of_another_head_width():
    """h = 0's streams (5-bit heads) under a header saying h = 2 (7-bit heads): the bodies' lengths disagree."""
    expect(float_split_file(fs_header(2) + b"".join(f16_streams(head_bits=0))), FormatError, "tensors['f'].blocks[0]", get="f")


@pytest.mark.parametrize("extra", [b"\0", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00"], ids=["one-byte", "an-empty-stream"])
def test_float_split_bytes_after_the_last_stream(extra):
    expect(float_split_file(f16_payload() + extra), FormatError, "tensors['f'].payload", get="f")
    expect(float_split_file(fs_header() + extra, numel=0), FormatError, "tensors['f'].payload", get="f")


@pytest.mark.parametrize("head_bits, bad", [(0, 32), (2, 128)])
def test_float_split_head_out_of_range_zstd(head_bits, bad):
    """7.1: every symbol < A; float16's head alphabet is 2**(5 + h), and a zstd-coded stream
    (u8 symbols) can hold any byte, so 32 (h = 0) and 128 (h = 2) must be rejected."""
    heads = ((F16.view("<u2").astype(np.int64) >> (10 - head_bits)) & ((1 << (5 + head_bits)) - 1)).astype(np.uint8)
    planes = f16_streams(head_bits=head_bits)[1:]
    assert dcformat.load(float_split_file(fs_header(head_bits) + b"".join([stream(3, zstd_frame(heads.tobytes()))] + planes)))
    heads[3] = bad
    payload = fs_header(head_bits) + b"".join([stream(3, zstd_frame(heads.tobytes()))] + planes)
    expect(float_split_file(payload), FormatError, "tensors['f'].blocks[0].heads", get="f")


def test_float_split_head_out_of_range_zstd_u16():
    """At h = 4 float16's heads have alphabet 512: a zstd stream of u16 symbols, where 512 is out of range."""
    heads = ((F16.view("<u2").astype(np.int64) >> 6) & 511).astype("<u2")
    planes = f16_streams(head_bits=4)[1:]
    assert dcformat.load(float_split_file(fs_header(4) + b"".join([stream(3, zstd_frame(heads.tobytes()))] + planes)))
    heads[0] = 512
    payload = fs_header(4) + b"".join([stream(3, zstd_frame(heads.tobytes()))] + planes)
    expect(float_split_file(payload), FormatError, "tensors['f'].blocks[0].heads", get="f")


def test_float_split_one_bit_plane_out_of_range_zstd():
    """At h = 2 float16's last plane has 1 bit: a zstd-coded symbol 2 is out of range."""
    streams = f16_streams()
    plane = np.zeros(F16.size, np.uint8)
    plane[5] = 2
    payload = fs_header() + streams[0] + streams[1] + stream(3, zstd_frame(plane.tobytes()))
    expect(float_split_file(payload), FormatError, "tensors['f'].blocks[0].planes[1]", get="f")


@pytest.mark.parametrize("plane", [0, 1])
def test_float_split_truncated_plane_stream(plane):
    """A plane body one byte short: as a bit-packed body of the wrong length, and as a
    body_length that runs past the payload once the payload is cut."""
    streams = f16_streams(head_bits=0)  # planes of 8 and 3 bits: 8 and 3 bytes for 8 symbols
    body = streams[1 + plane][9:]
    streams[1 + plane] = stream(1, body[:-1])
    expect(float_split_file(fs_header(0) + b"".join(streams)), FormatError, f"tensors['f'].blocks[0].planes[{plane}]", get="f")
    whole = fs_header(0) + b"".join(f16_streams(head_bits=0)[: 2 + plane])
    expect(float_split_file(whole[:-1]), FormatError, f"tensors['f'].blocks[0].planes[{plane}].body_length", get="f")


@pytest.mark.parametrize("coder", ["huffman", "zstd"])
def test_float_split_truncated_plane_stream_other_coders(coder):
    """The same cut inside a Huffman or zstd plane body, behind a valid CRC."""
    blob = dcformat.save({"f": np.linspace(-3, 3, 4000, dtype=np.float32)}, options=EncodeOptions(dense="float_split", coder=coder))
    p = parse_file(blob)
    e = p.entry("f")
    assert e.encoding == FLOAT_SPLIT
    assert e.payload[0] == 0 and int.from_bytes(e.payload[4:8], "little") == 2**20  # the encoder's h (float32) and B
    # the first plane stream: skip the header and the head stream
    at = 8 + 9 + int.from_bytes(e.payload[9:17], "little")
    length = int.from_bytes(e.payload[at + 1 : at + 9], "little")
    cut = bytearray(e.payload)
    cut[at + 1 : at + 9] = (length - 1).to_bytes(8, "little")
    del cut[at + 9 + length - 1]
    expect(patch_payload(blob, "f", lambda b: bytes(cut)), FormatError, "tensors['f'].blocks[0].planes[0]", get="f")


def test_float_split_in_a_version_1_0_file():
    """10.4: encoding 5 is defined from 1.1; a file declaring 1.0 MUST NOT use it, and a
    decoder that knows the id rejects the file at open, as an invalid id."""
    blob = float_split_file(f16_payload(), version=(1, 0))
    error = expect(blob, FormatError, "directory[0].encoding")
    assert "1.1" in str(error)
    assert dcformat.load(set_header(blob, version_minor=1))["f"].tobytes() == F16.tobytes()


# ======================================================================================
# Every single-byte corruption is detected
# ======================================================================================


def small_file() -> bytes:
    q = QuantizedTensor.from_entries((6, 7), np.array([0.0, 0.5, -1.0], np.float32), [1, 9, 20, 41], [1, 2, 2, 1])
    return dcformat.save(
        {"r": np.array([1, -2, 3], dtype=np.int8), "b": np.array([True, False]), "z": np.zeros(40, np.float32), "qs": q, "qh": q, "qz": q, "qd": q},
        metadata={"k": "v"},
        overrides={
            "z": EncodeOptions(dense="zstd"),
            "qs": EncodeOptions(layout="sparse", gap_bits=3, coder="bitpack"),
            "qh": EncodeOptions(layout="sparse", gap_bits=2, coder="huffman"),
            "qz": EncodeOptions(layout="sparse", gap_bits=4, coder="zstd"),
            "qd": EncodeOptions(layout="dense", coder="bitpack"),
        },
    )


def test_every_single_byte_flip_is_detected():
    blob = small_file()
    with dcformat.open(blob) as f:
        f.verify()
    assert len(blob) < 1200
    for position in range(len(blob)):
        for mask in (0xFF, 0x01):
            bad = bytearray(blob)
            bad[position] ^= mask
            try:
                with dcformat.DCFile(bytes(bad)) as f:
                    f.verify()
            except DCFormatError:
                continue
            pytest.fail(f"flipping byte {position} with 0x{mask:02x} went unnoticed")


def _try_everything(blob: bytes) -> None:
    """Open, inspect, decode and verify; any outcome but a non-DCFormatError exception is fine."""
    try:
        with dcformat.open(blob) as f:
            f.metadata()
            for name in f.keys():
                f.info(name)
                f.get(name)
                if f.entry(name).encoding in (3, 4):
                    f.get_quantized(name)
            f.verify()
    except DCFormatError:
        pass


@given(st.sampled_from(["r", "b", "z", "qs", "qh", "qz", "qd"]), st.integers(0, 10**6), st.integers(1, 255))
@settings(max_examples=2 * settings.default.max_examples)
def test_payload_damage_behind_a_valid_crc_is_an_error_or_harmless(name, position, mask):
    """The decoders' own checks, with the payload CRC recomputed so the CRC cannot catch it."""
    blob = SMALL
    e = parse_file(blob).entry(name)
    if not e.payload:
        return
    i = position % len(e.payload)
    _try_everything(patch_payload(blob, name, lambda b: (b.__setitem__(i, b[i] ^ mask), b)[1]))


@pytest.mark.parametrize("name", ["qs", "qh", "qz", "qd", "z"])
def test_truncated_and_extended_payloads_behind_a_valid_crc(name):
    e = parse_file(SMALL).entry(name)
    for cut in range(len(e.payload)):
        _try_everything(patch_payload(SMALL, name, lambda b, cut=cut: b[:cut]))
        _try_everything(patch_payload(SMALL, name, lambda b, cut=cut: b[:cut] + b"\x00\xff" + b[cut:]))


def test_index_damage_behind_a_valid_crc_is_an_error_or_harmless():
    blob = SMALL
    index = Header.parse(blob[:40]).index_offset
    for position in range(index, len(blob) - 4):
        for mask in (0x01, 0xFF):
            bad = bytearray(blob)
            bad[position] ^= mask
            _try_everything(fix_index_crc(bytes(bad)))


def test_header_damage_behind_a_valid_crc_is_an_error_or_harmless():
    for position in range(8, 36):
        for mask in (0x01, 0x02, 0x10, 0x80, 0xFF):
            bad = bytearray(SMALL)
            bad[position] ^= mask
            _try_everything(set_header(bytes(bad)))  # only recomputes the header CRC


SMALL = small_file()


def test_metadata_with_an_escaped_lone_surrogate():
    """Spec 4.1: valid JSON grammar, but not Unicode; such a file could not be saved again."""
    meta = b'{"a":"\\ud800"}'
    blob = build_file([], metadata=meta)
    expect(blob, FormatError, "metadata")
