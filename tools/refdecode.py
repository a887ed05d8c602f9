#!/usr/bin/env python3
"""A second, independent dcformat decoder, written from ``spec/dcformat.md`` alone.

It exists to prove the spec is complete: it was written without reading the package,
uses only the standard library (plus ``zstandard`` for zstd frame decompression, see
``_zstd_decompress``), and is deliberately plain: pure Python loops, one symbol and one bit
at a time. It is a reference, not the fast path. Section numbers (§) cite the spec.

    python tools/refdecode.py FILE...          name, dtype, shape, sha256 of every tensor
    python tools/refdecode.py --check-vectors  decode spec/vectors/ and compare with vectors.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field

MAGIC = b"\x89DCF\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 1  # the newest minor version this decoder implements (§5.3)
HEADER = struct.Struct("<8sHHIIIQII")  # §3

# §5.2: id -> (name, element bytes, struct format or None)
DTYPES = {
    1: ("float32", 4, "f"),
    2: ("float16", 2, "e"),
    3: ("bfloat16", 2, None),
    4: ("float64", 8, "d"),
    5: ("int8", 1, "b"),
    6: ("int16", 2, "h"),
    7: ("int32", 4, "i"),
    8: ("int64", 8, "q"),
    9: ("uint8", 1, "B"),
    10: ("uint16", 2, "H"),
    11: ("uint32", 4, "I"),
    12: ("uint64", 8, "Q"),
    13: ("bool", 1, "?"),
}
FLOAT_DTYPES = {1, 2, 3, 4}
RAW, ZSTD, QUANT_DENSE, QUANT_SPARSE, FLOAT_SPLIT = 1, 2, 3, 4, 5  # §6
ENCODINGS = {RAW: "raw", ZSTD: "zstd", QUANT_DENSE: "quant_dense", QUANT_SPARSE: "quant_sparse", FLOAT_SPLIT: "float_split"}
# §10.4: the minor version that defined an encoding id, for ids newer than 1.0
ENCODING_SINCE = {FLOAT_SPLIT: 1}
# §6.6.1: float dtype id -> (E exponent bits, M mantissa bits)
FLOAT_FIELDS = {1: (8, 23), 2: (5, 10), 3: (8, 7), 4: (11, 52)}
FLOAT_SPLIT_MIN_BLOCK = 4096  # §6.6.2: block_elements is at least this
BITPACK, HUFFMAN, ZSTD_CODER = 1, 2, 3  # §7.1

# §9
MAX_METADATA = 16 * 2**20
MAX_DIRECTORY = 256 * 2**20
MAX_TENSORS = 2**24
MAX_NAME = 1024
MAX_RANK = 32
MAX_ELEMENTS = 2**48
MAX_CODEBOOK = 65536
MAX_CODE_LENGTH = 20
LANE_SYMBOLS = 65536
EXPANSION = 65536
MIN_ENTRY_BYTES = 2 + 1 + 4 + 8 + 8 + 4  # a 1-byte name, rank 0


class RefDecodeError(Exception):
    """Any violation of a MUST of the spec; the message names the field and the section."""


def _fail(where: str, reason: str) -> None:
    raise RefDecodeError(f"{where}: {reason}")


def align(x: int) -> int:  # §1.4
    return -(-x // 64) * 64


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def bit_width(alphabet: int) -> int:  # §7.2: ceil(log2(A)), 0 for A = 1
    return (alphabet - 1).bit_length()


def plane_widths(rest_bits: int) -> list[int]:
    """§6.6.1: the rest (R bits) cut from its top: floor(R/8) planes of 8, then R mod 8 if not 0."""
    return [8] * (rest_bits // 8) + ([rest_bits % 8] if rest_bits % 8 else [])


class Reader:
    """Bounds-checked little-endian reads from ``buf[start:end]``; errors name the field."""

    def __init__(self, buf: bytes, start: int, end: int, where: str):
        self.buf, self.pos, self.end, self.where = buf, start, end, where

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            _fail(self.where, f"{what} at byte {self.pos}: needs {n} bytes, {self.end - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "little")


def read_bits(data: bytes, width: int, count: int, where: str) -> list[int]:
    """``count`` values of ``width`` bits, LSB-first (§1.3, §7.2); the unused tail bits MUST be 0."""
    if len(data) != ceil_div(count * width, 8):
        _fail(where, f"{len(data)} bytes, expected ceil({count}*{width}/8) = {ceil_div(count * width, 8)}")
    mask = (1 << width) - 1
    out = []
    for i in range(count):
        bit = i * width
        first, last = bit // 8, ceil_div(bit + width, 8)
        out.append((int.from_bytes(data[first:last], "little") >> (bit % 8)) & mask)
    used = count * width
    if used % 8 and data[-1] >> (used % 8):
        _fail(where, "unused bits after the last value are not zero (§1.3)")
    return out


# ---------------------------------------------------------------- symbol streams (§7)


def decode_stream(r: Reader, n: int, alphabet: int, where: str) -> list[int]:
    """Read one stream header + body from ``r`` and return its n symbols, all < alphabet."""
    coder = r.uint(1, f"{where}.coder")
    body_length = r.uint(8, f"{where}.body_length")
    if body_length > r.end - r.pos:
        _fail(where, f"body_length {body_length} runs past the payload ({r.end - r.pos} bytes left) (§7.1)")
    body = r.take(body_length, f"{where}.body")
    if coder == BITPACK:
        symbols = read_bits(body, bit_width(alphabet), n, f"{where} (bitpack)")
    elif coder == HUFFMAN:
        symbols = decode_huffman(body, n, alphabet, f"{where} (huffman)")
    elif coder == ZSTD_CODER:
        item = 1 if alphabet <= 256 else 2
        raw = _zstd_decompress(body, n * item, f"{where} (zstd)")
        symbols = list(raw) if item == 1 else [v for (v,) in struct.iter_unpack("<H", raw)]
    else:
        _fail(where, f"unknown coder id {coder} (§7.1)")
    for i, s in enumerate(symbols):
        if s >= alphabet:
            _fail(where, f"symbol {i} = {s} is not < alphabet {alphabet} (§7.1)")
    return symbols


_BIT_TABLE = [bytes((b >> k) & 1 for k in range(8)) for b in range(256)]


def decode_huffman(body: bytes, n: int, alphabet: int, where: str) -> list[int]:
    """§7.3: canonical Huffman code over C interleaved lanes."""
    r = Reader(body, 0, len(body), where)
    t = r.uint(4, "table_symbols")
    if n == 0:
        if t != 0 or len(body) != 4:
            _fail(where, "with n = 0 the body MUST be exactly table_symbols = 0 (§7.3.1)")
        return []
    if not 1 <= t <= alphabet:
        _fail(where, f"table_symbols {t} not in 1..{alphabet} (§7.3.1)")
    lengths = read_bits(r.take(ceil_div(5 * t, 8), "code_lengths"), 5, t, f"{where}.code_lengths")
    present = [(ln, s) for s, ln in enumerate(lengths) if ln]
    if any(ln > MAX_CODE_LENGTH for ln, _ in present):
        _fail(where, "a code length above 20 (§7.3.2)")
    if not present:
        _fail(where, "no symbol present while n > 0 (§7.3.2)")
    if len(present) == 1:
        if present[0][0] != 1:
            _fail(where, "a single present symbol MUST have length 1 (§7.3.2)")
    else:
        kraft = sum(1 << (MAX_CODE_LENGTH - ln) for ln, _ in present)
        if kraft != 1 << MAX_CODE_LENGTH:
            _fail(where, "code lengths are " + ("over-subscribed" if kraft > 1 << 20 else "incomplete") + " (§7.3.2)")

    lanes = r.uint(4, "lane_count")
    if not ceil_div(n, LANE_SYMBOLS) <= lanes <= n:
        _fail(where, f"lane_count {lanes} not in ceil(n/65536)..n = {ceil_div(n, LANE_SYMBOLS)}..{n} (§7.3.4)")
    base = r.uint(8, "lane_base_bits")
    width = r.uint(1, "lane_delta_width")
    if width > 64:
        _fail(where, f"lane_delta_width {width} > 64 (§7.3.1)")
    delta_bytes = ceil_div(lanes * width, 8)
    if delta_bytes > r.end - r.pos:
        _fail(where, f"lane_deltas need {delta_bytes} bytes, {r.end - r.pos} left")
    deltas = read_bits(r.take(delta_bytes, "lane_deltas"), width, lanes, f"{where}.lane_deltas")
    payload_bits = r.uint(8, "payload_bits")
    if payload_bits > 20 * n:
        _fail(where, f"payload_bits {payload_bits} > 20 * n (§7.3.4)")
    if payload_bits < n:
        _fail(where, f"payload_bits {payload_bits} < n = {n}: every code is at least 1 bit (§7.3.4)")
    payload = r.take(ceil_div(payload_bits, 8), "payload")
    if r.pos != len(body):
        _fail(where, f"{len(body) - r.pos} bytes after the payload (§7.3.1)")
    if payload_bits % 8 and payload[-1] >> (payload_bits % 8):
        _fail(where, "unused bits after the payload are not zero (§1.3)")
    lane_lengths = [base + d for d in deltas]
    if sum(lane_lengths) != payload_bits:
        _fail(where, f"lane lengths sum to {sum(lane_lengths)}, payload_bits is {payload_bits} (§7.3.4)")

    # Canonical code (§7.3.3), decoded as in zlib's puff.c: count codes per length and list
    # the symbols in (length, symbol) order; walk the code one bit at a time, MSB first.
    count = [0] * (MAX_CODE_LENGTH + 1)
    for ln, _ in present:
        count[ln] += 1
    ordered = [s for _, s in sorted(present)]
    max_len = max(ln for ln, _ in present)
    bits = b"".join(_BIT_TABLE[b] for b in payload)
    out = [0] * n
    lane_start = 0
    for j in range(lanes):
        pos, lane_end = lane_start, lane_start + lane_lengths[j]
        for i in range(j, n, lanes):
            code = first = index = 0
            for ln in range(1, max_len + 1):
                if pos >= lane_end:
                    _fail(where, f"lane {j} runs past its end at symbol {i} (§7.3.4)")
                code |= bits[pos]
                pos += 1
                if code - count[ln] < first:
                    out[i] = ordered[index + code - first]
                    break
                index += count[ln]
                first = (first + count[ln]) << 1
                code <<= 1
            else:
                _fail(where, f"lane {j}: no code matches at bit {pos} (§7.3.3)")
        if pos != lane_end:
            _fail(where, f"lane {j} ends {lane_end - pos} bits early (§7.3.4)")
        lane_start = lane_end
    return out


# ---------------------------------------------------------------- zstd frames (§6.2, §7.4)


ZSTD_MAX_WINDOW = 2**27  # §6.2.1: a window may exceed the content size only up to this
ZSTD_MAX_BLOCK = 131072  # §6.2.1, RFC 8878 §3.1.1.2: Block_Maximum_Size is at most this


def _zstd_check_frame(data: bytes, expected: int, where: str) -> None:
    """§6.2 and §6.2.1 on one frame, in pure Python, before anything is decompressed: the frame
    header (RFC 8878 §3.1.1.1), its Window_Size, then the walk over the 3-byte block headers
    to the frame's end, which MUST be the end of ``data``."""
    r = Reader(data, 0, len(data), where)
    if r.uint(4, "zstd magic") != 0xFD2FB528:
        _fail(where, "not a zstd frame (skippable frames are not allowed) (§6.2)")
    fhd = r.uint(1, "frame header descriptor")
    fcs_flag, single_segment, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    if fhd & 0x08:
        _fail(where, "zstd reserved bit set")
    window_descriptor = None if single_segment else r.uint(1, "window descriptor")
    if r.uint((0, 1, 2, 4)[dict_flag], "dictionary id"):
        _fail(where, "zstd frame names a dictionary (§6.2)")
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if not fcs_size:
        _fail(where, "zstd frame without a content size (§6.2)")
    content_size = r.uint(fcs_size, "frame content size") + (256 if fcs_size == 2 else 0)
    if content_size != expected:
        _fail(where, f"zstd content size {content_size}, expected {expected} (§6.2, §7.4)")

    if window_descriptor is None:  # RFC 8878 §3.1.1.1.2: a single-segment frame's window is its content
        window = content_size
    else:
        window_base = 1 << (10 + (window_descriptor >> 3))
        window = window_base + (window_base // 8) * (window_descriptor & 7)
    if window > max(content_size, ZSTD_MAX_WINDOW):
        _fail(where, f"zstd Window_Size {window} exceeds max(content size {content_size}, 2^27) (§6.2.1)")

    block_maximum = min(window, ZSTD_MAX_BLOCK)
    while True:  # every block takes >= 3 bytes, so at most len(data) / 3 steps
        if r.end - r.pos < 3:
            _fail(where, f"zstd frame ends inside a block header at byte {r.pos} (§6.2.1)")
        header = r.uint(3, "zstd block header")
        last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 3:
            _fail(where, f"zstd block of the reserved type 3 at byte {r.pos - 3} (§6.2.1)")
        if block_size > block_maximum:
            _fail(where, f"zstd Block_Size {block_size} exceeds Block_Maximum_Size min(Window_Size, 131072) = {block_maximum} (§6.2.1)")
        content = 1 if block_type == 1 else block_size  # RLE: one byte, regenerated block_size times
        if content > r.end - r.pos:
            _fail(where, f"zstd block at byte {r.pos - 3} runs past the end of the frame's bytes (§6.2.1)")
        r.pos += content
        if last:
            break
    if checksum:
        if r.end - r.pos < 4:
            _fail(where, "zstd content checksum missing (§6.2.1)")
        r.pos += 4
    if r.pos != r.end:
        _fail(where, f"{r.end - r.pos} bytes after the zstd frame (§6.2, §6.2.1)")


def _zstd_decompress(frame: bytes, expected: int, where: str) -> bytes:
    _zstd_check_frame(frame, expected, where)
    # THE ONLY NON-STDLIB DEPENDENCY: the stdlib has no zstd, so frame decompression (and
    # nothing else) is delegated to the `zstandard` package, with an output limit (§6.2).
    try:
        import zstandard
    except ImportError:
        raise RefDecodeError(f"{where}: cannot decode a zstd frame: the 'zstandard' package is not installed") from None
    try:
        if expected:
            out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected)
        else:  # the one-shot call returns b"" for content size 0 without reading the blocks
            with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
                out = reader.read(1)  # reads every block; any byte at all is one too many
    except zstandard.ZstdError as exc:
        _fail(where, f"zstd frame rejected by decompression: {exc} (§6.2)")
    if len(out) != expected:
        _fail(where, f"zstd frame produced {len(out)} bytes, expected {expected} (§6.2)")
    return out


