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
from typing import Iterable, Mapping

import numpy as np

from .constants import MAX_EXPANSION, MAX_METADATA_BYTES, MAX_TENSORS
from .container import DCFile, FileWriter, TensorInfo, _check_name, _sync_folder
from .encodings import EncodeOptions
from .errors import EncodeError, FormatError, LimitError

INDEX_SUFFIX = ".dcf.index.json"
#: An index is JSON of at most this many bytes (a weight map of a million names fits).
MAX_INDEX_BYTES = 256 * 1024 * 1024


def check_shard_name(shard, *, field: str) -> None:
    """An index's shard must be a plain file name beside the index: nothing may point elsewhere."""
    if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", "..") or "\\" in shard:
        raise FormatError(field, f"shard {shard!r} is not a plain file name in the index's folder", offset=0)


def shard_name(prefix: str, number: int, total: int) -> str:
    return f"{prefix}-{number:05d}-of-{total:05d}.dcf"


class ShardedWriter:
    """Writes a sharded model tensor by tensor: ``with ShardedWriter(folder) as w: w.add(...)``."""

    def __init__(self, folder, *, prefix: str = "model", max_shard_bytes: int = 4 << 30, metadata=None,
                 options: EncodeOptions | None = None):
        if max_shard_bytes < 1:
            raise EncodeError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        if not prefix or os.sep in prefix or prefix.startswith("."):
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
        self.index_path = os.path.join(self.folder, prefix + INDEX_SUFFIX)

    def add(self, name: str, tensor, *, options: EncodeOptions | None = None) -> None:
        _check_name(name)
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
        index = {"metadata": {**self.metadata, "format": "dcformat", "shards": total},
                 "weight_map": dict(sorted(weight_map.items()))}
        tmp = self.index_path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1, ensure_ascii=False, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.index_path)
        self._remove_stale_shards({final for _, final in finals})
        _sync_folder(self.folder)
        return self.index_path

    def _remove_stale_shards(self, current: set[str]) -> None:
        """Delete the shards of an earlier save under this prefix (``model-00003-of-00004.dcf`` after a
        save in two shards), which the new index no longer names; only after it is in place."""
        pattern = re.compile(re.escape(self.prefix) + r"-\d{5}-of-\d{5}\.dcf")
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

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_sharded(tensors: Mapping | Iterable, folder, *, prefix: str = "model", max_shard_bytes: int = 4 << 30,
                 metadata=None, options: EncodeOptions | None = None) -> str:
    """Save ``tensors`` (a mapping, or an iterable of (name, tensor) pairs consumed one at a
    time) as shards plus an index; returns the index path."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    with ShardedWriter(folder, prefix=prefix, max_shard_bytes=max_shard_bytes, metadata=metadata, options=options) as writer:
        for name, tensor in items:
            writer.add(name, tensor)
    return writer.index_path


class ShardedFile:
    """The lazy reader of a sharded model: the same methods as :class:`DCFile`."""

    def __init__(self, index_path, *, max_expansion: int = MAX_EXPANSION):
        self.path = os.fspath(index_path)
        self.max_expansion = max_expansion
        self.folder = os.path.dirname(os.path.abspath(self.path))
        self._readers: dict[str, DCFile] = {}
        size = os.path.getsize(self.path)
        if size > MAX_INDEX_BYTES:
            raise LimitError("index", f"index of {size} bytes is over the limit of {MAX_INDEX_BYTES}", offset=0)
        with open(self.path, "rb") as f:
            raw = f.read()
        try:
            index = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError("index", f"not UTF-8 JSON ({exc})", offset=0) from None
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise FormatError("index.weight_map", "the index must be an object with a weight_map object", offset=0)
        metadata = index.get("metadata", {})
        if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise FormatError("index.metadata", "must be an object of at most 16 MiB", offset=0)
        weight_map = index["weight_map"]
        if len(weight_map) > MAX_TENSORS:
            raise LimitError("index.weight_map", f"{len(weight_map)} tensors is over the limit of {MAX_TENSORS}", offset=0)
        for name, shard in weight_map.items():
            check_shard_name(shard, field=f"index.weight_map[{name!r}]")
        self._metadata = metadata
        self._weight_map = dict(sorted(weight_map.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass")))

    def _reader(self, shard: str) -> DCFile:
        if shard not in self._readers:
            reader = DCFile(os.path.join(self.folder, shard), max_expansion=self.max_expansion)
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
        return self._for(name).get(name, threads=threads)

    def get_quantized(self, name: str, *, threads: int = 1):
        return self._for(name).get_quantized(name, threads=threads)

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
            self._reader(shard).check_padding()

    def verify(self) -> list[str]:
        for shard in self.shards():
            self._reader(shard).verify()
        return self.keys()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> "ShardedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
