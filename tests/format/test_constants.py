"""The wire constants in code match the tables of the normative spec, field for field."""

import random
import re
import struct

import pytest

from dcformat.format import constants
from dcformat.format import structs as layout
from dcformat.format.constants import Coder, DType, Encoding
from tests.support.paths import REPO_ROOT

SPEC = (REPO_ROOT / "spec" / "dcformat.md").read_text(encoding="utf-8")


def spec_table(heading: str, first_column: str) -> list[list[str]]:
    """Rows of the first table after ``heading`` whose header starts with ``first_column``."""
    section = SPEC[SPEC.index(heading) :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_dtype_table_matches_enum_and_sizes():
    rows = spec_table("### 5.2 Data types", "id")
    assert {int(r[0]): r[1] for r in rows} == {d.value: d.name.lower() for d in DType}
    assert {int(r[0]): int(r[2]) for r in rows} == {d.value: constants.DTYPE_ITEMSIZE[d] for d in DType}


def test_encoding_table_matches_enum():
    rows = spec_table("## 6. Encodings", "id")
    assert {int(r[0]): r[1] for r in rows} == {e.value: e.name.lower() for e in Encoding}


def test_coder_table_matches_enum():
    rows = spec_table("### 7.1 Stream header", "id")
    assert {int(r[0]): r[1] for r in rows} == {c.value: c.name.lower() for c in Coder}


def test_header_table_matches_layout():
    rows = spec_table("## 3. Header", "offset")
    sizes = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "8 bytes": 8}
    offset = 0
    for (spec_offset, name, kind, _), subcon in zip(rows, layout.Header.subcons):
        assert int(spec_offset) == offset, name
        assert subcon.name == name
        assert subcon.sizeof() == sizes[kind]
        offset += sizes[kind]
    assert len(rows) == len(layout.Header.subcons)
    assert offset == constants.HEADER_SIZE == layout.Header.sizeof()
    assert layout.HEADER_CRC_COVERS == int(rows[-1][0])


def test_magic_and_version():
    rows = spec_table("## 3. Header", "offset")
    magic_hex = rows[0][3].split("`")[1]
    assert bytes(int(b, 16) for b in magic_hex.split()) == constants.MAGIC
    assert int(rows[1][3]) == constants.VERSION_MAJOR
    assert int(rows[2][3].split()[0]) == constants.VERSION_MINOR  # the newest minor version


def test_quant_header_table_matches_layout():
    rows = spec_table("### 6.3 Quantized payloads", "offset")
    offset = 0
    sizes = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
    for (spec_offset, name, kind, _), subcon in zip(rows, layout.QuantHeader.subcons):
        assert (int(spec_offset), name) == (offset, subcon.name)
        assert subcon.sizeof() == sizes[kind]
        offset += sizes[kind]
    assert offset == layout.QUANT_HEADER_SIZE == layout.QuantHeader.sizeof()


def test_entry_table_matches_layout():
    rows = spec_table("### 5.1 Entries", "field")
    assert [r[0] for r in rows] == [s.name for s in layout.TensorEntry.subcons]


def _number(text: str) -> int:
    text = text.split("(")[-1].rstrip(")") if "(" in text and "MiB" in text else text
    if m := re.fullmatch(r"2\^(\d+)(?: \(\d+\))?", text):
        return 1 << int(m.group(1))
    return int(text.replace(",", ""))


@pytest.mark.parametrize(
    "name, value",
    [
        ("metadata_length", constants.MAX_METADATA_BYTES),
        ("directory_length", constants.MAX_DIRECTORY_BYTES),
        ("tensor_count", constants.MAX_TENSORS),
        ("rank", constants.MAX_RANK),
        ("Huffman code length", constants.MAX_HUFFMAN_CODE_LENGTH),
    ],
)
def test_limits_match_spec(name, value):
    rows = {r[0]: r[1] for r in spec_table("## 9. Limits", "limit")}
    spec_value = rows[name].replace("at most ", "")
    assert _number(spec_value) == value


def test_range_limits_match_spec():
    rows = {r[0]: r[1] for r in spec_table("## 9. Limits", "limit")}
    assert rows["elements per tensor"] == "at most 2^48 (the product of the nonzero dimensions)"
    assert constants.MAX_ELEMENTS == 2**48
    assert rows["name_length"] == f"1 to {constants.MAX_NAME_BYTES} bytes"
    assert rows["codebook_size"] == f"1 to {constants.MAX_CODEBOOK_SIZE}"
    assert rows["gap_bits (quant_sparse)"] == f"1 to {constants.MAX_GAP_BITS}"
    assert rows["expansion"] == f"decoded bytes at most {constants.MAX_EXPANSION} * (payload_length + {constants.EXPANSION_SLACK})"


def test_alignment_and_data_start():
    assert "each starting at a multiple of 64" in SPEC
    assert constants.ALIGNMENT == 64 and constants.DATA_START == 64


@pytest.mark.parametrize(
    "declaration, parse",
    [
        (layout.StreamHeader, layout.parse_stream_header),
        (layout.QuantHeader, layout.parse_quant_header),
        (layout.FloatSplitHeader, layout.parse_float_split_header),
    ],
)
def test_fast_header_parsers_read_what_the_declarations_say(declaration, parse):
    """The struct-based parsers of the fixed headers give construct's fields, from bytes and
    from a memoryview into a larger buffer, for patterned and random contents."""
    size = declaration.sizeof()
    rng = random.Random(size)
    samples = [bytes(size), b"\xff" * size, bytes(range(1, size + 1))] + [rng.randbytes(size) for _ in range(50)]
    for data in samples:
        expected = declaration.parse(data)
        names = [field.name for field in declaration.subcons]
        for source in (data, memoryview(b"\x01" + data + b"\x02")[1 : 1 + size]):
            parsed = parse(source)
            assert [getattr(parsed, name) for name in names] == [expected[name] for name in names]


def test_fast_entry_parser_reads_what_the_declaration_says():
    """The directory entry's struct-based parser gives construct's fields for names of 1 to
    40 bytes and ranks 0 to 8 with random contents, and refuses bytes of another length."""
    rng = random.Random(5)
    names = [field.name for field in layout.TensorEntry.subcons]
    for _ in range(300):
        name = rng.randbytes(rng.randint(1, 40))
        rank = rng.randint(0, 8)
        fields = dict(name_length=len(name), name=name, dtype=rng.randrange(256), encoding=rng.randrange(256), rank=rank, flags=rng.randrange(256))
        fields.update(shape=[rng.getrandbits(64) for _ in range(rank)], payload_offset=rng.getrandbits(64), payload_length=rng.getrandbits(64))
        data = layout.TensorEntry.build({**fields, "payload_crc32": rng.getrandbits(32)})
        expected, parsed = layout.TensorEntry.parse(data), layout.parse_entry(data)
        assert [getattr(parsed, k) for k in names if k != "shape"] == [expected[k] for k in names if k != "shape"]
        assert list(parsed.shape) == list(expected.shape)
        with pytest.raises(struct.error):
            layout.parse_entry(data + b"\0")