# ---------------------------------------------------------------- the file (§2-§5)


@dataclass
class Entry:
    name: str
    dtype: int
    encoding: int
    shape: tuple[int, ...]
    payload_offset: int
    payload_length: int
    payload_crc32: int
    elements: int = 0


@dataclass
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes  # C-order little-endian storage bytes (§5.2)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def tolist(self) -> list:
        """The elements as a flat list of Python numbers (bfloat16 widened to float)."""
        if self.dtype == "bfloat16":
            return [struct.unpack("<f", struct.pack("<I", v << 16))[0] for (v,) in struct.iter_unpack("<H", self.data)]
        fmt = next(f for name, _, f in DTYPES.values() if name == self.dtype)
        return [v for (v,) in struct.iter_unpack("<" + fmt, self.data)]


MAX_JSON_DEPTH = 64  # §4.1.1: the top-level object is level 1
# §4.1.2: the smallest magnitude that rounds to infinity as a binary64; 309 digits hold it
INT_OVERFLOW = 2**1024 - 2**970
_JSON_MARKS = re.compile(r'["\[\]{}]')


def json_depth(text: str) -> int:
    """§4.1.1, before parsing: drop every escaped backslash, then every escaped quote (left to
    right); a bracket counts when an even number of quotes precede it; the depth is the
    largest running sum of +1 per ``[``/``{`` and -1 per ``]``/``}`` that count."""
    text = text.replace("\\\\", "").replace('\\"', "")
    deepest = depth = quotes = 0
    for mark in _JSON_MARKS.finditer(text):
        c = mark.group()
        if c == '"':
            quotes += 1
        elif quotes % 2 == 0:
            depth += 1 if c in "[{" else -1
            deepest = max(deepest, depth)
    return deepest


