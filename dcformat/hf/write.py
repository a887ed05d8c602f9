"""Writing model folders: a folder compressed (``compress_folder``), and converted
losslessly to ``.dcf`` weights or back to plain safetensors (``convert_folder``).

Each streams the weights as ``dcformat compress`` does: memory holds about one tensor
per thread however large the model. The output is staged beside its destination and
renamed into place when complete (:func:`~dcformat.hf.folder.staged_folder`).
"""

from __future__ import annotations

import os
import tempfile

from .._version import __version__
from ..compress import TRANSFORMER_IMPORTANCE, importance_from_scores
from ..compress.files import compress_file, write_encoded
from ..errors import EncodeError
from ..format.constants import DType
from ..format.encode import EncodeOptions, encode_tensor
from ..interop.safetensors import write_safetensors_lazily
from ..interop.sources import open_source
from ..io.index import DCF_INDEX_SUFFIX, write_index
from ..io.loading import open_file
from ..io.shards import ShardedWriter
from ..io.writers import FileWriter
from ..parallel import resolve_threads
from ..progress import progress as bar
from .folder import ModelFolder, carry, open_folder, staged_folder, write_record

#: Shards of about this many bytes when a model's weights are larger (``save_pretrained``'s "5GB").
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
#: The name of one weight file in a folder, as the Hugging Face libraries name theirs.
DCF_NAME = "model.dcf"
SAFETENSORS_NAME = "model.safetensors"
#: How to load the folders dcformat writes, in the record for whoever opens it.
HOW_TO_LOAD = "dcformat.hf.from_pretrained(FOLDER) gives the transformers model; dcformat convert FOLDER PLAIN_FOLDER gives plain safetensors"


def compress_folder(
    in_dir,
    out_dir,
    *,
    calibration=None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    threads: int | None = None,
    progress: bool = False,
    options=None,
    **settings,
) -> dict:
    """Compress a model folder into a new folder: what ``dcformat compress MODEL_DIR OUT_DIR`` runs.

    The weights are compressed as :func:`dcformat.compress.compress_file` does (``settings``
    are its options) into ``model.dcf``, or shards of about ``max_shard_bytes`` with
    ``model.dcf.index.json`` when larger; every other file is carried over unchanged, and
    ``dcformat.json`` records what was done. Returns the record, with the compression
    report under ``"compress"``.

    ``calibration`` (a text file, one text per line, or a list of texts) runs the
    folder's model on those texts first (:mod:`dcformat.hf.calibration`, which needs torch
    and transformers): linear layers are then quantized with error compensation, and the
    bits are allocated by measured sensitivity instead of the name-based default.
    """
    folder = open_folder(in_dir)
    summary = None
    with staged_folder(out_dir, source=folder.path) as staging, moments_directory(out_dir) as moments:  # the destination is checked first
        if calibration is not None:
            settings, summary = calibrated_settings(folder, calibration, moments=moments, progress=progress, **settings)
        report = compress_file(
            folder.weights,
            staging,
            max_shard_bytes=max_shard_bytes,
            one_file_if_fits=DCF_NAME,
            threads=threads,
            progress=progress,
            options=options,
            **settings,
        )
        totals = report["totals"]
        weights = weights_written(staging, report.get("shards"), DCF_NAME)
        record = folder_record(folder, "compress", carry(folder, staging), weights, settings=report["settings"])
        if summary is not None:
            record["calibration"] = summary
        record["weights"].update(
            quantized=totals["quantized"],
            bits_per_weight=totals["bits_per_weight"],
            ratio_vs_source=totals["ratio_vs_source"],
            ratio_vs_fp32=totals["ratio_vs_fp32"],
            source_tensor_bytes=totals["source_bytes"],
        )
        write_record(staging, record)
    report["output"] = os.path.join(os.path.abspath(out_dir), weights["files"][0])
    return {**record, "folder": os.path.abspath(out_dir), "compress": report}


def moments_directory(out_dir) -> tempfile.TemporaryDirectory:
    """A directory for calibration's second moments while ``out_dir`` is written, beside it:
    on the output's disk (a large model's moments take gigabytes), removed when closed."""
    return tempfile.TemporaryDirectory(prefix=".dcformat-moments-", dir=os.path.dirname(os.path.abspath(os.fspath(out_dir))))


def calibrated_settings(folder: ModelFolder, calibration, *, moments: str, progress: bool, **settings) -> tuple[dict, dict]:
    """The compressor's settings with what calibrating on ``calibration`` measured; the
    second moments are files in the directory ``moments``, read as the compressor needs them."""
    from .calibration import calibrate_folder, read_texts

    texts = read_texts(calibration) if isinstance(calibration, (str, os.PathLike)) else [str(t) for t in calibration]
    with open_source(folder.weights) as source:
        file_names = list(source)
    hessians, importance, summary = calibrate_folder(folder, texts, file_names=file_names, moments=moments, progress=progress, **settings)
    if isinstance(calibration, (str, os.PathLike)):
        summary["file"] = os.path.basename(os.fspath(calibration))
    settings = dict(settings, hessians=hessians)
    if settings.get("importance", TRANSFORMER_IMPORTANCE) is TRANSFORMER_IMPORTANCE:  # measured beats the name-based prior
        settings["importance"] = importance_from_scores(importance)
        summary["importance"] = "measured"
    return settings, summary


