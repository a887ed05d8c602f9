"""What the format modules of :mod:`dcformat.interop` share: the shape of a format, the
optional-package guard and the small helpers every writer uses.

A format (:class:`Format`) is a name, its file extensions, a reader and a writer::

    read(path, context) -> Read(tensors, metadata, notes)
    write(tensors, path, metadata, context) -> Written(dequantized, notes)

and optionally ``check(role, context)``, which fails early when ``context`` lacks what
reading (``role == "read"``) or writing (``"write"``) the format takes (an ONNX graph, a
Caffe ``.prototxt``). Each format module (``safetensors``, ``npz``, ``pt``, ``onnx``,
``dcf``, ``caffe``) defines one as ``FORMAT`` next to its public ``read_*``/``write_*``
functions; :mod:`dcformat.interop.formats` registers them and
:func:`dcformat.interop.convert.convert` joins any reader to any writer through it.

Nothing here imports an optional package (torch, onnx, tqdm): :func:`require` imports
one when a function needs it, and says which package to install when it is missing.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import DCFormatError, EncodeError
from ..format.constants import RESERVED_KEY_PREFIX
from ..quantize import QuantizedTensor

if TYPE_CHECKING:
    from ..format.encode import EncodeOptions


class MissingDependencyError(DCFormatError, ImportError):
    """An operation (a conversion, loading a model) needs an optional package that is not installed."""

    def __init__(self, package: str, purpose: str, *, operation: str = "convert"):
        self.package = package
        super().__init__(f"{operation} error: {purpose} needs the package {package!r} (pip install {package})")


def require(module: str, purpose: str, package: str | None = None, *, operation: str = "convert"):
    """``import module``, or a :class:`MissingDependencyError` naming ``package`` (default: ``module``) and ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package or module, purpose, operation=operation) from None


# ======================================================================================
# Helpers of the readers and writers
# ======================================================================================


def dense(tensors: Mapping) -> tuple[dict, list[str]]:
    """Every QuantizedTensor dequantized: (name -> ndarray, names that were dequantized)."""
    out, dequantized = {}, []
    for name, value in tensors.items():
        if isinstance(value, QuantizedTensor):
            out[name] = value.dequantize()
            dequantized.append(name)
        else:
            out[name] = np.asarray(value)
    return out, sorted(dequantized)


def check_names(tensors: Mapping) -> None:
    """Every tensor name is a str (a caller's dict may hold other keys; no format can name a tensor by them)."""
    for name in tensors:
        if not isinstance(name, str):
            raise EncodeError(f"tensor names must be str, got {type(name).__name__} {name!r}")


def user_metadata(metadata: Mapping | None) -> dict:
    """Metadata without the reserved ``dcformat.*`` keys (the writer adds its own)."""
    return {k: v for k, v in (metadata or {}).items() if not str(k).startswith(RESERVED_KEY_PREFIX)}


def metadata_list(metadata: Mapping, key: str) -> list | None:
    """A list stored under ``key``: as JSON in a .dcf, or as a JSON string after a trip through safetensors."""
    value = metadata.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise EncodeError(f"metadata {key!r} must be a list of names, got {str(value)[:80]}")
    return value


# ======================================================================================
# A format, as the registry holds it
# ======================================================================================


@dataclass(frozen=True)
class Context:
    """What :func:`~dcformat.interop.convert.convert` was given besides the two paths; each format takes what it needs."""

    graph: Any = None  #: onnx: the original model, whose initializers a written model takes
    prototxt: Any = None  #: net: the Caffe network description, to read or write a ``.net``
    options: EncodeOptions | None = None  #: dcf: how the encoder stores tensors (None: the smallest file)
    progress: bool = False  #: dcf: show progress bars


class Read(NamedTuple):
    """What a format's reader returns: tensors, metadata, and notes for the report on what stayed behind."""

    tensors: dict
    metadata: dict
    notes: tuple = ()


class Written(NamedTuple):
    """What a format's writer returns: the names it dequantized, and notes for the report on what was lost."""

    dequantized: list
    notes: tuple = ()


@dataclass(frozen=True)
class Format:
    """A file format: its name (as :class:`~dcformat.interop.convert.ConvertReport` gives it), its
    lower-case file extensions (dot included), its reader and writer, and an optional early check
    of the :class:`Context` (see the module docstring for the signatures)."""

    name: str
    extensions: tuple[str, ...]
    read: Callable[[Any, Context], Read]
    write: Callable[[Mapping, Any, dict, Context], Written]
    check: Callable[[str, Context], None] | None = None


__all__ = [
    "Context",
    "Format",
    "MissingDependencyError",
    "Read",
    "Written",
    "check_names",
    "dense",
    "metadata_list",
    "require",
    "user_metadata",
]
