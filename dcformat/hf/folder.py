"""Hugging Face model folders: which files hold the weights, which are carried over, and
the record dcformat leaves in every folder it writes.

A model folder (what ``save_pretrained`` writes and the Hub serves) keeps configuration
and tokenizer files beside the weights: ``model.safetensors``, or shards named by
``model.safetensors.index.json``. A sentence-transformers folder adds ``modules.json``
and module folders such as ``1_Pooling/config.json``. A folder dcformat writes holds the
same files, byte for byte, with the weights as ``model.dcf`` (or shards named by
``model.dcf.index.json``) and :data:`RECORD_NAME`, a JSON record of what was done: the
dcformat version, the settings, bits per weight, and every carried file's size and
SHA-256 (which ``dcformat verify FOLDER`` checks).

Other copies of the weights (an ``onnx/`` export, ``pytorch_model.bin`` beside the
safetensors) are left out, and the record says so: a compressed folder holds no dense
weights. A folder is written beside its destination and renamed into place when
complete, so an interrupted run leaves no half-written model folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import EncodeError, FormatError, LimitError, UnsupportedError
from ..format import strict_json
from ..io.atomic import AtomicFile, sync_folder
from ..io.index import DCF_INDEX_SUFFIX, SAFETENSORS_INDEX_SUFFIX, read_index

#: The record of what dcformat did, at the top of every folder it writes.
RECORD_NAME = "dcformat.json"
#: The record is small; one larger than this is not one dcformat wrote.
MAX_RECORD_BYTES = 64 << 20
#: A file ending so holds weights in some framework's format: never carried into a
#: compressed folder (the compressed weights replace them).
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".gguf",
    ".dcf",
    ".npz",
    ".ot",
    ".tflite",
)
#: Folders that are not part of a model: version control and the Hub client's download state.
SKIPPED_FOLDERS = (".git", ".cache", ".huggingface")


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder holds. Paths in the lists are relative, with ``/`` separators."""

    path: str
    kind: str  # "safetensors" or "dcf": the format of the weights
    weights: str  # the file to open: the one weight file or the shard index (absolute)
    weight_files: list[str]  # the weight files and their index
    carried: list[str]  # every file that is not weights, to carry over unchanged
    left_out: dict[str, str] = field(default_factory=dict)  # other weight files -> why they are not carried
    record: dict | None = None  # the folder's dcformat.json, when it has one

    def file(self, relative: str) -> str:
        return os.path.join(self.path, *relative.split("/"))


def is_model_folder(path) -> bool:
    return os.path.isdir(os.fspath(path))


def open_folder(path) -> ModelFolder:
    """Find the weights of a model folder and classify its other files.

    The weights are a ``*.dcf.index.json`` or ``*.dcf`` at the top of the folder (a folder
    dcformat wrote) or else a ``*.safetensors.index.json`` or ``*.safetensors``; there must
    be exactly one candidate of the kind found (``model.*`` preferred when there are
    several single files). Raises :class:`FormatError` naming the folder when none is found.
    """
    folder = os.path.abspath(os.fspath(path))
    if not os.path.isdir(folder):
        raise FormatError(os.fspath(path), "is not a folder", offset=None)
    files = _files(folder)
    top = [f for f in files if "/" not in f]
    kind, weight_files = _find_weights(folder, top)
    weights = os.path.join(folder, weight_files[0])
    if weight_files[0].endswith(".json"):  # an index: its shards hold the weights
        weight_files = [weight_files[0]] + read_index(weights).shards()
    record = read_record(folder) if RECORD_NAME in top else None
    chosen = set(weight_files)
    carried, left_out = [], {}
    for relative in files:
        if relative in chosen or relative == RECORD_NAME:
            continue
        if _holds_weights(relative):
            left_out[relative] = "weights in another format or a copy of them: the compressed folder holds the model's weights only as .dcf"
        elif not os.path.isfile(os.path.join(folder, relative)):
            left_out[relative] = "not a regular file"
        else:
            carried.append(relative)
    _check_modules(folder, left_out)
    return ModelFolder(folder, kind, weights, weight_files, carried, left_out, record)


