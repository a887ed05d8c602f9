"""The registry of formats :func:`~dcformat.interop.convert.convert` joins: a name or a file
extension to the :class:`~dcformat.interop.common.Format` (reader and writer) that handles it.

Each format module defines one ``FORMAT`` and is registered here once, at import::

    dcf           .dcf                 dcformat.interop.dcf
    safetensors   .safetensors         dcformat.interop.safetensors
    torch         .pt .pth .bin        dcformat.interop.pt       (needs torch)
    npz           .npz                 dcformat.interop.npz
    onnx          .onnx                dcformat.interop.onnx     (needs onnx)
    net           .net                 dcformat.interop.caffe    (the authors' layout; needs a .prototxt)

Importing this module imports none of the optional packages: the format modules import
them inside the functions that need them. Another format can be added with
:func:`register`; a name or an extension is registered once.
"""

from __future__ import annotations

import os

from ..errors import EncodeError
from . import caffe, dcf, npz, onnx, pt, safetensors
from .common import Format

_BY_NAME: dict[str, Format] = {}
#: Formats by file extension (lower case): extension -> format name. Kept up to date by :func:`register`.
EXTENSIONS: dict[str, str] = {}


def register(fmt: Format) -> Format:
    """Add a format; its name and extensions must not be taken. Returns it."""
    taken = [ext for ext in fmt.extensions if ext in EXTENSIONS]
    if fmt.name in _BY_NAME or taken:
        raise ValueError(f"format {fmt.name!r} or its extensions {taken} are registered already")
    if any(ext != ext.lower() or not ext.startswith(".") for ext in fmt.extensions):
        raise ValueError(f"extensions are lower case and start with a dot, got {list(fmt.extensions)}")
    _BY_NAME[fmt.name] = fmt
    EXTENSIONS.update(dict.fromkeys(fmt.extensions, fmt.name))
    return fmt


def names() -> tuple[str, ...]:
    """The registered formats' names, in the order they were registered."""
    return tuple(_BY_NAME)


def get(name: str) -> Format:
    """The format called ``name``."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):  # TypeError: a name that is not even hashable
        raise EncodeError(f"unknown format {name!r} (known: {', '.join(_BY_NAME)})") from None


def format_of(path) -> str:
    """The format a path's extension names (see :data:`EXTENSIONS`)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    try:
        return EXTENSIONS[ext]
    except KeyError:
        hint = ""
        if os.fspath(path).lower().endswith(".index.json"):  # a sharded model's index: its folder converts whole
            hint = "; a sharded model converts as its folder (dcformat convert MODEL_DIR OUT_DIR), or compresses from its index (dcformat compress)"
        raise EncodeError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension (known: {', '.join(sorted(EXTENSIONS))}){hint}"
        ) from None


# The built-in formats; this order is the one error messages list them in.
for _module in (dcf, safetensors, pt, npz, onnx, caffe):
    register(_module.FORMAT)
del _module

#: The built-in formats' names (:func:`names` also lists any registered later).
FORMATS = names()

__all__ = ["EXTENSIONS", "FORMATS", "format_of", "get", "names", "register"]
