"""Reading: the lazy ``open_file`` (safetensors' ``safe_open``) for one ``.dcf`` file or a
sharded model's index; ``load``/``load_file``, which decode every tensor on a thread pool;
and ``decoding``, which hands out every tensor's array while a worker decodes the values.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from .. import kernels
from ..format import decode as decoders
from ..format.constants import MAX_EXPANSION, Encoding
from ..format.reader import DCFile
from ..parallel import Backlog, map_threads, resolve_threads
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


def decode_all(reader, *, threads: int | None = None, writable: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of an open reader, decoded on a pool of ``threads`` threads.

    Tensors larger than one thread's share of the work are decoded one at a time with
    all threads (across their Huffman lanes and entry spans); the rest in parallel. The
    decoded ones go to pages mapped for them all at once (``kernels.output_reserve``).
    """
    threads = resolve_threads(threads)
    names = reader.keys()
    sizes = {name: reader.decoded_bytes(name) for name in names}
    total = sum(sizes.values())
    big = [name for name in names if threads > 1 and sizes[name] * threads > total]
    small = [name for name in names if name not in set(big)]
    reserve = kernels.output_reserve(sizes[name] for name in names if reader.entry(name).encoding in _DECODED_INTO_PAGES)

    def decode(name: str, inner: int = 1) -> np.ndarray:
        array = decoders.decode(reader.plan(name), threads=inner, reserve=reserve)
        return array.copy() if writable and not array.flags.writeable else array

    out = {name: decode(name, threads) for name in big}
    out.update(zip(small, map_threads(decode, small, threads)))
    return {name: out[name] for name in names}


@contextmanager
def decoding(reader, *, threads: int | None = None):
    """``with decoding(reader) as (arrays, arriving):`` every tensor's writable array at once,
    planned and checked as for :func:`decode_all`, while a worker thread decodes the values
    of those named in ``arriving``, largest first (raw and zstd tensors come whole); leaving
    the block waits for the values (the caller's thread joins in) and raises the first
    decoding error.

    For a loader with work of its own that needs the arrays but not yet their values:
    ``dcformat.hf.from_pretrained`` hands them to transformers, which builds the model around
    them meanwhile. Inside the block read none of ``arriving``. With one thread everything is
    decoded before the block starts (``arriving`` is empty).
    """
    threads = resolve_threads(threads)
    names = sorted(reader.keys(), key=reader.decoded_bytes, reverse=True)  # the worker starts on the largest
    reserve = kernels.output_reserve(reader.decoded_bytes(name) for name in names if reader.entry(name).encoding in _DECODED_INTO_PAGES)
    fills = Backlog() if threads > 1 else None
    arrays, arriving = {}, set()
    try:
        for name in names:
            array, fill = decoders.start(reader.plan(name), reserve=reserve)
            if fill is None:
                array = array if array.flags.writeable else array.copy()
            elif fills is None:
                fill(1)
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