def _reject_constant(name: str):
    raise ValueError(f"non-standard constant {name}")


class _InfiniteNumberError(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)  # correctly rounded to the nearest binary64 (ties to even)
    if math.isinf(value):
        raise _InfiniteNumberError(f"number {text[:40]} rounds to an infinity")
    return value


def _finite_int(text: str) -> int:
    value = int(text) if len(text.lstrip("-")) <= 309 else None  # more digits always overflow: no huge int()
    if value is None or abs(value) >= INT_OVERFLOW:
        raise _InfiniteNumberError(f"integer {text[:40]}... rounds to an infinity")
    return value


def _lone_surrogate(value) -> bool:
    """A surrogate code point in any string, key or value: only an escape (``"\\ud800"``) can
    put one there, since UTF-8 cannot encode it and a valid escaped pair decodes to one
    code point (§4.1). Depth is at most 64 here (§4.1.1), so recursion is safe."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object repeats a key")
    return dict(pairs)


def parse_metadata(raw: bytes) -> dict:
    """§4.1: one JSON object in UTF-8, under every rule of 4.1, 4.1.1 and 4.1.2."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail("metadata", f"not valid UTF-8: {exc} (§4.1)")
    if text.startswith("\ufeff"):
        _fail("metadata", "starts with a byte-order mark (§4.1)")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        _fail("metadata", f"objects and arrays nest {depth} levels deep, more than {MAX_JSON_DEPTH} (§4.1.1)")
    try:
        meta = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_finite_int)
    except _InfiniteNumberError as exc:
        _fail("metadata", f"{exc}: every number MUST be finite as a binary64 (§4.1.2)")
    except (ValueError, RecursionError) as exc:
        _fail("metadata", f"invalid: {exc} (§4.1)")
    if not isinstance(meta, dict):
        _fail("metadata", "top level is not a JSON object (§4.1)")
    if _lone_surrogate(meta):
        _fail("metadata", "a string holds an escaped lone surrogate (§4.1)")
    return meta


