"""Hand-build dcformat files byte by byte, valid CRCs included, and re-fix CRCs of mutants.

The one home of the hand-built-file code: the fuzz harness (its custom mutator) and
``make_seeds.py`` use it, and so do the tests (the container, malformed-file, limit,
replay and reference-decoder tests, and ``tests/support/strategies.py``, whose parser
rebuilds files with it). The writer writes exactly the fields it is given, checking
nothing, so a test can declare any shape, count, length or checksum it likes.

It is a second, deliberately simple implementation of the container written from
spec/dcformat.md with ``struct``: the wire numbers are restated here, not imported from
the package, so a wrong constant or layout in the package is caught by the tests that
compare its files with these. Only the CRC fixers below, which must cope with mutants,
parse with the package's construct declarations.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from construct import ConstructError

from dcformat.format.structs import Header, TensorEntry

# ======================================================================================
# Wire numbers, restated from the spec (not imported, so a wrong constant is caught)
# ======================================================================================

MAGIC = b"\x89DCF\r\n\x1a\n"
HEADER_SIZE = 40
HEADER_CRC_COVERS = 36  # every header byte before the CRC field
DATA_START = 64
ALIGN = 64
#: The metadata the package writes when it is given none (``build_file``'s default).
PRODUCER_META = b'{"dcformat.producer":"dcformat 0.1.0"}'

DT = dict(float32=1, float16=2, bfloat16=3, float64=4, int8=5, int16=6, int32=7, int64=8, uint8=9, uint16=10, uint32=11, uint64=12, bool=13)
ENC = dict(raw=1, zstd=2, quant_dense=3, quant_sparse=4)
CODER = dict(bitpack=1, huffman=2, zstd=3)


def crc32(data) -> int:
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF


def align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


# ======================================================================================
# Payloads: streams, quantized payloads, Huffman bodies
# ======================================================================================


def stream(coder: int, body: bytes, *, body_length: int | None = None) -> bytes:
    """Spec 7.1: u8 coder, u64 body_length, body."""
    return struct.pack("<BQ", coder, len(body) if body_length is None else body_length) + body


def quant(
    codebook: bytes, codebook_size: int, entry_count: int, streams: bytes, *, codebook_dtype: int = 1, gap_bits: int = 0, reserved: int = 0
) -> bytes:
    """A quantized payload (spec 6.3): the 16-byte header, codebook bytes as given, streams as given."""
    return struct.pack("<BBHIQ", codebook_dtype, gap_bits, reserved, codebook_size, entry_count) + codebook + streams


def pack(values, width: int) -> bytes:
    """LSB-first bit packing (spec 7.2)."""
    acc = 0
    for i, v in enumerate(values):
        acc |= int(v) << (i * width)
    return acc.to_bytes(-(-len(values) * width // 8), "little")


def huffman(table_symbols: int, lengths, lane_count: int, base: int, width: int, deltas, payload_bits: int, payload: bytes) -> bytes:
    """A Huffman body (spec 7.3.1) from its fields, unchecked."""
    return (
        struct.pack("<I", table_symbols)
        + pack(lengths, 5)
        + struct.pack("<IQB", lane_count, base, width)
        + pack(deltas, width)
        + struct.pack("<Q", payload_bits)
        + payload
    )


def f32(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# ======================================================================================
# The container: header, directory entries, the whole file
# ======================================================================================


@dataclass
class Ent:
    """One tensor for :func:`build_file`: its directory fields and its payload bytes.

    ``offset``, ``length`` and ``crc`` default to the honest values; set them to lie.
    ``offset`` also places the payload there; ``rank`` overrides the declared rank only.
    """

    name: bytes | str
    dtype: int
    encoding: int
    shape: tuple
    payload: bytes = b""
    flags: int = 0
    rank: int | None = None
    offset: int | None = None
    length: int | None = None
    crc: int | None = None

    @property
    def name_bytes(self) -> bytes:
        return self.name.encode("utf-8") if isinstance(self.name, str) else self.name


#: The short name the fuzz seeds and the limit tests use.
T = Ent


def entry_bytes(e: Ent, offset: int, length: int, crc: int) -> bytes:
    """Spec 5: one directory entry."""
    name = e.name_bytes
    rank = len(e.shape) if e.rank is None else e.rank
    return (
        struct.pack("<H", len(name))
        + name
        + struct.pack("<BBBB", e.dtype, e.encoding, rank, e.flags)
        + struct.pack(f"<{len(e.shape)}Q", *e.shape)
        + struct.pack("<QQI", offset, length, crc)
    )


def header_bytes(
    *, magic=MAGIC, version=(1, 0), flags=0, tensor_count=0, metadata_length=0, index_offset=DATA_START, directory_length=0, header_crc=None
) -> bytes:
    """Spec 3: the 40-byte header, its CRC computed unless given."""
    head = struct.pack("<8sHHIIIQI", magic, version[0], version[1], flags, tensor_count, metadata_length, index_offset, directory_length)
    return head + struct.pack("<I", crc32(head) if header_crc is None else header_crc)


def build_file(
    entries=(),
    metadata: bytes | dict | None = None,
    *,
    version=(1, 0),
    flags=0,
    magic=MAGIC,
    sort=True,
    padding: bytes = bytes(24),
    tensor_count=None,
    metadata_length=None,
    directory_length=None,
    index_offset=None,
    header_crc=None,
    directory_suffix: bytes = b"",
    index_crc=None,
    trailing: bytes = b"",
    gap_filler: int = 0,
) -> bytes:
    """A dcformat file laid out as spec section 2 says, every field overridable.

    Payloads are placed in the order given (each at ``align`` of the previous end unless
    an entry says otherwise); the directory is sorted by name bytes unless ``sort=False``.
    ``metadata`` defaults to :data:`PRODUCER_META`; a dict is written as canonical JSON.
    """
    if metadata is None:
        metadata = PRODUCER_META
    elif isinstance(metadata, dict):
        metadata = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(padding) == DATA_START - HEADER_SIZE
    body = bytearray(DATA_START)
    end = DATA_START
    placed = {}
    for i, e in enumerate(entries):
        offset = align(end) if e.offset is None else e.offset
        if offset > len(body):
            body.extend(bytes([gap_filler]) * (offset - len(body)))
        body[offset : offset + len(e.payload)] = e.payload
        end = offset + len(e.payload)
        placed[i] = offset
    data_end = len(body)
    rows = []
    for i, e in enumerate(entries):
        offset = placed[i]
        length = len(e.payload) if e.length is None else e.length
        crc = crc32(body[offset : offset + length]) if e.crc is None else e.crc
        rows.append((e.name_bytes, entry_bytes(e, offset, length, crc)))
    if sort:
        rows.sort(key=lambda r: r[0])
    directory = b"".join(r[1] for r in rows) + directory_suffix
    index_crc = crc32(metadata + directory) if index_crc is None else index_crc
    header = header_bytes(
        magic=magic,
        version=version,
        flags=flags,
        tensor_count=len(entries) if tensor_count is None else tensor_count,
        metadata_length=len(metadata) if metadata_length is None else metadata_length,
        index_offset=data_end if index_offset is None else index_offset,
        directory_length=len(directory) if directory_length is None else directory_length,
        header_crc=header_crc,
    )
    body[:DATA_START] = header + padding
    return bytes(body) + metadata + directory + struct.pack("<I", index_crc) + trailing


def build(tensors=(), *, metadata: bytes = b"{}", version=(1, 0), flags: int = 0, tensor_count: int | None = None) -> bytes:
    """A file holding ``tensors`` (payloads in the given order), entries sorted by name, metadata ``{}``.

    :func:`build_file` with the fuzz seeds' defaults.
    """
    return build_file(tensors, metadata, version=version, flags=flags, tensor_count=tensor_count)


# ------------------------------------------------------------------------- CRC fixing


def fix_header_crc(data: bytes) -> bytes:
    if len(data) < 40:
        return data
    return data[:36] + crc32(data[:HEADER_CRC_COVERS]).to_bytes(4, "little") + data[40:]


def fix_crcs(data: bytes) -> bytes:
    """Re-fix the payload CRCs, the index CRC and the header CRC of a (mutated) file.

    Whatever cannot be parsed is left as it is; a mutant whose header no longer locates
    an index inside the file only gets its header CRC fixed.
    """
    if len(data) < 40:
        return data
    buf = bytearray(data)
    try:
        header = Header.parse(bytes(buf[:40]))
    except ConstructError:
        return bytes(buf)
    meta_end = header.index_offset + header.metadata_length
    dir_end = meta_end + header.directory_length
    if header.index_offset >= 64 and dir_end + 4 <= len(buf):
        pos, count = meta_end, 0
        while pos < dir_end and count < header.tensor_count and count < 100_000:
            try:
                entry = TensorEntry.parse(bytes(buf[pos:dir_end]))
            except (ConstructError, OverflowError, ValueError):
                break
            size = 2 + entry.name_length + 4 + 8 * entry.rank + 20
            if pos + size > dir_end:
                break
            start, end = entry.payload_offset, entry.payload_offset + entry.payload_length
            if end <= len(buf):
                buf[pos + size - 4 : pos + size] = crc32(buf[start:end]).to_bytes(4, "little")
            pos += size
            count += 1
        buf[dir_end : dir_end + 4] = crc32(buf[header.index_offset : dir_end]).to_bytes(4, "little")
    return fix_header_crc(bytes(buf))


def patch_header(data: bytes, **fields) -> bytes:
    """``data`` with some header fields replaced (``tensor_count=2**32 - 1``) and its CRC re-fixed."""
    header = dict(Header.parse(data[:40]))
    header.pop("_io", None)
    header.update(fields)
    return fix_header_crc(Header.build(header) + data[40:])


def zstd_frame(
    content_size: int | None, blocks: bytes = b"\x01\x00\x00", *, single_segment: bool = True, window_byte: int = 0, checksum: bool = False
) -> bytes:
    """A zstd frame (RFC 8878) with a hand-written header: an 8-byte content size (or none) and raw block bytes.

    The default block is an empty last raw block, so the frame decodes to nothing.
    """
    fcs_flag = 0 if content_size is None else 3
    if content_size is None and single_segment:
        raise ValueError("a single-segment frame always has a content size")
    fhd = fcs_flag << 6 | int(single_segment) << 5 | int(checksum) << 2
    out = b"\x28\xb5\x2f\xfd" + bytes([fhd])
    if not single_segment:
        out += bytes([window_byte])
    if content_size is not None:
        out += content_size.to_bytes(8, "little")
    return out + blocks


def zstd_block(kind: int, size: int, content: bytes, *, last: bool) -> bytes:
    """One block: kind 0 raw, 1 RLE (``content`` is the byte), 2 compressed."""
    return (int(last) | kind << 1 | size << 3).to_bytes(3, "little") + content
