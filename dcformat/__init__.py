"""dcformat: a file format and codec for Deep-Compressed neural-network weights.

The public API, shaped like safetensors::

    dcformat.save_file({"fc1.weight": dcformat.quantize(w, bits=5), "fc1.bias": b}, "model.dcf")
    tensors = dcformat.load_file("model.dcf")
    with dcformat.open("model.dcf") as f:
        f.keys(); f.metadata(); f.info("fc1.weight"); f.get("fc1.weight")

Nothing here imports torch; the torch adapter is ``dcformat.torch``.
"""

__version__ = "0.1.0"

from .container import DCFile, FileWriter, TensorInfo, Writer, load, load_file, save, save_file
from .container import FileWriter as writer  # noqa: N813 - ``with dcformat.writer(path) as w``
from .container import open_file as open  # noqa: A001 - the safetensors-style verb
from .shards import ShardedFile, ShardedWriter, save_sharded
from .encodings import EncodeOptions
from .errors import ChecksumError, DCFormatError, EncodeError, FormatError, LimitError, UnsupportedError
from .quantize import QuantizedTensor, kmeans_1d, quantize

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
    "kmeans_1d",
    "load",
    "load_file",
    "open",
    "quantize",
    "save",
    "save_file",
    "save_sharded",
    "writer",
]