@dataclass
class RefFile:
    data: bytes
    version: tuple[int, int] = (0, 0)
    metadata: dict = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    index_offset: int = 0

    def __post_init__(self):
        self._open()

    def _open(self) -> None:
        data = self.data
        if len(data) < 64:
            _fail("header", f"file of {len(data)} bytes is shorter than header + padding (§2)")
        (magic, major, minor, flags, count, meta_len, index_offset, dir_len, crc) = HEADER.unpack_from(data)
        if magic != MAGIC:
            _fail("header.magic", "wrong magic (§3.1)")
        if major != VERSION_MAJOR:
            _fail("header.version_major", f"version {major} not implemented (§3.1)")
        if zlib.crc32(data[:36]) != crc:
            _fail("header.header_crc32", "CRC mismatch (§3.1)")
        if flags:
            _fail("header.flags", f"reserved flags {flags:#x} set (§3.2)")
        if any(data[40:64]):
            _fail("header padding", "bytes 40..63 are not zero (§3.3)")
        if meta_len > MAX_METADATA or dir_len > MAX_DIRECTORY or count > MAX_TENSORS:
            _fail("header", "metadata_length, directory_length or tensor_count over its limit (§9)")
        if index_offset < 64 or index_offset + meta_len + dir_len + 4 != len(data):
            _fail("header.index_offset", f"index [{index_offset}, +{meta_len}+{dir_len}+4) does not end the file (§3.4)")
        if count * MIN_ENTRY_BYTES > dir_len:
            _fail("header.tensor_count", f"{count} entries cannot fit in {dir_len} bytes (§5.1)")
        index = data[index_offset : len(data) - 4]
        if zlib.crc32(index) != int.from_bytes(data[-4:], "little"):
            _fail("index CRC-32", "CRC mismatch (§3.5)")
        self.version, self.index_offset = (major, minor), index_offset

        self.metadata = parse_metadata(index[:meta_len])

        r = Reader(data, index_offset + meta_len, len(data) - 4, "directory")
        previous = None
        for k in range(count):
            r.where = f"directory[{k}]"
            name_length = r.uint(2, "name_length")
            if not 1 <= name_length <= MAX_NAME:
                _fail(r.where, f"name_length {name_length} not in 1..1024 (§5.1)")
            raw_name = r.take(name_length, "name")
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                _fail(r.where, "name is not valid UTF-8 (§5.1.1)")
            if previous is not None and raw_name <= previous:
                _fail(r.where, f"name {name!r} is not greater than the previous one (§5.1.1)")
            previous = raw_name
            dtype, encoding, rank, entry_flags = r.take(4, "dtype/encoding/rank/flags")
            newer = minor > VERSION_MINOR
            if dtype not in DTYPES and not newer:
                _fail(r.where, f"unknown dtype id {dtype} (§5.3)")
            if encoding not in ENCODINGS and not newer:
                _fail(r.where, f"unknown encoding id {encoding} (§5.3)")
            since = ENCODING_SINCE.get(encoding, 0)
            if since > minor:  # an id newer than the file's version is invalid in it
                _fail(r.where, f"encoding {ENCODINGS[encoding]} is defined since 1.{since}, the file declares 1.{minor} (§10.4)")
            if rank > MAX_RANK:
                _fail(r.where, f"rank {rank} > 32 (§5.1)")
            if entry_flags:
                _fail(r.where, f"reserved entry flags {entry_flags:#x} set (§5.1)")
            shape = tuple(r.uint(8, f"shape[{d}]") for d in range(rank))
            elements = math.prod(shape)  # Python integers do not overflow (§5.1.2)
            extent = math.prod(d for d in shape if d)  # (0, 2^62) holds no element but is rejected too
            if extent > MAX_ELEMENTS:
                _fail(r.where, f"the nonzero dimensions of {shape} multiply to {extent} > 2^48 (§5.1.2)")
            offset, length, crc = r.uint(8, "payload_offset"), r.uint(8, "payload_length"), r.uint(4, "payload_crc32")
            if offset % 64:
                _fail(r.where, f"payload_offset {offset} is not a multiple of 64 (§5.1)")
            if encoding in (QUANT_DENSE, QUANT_SPARSE, FLOAT_SPLIT) and dtype in DTYPES and dtype not in FLOAT_DTYPES:
                _fail(r.where, f"encoding {ENCODINGS[encoding]} needs a float dtype (§6, §6.6.2)")
            if dtype in DTYPES and elements * DTYPES[dtype][1] > EXPANSION * (length + 64):
                _fail(r.where, "decoded bytes exceed 65536 * (payload_length + 64) (§9.1)")
            self.entries[name] = Entry(name, dtype, encoding, shape, offset, length, crc, elements)
        if r.pos != r.end:
            _fail("directory", f"{r.end - r.pos} bytes after the last entry (§5.1)")

        expected = 64  # §5.4
        for e in sorted(self.entries.values(), key=lambda e: (e.payload_offset, e.payload_length)):
            if e.payload_offset != expected:
                _fail(f"tensor {e.name!r}", f"payload_offset {e.payload_offset}, expected {expected} (§5.4)")
            end = e.payload_offset + e.payload_length
            if end > index_offset:
                _fail(f"tensor {e.name!r}", "payload runs past index_offset (§5.4)")
            expected = align(end)
            last_end = end
        if index_offset != (last_end if self.entries else 64):
            _fail("header.index_offset", f"{index_offset} is not the end of the last payload (§5.4)")

    def padding_runs(self) -> list[tuple[int, int]]:
        ends = sorted((e.payload_offset, e.payload_offset + e.payload_length) for e in self.entries.values())
        runs, prev = [], 64
        for start, end in ends:
            runs.append((prev, start))
            prev = max(prev, end)
        return [(a, b) for a, b in runs if b > a]

    def verify(self) -> list[Tensor]:
        """Everything section 8 lists for a whole file: padding runs and every tensor."""
        for a, b in self.padding_runs():
            if any(self.data[a:b]):
                _fail("padding", f"non-zero byte in [{a}, {b}) (§5.4)")
        return [self.decode(name) for name in self.entries]

    def decode(self, name: str) -> Tensor:
        e = self.entries[name]
        where = f"tensor {name!r}"
        payload = self.data[e.payload_offset : e.payload_offset + e.payload_length]
        if zlib.crc32(payload) != e.payload_crc32:
            _fail(where, "payload CRC mismatch (§5.1)")
        if e.dtype not in DTYPES or e.encoding not in ENCODINGS:
            _fail(where, f"dtype {e.dtype} / encoding {e.encoding} not known to this decoder (§5.3)")
        dtype_name, item, _ = DTYPES[e.dtype]
        decoded_bytes = e.elements * item
        if e.encoding == RAW:  # §6.1
            if len(payload) != decoded_bytes:
                _fail(where, f"raw payload of {len(payload)} bytes, expected {decoded_bytes} (§6.1)")
            out = payload
        elif e.encoding == ZSTD:  # §6.2
            out = _zstd_decompress(payload, decoded_bytes, where)
        elif e.encoding == FLOAT_SPLIT:
            out = self._decode_float_split(e, payload, where)
        else:
            out = self._decode_quant(e, payload, where)
        if dtype_name == "bool" and any(b > 1 for b in out):
            _fail(where, "a bool byte other than 0 or 1 (§5.2)")
        return Tensor(name, dtype_name, e.shape, bytes(out))

    def _decode_quant(self, e: Entry, payload: bytes, where: str) -> bytes:
        """§6.3-§6.5."""
        r = Reader(payload, 0, len(payload), where)
        cb_dtype, gap_bits, reserved, k, n = struct.unpack("<BBHIQ", r.take(16, "quantized header"))
        if cb_dtype not in (1, 2):
            _fail(where, f"codebook_dtype {cb_dtype} not 1 or 2 (§6.3)")
        if reserved:
            _fail(where, "quantized header reserved field is not 0 (§6.3)")
        if not 1 <= k <= MAX_CODEBOOK:
            _fail(where, f"codebook_size {k} not in 1..65536 (§6.3)")
        if e.encoding == QUANT_DENSE and (gap_bits != 0 or n != e.elements):
            _fail(where, f"quant_dense needs gap_bits 0 and n = {e.elements}, got {gap_bits}, {n} (§6.4)")
        if e.encoding == QUANT_SPARSE and (not 1 <= gap_bits <= 16 or n > e.elements):
            _fail(where, f"quant_sparse needs gap_bits in 1..16 and n <= {e.elements}, got {gap_bits}, {n} (§6.5)")
        cb_item = 4 if cb_dtype == 1 else 2
        codebook = r.take(k * cb_item, "codebook")
        values = [_codebook_value(codebook[i * cb_item : (i + 1) * cb_item], e.dtype, f"{where}.codebook[{i}]") for i in range(k)]
        codes = decode_stream(r, n, k, f"{where}.codes")
        gaps = decode_stream(r, n, 1 << gap_bits, f"{where}.gaps") if e.encoding == QUANT_SPARSE else None
        if r.pos != len(payload):
            _fail(where, f"{len(payload) - r.pos} bytes after the last stream (§6.3)")
        if gaps is None:
            return b"".join(values[c] for c in codes)
        positions, p = [], -1
        for g in gaps:
            p += g + 1
            positions.append(p)
        if n and positions[-1] >= e.elements:
            _fail(where, f"last position {positions[-1]} is not < {e.elements} elements (§6.5.1)")
        item = DTYPES[e.dtype][1]
        out = bytearray(e.elements * item)  # +0.0 is all zero bits in every float dtype
        for p, c in zip(positions, codes):
            out[p * item : (p + 1) * item] = values[c]
        return bytes(out)

    def _decode_float_split(self, e: Entry, payload: bytes, where: str) -> bytes:
        """§6.6: the 8-byte header, then per block a head stream and one stream per plane of
        the rest, reassembled bit by bit."""
        if e.dtype not in FLOAT_FIELDS:
            _fail(where, f"float_split needs a float dtype, not {DTYPES[e.dtype][0]} (§6.6.2)")
        exp_bits, man_bits = FLOAT_FIELDS[e.dtype]
        r = Reader(payload, 0, len(payload), where)
        h = r.uint(1, "float_split head_bits")  # §6.6.2
        if any(r.take(3, "float_split reserved")):
            _fail(where, "float_split reserved bytes are not 0 (§6.6.2)")
        b = r.uint(4, "float_split block_elements")
        if h > min(man_bits, 16 - exp_bits):
            _fail(where, f"head_bits {h} exceeds min(M, 16 - E) = {min(man_bits, 16 - exp_bits)} (§6.6.2)")
        if b < FLOAT_SPLIT_MIN_BLOCK:
            _fail(where, f"block_elements {b} is less than {FLOAT_SPLIT_MIN_BLOCK} (§6.6.2)")
        low = man_bits - h  # L
        widths = plane_widths(1 + low)  # §6.6.1, R = 1 + L
        n, item = e.elements, DTYPES[e.dtype][1]
        blocks = ceil_div(n, b)
        if blocks * (1 + len(widths)) * 9 > len(payload) - 8:
            _fail(where, f"{blocks} blocks of {1 + len(widths)} streams cannot fit in {len(payload) - 8} bytes (§6.6.2)")
        low_mask = (1 << low) - 1
        out = bytearray(n * item)
        for j in range(blocks):
            first, stop = j * b, min(n, (j + 1) * b)
            count = stop - first
            heads = decode_stream(r, count, 1 << (exp_bits + h), f"{where}.block[{j}].head")
            planes = [decode_stream(r, count, 1 << w, f"{where}.block[{j}].plane[{k}]") for k, w in enumerate(widths)]
            for i in range(count):  # §6.6.3
                rest = planes[0][i]
                for k in range(1, len(widths)):
                    rest = (rest << widths[k]) | planes[k][i]
                x = ((rest >> low) << (exp_bits + man_bits)) | (heads[i] << low) | (rest & low_mask)
                at = (first + i) * item
                out[at : at + item] = x.to_bytes(item, "little")
        if r.pos != len(payload):
            _fail(where, f"{len(payload) - r.pos} bytes after the last stream of the last block (§6.6.2)")
        return bytes(out)


