"""Read the MNIST data set from its four IDX files, with numpy only.

The reproduction of the paper's LeNet results (``dcformat reproduce``) needs MNIST, and
nothing else in dcformat needs a deep-learning framework to read it, so this module is
plain numpy: it never imports torch.

The IDX format (LeCun's own description at yann.lecun.com/exdb/mnist): a 4-byte magic
``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 dimensions, then the elements,
big-endian, in C order. The files may be gzip-compressed (as distributed) or not; which
one is decided by the gzip magic bytes, not by the file name.

Where the files are looked for: the ``data_dir`` argument, else the directory named by the
environment variable ``DCFORMAT_MNIST``. Nothing else is guessed.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dcformat.errors import DCFormatError, FormatError

#: Environment variable naming the MNIST directory.
ENV_VAR = "DCFORMAT_MNIST"

#: The four files, by their role, under their official names (``.gz`` optional).
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: IDX type byte -> big-endian numpy element type.
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: A file this large (decompressed) is not MNIST; refusing it bounds memory use
#: before anything is allocated (the training images are 47,040,016 bytes).
MAX_IDX_BYTES = 1 << 30

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_SIDE = 28
_NUM_CLASSES = 10


class MNISTNotFoundError(DCFormatError, FileNotFoundError):
    """The MNIST files are not where they were looked for."""


class MNIST(NamedTuple):
    """The data set as numpy arrays: images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def default_search_dirs() -> list[Path]:
    """The directories searched when no ``data_dir`` is given: ``$DCFORMAT_MNIST`` if set."""
    return [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []


def _file_in(directory: Path, official_name: str) -> Path | None:
    """The file for ``official_name`` in ``directory``: plain or ``.gz``, either spelling.

    Some mirrors write ``train-images.idx3-ubyte`` (a dot instead of the last dash).
    """
    dotted = official_name[::-1].replace("-", ".", 1)[::-1]
    for name in (official_name, dotted):
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding all four MNIST files, or a clear error naming what is missing."""
    candidates = [Path(data_dir)] if data_dir is not None else default_search_dirs()
    for directory in candidates:
        if all(_file_in(directory, name) for name in FILE_NAMES.values()):
            return directory
    where = ", ".join(str(d) for d in candidates) or f"no directory (neither --data / data_dir nor ${ENV_VAR} was given)"
    needed = ", ".join(FILE_NAMES.values())
    detail = ""
    if data_dir is not None:
        missing = [n for n in FILE_NAMES.values() if not _file_in(Path(data_dir), n)]
        detail = f" (missing there: {', '.join(missing)})"
    raise MNISTNotFoundError(
        f"MNIST not found in {where}{detail}: provide the four IDX files {needed} "
        f"(each may be gzipped, '.gz'), from http://yann.lecun.com/exdb/mnist/, in a directory "
        f"given by --data / data_dir or by the environment variable {ENV_VAR}"
    )


def _read_bytes(path: Path) -> bytes:
    """The decompressed bytes of an IDX file, refusing anything over ``MAX_IDX_BYTES``."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError) as error:  # gzip raises these for corrupt streams
        raise FormatError(path.name, f"cannot decompress: {error}") from None
    if len(data) > MAX_IDX_BYTES:
        raise FormatError(path.name, f"larger than {MAX_IDX_BYTES} bytes, not an MNIST file")
    return data


def parse_idx(data: bytes, *, name: str = "idx") -> np.ndarray:
    """Parse the bytes of one IDX file into an array with the file's shape and type.

    Every size is checked against the buffer before anything is allocated; the buffer
    must be covered exactly (no trailing bytes).
    """
    if len(data) < 4:
        raise FormatError(f"{name}: magic", f"file is {len(data)} bytes, shorter than the 4-byte magic", offset=0)
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise FormatError(
            f"{name}: magic",
            f"bytes {data[:4].hex(' ')} are not an IDX magic (00 00 <type 08..0e> <ndim >= 1>)",
            offset=0,
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise FormatError(f"{name}: dims", f"file ends inside the {ndim} dimensions", offset=4)
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise FormatError(
            f"{name}: data",
            f"dims {dims} of {dtype.itemsize}-byte elements need {expected} bytes, the file has {len(data) - header_end}",
            offset=header_end,
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or not."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=path.name)


def _check_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise FormatError(
            f"{images_name}: dims",
            f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise FormatError(f"{labels_name}: dims", f"expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise FormatError(f"{labels_name}: dims", f"{labels.shape[0]} labels for {images.shape[0]} images in {images_name}")
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise FormatError(f"{labels_name}: data", f"label {int(labels.max())} is not a digit 0-9")


def load_mnist(data_dir: str | os.PathLike | None = None) -> MNIST:
    """Load the training and test sets; see the module docstring for where they are looked for."""
    directory = find_mnist_dir(data_dir)
    paths = {role: _file_in(directory, name) for role, name in FILE_NAMES.items()}
    arrays = {role: read_idx(path) for role, path in paths.items()}
    for split in ("train", "test"):
        _check_pair(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            paths[f"{split}_images"].name,
            paths[f"{split}_labels"].name,
        )
    return MNIST(**arrays)


def write_idx(array: np.ndarray, path: str | os.PathLike, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress``, default: path ends in ``.gz``).

    Used by the tests to make small fixtures; kept here so the format lives in one module.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    type_codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in type_codes or array.ndim == 0 or array.ndim > 255:
        raise DCFormatError(f"encode error: idx: cannot store a {array.dtype} array of {array.ndim} dims")
    header = bytes([0, 0, type_codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=IDX_TYPES[type_codes[native]]).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(header + body)
