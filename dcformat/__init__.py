"""dcformat: a file format and codec for Deep-Compressed neural-network weights.

The public API, shaped like safetensors::

    dcformat.save_file({"fc1.weight": dcformat.quantize(w, bits=5), "fc1.bias": b}, "model.dcf")
    tensors = dcformat.load_file("model.dcf")
    with dcformat.safe_open("model.dcf") as f:
        f.keys(); f.metadata(); f.info("fc1.weight"); f.get("fc1.weight")

This module only re-exports; the layers, from the bottom: ``errors``/``parallel``/``progress``,
``codecs`` (spec section 7), ``format`` (the container), ``quantize``, ``io`` (files on
disk), ``interop`` and ``compress``, the ``torch`` adapter, ``paper`` and ``cli``. Nothing
here imports torch; the torch adapter is ``dcformat.torch``.
"""

from ._version import __version__
from .errors import ChecksumError, DCFormatError, EncodeError, FormatError, LimitError, UnsupportedError
from .format.encode import EncodeOptions
from .format.reader import DCFile, TensorInfo
from .format.writer import Writer
from .io.loading import load, load_file, open_file, safe_open
from .io.shards import ShardedFile, ShardedWriter, save_sharded
from .io.writers import FileWriter, save, save_file
from .quantize import QuantizedTensor, kmeans_1d, quantize

#: ``with dcformat.writer(path) as w: w.add(name, tensor)``
writer = FileWriter
#: ``dcformat.open(path)``: the same as :func:`safe_open`. Left out of ``__all__`` so that
#: ``from dcformat import *`` does not shadow the builtin ``open``.
open = open_file  # noqa: A001

__all__ = [
    "ChecksumError",
    "DCFile",
    "DCFormatError",
    "EncodeError",
    "EncodeOptions",
    "FileWriter",
    "FormatError",
    "LimitError",
    "QuantizedTensor",
    "ShardedFile",
    "ShardedWriter",
    "TensorInfo",
    "UnsupportedError",
    "Writer",
    "__version__",
    "kmeans_1d",
    "load",
    "load_file",
    "open_file",
    "quantize",
    "safe_open",
    "save",
    "save_file",
    "save_sharded",
    "writer",
]