def _codebook_value(raw: bytes, dtype: int, where: str) -> bytes:
    """§6.3.1: a finite codebook value, converted exactly to the tensor's dtype (its bytes)."""
    value = struct.unpack("<f" if len(raw) == 4 else "<e", raw)[0]
    if not math.isfinite(value):
        _fail(where, "codebook value is not finite (§6.3.1)")
    if dtype == 1:
        return struct.pack("<f", value)
    if dtype == 4:
        return struct.pack("<d", value)
    if dtype == 2:
        try:
            out = struct.pack("<e", value)
        except OverflowError:
            out = None
        if out is None or struct.unpack("<e", out)[0] != value:
            _fail(where, f"codebook value {value!r} is not exactly representable in float16 (§6.3.1)")
        return out
    bits = struct.unpack("<I", struct.pack("<f", value))[0]  # bfloat16: the upper half of binary32
    if bits & 0xFFFF:
        _fail(where, f"codebook value {value!r} is not exactly representable in bfloat16 (§6.3.1)")
    return struct.pack("<H", bits >> 16)


def decode_file(path: str) -> tuple[RefFile, list[Tensor]]:
    with open(path, "rb") as f:
        ref = RefFile(f.read())
    return ref, ref.verify()


# ---------------------------------------------------------------- CLI


