"""Malformed files: one test per class of damage, each asserting the error type and the field named.

Bad files are made from good ones by patching bytes, with every checksum that covers the
patch recomputed (header CRC, index CRC, payload CRC) so that each test reaches the check
it is about, not an earlier checksum. ``fuzz.dcfbuild.build_file`` builds files from scratch
where patching would be clumsy.
"""

from __future__ import annotations

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
from dcformat.format.structs import HEADER_CRC_COVERS, Header
from fuzz.dcfbuild import DT, ENC, Ent, build_file, crc32, stream
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


@pytest.mark.parametrize("minor", [1, 0xFFFF])
def test_newer_minor_version_opens(minor):
    blob = set_header(GOOD, version_minor=minor)
    with dcformat.open(blob) as f:
        assert f.version == (1, minor)
        f.verify()


@pytest.mark.parametrize("what, value", [("encoding", 9), ("dtype", 99)])
def test_unknown_id_in_a_newer_minor_file_fails_only_at_get(what, value):
    blob = set_header(set_entry(GOOD, "raw", **{what: value}), version_minor=1)
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
    blob = set_header(patch_payload(GOOD, "qb", lambda b: patch(bytes(b), 16 + 16, b"\x09")), version_minor=1)
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
    ],
)
def test_bad_metadata(metadata):
    expect(set_metadata(GOOD, metadata), FormatError, "metadata")


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


@pytest.mark.parametrize("dtype", [0, 14, 255])
def test_unknown_dtype_id(dtype):
    expect(set_entry(GOOD, "raw", dtype=dtype), UnsupportedError, "directory[5].dtype")


@pytest.mark.parametrize("encoding", [0, 5, 255])
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
    if dtype == "bfloat16" and dcformat.format.dtypes.BFLOAT16 is None:
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
