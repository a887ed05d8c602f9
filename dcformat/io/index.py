"""Shard indexes (spec section 14): the one reader and writer of ``*.index.json``, for
dcformat's own shards (``model.dcf.index.json``) and for the safetensors shards that
Hugging Face writes (``model.safetensors.index.json``); both have the same shape::

    {"metadata": {...}, "weight_map": {"layer.0.weight": "model-00001-of-00003.dcf", ...}}

The index is hostile input like a file: its size is capped before it is read, it is
strict JSON (``format/strict_json.py``), every shard name must be a plain file name in
the index's folder, and every shard must exist before any is opened.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import FormatError, LimitError
from ..format import strict_json
from ..format.constants import MAX_METADATA_BYTES, MAX_TENSORS
from .atomic import AtomicFile

DCF_INDEX_SUFFIX = ".dcf.index.json"
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
#: An index is JSON of at most this many bytes (a weight map of a million names fits).
MAX_INDEX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ShardIndex:
    path: str
    metadata: dict
    weight_map: dict  # tensor name -> shard file name, sorted by the names' UTF-8 bytes

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def shards(self) -> list[str]:
        """The shard file names, sorted."""
        return sorted(set(self.weight_map.values()))

    def names_in(self, shard: str) -> set[str]:
        return {name for name, owner in self.weight_map.items() if owner == shard}


def check_shard_name(shard, *, field: str) -> None:
    """An index's shard must be a plain file name beside the index: nothing may point elsewhere."""
    if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", "..") or "\\" in shard or "\0" in shard:
        raise FormatError(field, f"shard {shard!r} is not a plain file name in the index's folder", offset=0)


def read_index(path) -> ShardIndex:
    """Read and check an index; every shard it names must exist."""
    path = os.fspath(path)
    where = os.path.basename(path)
    size = os.path.getsize(path)
    if size > MAX_INDEX_BYTES:
        raise LimitError(f"{where}: index", f"index of {size} bytes is over the limit of {MAX_INDEX_BYTES}", offset=0)
    with open(path, "rb") as f:
        index = strict_json.load_object(f.read(), field=f"{where}: index", offset=0)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise FormatError(f"{where}: weight_map", "the index must be an object with a weight_map object", offset=0)
    if len(weight_map) > MAX_TENSORS:
        raise LimitError(f"{where}: weight_map", f"{len(weight_map)} tensors is over the limit of {MAX_TENSORS}", offset=0)
    for name, shard in weight_map.items():
        check_shard_name(shard, field=f"{where}: weight_map[{name!r}]")
    metadata = index.get("metadata", {})
    if not isinstance(metadata, dict):
        raise FormatError(f"{where}: metadata", f"must be a JSON object, got {type(metadata).__name__}", offset=0)
    if len(json.dumps(metadata, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise LimitError(f"{where}: metadata", f"is over the limit of {MAX_METADATA_BYTES} bytes", offset=0)
    folder = os.path.dirname(os.path.abspath(path))
    for shard in sorted(set(weight_map.values())):  # all present before any is read
        if not os.path.isfile(os.path.join(folder, shard)):
            raise FormatError(f"{where}: weight_map", f"shard {shard!r} is missing from {folder}", offset=0)
    ordered = dict(sorted(weight_map.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass")))
    return ShardIndex(path, metadata, ordered)


def write_index(path, *, metadata: dict, weight_map: dict) -> None:
    """Write an index atomically, names sorted."""
    index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    text = json.dumps(index, indent=1, ensure_ascii=False, allow_nan=False)
    with AtomicFile(path) as out:
        out.file.write(text.encode("utf-8"))
