"""Reading: the lazy ``open_file`` (safetensors' ``safe_open``) for one ``.dcf`` file or a
sharded model's index; ``load``/``load_file``, which decode every tensor on every thread;
and ``decoding``, which hands out every tensor's array while workers decode the values.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from .. import kernels
from ..format import decode as decoders
from ..format.constants import MAX_EXPANSION, Encoding
from ..format.encodings import within_expansion
from ..format.reader import DCFile
from ..parallel import Backlog, resolve_threads
from .shards import ShardedFile


def open_file(source, *, max_expansion: int = MAX_EXPANSION):
    """Open a file (path or bytes), or a sharded model's index (``*.index.json``), lazily.

    Use as ``with dcformat.open(path) as f:``.
    """
    if not isinstance(source, (bytes, bytearray, memoryview)) and os.fspath(source).endswith(".json"):
        return ShardedFile(source, max_expansion=max_expansion)
    return DCFile(source, max_expansion=max_expansion)


#: The encodings whose tensors are decoded into pages of their own (raw ones are views of the
#: file, zstd ones the decompressor's bytes).
_DECODED_INTO_PAGES = (Encoding.QUANT_DENSE, Encoding.QUANT_SPARSE, Encoding.FLOAT_SPLIT)


def decode_all(reader, *, threads: int | None = None) -> dict[str, np.ndarray]:
    """Every tensor of an open reader, decoded on ``threads`` threads into writable arrays
    (:func:`decoding` with nothing else to do: the caller plans while the workers decode)."""
    with decoding(reader, threads=threads) as (arrays, _):
        pass
    return arrays


@contextmanager
def decoding(reader, *, threads: int | None = None):
    """``with decoding(reader) as (arrays, arriving):`` every tensor's writable array at once,
    each planned and checked before its memory is taken, while ``threads - 1`` worker
    threads decode the values of those named in ``arriving``, largest first (raw and zstd
    tensors come whole); leaving the block waits for the values (the caller's thread joins
    in) and raises the first decoding error.

    For a loader with work of its own that needs the arrays but not yet their values:
    ``dcformat.hf.from_pretrained`` hands them to transformers, which builds the model around
    them meanwhile. Inside the block read none of ``arriving``. With one thread, or one
    tensor, everything is decoded before the block starts (``arriving`` is empty).

    Workers decode on one thread each, leaving the caller its core while it works; the
    caller then decodes on all threads (across a tensor's lanes and entry spans) and always
    takes the last tensor left, so a file of one large tensor gets every thread. On two
    cores MiniLM's folder loaded in 25 ms this way, 30 ms when every tensor was planned
    first and then decoded on a pool.
    """
    with kernels.fixed():
        yield from _decoding(reader, resolve_threads(threads))


def _decoding(reader, threads: int):
    names = sorted(reader.keys(), key=reader.decoded_bytes, reverse=True)  # the workers start on the largest
    reserve = _reserve(reader, names)
    workers = min(threads, len(names)) - 1  # a worker never takes the last tensor: no more than the rest
    fills = Backlog(workers) if workers > 0 else None
    arrays, arriving = {}, set()
    try:
        for name in names:
            array, fill = decoders.start(reader.plan(name), reserve=reserve)
            if fill is None:
                array = array if array.flags.writeable else array.copy()
            elif fills is None:
                fill(threads)
            else:
                fills.add(fill)
                arriving.add(name)
            arrays[name] = array
        yield {name: arrays[name] for name in reader.keys()}, frozenset(arriving)
    except BaseException:
        if fills is not None:
            fills.cancel()
        raise
    if fills is not None:
        fills.finish(threads)


def _reserve(reader, names: list[str]):
    """Pages for the tensors that are decoded into pages of their own (``kernels.output_reserve``):
    only those the expansion limit allows, so a file declaring more than its payloads can hold
    fails in planning (the limit named) before it can make a load map anything for it; none
    when the address space refuses the sum (each tensor then maps its own, as it would alone)."""
    sizes = []
    for name in names:
        entry, decoded = reader.entry(name), reader.decoded_bytes(name)
        if entry.encoding in _DECODED_INTO_PAGES and within_expansion(decoded, entry.length, reader.max_expansion):
            sizes.append(decoded)
    try:
        return kernels.output_reserve(sizes)
    except MemoryError:
        return None


def load(data, *, max_expansion: int = MAX_EXPANSION, threads: int | None = None) -> dict[str, np.ndarray]:
    """Decode every tensor of a file held in memory.

    Decoding everything counts as verifying the whole file (spec 8), so every padding
    run is checked too: a nonzero padding byte fails the load even when every tensor decodes.
    """
    with DCFile(data, max_expansion=max_expansion) as reader:
        reader.check_padding()
        return decode_all(reader, threads=threads)


def load_file(path, *, max_expansion: int = MAX_EXPANSION, threads: int | None = None) -> dict[str, np.ndarray]:
    """Decode every tensor of a file (or of a sharded model's index) into writable arrays.

    ``threads`` defaults to ``$DCFORMAT_THREADS``, else the usable CPU count. Like
    :func:`load`, it checks every padding run of every file first (spec 8).
    """
    with open_file(path, max_expansion=max_expansion) as reader:
        reader.check_padding()
        return decode_all(reader, threads=threads)


def safe_open(source, *, max_expansion: int = MAX_EXPANSION):
    """safetensors' name for :func:`open_file`: ``with dcformat.safe_open(path) as f:``."""
    return open_file(source, max_expansion=max_expansion)