def _files(folder: str) -> list[str]:
    """Every file under ``folder`` (links followed to files, not into folders), relative, sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS and not os.path.islink(os.path.join(root, d)))
        base = os.path.relpath(root, folder)
        for name in names:
            found.append(name if base == "." else f"{base}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _holds_weights(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return name.endswith(WEIGHT_SUFFIXES) or (name.endswith(".index.json") and name[: -len(".index.json")].endswith(WEIGHT_SUFFIXES))


def _find_weights(folder: str, top: list[str]) -> tuple[str, list[str]]:
    for kind, index_suffix, suffix in (("dcf", DCF_INDEX_SUFFIX, ".dcf"), ("safetensors", SAFETENSORS_INDEX_SUFFIX, ".safetensors")):
        indexes = [f for f in top if f.endswith(index_suffix)]
        if len(indexes) > 1:
            raise FormatError(folder, f"holds several shard indexes ({', '.join(indexes)}): which model is meant is unclear", offset=None)
        if indexes:
            return kind, indexes
        singles = [f for f in top if f.endswith(suffix)]
        if len(singles) > 1 and "model" + suffix in singles:
            singles = ["model" + suffix]
        if len(singles) > 1:
            raise FormatError(folder, f"holds several weight files ({', '.join(singles)}) and no index naming them", offset=None)
        if singles:
            return kind, singles
    others = [f for f in top if _holds_weights(f)]
    hint = (
        f" (it holds {', '.join(others)}: convert the weights to safetensors first, e.g. dcformat convert {others[0]} model.safetensors)"
        if others
        else ""
    )
    raise FormatError(folder, f"holds no model.safetensors, no model.dcf and no shard index of either{hint}", offset=None)


def _check_modules(folder: str, left_out: dict) -> None:
    """A sentence-transformers module folder with weights of its own (a ``Dense`` layer) would
    lose them: refuse such a folder rather than write one that does not load."""
    for relative in left_out:
        head = relative.split("/", 1)[0]
        if "/" in relative and head[:1].isdigit() and "_" in head:  # 1_Pooling, 2_Dense: sentence-transformers modules
            raise UnsupportedError(
                relative,
                f"the sentence-transformers module {head!r} keeps weights of its own; dcformat folders hold only the transformer's",
                offset=None,
            )


def read_record(folder: str) -> dict:
    """A folder's :data:`RECORD_NAME`, read as the hostile JSON it may be."""
    path = os.path.join(folder, RECORD_NAME)
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise LimitError(RECORD_NAME, f"is over the limit of {MAX_RECORD_BYTES} bytes", offset=0)
    return strict_json.load_object(data, field=RECORD_NAME, offset=0)


def write_record(folder: str, record: dict) -> None:
    data = strict_json.dump_object(record, what=RECORD_NAME, indent=2)
    with AtomicFile(os.path.join(folder, RECORD_NAME)) as out:
        out.file.write(data + b"\n")


def carry(folder: ModelFolder, destination: str) -> dict[str, dict]:
    """Copy every carried file of ``folder`` into ``destination`` unchanged; returns each
    one's size and SHA-256 for the record."""
    copied = {}
    for relative in folder.carried:
        target = os.path.join(destination, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(folder.file(relative), "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        shutil.copymode(folder.file(relative), target)
        copied[relative] = {"bytes": size, "sha256": digest.hexdigest()}
    return copied


def check_carried(folder: ModelFolder) -> list[str]:
    """The files the record lists, checked against their recorded sizes and SHA-256;
    returns their names, or raises :class:`FormatError` naming the first that differs."""
    listed = (folder.record or {}).get("carried")
    if not isinstance(listed, dict):
        raise FormatError(f"{RECORD_NAME}: carried", "must be an object naming every carried file", offset=None)
    for relative, expected in sorted(listed.items()):
        where = f"{RECORD_NAME}: carried[{relative!r}]"
        if not isinstance(expected, dict) or not isinstance(expected.get("sha256"), str):
            raise FormatError(where, "must be an object with the file's sha256", offset=None)
        if relative not in folder.carried:
            raise FormatError(where, "the file is missing from the folder", offset=None)
        digest = hashlib.sha256()
        with open(folder.file(relative), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected["sha256"]:
            raise FormatError(where, "the file's SHA-256 differs from the one recorded: it changed after the folder was written", offset=None)
    return sorted(listed)


@contextmanager
def staged_folder(destination, *, source: str):
    """``with staged_folder(out, source=in) as staging:`` write into ``staging``; on success it
    becomes ``out`` (a new or empty folder), on failure it is removed and ``out`` is untouched."""
    destination = os.path.abspath(os.fspath(destination))
    source = os.path.abspath(source)
    if destination == source or destination.startswith(source.rstrip(os.sep) + os.sep):
        raise EncodeError("must be a new folder outside the model folder it is made from", field=f"output folder {destination}")
    if os.path.exists(destination) and (not os.path.isdir(destination) or os.listdir(destination)):
        raise EncodeError("exists and is not an empty folder; choose a new folder (nothing was written)", field=f"output folder {destination}")
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(destination)}.{secrets.token_hex(6)}.partial")
    os.mkdir(staging)  # the mode a new folder gets (umask applied), unlike mkdtemp's 0700
    try:
        yield staging
        os.rename(staging, destination)  # replaces an empty folder (POSIX)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sync_folder(parent)


def name_in(name: str, names, prefix: str) -> str | None:
    """``name`` as it appears in ``names``, with or without the base model's ``prefix``
    (a task model's checkpoint names carry it, ``AutoModel``'s parameters do not), or None."""
    for candidate in (name, f"{prefix}.{name}" if prefix else None, name.removeprefix(f"{prefix}.") if prefix else None):
        if candidate is not None and candidate in names:
            return candidate
    return None