def convert_folder(
    in_dir, out_dir, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, threads: int | None = None, progress: bool = False, options=None
) -> dict:
    """Convert a model folder's weights without changing a value: what ``dcformat convert
    MODEL_DIR OUT_DIR`` runs.

    A folder of safetensors becomes one of ``.dcf`` weights (stored losslessly, the
    smallest of raw, zstd and float_split per tensor unless ``options`` say otherwise);
    a folder of ``.dcf`` weights becomes plain safetensors that transformers and every
    other tool load as usual (quantized tensors dequantized to their dtype). Every other
    file is carried over unchanged; a ``.dcf`` folder gets ``dcformat.json``, a plain
    one does not. Returns the record (for a plain folder: the same fields, unwritten).
    """
    folder = open_folder(in_dir)
    threads = resolve_threads(threads)
    with staged_folder(out_dir, source=folder.path) as staging:
        if folder.kind == "dcf":
            weights = _to_safetensors(folder, staging, max_shard_bytes, threads=threads, progress=progress)
        else:
            weights = _to_dcf(folder, staging, max_shard_bytes, options or EncodeOptions(dense="auto"), threads=threads, progress=progress)
        record = folder_record(folder, "convert", carry(folder, staging), weights, settings={"lossless": True})
        if folder.kind != "dcf":
            write_record(staging, record)
    return {**record, "folder": os.path.abspath(out_dir)}


def _to_dcf(folder: ModelFolder, staging: str, max_shard_bytes: int, options: EncodeOptions, *, threads: int, progress: bool) -> dict:
    source_bytes = sum(os.path.getsize(folder.file(f)) for f in folder.weight_files)
    with open_source(folder.weights) as source:
        metadata = {**source.metadata, "dcformat_convert": {"source": os.path.basename(folder.weights)}}
        if source_bytes <= max_shard_bytes:  # lossless storage is never much larger than the source
            out = FileWriter(os.path.join(staging, DCF_NAME), metadata=metadata, options=options)
        else:
            out = ShardedWriter(staging, max_shard_bytes=max_shard_bytes, metadata=metadata, options=options)
        with out:
            names = list(source)
            write_encoded(
                out, names, lambda name: encode_tensor(source[name], options, field=repr(name)), threads=threads, progress=progress, desc="converting"
            )
    shards = None if isinstance(out, FileWriter) else sorted(f for f in os.listdir(staging) if f.endswith(".dcf"))
    weights = weights_written(staging, shards, DCF_NAME)
    weights["source_tensor_bytes"] = source_bytes
    return weights


def _to_safetensors(folder: ModelFolder, staging: str, max_shard_bytes: int, *, threads: int, progress: bool) -> dict:
    with open_file(folder.weights) as reader:
        infos = {name: reader.info(name) for name in reader.keys()}
        specs = {name: (DType[info.dtype.upper()], tuple(info.shape)) for name, info in infos.items()}
        metadata = _safetensors_metadata(reader.metadata())
        groups = _shard_groups(list(infos), {name: info.decoded_bytes for name, info in infos.items()}, max_shard_bytes)
        total = len(groups)
        names = [SAFETENSORS_NAME] if total == 1 else [f"model-{k:05d}-of-{total:05d}.safetensors" for k in range(1, total + 1)]
        for shard, group in bar(list(zip(names, groups)), enabled=progress and total > 1, desc="writing shards", total=total):
            group_specs = {name: specs[name] for name in group}
            write_safetensors_lazily(group_specs, lambda name: reader.get(name, threads=threads), os.path.join(staging, shard), metadata=metadata)
    if total > 1:
        weight_map = {name: shard for shard, group in zip(names, groups) for name in group}
        size = sum(info.decoded_bytes for info in infos.values())
        write_index(os.path.join(staging, "model.safetensors.index.json"), metadata={"total_size": size}, weight_map=weight_map)
        return weights_written(staging, names, SAFETENSORS_NAME, index="model.safetensors.index.json")
    return weights_written(staging, None, SAFETENSORS_NAME)


def _safetensors_metadata(metadata: dict) -> dict:
    """The source's ``__metadata__`` when the ``.dcf`` kept it, and ``format: pt`` (which
    transformers requires of a safetensors file) when it did not say."""
    kept = metadata.get("safetensors.metadata")
    if isinstance(kept, dict) and "shards" not in kept:
        out = {str(k): v for k, v in kept.items()}
    else:
        out = {}
    out.setdefault("format", "pt")
    return out


def _shard_groups(names: list[str], sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Names in order, cut into groups whose bytes pass ``max_shard_bytes`` only by their last tensor."""
    groups, current, held = [], [], 0
    for name in names:
        if current and held >= max_shard_bytes:
            groups.append(current)
            current, held = [], 0
        current.append(name)
        held += sizes[name]
    return [*groups, current]  # the last group (empty only for a model without tensors: one empty file)


def weights_written(staging: str, shards, single: str, *, index: str | None = None) -> dict:
    """The weight files written into ``staging``, their bytes in all."""
    if not shards:
        files = [single]
    else:
        index = index or "model" + DCF_INDEX_SUFFIX
        files = [index, *shards]
    return {"files": files, "file_bytes": sum(os.path.getsize(os.path.join(staging, f)) for f in files)}


def folder_record(folder: ModelFolder, operation: str, carried: dict, weights: dict, *, settings: dict) -> dict:
    if not weights["files"]:
        raise EncodeError("no weights were written", field="weights")
    return {
        "dcformat_version": __version__,
        "operation": operation,
        "source": {"folder": os.path.basename(folder.path), "weights": folder.weight_files},
        "settings": settings,
        "weights": weights,
        "carried": carried,
        "left_out": folder.left_out,
        "how_to_load": HOW_TO_LOAD,
    }
