"""``compress_file``: a model on disk (one file or shards) compressed into a ``.dcf`` or
dcformat shards, holding about one tensor per thread in memory."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import numpy as np

from ..errors import EncodeError
from ..format.encode import EncodedTensor, EncodeOptions, encode_tensor
from ..format.reader import DCFile
from ..format.writer import encode_metadata
from ..interop.sources import open_source
from ..io.atomic import same_file
from ..io.shards import ShardedFile, ShardedWriter, sharded_save_may_replace
from ..io.writers import FileWriter
from ..parallel import imap_bounded, resolve_threads
from ..progress import progress as _progress
from .plan import plan_compression
from .settings import TRANSFORMER_IMPORTANCE, describe_importance


def _writer(out_path: str, metadata: dict, options: EncodeOptions, max_shard_bytes: int | None):
    """A one-file writer, or a sharded one when a shard size is given (``out_path`` is then a folder)."""
    if max_shard_bytes is None:
        return FileWriter(out_path, metadata=metadata, options=options)
    return ShardedWriter(out_path, max_shard_bytes=max_shard_bytes, metadata=metadata, options=options)


def write_encoded(out, names, encode, *, threads: int, progress: bool, desc: str) -> None:
    """``out.add(name, encode(name))`` for every name, in order, the encoding on ``threads``
    threads: about ``threads`` encoded tensors in memory at a time, whatever the model's size."""
    encoded = imap_bounded(encode, names, threads)
    for name, payload in _progress(zip(names, encoded), enabled=progress, desc=desc, total=len(names)):
        out.add(name, payload)


def _check_output_spares_source(source_files, out_path: str, max_shard_bytes, one_file_if_fits) -> None:
    """Refuse an output that would replace (or, as a stale shard, delete) a file the model is
    read from: ``dcformat compress model.safetensors model.safetensors`` would leave the user
    without the original weights."""
    for file in source_files:
        if max_shard_bytes is None:
            replaced = same_file(file, out_path)
        else:
            replaced = sharded_save_may_replace(out_path, file) or bool(
                one_file_if_fits and same_file(file, os.path.join(out_path, one_file_if_fits))
            )
        if replaced:
            raise EncodeError(f"writing {out_path} would replace {file}, which the model is read from: choose another output", field="output")


def compress_file(
    in_path,
    out_path,
    *,
    metadata: Mapping | None = None,
    options=None,
    progress: bool = False,
    max_shard_bytes: int | None = None,
    one_file_if_fits: str | None = None,
    threads: int | None = None,
    **settings,
) -> dict:
    """Compress a model file into a ``.dcf`` (replaced atomically), or into dcformat shards.

    ``in_path`` is a ``.safetensors`` or ``.dcf`` file or a shard index of either
    (``model.safetensors.index.json``, ``model.dcf.index.json``). The model is read twice,
    tensor by tensor (once to plan, once to write), so memory holds about one tensor
    however large the model. With ``max_shard_bytes``, ``out_path`` is a folder that
    receives ``model-0000k-of-0000n.dcf`` shards of about that many bytes and
    ``model.dcf.index.json``. ``threads`` tensors are worked on at once (default:
    ``$DCFORMAT_THREADS`` or every core); the file is the same whatever their number.
    With ``one_file_if_fits`` (a file name) and ``max_shard_bytes``, a model whose planned
    size fits in one shard is written as that one file in the folder, without an index
    (what a model folder holds: ``model.dcf``, or shards when large).

    ``settings`` are :func:`compress_tensors`' options. ``options`` (an
    :class:`~dcformat.EncodeOptions`) tells the encoder how to store tensors; by default
    the smallest storage, zstd included for exact tensors. Returns the report of
    :func:`compress_tensors` with each tensor's ``stored_bytes`` and ``encoding`` (and
    ``shard``) and the totals (``file_bytes``: every file written, index included;
    ``ratio_vs_source``, ``ratio_vs_fp32``) measured on what was written.
    """
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    threads = resolve_threads(threads)
    if max_shard_bytes is not None and (
        isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, (int, np.integer)) or max_shard_bytes < 1
    ):
        raise EncodeError(f"must be a positive number of bytes, got {max_shard_bytes!r}", field="max_shard_bytes")
    with open_source(in_path) as source:
        _check_output_spares_source(source.files, out_path, max_shard_bytes, one_file_if_fits)
        user = dict(source.metadata)
        user.update(metadata or {})
        draft = dict(user)
        draft["dcformat_compress"] = {"source": os.path.basename(in_path)}
        # The metadata, which records the settings, counts in the size budget. Its estimate depends
        # on the settings' values only, not on how they were passed, so the command line and the
        # library write the same file for the same settings.
        importance = describe_importance(settings.get("importance", TRANSFORMER_IMPORTANCE))
        metadata_bytes = len(encode_metadata(draft)) + len(json.dumps(importance)) + 512
        started = time.perf_counter()
        plan = plan_compression(source, progress=progress, metadata_bytes=metadata_bytes, threads=threads, **settings)
        planned = time.perf_counter()
        draft["dcformat_compress"]["settings"] = plan.settings
        options = options or EncodeOptions(dense="auto")
        if one_file_if_fits and max_shard_bytes is not None and plan.report()["totals"]["estimated_bytes"] <= max_shard_bytes:
            os.makedirs(out_path, exist_ok=True)
            out_path, max_shard_bytes = os.path.join(out_path, one_file_if_fits), None

        def quantize_and_encode(name: str) -> EncodedTensor:
            return encode_tensor(plan.apply(name, source[name]), options, field=repr(name))

        with _writer(out_path, draft, options, max_shard_bytes) as out:
            write_encoded(out, plan.names, quantize_and_encode, threads=threads, progress=progress, desc="compressing")
    report = plan.report()
    report["seconds"] = {"plan": planned - started, "quantize_and_write": time.perf_counter() - planned, "threads": threads}
    if max_shard_bytes is None:
        written, reader = [out_path], DCFile(out_path)
    else:
        reader = ShardedFile(out.index_path)
        written = [out.index_path] + [os.path.join(out_path, shard) for shard in reader.shards()]
        report["shards"] = reader.shards()
    with reader:
        for row in report["tensors"]:
            entry = reader.entry(row["name"])
            row["stored_bytes"] = int(entry.length)
            row["encoding"] = entry.encoding.name.lower()
            if max_shard_bytes is not None:
                row["shard"] = reader.shard_of(row["name"])
    file_bytes = sum(os.path.getsize(p) for p in written)
    totals = report["totals"]
    elements = totals["elements"]
    totals.update(
        file_bytes=file_bytes,
        stored_bytes=sum(r["stored_bytes"] for r in report["tensors"]),
        bits_per_weight=8 * file_bytes / elements if elements else None,
        ratio_vs_source=totals["source_bytes"] / file_bytes,
        ratio_vs_fp32=totals["fp32_bytes"] / file_bytes,
    )
    report["input"] = in_path
    report["output"] = written[0]
    return report
