"""Shard indexes (spec section 14): the one reader and writer of ``*.index.json``, for
dcformat's own shards (``model.dcf.index.json``) and for the safetensors shards that
Hugging Face writes (``model.safetensors.index.json``); both have the same shape::

    {"metadata": {...}, "weight_map": {"layer.0.weight": "model-00001-of-00003.dcf", ...}}

The index is hostile input like a file (spec 14): its size is capped before it is read
(:data:`MAX_INDEX_BYTES`, its ``metadata`` at ``MAX_METADATA_BYTES`` like a file's), it is
strict JSON under spec 4.1 (``format/strict_json.py``: no byte-order mark, no duplicate
keys, depth and numbers bounded), every shard name must be a plain file name in the
index's folder (:func:`check_shard_name`), and every shard must exist before any is
opened, else :class:`FormatError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import EncodeError, FormatError, LimitError
from ..format import strict_json
from ..format.constants import MAX_METADATA_BYTES, MAX_TENSORS
from .atomic import AtomicFile

DCF_INDEX_SUFFIX = ".dcf.index.json"
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
#: Spec 14: an index is JSON of at most this many bytes (a weight map of a million names fits).
MAX_INDEX_BYTES = 256 * 1024 * 1024
#: Spec 14: what a shard name must not contain: both path separators, and NUL.
SHARD_NAME_FORBIDDEN = ("/", "\\", "\0")


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
    """Spec 14: an index's shard must be a plain file name beside the index, nothing that
    could point elsewhere: a non-empty string, not ``.`` or ``..``, without ``/``, ``\\``
    or NUL, on every platform. (A name the platform's own path rules would still split,
    such as ``C:x`` on Windows, is refused too: the spec lets a reader refuse more.)"""
    if (
        not isinstance(shard, str)
        or not shard
        or shard in (".", "..")
        or any(c in shard for c in SHARD_NAME_FORBIDDEN)
        or shard != os.path.basename(shard)
    ):
        raise FormatError(field, f"shard {shard!r} is not a plain file name in the index's folder", offset=0)


def compact_size(value) -> int:
    """Spec 14: bytes of ``value`` as compact JSON (4.3: no whitespace, non-ASCII unescaped),
    the measure of an index's ``metadata`` against ``MAX_METADATA_BYTES``."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def read_index(path) -> ShardIndex:
    """Read and check an index; every shard it names must exist."""
    path = os.fspath(path)
    where = os.path.basename(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_INDEX_BYTES + 1)  # never more, even if the file grew since
    if max(size, len(data)) > MAX_INDEX_BYTES:
        raise LimitError(f"{where}: index", f"index of {max(size, len(data))} bytes is over the limit of {MAX_INDEX_BYTES}", offset=0)
    index = strict_json.load_object(data, field=f"{where}: index", offset=0)
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
    if compact_size(metadata) > MAX_METADATA_BYTES:
        raise LimitError(f"{where}: metadata", f"is over the limit of {MAX_METADATA_BYTES} bytes (as compact JSON)", offset=0)
    folder = os.path.dirname(os.path.abspath(path))
    for shard in sorted(set(weight_map.values())):  # all present before any is read
        if not os.path.isfile(os.path.join(folder, shard)):
            raise FormatError(f"{where}: weight_map", f"shard {shard!r} is missing from {folder}", offset=0)
    ordered = dict(sorted(weight_map.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass")))
    return ShardIndex(path, metadata, ordered)


def write_index(path, *, metadata: dict, weight_map: dict) -> None:
    """Write an index atomically, keys sorted; only one that :func:`read_index` accepts
    (shard names, sizes and the JSON rules checked first, else :class:`EncodeError`)."""
    for name, shard in weight_map.items():
        try:
            check_shard_name(shard, field=f"weight_map[{name!r}]")
        except FormatError as exc:
            raise EncodeError(exc.reason, field=exc.field) from None
    data = strict_json.dump_object({"metadata": metadata, "weight_map": weight_map}, what="index", indent=1)
    if compact_size(metadata) > MAX_METADATA_BYTES:
        raise EncodeError(f"index metadata is over the limit of {MAX_METADATA_BYTES} bytes (as compact JSON)")
    if len(data) > MAX_INDEX_BYTES:
        raise EncodeError(f"index of {len(data)} bytes is over the limit of {MAX_INDEX_BYTES}")
    with AtomicFile(path) as out:
        out.file.write(data)
