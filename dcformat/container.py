"""The container: writing a file section by section, and reading it lazily (spec sections 3-5).

A file is a 64-byte header, the payloads (each on a 64-byte boundary, zero padding
between), and at the end the index: JSON metadata, the tensor directory, and a CRC-32
of both. The header says where the index starts, so a writer can stream payloads out
one at a time and finish with the index; a reader reads the header and the index and
touches a payload only when its tensor is asked for.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import tempfile
import zlib
from dataclasses import dataclass
from typing import IO, Iterator, Mapping

import numpy as np
from construct import ConstructError

from . import dtypes
from .constants import (
    ALIGNMENT,
    DATA_START,
    HEADER_SIZE,
    MAGIC,
    MAX_DIRECTORY_BYTES,
    MAX_ELEMENTS,
    MAX_EXPANSION,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    RESERVED_KEY_PREFIX,
    VERSION_MAJOR,
    VERSION_MINOR,
    DType,
    Encoding,
)
from .encodings import EncodedTensor, EncodeOptions, decode_payload, decoded_nbytes, encode_tensor, parse_quantized, within_expansion
from .errors import ChecksumError, DCFormatError, EncodeError, FormatError, LimitError, UnsupportedError
from .layout import HEADER_CRC_COVERS, INDEX_CRC_SIZE, Header, TensorEntry, entry_size
from .parallel import map_threads, resolve_threads
from .quantize import QuantizedTensor

PRODUCER = "dcformat"


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# ======================================================================================
# Writing
# ======================================================================================

@dataclass(frozen=True)
class _Written:
    name: bytes
    dtype: DType
    encoding: Encoding
    shape: tuple
    offset: int
    length: int
    crc32: int


class Writer:
    """Writes a file tensor by tensor: ``add`` as many as you like, then ``finish`` once.

    The states are explicit: payloads can only be added before ``finish``, and
    ``finish`` writes the index and then the header, which is the only way the file
    becomes valid. ``sink`` must be a seekable binary file object positioned at 0.
    """

    def __init__(self, sink: IO[bytes], *, options: EncodeOptions | None = None):
        self._sink = sink
        self._options = options or EncodeOptions()
        self._written: dict[bytes, _Written] = {}
        self._end = DATA_START
        self._finished = False
        sink.write(b"\0" * DATA_START)  # the header is written last, once the index is placed

    def add(self, name: str, tensor, *, options: EncodeOptions | None = None) -> None:
        """Encode ``tensor`` (an ndarray or QuantizedTensor) and write its payload now.

        ``tensor`` may also be the :class:`~dcformat.encodings.EncodedTensor` that
        ``encode_tensor`` made of it, which is written as it is.
        """
        if self._finished:
            raise EncodeError("the file is already finished", field=repr(name))
        key = _check_name(name)
        if key in self._written:
            raise EncodeError("a tensor of this name was already added", field=repr(name))
        if len(self._written) >= MAX_TENSORS:
            raise EncodeError(f"a file holds at most {MAX_TENSORS} tensors")
        if isinstance(tensor, EncodedTensor):  # encoded beforehand (on another thread, say)
            encoded = tensor
        else:
            encoded = encode_tensor(tensor, options or self._options, field=repr(name))
        _check_shape(encoded.shape, field=repr(name))
        offset = _align(self._end)
        self._sink.write(b"\0" * (offset - self._end))
        self._sink.write(encoded.payload)
        self._end = offset + len(encoded.payload)
        self._written[key] = _Written(key, encoded.dtype, encoded.encoding, encoded.shape, offset, len(encoded.payload), _crc(encoded.payload))

    @property
    def bytes_written(self) -> int:
        return self._end

    def finish(self, metadata: Mapping[str, object] | None = None) -> int:
        """Write the index and the header; returns the file's size in bytes."""
        if self._finished:
            raise EncodeError("the file is already finished")
        meta = encode_metadata(metadata)
        directory = b"".join(
            TensorEntry.build(dict(name_length=len(w.name), name=w.name, dtype=int(w.dtype), encoding=int(w.encoding), rank=len(w.shape),
                                   flags=0, shape=list(w.shape), payload_offset=w.offset, payload_length=w.length, payload_crc32=w.crc32))
            for _, w in sorted(self._written.items())
        )
        if len(directory) > MAX_DIRECTORY_BYTES:
            raise EncodeError(f"the directory would take {len(directory)} bytes, over the limit of {MAX_DIRECTORY_BYTES}")
        index_offset = self._end
        self._sink.write(meta + directory + _crc(meta + directory).to_bytes(4, "little"))
        header = dict(magic=MAGIC, version_major=VERSION_MAJOR, version_minor=VERSION_MINOR, flags=0, tensor_count=len(self._written),
                      metadata_length=len(meta), index_offset=index_offset, directory_length=len(directory), header_crc32=0)
        header["header_crc32"] = _crc(Header.build(header)[:HEADER_CRC_COVERS])
        self._sink.seek(0)
        self._sink.write(Header.build(header))
        self._sink.seek(0, os.SEEK_END)
        self._finished = True
        return index_offset + len(meta) + len(directory) + INDEX_CRC_SIZE


