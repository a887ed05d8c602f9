"""Sharded models: several .dcf files and an index JSON, the convention of safetensors.

A model saved in shards is ``model-00001-of-00003.dcf`` ... plus ``model.dcf.index.json``::

    {"metadata": {...the model's metadata...},
     "weight_map": {"layer.0.weight": "model-00001-of-00003.dcf", ...}}

``dcformat.open`` and ``dcformat.load_file`` accept the index path. Shards are written
one tensor at a time (memory holds about one tensor) and cut when a shard's payloads
pass ``max_shard_bytes``; the shards' final names need the shard count, so they are
renamed into place at the end, and the index is written (atomically) last: an
interrupted save leaves no index pointing at incomplete shards. Shards of an earlier
save under the same prefix that the new index does not name are then deleted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from contextlib import contextmanager

import numpy as np

from ..errors import EncodeError, FormatError
from ..format.constants import MAX_EXPANSION
from ..format.encode import EncodeOptions
from ..format.reader import DCFile, TensorInfo
from ..format.rules import check_name
from .atomic import AllOrNothing, same_file, sync_folder
from .index import DCF_INDEX_SUFFIX, read_index, write_index
from .writers import FileWriter


def shard_name(prefix: str, number: int, total: int) -> str:
    return f"{prefix}-{number:05d}-of-{total:05d}.dcf"


def _shard_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + r"-\d{5}-of-\d{5}\.dcf")


def sharded_save_may_replace(folder, path, *, prefix: str = "model") -> bool:
    """Whether a :class:`ShardedWriter` saving into ``folder`` may replace or delete ``path``
    (its index, or a shard of its naming: stale ones are deleted)."""
    path = os.path.realpath(os.fspath(path))  # a link's target is what would be replaced
    if not same_file(os.path.dirname(path), folder):  # False too where the folder does not exist yet
        return False
    name = os.path.basename(path)
    return name == prefix + DCF_INDEX_SUFFIX or _shard_pattern(prefix).fullmatch(name) is not None


class ShardedWriter(AllOrNothing):
    """Writes a sharded model tensor by tensor: ``with ShardedWriter(folder) as w: w.add(...)``."""

    def __init__(self, folder, *, prefix: str = "model", max_shard_bytes: int = 4 << 30, metadata=None, options: EncodeOptions | None = None):
        if max_shard_bytes < 1:
            raise EncodeError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        if not prefix or prefix.startswith(".") or any(c in prefix for c in ("/", "\\", "\0")):  # spec 14: portable names
            raise EncodeError(f"prefix must be a plain file name prefix, got {prefix!r}")
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.prefix = prefix
        self.max_shard_bytes = int(max_shard_bytes)
        self.metadata = dict(metadata or {})
        self.options = options
        self._shards: list[tuple[FileWriter, list[str]]] = []
        self._names: set[str] = set()
        self._current_bytes = 0
        self.index_path = os.path.join(self.folder, prefix + DCF_INDEX_SUFFIX)

    def add(self, name: str, tensor, *, options: EncodeOptions | None = None) -> None:
        check_name(name)
        if name in self._names:
            raise EncodeError("a tensor of this name was already added", field=repr(name))
        if not self._shards or self._current_bytes >= self.max_shard_bytes:
            number = len(self._shards) + 1
            temporary = os.path.join(self.folder, f".{self.prefix}-{number:05d}.dcf.partial")
            self._shards.append((FileWriter(temporary, options=self.options), []))
            self._current_bytes = 0
        writer, names = self._shards[-1]
        before = writer.bytes_written
        writer.add(name, tensor, options=options)
        self._current_bytes += writer.bytes_written - before
        names.append(name)
        self._names.add(name)

    def close(self) -> str:
        """Finish every shard, rename them to their final names, write the index; returns its path."""
        total = len(self._shards)
        weight_map = {}
        finals = []
        for number, (writer, names) in enumerate(self._shards, start=1):
            writer.metadata = {"shard": f"{number} of {total}"}
            writer.close()
            final = shard_name(self.prefix, number, total)
            finals.append((writer.path, os.path.join(self.folder, final)))
            weight_map.update({name: final for name in names})
        for temporary, final in finals:
            os.replace(temporary, final)
        write_index(self.index_path, metadata={**self.metadata, "format": "dcformat", "shards": total}, weight_map=weight_map)
        self._remove_stale_shards({final for _, final in finals})
        sync_folder(self.folder)
        return self.index_path

    def _remove_stale_shards(self, current: set[str]) -> None:
        """Delete the shards of an earlier save under this prefix (``model-00003-of-00004.dcf`` after a
        save in two shards), which the new index no longer names; only after it is in place."""
        pattern = _shard_pattern(self.prefix)
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if pattern.fullmatch(name) and path not in current:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def abort(self) -> None:
        for writer, _ in self._shards:
            writer.abort()
            try:
                os.unlink(writer.path)
            except FileNotFoundError:
                pass

    _complete = close


def save_sharded(
    tensors: Mapping | Iterable, folder, *, prefix: str = "model", max_shard_bytes: int = 4 << 30, metadata=None, options: EncodeOptions | None = None
) -> str:
    """Save ``tensors`` (a mapping, or an iterable of (name, tensor) pairs consumed one at a
    time) as shards plus an index; returns the index path."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    with ShardedWriter(folder, prefix=prefix, max_shard_bytes=max_shard_bytes, metadata=metadata, options=options) as writer:
        for name, tensor in items:
            writer.add(name, tensor)
    return writer.index_path


