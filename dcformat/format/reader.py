"""The lazy reader (spec sections 3-5, 8): the header and index are read and checked when
a file is opened; a payload is touched only when its tensor is asked for.

:meth:`DCFile.plan` is the one path from a stored tensor to a checked plan (ids, expansion
limit, CRC-32, then the payload's structure in ``format/encodings.py``); every decoder,
numpy here or torch in ``dcformat.torch``, decodes plans only.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumError, DCFormatError, EncodeError, FormatError, LimitError, UnsupportedError
from ..parallel import resolve_threads
from ..progress import progress as progress_bar
from ..quantize import QuantizedTensor
from . import decode, dtypes, float_split, strict_json
from .constants import (
    ALIGNMENT,
    DATA_START,
    ENCODING_SINCE,
    HEADER_SIZE,
    MAGIC,
    MAX_DIRECTORY_BYTES,
    MAX_ELEMENTS,
    MAX_EXPANSION,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    VERSION_MAJOR,
    VERSION_MINOR,
    DType,
    Encoding,
)
from .encodings import DensePlan, FloatSplitPlan, QuantPlan, decoded_nbytes, numel_of, plan_payload, within_expansion
from .rules import align, crc32, extent, quoted
from .structs import HEADER_CRC_COVERS, INDEX_CRC_SIZE, Header, entry_size, parse_entry


@dataclass(frozen=True)
class Entry:
    """One directory entry, checked against the file (spec section 5)."""

    name: str
    dtype: DType | int  # an int when a newer minor version defined the id
    encoding: Encoding | int
    shape: tuple
    offset: int
    length: int
    crc32: int
    entry_offset: int


@dataclass(frozen=True)
class TensorInfo:
    """What ``info(name)`` tells about a stored tensor without decoding it whole.

    ``code_bits`` is the coded bits per stored entry of a quantized tensor's codes stream,
    or per element of a float_split tensor's exponent stream (``codes_coder`` its coder);
    ``gap_bits`` per entry of the gaps stream (quant_sparse). Each includes its stream's
    header and tables.
    """

    name: str
    shape: tuple
    dtype: str
    encoding: str
    stored_bytes: int
    decoded_bytes: int
    density: float
    entry_count: int | None = None
    codebook_size: int | None = None
    code_bits: float | None = None
    gap_bits: float | None = None
    gap_width: int | None = None
    codes_coder: str | None = None
    gaps_coder: str | None = None
    payload_offset: int = 0

    @property
    def bits_per_element(self) -> float | None:
        """Payload bits per element (None for a tensor without elements)."""
        numel = int(np.prod(self.shape, dtype=object))
        return 8 * self.stored_bytes / numel if numel else None

    @property
    def ratio(self) -> float:
        """fp32 size of the tensor divided by its stored bytes (inf for an empty payload)."""
        fp32 = 4 * int(np.prod(self.shape, dtype=object))
        return fp32 / self.stored_bytes if self.stored_bytes else float("inf")

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["shape"] = list(self.shape)
        out["ratio_vs_fp32"] = self.ratio
        out["bits_per_element"] = self.bits_per_element
        return out


class DCFile:
    """A lazy reader: the header and index are read and checked at once; payloads on demand.

    Use as a context manager, or call :meth:`close`. Raw tensors are returned as
    read-only views of the memory-mapped file; everything else is decoded on each
    :meth:`get`. Every payload's CRC-32 is checked before it is decoded.
    """

    def __init__(self, source, *, max_expansion: int = MAX_EXPANSION):
        self._file = None
        self._mmap = None
        self._closed = False
        self.max_expansion = max_expansion
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf = memoryview(source).cast("B") if isinstance(source, memoryview) else memoryview(bytes(source))
            self.path = None
        else:
            self.path = os.fspath(source)
            self._file = open(self.path, "rb")
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                self._buf = memoryview(b"")
            else:
                self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self._buf = memoryview(self._mmap)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> DCFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file. Arrays still viewing the map keep it alive until they go."""
        self._closed = True
        self._buf = memoryview(b"")
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # raw views handed out still use it; it closes when they die
                pass
            self._mmap = None
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- parsing ----------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._buf
        size = len(buf)
        if size < HEADER_SIZE:
            raise FormatError("header", f"file of {size} bytes is shorter than the {HEADER_SIZE}-byte header", offset=0)
        raw_header = bytes(buf[:HEADER_SIZE])
        if raw_header[:8] != MAGIC:
            raise FormatError("header.magic", f"not a dcformat file (magic {raw_header[:8]!r}, expected {MAGIC!r})", offset=0)
        header = Header.parse(raw_header)
        if header.version_major != VERSION_MAJOR:
            raise UnsupportedError(
                "header.version_major",
                f"format version {header.version_major}.{header.version_minor} is not supported (this reader reads {VERSION_MAJOR}.x)",
                offset=8,
            )
        if crc32(raw_header[:HEADER_CRC_COVERS]) != header.header_crc32:
            raise ChecksumError("header.header_crc32", "header checksum mismatch: the header is corrupt", offset=HEADER_CRC_COVERS)
        if header.flags != 0:
            raise FormatError("header.flags", f"reserved flag bits are set (0x{header.flags:08x})", offset=12)
        self.version = (header.version_major, header.version_minor)
        if size < DATA_START:
            raise FormatError("header.padding", f"file of {size} bytes ends inside the {DATA_START}-byte header block", offset=HEADER_SIZE)
        if any(buf[HEADER_SIZE:DATA_START]):
            raise FormatError("header.padding", "padding after the header is not zero", offset=HEADER_SIZE)
        if header.tensor_count > MAX_TENSORS:
            raise LimitError("header.tensor_count", f"{header.tensor_count} tensors is over the limit of {MAX_TENSORS}", offset=16)
        if header.metadata_length > MAX_METADATA_BYTES:
            raise LimitError("header.metadata_length", f"{header.metadata_length} bytes is over the limit of {MAX_METADATA_BYTES}", offset=20)
        if header.directory_length > MAX_DIRECTORY_BYTES:
            raise LimitError("header.directory_length", f"{header.directory_length} bytes is over the limit of {MAX_DIRECTORY_BYTES}", offset=32)
        index_offset = header.index_offset
        index_end = index_offset + header.metadata_length + header.directory_length + INDEX_CRC_SIZE
        if index_offset < DATA_START or index_end != size:
            why = ""
            if index_offset >= DATA_START:  # a short download, or bytes appended: say which
                why = (
                    f": the file is truncated, its index says {index_end:,} bytes"
                    if index_end > size
                    else f": {size - index_end:,} bytes follow the index"
                )
            raise FormatError(
                "header.index_offset",
                f"index at {index_offset} with {header.metadata_length}+{header.directory_length}+4 bytes "
                f"must end exactly at the end of the {size}-byte file{why}",
                offset=24,
            )
        meta_end = index_offset + header.metadata_length
        dir_end = meta_end + header.directory_length
        stored_crc = int.from_bytes(buf[dir_end:index_end], "little")
        if crc32(buf[index_offset:dir_end]) != stored_crc:
            raise ChecksumError("index.crc32", "index checksum mismatch: the metadata or directory is corrupt", offset=dir_end)
        self._metadata = strict_json.load_object(bytes(buf[index_offset:meta_end]), field="metadata", offset=index_offset)
        self._entries = self._parse_directory(buf[meta_end:dir_end], header.tensor_count, meta_end)
        self._check_coverage(index_offset)

    def _parse_directory(self, data, count: int, base: int) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        pos = 0
        previous = None
        for index in range(count):  # one iteration per tensor, not per element
            field = f"directory[{index}]"
            if len(data) - pos < 2:
                raise FormatError(field, "directory ends inside an entry", offset=base + pos)
            name_length = int.from_bytes(data[pos : pos + 2], "little")
            if not 1 <= name_length <= MAX_NAME_BYTES:
                raise LimitError(field + ".name_length", f"{name_length} is outside 1..{MAX_NAME_BYTES}", offset=base + pos)
            rank_at = pos + 2 + name_length + 2
            if len(data) - pos < entry_size(name_length, 0):
                raise FormatError(field, "directory ends inside an entry", offset=base + pos)
            rank = data[rank_at]
            if rank > MAX_RANK:
                raise LimitError(field + ".rank", f"rank {rank} is over the limit of {MAX_RANK}", offset=base + rank_at)
            length = entry_size(name_length, rank)
            if len(data) - pos < length:
                raise FormatError(field, "directory ends inside an entry", offset=base + pos)
            try:
                raw = parse_entry(bytes(data[pos : pos + length]))
            except struct.error as exc:  # cannot happen after the checks above; kept as a guard
                raise FormatError(field, f"unreadable entry ({exc})", offset=base + pos) from None
            entry = self._check_entry(raw, field, base + pos, previous)
            previous = raw.name
            entries[entry.name] = entry
            pos += length
        if pos != len(data):
            raise FormatError("directory", f"{len(data) - pos} bytes follow the last of {count} entries", offset=base + pos)
        return entries

    def _check_entry(self, raw, field: str, at: int, previous: bytes | None) -> Entry:
        try:
            name = raw.name.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(field + ".name", "tensor name is not valid UTF-8", offset=at + 2) from None
        if previous is not None and raw.name <= previous:
            problem = "duplicate tensor name" if raw.name == previous else "names are not in ascending byte order"
            raise FormatError(field + ".name", f"{problem} ({quoted(name)!s})", offset=at + 2)
        after_name = at + 2 + len(raw.name)
        dtype = _known(DType, raw.dtype)
        encoding = _known(Encoding, raw.encoding)
        newer = self.version[1] > VERSION_MINOR
        if not isinstance(dtype, DType) and not newer:
            raise UnsupportedError(field + ".dtype", f"unknown dtype id {raw.dtype}", offset=after_name)
        if not isinstance(encoding, Encoding) and not newer:
            raise UnsupportedError(field + ".encoding", f"unknown encoding id {raw.encoding}", offset=after_name + 1)
        if isinstance(encoding, Encoding) and ENCODING_SINCE[encoding] > self.version[1]:
            raise FormatError(
                field + ".encoding",
                f"encoding {encoding.name.lower()} is defined from format 1.{ENCODING_SINCE[encoding]}, "
                f"this file declares {self.version[0]}.{self.version[1]}",
                offset=after_name + 1,
            )
        if raw.flags != 0:
            raise FormatError(field + ".flags", f"reserved flag bits are set (0x{raw.flags:02x})", offset=after_name + 3)
        shape = tuple(int(d) for d in raw.shape)
        if extent(shape) > MAX_ELEMENTS:
            raise LimitError(field + ".shape", f"shape {shape}: the product of its nonzero dimensions is over {MAX_ELEMENTS}", offset=after_name + 4)
        offsets_at = after_name + 4 + 8 * len(shape)
        if raw.payload_offset % ALIGNMENT:
            raise FormatError(field + ".payload_offset", f"{raw.payload_offset} is not a multiple of {ALIGNMENT}", offset=offsets_at)
        return Entry(name, dtype, encoding, shape, raw.payload_offset, raw.payload_length, raw.payload_crc32, at)

    def _check_coverage(self, index_offset: int) -> None:
        """Payloads tile the data area exactly: no holes, no overlaps, zero padding only."""
        end = DATA_START
        for entry in sorted(self._entries.values(), key=lambda e: (e.offset, e.length)):
            field = f"tensors[{quoted(entry.name)}].payload_offset"
            if entry.offset != align(end):
                problem = "overlaps the previous payload" if entry.offset < align(end) else "leaves a hole after the previous payload"
                raise FormatError(field, f"payload at {entry.offset} {problem} (expected {align(end)})", offset=entry.entry_offset)
            if entry.offset + entry.length > index_offset:
                raise FormatError(
                    field, f"payload [{entry.offset}, {entry.offset + entry.length}) runs into the index at {index_offset}", offset=entry.entry_offset
                )
            end = entry.offset + entry.length
        if self._entries and end != index_offset:
            raise FormatError("header.index_offset", f"the index starts at {index_offset}, but the last payload ends at {end}", offset=24)
        if not self._entries and index_offset != DATA_START:
            raise FormatError("header.index_offset", f"a file without tensors has its index at {DATA_START}, not {index_offset}", offset=24)

    # -- public API ---------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names in the directory's order (ascending UTF-8 bytes)."""
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def metadata(self) -> dict:
        """The JSON metadata: the user's keys and the reserved ``dcformat.*`` ones."""
        return json.loads(json.dumps(self._metadata))

    def get(self, name: str, *, threads: int = 1) -> np.ndarray:
        """Decode one tensor, on up to ``threads`` threads. Raw tensors come back as
        read-only views of the file."""
        return decode.decode(self.plan(name), threads=threads)

    def get_quantized(self, name: str, *, threads: int = 1) -> QuantizedTensor:
        """A quantized tensor's codebook and entries (fillers included), without dequantizing."""
        plan = self.plan(name)
        if not isinstance(plan, QuantPlan):  # a caller's mistake, not a bad file
            raise EncodeError(f"tensor is stored {plan.encoding.name.lower()}, not quantized", field=f"tensors[{quoted(name)}]")
        return decode.decode_quantized(plan, threads=threads)

    def get_stored(self, name: str, *, threads: int = 1) -> np.ndarray | QuantizedTensor:
        """The tensor as stored: a :class:`QuantizedTensor` for the quantized encodings (as
        :meth:`get_quantized`), a writable array otherwise. Re-saving it keeps the coding."""
        plan = self.plan(name)
        if isinstance(plan, QuantPlan):
            return decode.decode_quantized(plan, threads=threads)
        return np.array(decode.decode(plan, threads=threads))

    def info(self, name: str) -> TensorInfo:
        """Shape, dtype, encoding, sizes and coding statistics, without building the tensor:
        density is counted on the stored elements (raw: in place; zstd: decompressed) or on
        the decoded symbol streams (quantized), never on a dequantized array. Every check
        that :meth:`get` makes is made here too."""
        plan = self.plan(name)
        entry = self.entry(name)
        base = dict(
            name=name,
            shape=entry.shape,
            dtype=dtypes.name(entry.dtype),
            encoding=entry.encoding.name.lower(),
            stored_bytes=entry.length,
            decoded_bytes=decoded_nbytes(entry.dtype, entry.shape),
            payload_offset=entry.offset,
        )
        numel = numel_of(entry.shape)
        if isinstance(plan, FloatSplitPlan):
            zeros = sum(
                int(np.count_nonzero(float_split.is_zero(symbols, plan.dtype, plan.head_bits))) for _, _, symbols in decode.float_split_blocks(plan)
            )
            per_element = 8 / numel if numel else 0.0
            heads = [block[0] for block in plan.blocks]
            coders = sorted({stream.coder.name.lower() for stream in heads})
            return TensorInfo(
                density=(numel - zeros) / numel if numel else 0.0,
                code_bits=sum(stream.stored_bytes for stream in heads) * per_element,
                codes_coder="+".join(coders) or None,
                **base,
            )
        if isinstance(plan, DensePlan):
            stored = decode.storage_array(plan)
            if entry.dtype in (DType.BFLOAT16, DType.FLOAT16):  # count on the bits: -0 is zero, no ml_dtypes needed
                stored = stored.view(np.uint16) & 0x7FFF
            nonzero = int(np.count_nonzero(stored))
            return TensorInfo(density=nonzero / numel if numel else 0.0, **base)
        codes, _ = decode.decode_streams(plan)  # both streams, so info() checks what get() would
        nonzero_code = plan.codebook != 0
        nonzero = int(np.count_nonzero(nonzero_code[codes])) if codes.size else 0
        per_entry = 8 / plan.entry_count if plan.entry_count else 0.0
        return TensorInfo(
            density=nonzero / numel if numel else 0.0,
            entry_count=plan.entry_count,
            codebook_size=plan.codebook.size,
            code_bits=plan.codes.stored_bytes * per_entry,
            codes_coder=plan.codes.coder.name.lower(),
            gap_bits=plan.gaps.stored_bytes * per_entry if plan.gaps else None,
            gap_width=plan.gap_bits or None,
            gaps_coder=plan.gaps.coder.name.lower() if plan.gaps else None,
            **base,
        )

    def verify(self, *, threads: int | None = None, progress: bool = False) -> list[str]:
        """Check every byte: the padding between payloads, then every tensor decoded with its
        checksum; returns the names checked.

        One tensor at a time (memory holds one), each on ``threads`` threads (default
        ``$DCFORMAT_THREADS``, else every usable CPU), with a progress bar if asked.
        Raises the first :class:`DCFormatError` found. Opening the file already checked
        the header, index and layout.
        """
        threads = resolve_threads(threads)
        self.check_padding()
        for name in progress_bar(self._entries, enabled=progress, desc="verifying", total=len(self._entries)):
            self.get(name, threads=threads)
        return list(self._entries)

    # -- for decoders and loaders -------------------------------------------------------------------
    def plan(self, name: str) -> DensePlan | QuantPlan | FloatSplitPlan:
        """The checked plan of one tensor: its ids known to this reader, its decoded size
        within the expansion limit, its CRC-32 matching, its payload's structure valid.
        Decoders (numpy, torch) decode plans only."""
        entry = self.entry(name)
        field = f"tensors[{quoted(name)}]"
        if not isinstance(entry.dtype, DType):
            raise UnsupportedError(
                field + ".dtype",
                f"dtype id {entry.dtype} comes from format {self.version[0]}.{self.version[1]}, newer than this reader",
                offset=entry.entry_offset,
            )
        if not isinstance(entry.encoding, Encoding):
            raise UnsupportedError(
                field + ".encoding",
                f"encoding id {entry.encoding} comes from format {self.version[0]}.{self.version[1]}, newer than this reader",
                offset=entry.entry_offset,
            )
        decoded = decoded_nbytes(entry.dtype, entry.shape)
        if not within_expansion(decoded, entry.length, self.max_expansion):
            raise LimitError(
                field,
                f"{decoded} decoded bytes from a {entry.length}-byte payload exceed the expansion limit "
                f"({self.max_expansion} x (payload + 64)); open with a larger max_expansion to allow it",
                offset=entry.offset,
            )
        data = self._buf[entry.offset : entry.offset + entry.length]
        if crc32(data) != entry.crc32:
            raise ChecksumError(field + ".payload_crc32", "payload checksum mismatch: the tensor's bytes are corrupt", offset=entry.offset)
        return plan_payload(entry.dtype, entry.encoding, entry.shape, data, field=field, offset=entry.offset)

    def decoded_bytes(self, name: str) -> int:
        """Bytes the tensor decodes to (0 for a dtype newer than this reader)."""
        entry = self.entry(name)
        return decoded_nbytes(entry.dtype, entry.shape) if isinstance(entry.dtype, DType) else 0

    def check_padding(self) -> None:
        """Spec 5.4: every byte between payloads is zero."""
        end = DATA_START
        for entry in sorted(self._entries.values(), key=lambda e: (e.offset, e.length)):
            if any(self._buf[end : entry.offset]):
                raise FormatError(f"tensors[{quoted(entry.name)}].padding", "padding before the payload is not zero", offset=end)
            end = entry.offset + entry.length

    def entry(self, name: str) -> Entry:
        """The tensor's directory entry (shape, dtype and encoding ids, payload offset, length
        and CRC-32), from the index alone: nothing of the payload is read."""
        if self._closed:
            raise DCFormatError("read error: the file is closed")
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this file") from None


def _known(enum_type, value: int):
    """The member of ``enum_type`` with this value, else the value (a dict lookup: calling an
    enum by value took a microsecond, twice per directory entry)."""
    return _MEMBERS[enum_type].get(value, value)


_MEMBERS = {kind: {member.value: member for member in kind} for kind in (DType, Encoding)}