def _check_name(name) -> bytes:
    if not isinstance(name, str):
        raise EncodeError(f"tensor names must be str, got {type(name).__name__}")
    try:
        key = name.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError("tensor name is not encodable as UTF-8", field=repr(name)) from None
    if not 1 <= len(key) <= MAX_NAME_BYTES:
        raise EncodeError(f"tensor names take 1 to {MAX_NAME_BYTES} UTF-8 bytes, this one {len(key)}", field=repr(name))
    return key


def _check_shape(shape, *, field: str) -> None:
    if len(shape) > MAX_RANK:
        raise EncodeError(f"rank {len(shape)} is over the limit of {MAX_RANK}", field=field)
    if _extent(shape) > MAX_ELEMENTS:
        raise EncodeError(f"shape {tuple(shape)}: the product of its nonzero dimensions is over the limit of {MAX_ELEMENTS}", field=field)


def _extent(shape) -> int:
    """Spec 5.1.2: the product of the nonzero dimensions, which bounds the element count and
    also rules out shapes like (0, 2**62) that no array library can represent."""
    extent = 1
    for dim in shape:  # per dimension, at most 32
        extent *= dim or 1
    return extent


def encode_metadata(metadata: Mapping[str, object] | None) -> bytes:
    """Canonical JSON of the user's keys plus the reserved ones (spec section 4)."""
    metadata = dict(metadata or {})
    for key in metadata:
        if not isinstance(key, str):
            raise EncodeError(f"metadata keys must be str, got {key!r}")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise EncodeError(f"metadata keys starting with {RESERVED_KEY_PREFIX!r} are reserved", field=repr(key))
    from . import __version__  # late: the package imports this module

    metadata[RESERVED_KEY_PREFIX + "producer"] = f"{PRODUCER} {__version__}"
    try:
        text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        data = text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise EncodeError(f"metadata is not JSON-serialisable as UTF-8 ({exc})") from None
    if len(data) > MAX_METADATA_BYTES:
        raise EncodeError(f"metadata takes {len(data)} bytes, over the limit of {MAX_METADATA_BYTES}")
    return data