def _vectors_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "spec", "vectors")


def check_vectors(directory: str, out=None) -> int:
    """Decode every vector and compare with vectors.json; the number of mismatches."""
    out = sys.stdout if out is None else out
    with open(os.path.join(directory, "vectors.json"), encoding="utf-8") as f:
        expected = json.load(f)
    failures = 0
    for _key, vec in sorted(expected.items()):
        path = os.path.join(directory, vec["file"])
        problems = []
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if len(raw) != vec["bytes"] or hashlib.sha256(raw).hexdigest() != vec["file_sha256"]:
                problems.append("file bytes differ from vectors.json")
            ref = RefFile(raw)
            tensors = {t.name: t for t in ref.verify()}
            if sorted(tensors) != sorted(vec["tensors"]):
                problems.append(f"tensor names {sorted(tensors)} != {sorted(vec['tensors'])}")
            user_meta = {k: v for k, v in ref.metadata.items() if not k.startswith("dcformat.")}
            if user_meta != vec["metadata"]:
                problems.append(f"user metadata {user_meta} != {vec['metadata']}")
            for name, want in vec["tensors"].items():
                t = tensors.get(name)
                if t is None:
                    continue
                got = (t.dtype, list(t.shape), t.sha256)
                if got != (want["dtype"], want["shape"], want["sha256"]):
                    problems.append(f"{name}: got {got}, want {(want['dtype'], want['shape'], want['sha256'])}")
        except (RefDecodeError, OSError) as exc:
            problems.append(str(exc))
        status = "ok" if not problems else "FAIL"
        print(f"{status:4} {vec['file']} ({len(vec['tensors'])} tensors)", file=out)
        for p in problems:
            print(f"     {p}", file=out)
        failures += bool(problems)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help=".dcf files to decode")
    parser.add_argument(
        "--check-vectors",
        nargs="?",
        const=_vectors_dir(),
        metavar="DIR",
        help="decode every vector in DIR (default spec/vectors) and compare with vectors.json",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    if args.check_vectors is None and not args.files:
        parser.error("give FILE... or --check-vectors")
    status = 0
    if args.check_vectors is not None:
        failures = check_vectors(args.check_vectors)
        print("all vectors match" if not failures else f"{failures} vector file(s) differ")
        status = 1 if failures else 0
    report = []
    for path in args.files:
        try:
            ref, tensors = decode_file(path)
        except (RefDecodeError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        items = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "sha256": t.sha256} for t in tensors]
        if args.json:
            report.append({"file": path, "version": list(ref.version), "metadata": ref.metadata, "tensors": items})
            continue
        print(f"{path}: version {ref.version[0]}.{ref.version[1]}, {len(items)} tensors")
        for t in items:
            # ascii() escapes control characters in names that came from the file
            print(f"  {ascii(t['name'])[1:-1]}  {t['dtype']}  {tuple(t['shape'])}  {t['sha256']}")
    if args.json:
        print(json.dumps(report, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
