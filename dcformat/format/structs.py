"""The byte layout of every fixed structure, declared once with construct (spec sections 3-7).

The same declarations parse and build. Bulk payloads (symbols, raw tensor bytes) are
moved with numpy, never through construct.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from construct import Array, Bytes, FormatField, Int8ul, Int16ul, Int32ul, Int64ul, Struct, this

#: Spec section 3: the fixed 40-byte file header (zero padding follows up to byte 64).
Header = Struct(
    "magic" / Bytes(8),
    "version_major" / Int16ul,
    "version_minor" / Int16ul,
    "flags" / Int32ul,
    "tensor_count" / Int32ul,
    "metadata_length" / Int32ul,
    "index_offset" / Int64ul,
    "directory_length" / Int32ul,
    "header_crc32" / Int32ul,
)
#: The header CRC covers every header byte before the CRC field itself.
HEADER_CRC_COVERS = 36
#: The index (metadata, directory) ends with a CRC-32 of both.
INDEX_CRC_SIZE = 4

#: Spec section 5: one tensor's directory entry (variable length: name and shape).
TensorEntry = Struct(
    "name_length" / Int16ul,
    "name" / Bytes(this.name_length),
    "dtype" / Int8ul,
    "encoding" / Int8ul,
    "rank" / Int8ul,
    "flags" / Int8ul,
    "shape" / Array(this.rank, Int64ul),
    "payload_offset" / Int64ul,
    "payload_length" / Int64ul,
    "payload_crc32" / Int32ul,
)
#: Bytes of an entry besides its name and shape.
ENTRY_FIXED_SIZE = 2 + 4 + 8 + 8 + 4


def entry_size(name_length: int, rank: int) -> int:
    return ENTRY_FIXED_SIZE + name_length + 8 * rank


#: Spec section 6.3: the start of a quantized payload; the codebook follows.
QuantHeader = Struct(
    "codebook_dtype" / Int8ul,
    "gap_bits" / Int8ul,
    "reserved" / Int16ul,
    "codebook_size" / Int32ul,
    "entry_count" / Int64ul,
)
QUANT_HEADER_SIZE = 16

#: Spec section 7.1: every symbol stream starts with its coder and body length.
StreamHeader = Struct(
    "coder" / Int8ul,
    "body_length" / Int64ul,
)
STREAM_HEADER_SIZE = 9

#: Spec section 6.6.2: the start of a float_split payload; the blocks' streams follow.
FloatSplitHeader = Struct(
    "head_bits" / Int8ul,
    "reserved" / Bytes(3),
    "block_elements" / Int32ul,
)
FLOAT_SPLIT_HEADER_SIZE = 8


def _fixed_parser(declaration: Struct, name: str):
    """A parser of a fixed-size declaration through the standard library's ``struct``, its
    format derived from the declaration's fields: the same layout and field names, from any
    buffer, over twenty times faster than construct's compiled parser on a few bytes (a
    model's load parses hundreds of stream headers)."""
    fmt = "<"
    for field in declaration.subcons:
        inner = field.subcon
        if isinstance(inner, FormatField) and inner.fmtstr[0] == "<":
            fmt += inner.fmtstr[1:]
        elif isinstance(inner, Bytes) and isinstance(inner.length, int):
            fmt += f"{inner.length}s"
        else:  # pragma: no cover - a declaration this helper was not written for
            raise TypeError(f"{name}.{field.name}: not a fixed-size little-endian field")
    layout = struct.Struct(fmt)
    fields = namedtuple(name, [field.name for field in declaration.subcons])
    if layout.size != declaration.sizeof():  # pragma: no cover - the derivation itself is wrong
        raise TypeError(f"{name}: {layout.size} bytes through struct, {declaration.sizeof()} declared")

    def parse(data) -> tuple:
        return fields._make(layout.unpack_from(data))

    return parse


# Parsers of the structures a load reads once per tensor or stream. The directory entry
# varies in length: construct generates Python code for it (three to four times faster
# than interpreting the declaration). Building uses the declarations.
parse_entry = TensorEntry.compile().parse
parse_quant_header = _fixed_parser(QuantHeader, "QuantHeader")
parse_float_split_header = _fixed_parser(FloatSplitHeader, "FloatSplitHeader")
parse_stream_header = _fixed_parser(StreamHeader, "StreamHeader")
