"""A model on disk as a lazy mapping of names to arrays, whatever file or files hold it.

``dcformat compress`` reads models too large for memory: it looks at every tensor once
to plan, then once more to write, and must hold one tensor at a time. A
:class:`TensorSource` gives it that: ``source[name]`` reads (or decodes) that tensor
into a fresh array and keeps nothing. Four inputs are known::

    model.safetensors                      one safetensors file
    model.safetensors.index.json           safetensors shards and their index (weight_map)
    model.dcf                              one dcformat file (quantized tensors come dequantized)
    model.dcf.index.json                   dcformat shards and their index

safetensors tensors are read with plain file reads, not a memory map: a map's pages
count in the process's resident memory until the kernel needs them back, and a scan of
a 30 GB model would look like (and, under a memory limit, be charged as) 30 GB.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np

from ..errors import FormatError
from ..format.constants import MAGIC, RESERVED_KEY_PREFIX
from ..format.reader import DCFile
from ..io.index import SAFETENSORS_INDEX_SUFFIX, read_index
from ..io.loading import open_file
from ..io.shards import ShardedFile
from ..quantize import QuantizedTensor
from .safetensors import SafetensorsLayout, safetensors_layout

#: The suffix of a safetensors shard index (``model.safetensors.index.json``, as the Hugging Face libraries write it).


class TensorSource(Mapping):
    """A read-only mapping of names to arrays, read on access (thread-safe); close it (or use ``with``) when done.

    ``metadata`` is the user metadata of the source (safetensors' ``__metadata__`` under the
    key ``"safetensors.metadata"``; a ``.dcf``'s own keys, reserved ones left out).
    """

    def __init__(self, path, names: list[str], metadata: dict, files: tuple[str, ...] = ()):
        self.path = os.fspath(path)
        #: Every file the source reads: the file itself, or an index and its shards.
        self.files = files or (self.path,)
        self._names = names
        self._known = set(names)
        self.metadata = metadata

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._known:
            raise KeyError(f"no tensor named {name!r} in {os.path.basename(self.path)}")
        return self._read(name)

    def __contains__(self, name) -> bool:  # Mapping's default would read the tensor
        return name in self._known

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def _read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SafetensorsSource(TensorSource):
    """One or more safetensors files; ``owners`` maps each tensor name to the layout of its file."""

    def __init__(self, path, layouts: list[SafetensorsLayout], owners: dict[str, SafetensorsLayout], metadata: dict):
        files = tuple(dict.fromkeys([os.fspath(path)] + [layout.path for layout in layouts]))
        super().__init__(path, sorted(owners, key=lambda n: n.encode("utf-8", "surrogatepass")), metadata, files)
        self._owners = owners
        self._lock = threading.Lock()
        self._files = {layout.path: open(layout.path, "rb") for layout in layouts}

    def _read(self, name: str) -> np.ndarray:
        layout = self._owners[name]
        dtype, shape, begin = layout.specs[name]
        nbytes = layout.nbytes(name)
        buffer = bytearray(nbytes)
        file = self._files[layout.path]
        with self._lock:  # one file position shared by the threads that read
            file.seek(begin)
            got = file.readinto(buffer)
        if got != nbytes:  # the file shrank after its header was checked
            raise FormatError(
                f"{os.path.basename(layout.path)}: tensors[{name!r}]", f"read {got} of {nbytes} bytes: the file was truncated", offset=begin
            )
        raw = np.frombuffer(buffer, dtype=np.uint8)
        layout.check_bool(name, raw)
        return raw.view(dtype).reshape(shape)

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()


class _DCFSource(TensorSource):
    """A ``.dcf`` file or a dcformat shard index; quantized tensors are dequantized on reading."""

    def __init__(self, path, reader: DCFile | ShardedFile):
        try:
            reader.check_padding()
        except BaseException:
            reader.close()
            raise
        metadata = {k: v for k, v in reader.metadata().items() if not k.startswith(RESERVED_KEY_PREFIX)}
        if isinstance(reader, ShardedFile):  # what ShardedWriter adds to an index's metadata describes the old shards
            metadata = {k: v for k, v in metadata.items() if k not in ("format", "shards")}
        files = (os.fspath(path),)
        if isinstance(reader, ShardedFile):
            files += tuple(os.path.join(reader.folder, shard) for shard in reader.shards())
        super().__init__(path, list(reader.keys()), metadata, files)
        self._reader = reader

    def _read(self, name: str) -> np.ndarray:
        return np.array(self._reader.get(name))  # a copy: views of the map would pin its pages

    def close(self) -> None:
        self._reader.close()


def _safetensors_index(path) -> TensorSource:
    """The shards of a ``*.safetensors.index.json``: every name in the weight map must be in its shard, and nothing else."""
    index = read_index(path)
    where, folder, weight_map = os.path.basename(path), index.folder, index.weight_map
    if not weight_map:
        raise FormatError(f"{where}: weight_map", "the index must hold a non-empty weight_map object", offset=0)
    shards = index.shards()
    layouts, owners = [], {}
    shard_metadata = []
    for shard in shards:
        layout = safetensors_layout(os.path.join(folder, shard))
        expected = {name for name, s in weight_map.items() if s == shard}
        if set(layout.specs) != expected:
            extra, missing = sorted(set(layout.specs) - expected), sorted(expected - set(layout.specs))
            raise FormatError(
                f"{where}: weight_map (shard {shard!r})",
                f"the shard's tensors differ from the index's (in the shard only: {extra[:3]}, in the index only: {missing[:3]})",
                offset=0,
            )
        layouts.append(layout)
        owners.update({name: layout for name in layout.specs})
        if layout.metadata and layout.metadata not in shard_metadata:
            shard_metadata.append(layout.metadata)
    metadata = {}
    if len(shard_metadata) == 1:  # shards written by one save carry the same __metadata__
        metadata["safetensors.metadata"] = shard_metadata[0]
    elif shard_metadata:
        metadata["safetensors.metadata"] = {"shards": shard_metadata}
    if index.metadata:
        metadata["safetensors.index.metadata"] = index.metadata
    return _SafetensorsSource(path, layouts, owners, metadata)


def open_source(path) -> TensorSource:
    """A lazy :class:`TensorSource` over a ``.safetensors`` or ``.dcf`` file, or a shard index of either (``*.index.json``).

    A ``.dcf`` is told by its magic; an index by its name; anything else is read as safetensors.
    """
    path = os.fspath(path)
    if path.endswith(".json"):
        if path.endswith(SAFETENSORS_INDEX_SUFFIX):
            return _safetensors_index(path)
        return _DCFSource(path, open_file(path))
    with open(path, "rb") as file:
        head = file.read(len(MAGIC))
    if head == MAGIC:
        return _DCFSource(path, DCFile(path))
    layout = safetensors_layout(path)
    metadata = {"safetensors.metadata": dict(layout.metadata)} if layout.metadata else {}
    return _SafetensorsSource(path, [layout], {name: layout for name in layout.specs}, metadata)


def read_tensors(path) -> tuple[dict[str, np.ndarray], dict]:
    """Every tensor (read into memory) and the user metadata of a model: see :func:`open_source`.

    Quantized tensors of a ``.dcf`` come back dequantized: they are compressed afresh.
    """
    with open_source(path) as source:
        return {name: source[name] for name in source}, dict(source.metadata)


def as_array(tensor) -> np.ndarray:
    """A tensor as a plain array (a :class:`QuantizedTensor` dequantized)."""
    return tensor.dequantize() if isinstance(tensor, QuantizedTensor) else np.asarray(tensor)


__all__ = ["TensorSource", "as_array", "open_source", "read_tensors"]
