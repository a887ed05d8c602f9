"""Hugging Face model folders in and out.

``dcformat compress MODEL_DIR OUT_DIR`` (:func:`compress_folder`) and ``dcformat convert``
(:func:`convert_folder`) read a model folder, single or sharded safetensors, and write a
folder with every other file carried over unchanged and the weights as ``.dcf``;
:func:`from_pretrained` gives the ``transformers`` model back from it and
:func:`sentence_transformer` the sentence-transformers pipeline::

    dcformat.hf.compress_folder("all-MiniLM-L6-v2", "minilm-dcf")
    model = dcformat.hf.from_pretrained("minilm-dcf")            # a BertModel
    encoder = dcformat.hf.sentence_transformer("minilm-dcf")     # a SentenceTransformer

:func:`distill_folder` (``dcformat distill``) is the trained pipeline: compressed, then
trained on unlabelled text to match the original.

The folder functions need only the core; the loaders and the trained pipeline import
torch and transformers (and sentence-transformers) when they run.
"""

from .distill import distill_folder
from .folder import RECORD_NAME, ModelFolder, open_folder
from .load import decode_state, from_pretrained, sentence_transformer
from .write import DEFAULT_MAX_SHARD_BYTES, compress_folder, convert_folder

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "RECORD_NAME",
    "ModelFolder",
    "compress_folder",
    "convert_folder",
    "decode_state",
    "distill_folder",
    "from_pretrained",
    "open_folder",
    "sentence_transformer",
]
