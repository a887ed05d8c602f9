"""The writer's state machine: a file section by section into a seekable sink (spec 3-5).

A file is a 64-byte header, the payloads (each on a 64-byte boundary, zero padding
between), and at the end the index: JSON metadata, the tensor directory, and a CRC-32 of
both. The header says where the index starts, so the writer streams payloads out one at a
time and finishes with the index, then the header. Putting that file on disk atomically is
``dcformat.io``'s job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from .._version import __version__
from ..errors import EncodeError
from . import strict_json
from .constants import (
    DATA_START,
    ENCODING_SINCE,
    MAGIC,
    MAX_DIRECTORY_BYTES,
    MAX_METADATA_BYTES,
    MAX_TENSORS,
    RESERVED_KEY_PREFIX,
    VERSION_MAJOR,
    DType,
    Encoding,
)
from .encode import EncodedTensor, EncodeOptions, encode_tensor
from .rules import align, check_name, check_shape, crc32
from .structs import HEADER_CRC_COVERS, INDEX_CRC_SIZE, Header, TensorEntry

PRODUCER = "dcformat"


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
        key = check_name(name)
        if key in self._written:
            raise EncodeError("a tensor of this name was already added", field=repr(name))
        if len(self._written) >= MAX_TENSORS:
            raise EncodeError(f"a file holds at most {MAX_TENSORS} tensors")
        if isinstance(tensor, EncodedTensor):  # encoded beforehand (on another thread, say)
            encoded = tensor
        else:
            encoded = encode_tensor(tensor, options or self._options, field=repr(name))
        check_shape(encoded.shape, field=repr(name))
        offset = align(self._end)
        self._sink.write(b"\0" * (offset - self._end))
        self._sink.write(encoded.payload)
        self._end = offset + len(encoded.payload)
        self._written[key] = _Written(key, encoded.dtype, encoded.encoding, encoded.shape, offset, len(encoded.payload), crc32(encoded.payload))

    @property
    def bytes_written(self) -> int:
        return self._end

    def finish(self, metadata: Mapping[str, object] | None = None) -> int:
        """Write the index and the header; returns the file's size in bytes."""
        if self._finished:
            raise EncodeError("the file is already finished")
        meta = encode_metadata(metadata)
        directory = b"".join(
            TensorEntry.build(
                dict(
                    name_length=len(w.name),
                    name=w.name,
                    dtype=int(w.dtype),
                    encoding=int(w.encoding),
                    rank=len(w.shape),
                    flags=0,
                    shape=list(w.shape),
                    payload_offset=w.offset,
                    payload_length=w.length,
                    payload_crc32=w.crc32,
                )
            )
            for _, w in sorted(self._written.items())
        )
        if len(directory) > MAX_DIRECTORY_BYTES:
            raise EncodeError(f"the directory would take {len(directory)} bytes, over the limit of {MAX_DIRECTORY_BYTES}")
        index_offset = self._end
        self._sink.write(meta + directory + crc32(meta + directory).to_bytes(4, "little"))
        header = dict(
            magic=MAGIC,
            version_major=VERSION_MAJOR,
            version_minor=max((ENCODING_SINCE[w.encoding] for w in self._written.values()), default=0),
            flags=0,
            tensor_count=len(self._written),
            metadata_length=len(meta),
            index_offset=index_offset,
            directory_length=len(directory),
            header_crc32=0,
        )
        header["header_crc32"] = crc32(Header.build(header)[:HEADER_CRC_COVERS])
        self._sink.seek(0)
        self._sink.write(Header.build(header))
        self._sink.seek(0, os.SEEK_END)
        self._finished = True
        return index_offset + len(meta) + len(directory) + INDEX_CRC_SIZE


def encode_metadata(metadata: Mapping[str, object] | None) -> bytes:
    """Canonical JSON of the user's keys plus the reserved ones (spec section 4)."""
    metadata = dict(metadata or {})
    for key in metadata:
        if not isinstance(key, str):
            raise EncodeError(f"metadata keys must be str, got {key!r}")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise EncodeError(f"metadata keys starting with {RESERVED_KEY_PREFIX!r} are reserved", field=repr(key))
    metadata[RESERVED_KEY_PREFIX + "producer"] = f"{PRODUCER} {__version__}"
    data = strict_json.dump_object(metadata, what="metadata")  # nothing the reader would reject (spec 4.1)
    if len(data) > MAX_METADATA_BYTES:
        raise EncodeError(f"metadata takes {len(data)} bytes, over the limit of {MAX_METADATA_BYTES}")
    return data
