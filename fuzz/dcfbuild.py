"""Hand-build dcformat files byte by byte, valid CRCs included, and re-fix CRCs of mutants.

Used by the fuzz harness (its custom mutator), by the replay tests and by the limit tests
to make hostile files: the builder writes exactly the fields it is given, checking
nothing, so a test can declare any shape, count or length it likes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from construct import ConstructError

from dcformat.format.structs import HEADER_CRC_COVERS, Header, QuantHeader, StreamHeader, TensorEntry

MAGIC = b"\x89DCF\r\n\x1a\n"


def crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def align(x: int) -> int:
    return -(-x // 64) * 64


@dataclass
class T:
    """One directory entry and its payload; ``offset``/``length``/``crc32`` override the computed ones."""

    name: bytes
    dtype: int
    encoding: int
    shape: tuple
    payload: bytes = b""
    flags: int = 0
    offset: int | None = None
    length: int | None = None
    crc32: int | None = None


def build(tensors=(), *, metadata: bytes = b"{}", version=(1, 0), flags: int = 0, tensor_count: int | None = None) -> bytes:
    """A file holding ``tensors`` (payloads in the given order), entries sorted by name."""
    body = bytearray(b"\0" * 64)
    placed = []
    for t in tensors:
        offset = align(len(body))
        body += b"\0" * (offset - len(body)) + t.payload
        placed.append((t, offset))
    index_offset = len(body)
    directory = b""
    for t, offset in sorted(placed, key=lambda p: p[0].name):
        directory += TensorEntry.build(dict(
            name_length=len(t.name), name=t.name, dtype=t.dtype, encoding=t.encoding, rank=len(t.shape), flags=t.flags,
            shape=list(t.shape), payload_offset=offset if t.offset is None else t.offset,
            payload_length=len(t.payload) if t.length is None else t.length,
            payload_crc32=crc(t.payload) if t.crc32 is None else t.crc32))
    header = dict(magic=MAGIC, version_major=version[0], version_minor=version[1], flags=flags,
                  tensor_count=len(placed) if tensor_count is None else tensor_count, metadata_length=len(metadata),
                  index_offset=index_offset, directory_length=len(directory), header_crc32=0)
    raw = Header.build(header)
    body[: len(raw)] = raw
    body += metadata + directory + crc(metadata + directory).to_bytes(4, "little")
    return fix_header_crc(bytes(body))


def quant(codebook: bytes, codebook_size: int, entry_count: int, streams: bytes, *, codebook_dtype: int = 1,
          gap_bits: int = 0, reserved: int = 0) -> bytes:
    """A quantized payload (spec 6.3): header, codebook bytes as given, streams as given."""
    return QuantHeader.build(dict(codebook_dtype=codebook_dtype, gap_bits=gap_bits, reserved=reserved,
                                  codebook_size=codebook_size, entry_count=entry_count)) + codebook + streams


def stream(coder: int, body: bytes, *, body_length: int | None = None) -> bytes:
    return StreamHeader.build(dict(coder=coder, body_length=len(body) if body_length is None else body_length)) + body


def pack(values, width: int) -> bytes:
    """LSB-first bit packing (spec 7.2)."""
    acc = 0
    for i, v in enumerate(values):
        acc |= int(v) << (i * width)
    return acc.to_bytes(-(-len(values) * width // 8), "little")


def huffman(table_symbols: int, lengths, lane_count: int, base: int, width: int, deltas, payload_bits: int,
            payload: bytes) -> bytes:
    """A Huffman body (spec 7.3.1) from its fields, unchecked."""
    return (struct.pack("<I", table_symbols) + pack(lengths, 5) + struct.pack("<IQB", lane_count, base, width)
            + pack(deltas, width) + struct.pack("<Q", payload_bits) + payload)


def f32(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# ------------------------------------------------------------------------- CRC fixing

def fix_header_crc(data: bytes) -> bytes:
    if len(data) < 40:
        return data
    return data[:36] + crc(data[:HEADER_CRC_COVERS]).to_bytes(4, "little") + data[40:]


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
                buf[pos + size - 4: pos + size] = crc(buf[start:end]).to_bytes(4, "little")
            pos += size
            count += 1
        buf[dir_end: dir_end + 4] = crc(buf[header.index_offset: dir_end]).to_bytes(4, "little")
    return fix_header_crc(bytes(buf))


def patch_header(data: bytes, **fields) -> bytes:
    """``data`` with some header fields replaced (``tensor_count=2**32 - 1``) and its CRC re-fixed."""
    header = dict(Header.parse(data[:40]))
    header.pop("_io", None)
    header.update(fields)
    return fix_header_crc(Header.build(header) + data[40:])


def zstd_frame(content_size: int | None, blocks: bytes = b"\x01\x00\x00", *, single_segment: bool = True,
               window_byte: int = 0, checksum: bool = False) -> bytes:
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