@contextmanager
def _in_shard(shard: str):
    """Errors about a shard's bytes name the shard first (``model-00002-of-00005.dcf:
    header.index_offset``): a model of many files says which one is bad."""
    try:
        yield
    except FormatError as error:
        if error.field.startswith(f"{shard}: "):
            raise
        raise type(error)(f"{shard}: {error.field}", error.reason, offset=error.offset) from None


class ShardedFile:
    """The lazy reader of a sharded model: the same methods as :class:`DCFile`."""

    def __init__(self, index_path, *, max_expansion: int = MAX_EXPANSION):
        self.path = os.fspath(index_path)
        self.max_expansion = max_expansion
        self.folder = os.path.dirname(os.path.abspath(self.path))
        self._readers: dict[str, DCFile] = {}
        index = read_index(self.path)
        self._metadata = index.metadata
        self._weight_map = index.weight_map

    def _reader(self, shard: str) -> DCFile:
        if shard not in self._readers:
            try:
                with _in_shard(shard):
                    reader = DCFile(os.path.join(self.folder, shard), max_expansion=self.max_expansion)
            except FileNotFoundError:  # present when the index was read, gone since
                raise FormatError(f"index.weight_map[{shard!r}]", f"shard {shard!r} is missing from {self.folder}", offset=0) from None
            expected = sorted((n for n, s in self._weight_map.items() if s == shard), key=lambda n: n.encode())
            if reader.keys() != expected:
                reader.close()
                raise FormatError(f"index.weight_map[{shard!r}]", "the shard's tensors differ from those the index assigns to it", offset=0)
            self._readers[shard] = reader
        return self._readers[shard]

    def keys(self) -> list[str]:
        return list(self._weight_map)

    def __iter__(self):
        return iter(self._weight_map)

    def __contains__(self, name) -> bool:
        return name in self._weight_map

    def __len__(self) -> int:
        return len(self._weight_map)

    def shards(self) -> list[str]:
        return sorted(set(self._weight_map.values()))

    def metadata(self) -> dict:
        return json.loads(json.dumps(self._metadata))

    def _for(self, name: str) -> DCFile:
        try:
            return self._reader(self._weight_map[name])
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this model") from None

    def get(self, name: str, *, threads: int = 1) -> np.ndarray:
        with _in_shard(self.shard_of(name)):
            return self._for(name).get(name, threads=threads)

    def get_quantized(self, name: str, *, threads: int = 1):
        with _in_shard(self.shard_of(name)):
            return self._for(name).get_quantized(name, threads=threads)

    def get_stored(self, name: str, *, threads: int = 1):
        with _in_shard(self.shard_of(name)):
            return self._for(name).get_stored(name, threads=threads)

    def plan(self, name: str):
        with _in_shard(self.shard_of(name)):
            return self._for(name).plan(name)

    def info(self, name: str) -> TensorInfo:
        return self._for(name).info(name)

    def entry(self, name: str):
        """The directory entry of ``name`` in its shard (see :meth:`DCFile.entry`)."""
        return self._for(name).entry(name)

    def shard_of(self, name: str) -> str:
        """The file name of the shard that holds ``name``."""
        try:
            return self._weight_map[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this model") from None

    def decoded_bytes(self, name: str) -> int:
        return self._for(name).decoded_bytes(name)

    def check_padding(self) -> None:
        for shard in self.shards():
            with _in_shard(shard):
                self._reader(shard).check_padding()

    def verify(self, *, threads: int | None = None, progress: bool = False) -> list[str]:
        """:meth:`DCFile.verify` of every shard."""
        for shard in self.shards():
            with _in_shard(shard):
                self._reader(shard).verify(threads=threads, progress=progress)
        return self.keys()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> ShardedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