def _check_tensors(tensors, overrides) -> dict:
    if not isinstance(tensors, Mapping):
        raise EncodeError(f"tensors must be a mapping of names to arrays, got {type(tensors).__name__}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(tensors)
    if unknown:
        raise EncodeError(f"overrides name tensors that are not being saved: {sorted(unknown)}")
    return overrides


def _name_order(tensors: Mapping) -> list[str]:
    """Names sorted by their UTF-8 bytes: the bytes then do not depend on the dict's order."""
    return sorted(tensors, key=_check_name)


def save(tensors: Mapping, *, metadata=None, options: EncodeOptions | None = None, overrides=None) -> bytes:
    """Encode ``tensors`` (name -> ndarray or QuantizedTensor) into the bytes of a file."""
    import io

    overrides = _check_tensors(tensors, overrides)
    sink = io.BytesIO()
    writer = Writer(sink, options=options)
    for name in _name_order(tensors):
        writer.add(name, tensors[name], options=overrides.get(name))
    writer.finish(metadata)
    return sink.getvalue()


class FileWriter:
    """A file written tensor by tensor, atomically: ``with dcformat.writer(path) as w: w.add(...)``.

    Payloads go to a temporary file beside ``path`` as they are added, so memory holds
    about one tensor, not the model. Leaving the ``with`` block normally writes the
    index, syncs the file and renames it over ``path``; an exception (or :meth:`abort`)
    deletes the temporary file and leaves whatever was at ``path`` untouched.

    Where the system allows (Linux), the temporary file has no name while it is written
    (``O_TMPFILE``) and gets one only just before the rename, so a process killed while
    writing leaves nothing behind; elsewhere it is ``.NAME.XXXX.tmp`` from the start.
    """

    def __init__(self, path, *, metadata=None, options: EncodeOptions | None = None):
        self.path = os.fspath(path)
        self.metadata = dict(metadata or {})
        self._folder = os.path.dirname(os.path.abspath(self.path))
        fd = _anonymous_file(self._folder)
        if fd is None:
            fd, self._tmp = tempfile.mkstemp(prefix=self._temporary_prefix(), suffix=".tmp", dir=self._folder)
        else:
            self._tmp = None  # named at close()
        os.fchmod(fd, _new_file_mode(self.path))  # mkstemp makes 0600; give the file a normal mode
        self._sink = os.fdopen(fd, "w+b")
        self._writer = Writer(self._sink, options=options)
        self.size: int | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes of the file so far (header block and payloads; the index comes at the end)."""
        return self._writer.bytes_written

    def add(self, name: str, tensor, *, options: EncodeOptions | None = None) -> None:
        """Encode and write one tensor now."""
        try:
            self._writer.add(name, tensor, options=options)
        except BaseException:
            self.abort()
            raise

    def close(self) -> int:
        """Finish the file and move it into place; returns its size in bytes."""
        if self.size is not None:
            return self.size
        try:
            size = self._writer.finish(self.metadata)
            self._sink.flush()
            os.fsync(self._sink.fileno())
            if self._tmp is None:
                self._tmp = _name_anonymous_file(self._sink.fileno(), self._folder, self._temporary_prefix())
            self._sink.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        _sync_folder(os.path.dirname(os.path.abspath(self.path)))
        self.size = size
        return size

    def _temporary_prefix(self) -> str:
        return "." + os.path.basename(self.path) + "."

    def abort(self) -> None:
        """Drop the temporary file; ``path`` keeps its previous content."""
        if not self._sink.closed:
            self._sink.close()
        if self._tmp is None:  # never named: closing it was enough
            return
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _anonymous_file(folder: str) -> int | None:
    """A read-write file without a name in ``folder`` (Linux's O_TMPFILE), or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):  # naming it later needs /proc
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o600)
    except OSError:  # a filesystem or kernel without it (EOPNOTSUPP, EISDIR, EINVAL)
        return None


def _name_anonymous_file(fd: int, folder: str, prefix: str) -> str:
    """Give the O_TMPFILE file ``fd`` a unique temporary name in ``folder``; returns it."""
    # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N links the file itself; os.link calls linkat
    # (not link, which would link the /proc symlink) only when given a directory fd.
    proc = os.open("/proc/self/fd", os.O_RDONLY)
    try:
        for _ in range(100):
            candidate = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
            try:
                os.link(str(fd), candidate, src_dir_fd=proc, follow_symlinks=True)
                return candidate
            except FileExistsError:
                continue
    finally:
        os.close(proc)
    raise FileExistsError(f"no free temporary name beside {folder}")


def _new_file_mode(path: str) -> int:
    """The mode of the file being replaced, or what ``open()`` would give a new file (0666 & ~umask)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_file(tensors: Mapping, path, *, metadata=None, options: EncodeOptions | None = None, overrides=None) -> int:
    """Write a file atomically: to a temporary file beside ``path``, synced, then renamed.

    A crash at any moment leaves either the old file or the new one at ``path``, never
    a partial one. Returns the file's size in bytes.
    """
    overrides = _check_tensors(tensors, overrides)
    with FileWriter(path, metadata=metadata, options=options) as out:
        for name in _name_order(tensors):
            out.add(name, tensors[name], options=overrides.get(name))
    return out.size


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ======================================================================================
# Reading
# ======================================================================================

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
    """What ``info(name)`` tells about a stored tensor without decoding it whole."""

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
    def ratio(self) -> float:
        """fp32 size of the tensor divided by its stored bytes (inf for an empty payload)."""
        fp32 = 4 * int(np.prod(self.shape, dtype=object))
        return fp32 / self.stored_bytes if self.stored_bytes else float("inf")

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["shape"] = list(self.shape)
        out["ratio_vs_fp32"] = self.ratio
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
    def __enter__(self) -> "DCFile":
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
            raise UnsupportedError("header.version_major", f"format version {header.version_major}.{header.version_minor} is not supported (this reader reads {VERSION_MAJOR}.x)", offset=8)
        if _crc(raw_header[:HEADER_CRC_COVERS]) != header.header_crc32:
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
            raise FormatError("header.index_offset", f"index at {index_offset} with {header.metadata_length}+{header.directory_length}+4 bytes "
                              f"must end exactly at the end of the {size}-byte file", offset=24)
        meta_end = index_offset + header.metadata_length
        dir_end = meta_end + header.directory_length
        stored_crc = int.from_bytes(buf[dir_end:index_end], "little")
        if _crc(buf[index_offset:dir_end]) != stored_crc:
            raise ChecksumError("index.crc32", "index checksum mismatch: the metadata or directory is corrupt", offset=dir_end)
        self._metadata = decode_metadata(bytes(buf[index_offset:meta_end]), offset=index_offset)
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
                raw = TensorEntry.parse(bytes(data[pos : pos + length]))
            except ConstructError as exc:  # cannot happen after the checks above; kept as a guard
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
            raise FormatError(field + ".name", f"{problem} ({_safe(name)!s})", offset=at + 2)
        after_name = at + 2 + len(raw.name)
        dtype = _known(DType, raw.dtype)
        encoding = _known(Encoding, raw.encoding)
        newer = self.version[1] > VERSION_MINOR
        if not isinstance(dtype, DType) and not newer:
            raise UnsupportedError(field + ".dtype", f"unknown dtype id {raw.dtype}", offset=after_name)
        if not isinstance(encoding, Encoding) and not newer:
            raise UnsupportedError(field + ".encoding", f"unknown encoding id {raw.encoding}", offset=after_name + 1)
        if raw.flags != 0:
            raise FormatError(field + ".flags", f"reserved flag bits are set (0x{raw.flags:02x})", offset=after_name + 3)
        shape = tuple(int(d) for d in raw.shape)
        if _extent(shape) > MAX_ELEMENTS:
            raise LimitError(field + ".shape", f"shape {shape}: the product of its nonzero dimensions is over {MAX_ELEMENTS}", offset=after_name + 4)
        offsets_at = after_name + 4 + 8 * len(shape)
        if raw.payload_offset % ALIGNMENT:
            raise FormatError(field + ".payload_offset", f"{raw.payload_offset} is not a multiple of {ALIGNMENT}", offset=offsets_at)
        return Entry(name, dtype, encoding, shape, raw.payload_offset, raw.payload_length, raw.payload_crc32, at)

    def _check_coverage(self, index_offset: int) -> None:
        """Payloads tile the data area exactly: no holes, no overlaps, zero padding only."""
        expected = DATA_START
        end = DATA_START
        for entry in sorted(self._entries.values(), key=lambda e: (e.offset, e.length)):
            field = f"tensors[{_safe(entry.name)}].payload_offset"
            if entry.offset != _align(end):
                problem = "overlaps the previous payload" if entry.offset < _align(end) else "leaves a hole after the previous payload"
                raise FormatError(field, f"payload at {entry.offset} {problem} (expected {_align(end)})", offset=entry.entry_offset)
            if entry.offset + entry.length > index_offset:
                raise FormatError(field, f"payload [{entry.offset}, {entry.offset + entry.length}) runs into the index at {index_offset}", offset=entry.entry_offset)
            expected = entry.offset
            end = entry.offset + entry.length
        del expected
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

    def entry(self, name: str) -> Entry:
        if self._closed:
            raise DCFormatError("read error: the file is closed")
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this file") from None

    def payload(self, name: str, *, check: bool = True) -> memoryview:
        """The raw payload bytes of a tensor (its CRC-32 checked unless ``check=False``)."""
        entry = self.entry(name)
        data = self._buf[entry.offset : entry.offset + entry.length]
        if check and _crc(data) != entry.crc32:
            raise ChecksumError(f"tensors[{_safe(name)}].payload_crc32", "payload checksum mismatch: the tensor's bytes are corrupt", offset=entry.offset)
        return data

    def checked_payload(self, name: str) -> tuple[Entry, memoryview]:
        """A tensor's entry and payload, once its ids, expansion limit and CRC-32 pass."""
        entry = self.entry(name)
        field = f"tensors[{_safe(name)}]"
        if not isinstance(entry.dtype, DType):
            raise UnsupportedError(field + ".dtype", f"dtype id {entry.dtype} comes from format {self.version[0]}.{self.version[1]}, newer than this reader", offset=entry.entry_offset)
        if not isinstance(entry.encoding, Encoding):
            raise UnsupportedError(field + ".encoding", f"encoding id {entry.encoding} comes from format {self.version[0]}.{self.version[1]}, newer than this reader", offset=entry.entry_offset)
        decoded = decoded_nbytes(entry.dtype, entry.shape)
        if not within_expansion(decoded, entry.length, self.max_expansion):
            raise LimitError(field, f"{decoded} decoded bytes from a {entry.length}-byte payload exceed the expansion limit "
                             f"({self.max_expansion} x (payload + 64)); open with a larger max_expansion to allow it", offset=entry.offset)
        return entry, self.payload(name)

    def get(self, name: str, *, threads: int = 1) -> np.ndarray:
        """Decode one tensor, on up to ``threads`` threads. Raw tensors come back as
        read-only views of the file."""
        entry, data = self.checked_payload(name)
        return decode_payload(entry.dtype, entry.encoding, entry.shape, data, field=f"tensors[{_safe(name)}]", offset=entry.offset,
                              threads=threads)

    def get_quantized(self, name: str, *, threads: int = 1) -> QuantizedTensor:
        """A quantized tensor's codebook and entries (fillers included), without dequantizing."""
        entry, data = self.checked_payload(name)
        return decode_payload(entry.dtype, entry.encoding, entry.shape, data, field=f"tensors[{_safe(name)}]", offset=entry.offset,
                              quantized=True, threads=threads)

    def decoded_bytes(self, name: str) -> int:
        entry = self.entry(name)
        return decoded_nbytes(entry.dtype, entry.shape) if isinstance(entry.dtype, DType) else 0

    def info(self, name: str) -> TensorInfo:
        """Shape, dtype, encoding, sizes and coding statistics; reads the payload for density."""
        entry, data = self.checked_payload(name)
        base = dict(name=name, shape=entry.shape, dtype=dtypes.name(entry.dtype), encoding=entry.encoding.name.lower(),
                    stored_bytes=entry.length, decoded_bytes=decoded_nbytes(entry.dtype, entry.shape), payload_offset=entry.offset)
        numel = int(np.prod(entry.shape, dtype=object))
        if entry.encoding in (Encoding.RAW, Encoding.ZSTD):
            if entry.dtype == DType.BFLOAT16:  # count on the bits, so ml_dtypes is not needed; -0 is zero
                bits = decode_payload(DType.UINT16, entry.encoding, entry.shape, data, field=f"tensors[{_safe(name)}]", offset=entry.offset)
                nonzero = int(np.count_nonzero(bits & 0x7FFF))
            else:
                nonzero = int(np.count_nonzero(self.get(name)))
            return TensorInfo(density=nonzero / numel if numel else 0.0, **base)
        parsed = parse_quantized(entry.dtype, entry.encoding, entry.shape, data, field=f"tensors[{_safe(name)}]", offset=entry.offset)
        q = self.get_quantized(name)
        per_entry = 8 / q.entry_count if q.entry_count else 0.0
        return TensorInfo(density=q.density, entry_count=q.entry_count, codebook_size=q.codebook.size,
                          code_bits=parsed.codes.stored_bytes * per_entry, codes_coder=parsed.codes.coder.name.lower(),
                          gap_bits=parsed.gaps.stored_bytes * per_entry if parsed.gaps else None,
                          gap_width=parsed.gap_bits or None, gaps_coder=parsed.gaps.coder.name.lower() if parsed.gaps else None, **base)

    def verify(self) -> list[str]:
        """Decode every tensor and check every checksum; returns the names checked.

        Raises the first :class:`DCFormatError` found. Opening the file already checked
        the header, index and layout; this adds the payloads and their padding.
        """
        self.check_padding()
        for name in self._entries:
            self.get(name)
        return list(self._entries)

    def check_padding(self) -> None:
        """Spec 5.4: every byte between payloads is zero."""
        end = DATA_START
        for entry in sorted(self._entries.values(), key=lambda e: (e.offset, e.length)):
            if any(self._buf[end : entry.offset]):
                raise FormatError(f"tensors[{_safe(entry.name)}].padding", "padding before the payload is not zero", offset=end)
            end = entry.offset + entry.length


def decode_metadata(data: bytes, *, offset: int) -> dict:
    """Parse the metadata section: a UTF-8 JSON object without duplicate keys or NaN."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("metadata", f"not valid UTF-8 ({exc.reason} at byte {exc.start})", offset=offset + exc.start) from None

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constants(token):
        raise ValueError(f"{token} is not JSON")

    try:
        value = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise FormatError("metadata", f"not valid JSON ({exc})", offset=offset) from None
    if not isinstance(value, dict):
        raise FormatError("metadata", f"must be a JSON object, got {type(value).__name__}", offset=offset)
    try:  # spec 4.1: no escaped lone surrogates; they survive parsing but not UTF-8 encoding
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("metadata", "holds an escaped lone surrogate (not valid Unicode)", offset=offset) from None
    return value


def _known(enum_type, value: int):
    try:
        return enum_type(value)
    except ValueError:
        return value


def _safe(name: str) -> str:
    """A name from a file, quoted with control and invisible characters escaped."""
    return repr(name)


def open_file(source, *, max_expansion: int = MAX_EXPANSION):
    """Open a file (path or bytes), or a sharded model's index (``*.index.json``), lazily.

    Use as ``with dcformat.open(path) as f:``.
    """
    if not isinstance(source, (bytes, bytearray, memoryview)) and os.fspath(source).endswith(".json"):
        from .shards import ShardedFile

        return ShardedFile(source, max_expansion=max_expansion)
    return DCFile(source, max_expansion=max_expansion)


def decode_all(reader, *, threads: int | None = None, writable: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of an open reader, decoded on a pool of ``threads`` threads.

    Tensors larger than one thread's share of the work are decoded one at a time with
    all threads (across their Huffman lanes and entry spans); the rest in parallel.
    """
    threads = resolve_threads(threads)
    names = reader.keys()
    sizes = {name: reader.decoded_bytes(name) for name in names}
    total = sum(sizes.values())
    big = [name for name in names if threads > 1 and sizes[name] * threads > total]
    small = [name for name in names if name not in set(big)]

    def decode(name: str, inner: int = 1) -> np.ndarray:
        array = reader.get(name, threads=inner)
        return array.copy() if writable and not array.flags.writeable else array

    out = {name: decode(name, threads) for name in big}
    out.update(zip(small, map_threads(decode, small, threads)))
    return {name: out[name] for name in names}


def load(data, *, max_expansion: int = MAX_EXPANSION, threads: int | None = None) -> dict[str, np.ndarray]:
    """Decode every tensor of a file held in memory."""
    with DCFile(data, max_expansion=max_expansion) as reader:
        reader.check_padding()
        return decode_all(reader, threads=threads)


def load_file(path, *, max_expansion: int = MAX_EXPANSION, threads: int | None = None) -> dict[str, np.ndarray]:
    """Decode every tensor of a file (or of a sharded model's index) into writable arrays.

    ``threads`` defaults to ``$DCFORMAT_THREADS``, else the usable CPU count.
    """
    with open_file(path, max_expansion=max_expansion) as reader:
        reader.check_padding()
        return decode_all(reader, threads=threads)


__all__ = ["DCFile", "FileWriter", "Writer", "TensorInfo", "decode_all", "save", "save_file", "load", "load_file", "open_file"]
