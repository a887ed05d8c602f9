"""Synthetic models and the files they are written to, shared by the compress and interop tests.

``write_safetensors`` here is an independent writer of the safetensors layout (with a hook
to damage its header); the sharded inputs are written with the library's own
``dcformat.interop.convert.write_safetensors``.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from dcformat.interop.convert import write_safetensors as library_write_safetensors

_CODES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<f8"): "F64",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}


def write_safetensors(path, tensors: dict, *, metadata=None, header_patch=None) -> None:
    """A plain safetensors file (the layout: u64 header length, JSON header, data)."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        code = "BF16" if array.dtype.name == "bfloat16" else _CODES[array.dtype]
        data = array.tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    if header_patch:
        header_patch(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def transformer_like(seed: int = 0, *, layers: int = 2, width: int = 64, vocab: int = 1000) -> dict:
    """Embeddings, attention and MLP matrices (some heavy-tailed), LayerNorms, biases, an int buffer."""
    rng = np.random.default_rng(seed)

    def matrix(rows, cols, scale=0.05, outliers=0):
        w = rng.normal(scale=scale, size=(rows, cols)).astype(np.float32)
        if outliers:
            w.reshape(-1)[rng.choice(w.size, outliers, replace=False)] = rng.normal(scale=40 * scale, size=outliers)
        return w

    tensors = {
        "embeddings.word_embeddings.weight": matrix(vocab, width),
        "embeddings.position_ids": np.arange(128, dtype=np.int64)[None],
        "embeddings.LayerNorm.weight": (1 + rng.normal(scale=0.1, size=width)).astype(np.float32),
        "embeddings.LayerNorm.bias": rng.normal(scale=0.02, size=width).astype(np.float32),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            tensors[p + f"attention.self.{part}.weight"] = matrix(width, width, 0.08)
            tensors[p + f"attention.self.{part}.bias"] = rng.normal(scale=0.02, size=width).astype(np.float32)
        tensors[p + "attention.output.dense.weight"] = matrix(width, width)
        tensors[p + "intermediate.dense.weight"] = matrix(4 * width, width, 0.06)
        tensors[p + "output.dense.weight"] = matrix(width, 4 * width, 0.045, outliers=20)
        tensors[p + "output.LayerNorm.weight"] = (1 + rng.normal(scale=0.1, size=width)).astype(np.float32)
    return tensors


def write_transformer_like(tmp_path):
    """``(path, tensors)``: :func:`transformer_like` in ``tmp_path/model.safetensors`` (the ``model_file`` fixture)."""
    tensors = transformer_like()
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors, metadata={"format": "pt"})
    return path, tensors


def sharded_model(seed: int = 0) -> dict:
    """Four MLP and two attention matrices, a bias and an int buffer: small enough to shard often."""
    rng = np.random.default_rng(seed)
    tensors = {f"layers.{i}.mlp.weight": rng.laplace(scale=0.02, size=(128, 96)).astype(np.float32) for i in range(4)}
    tensors.update({f"layers.{i}.attention.query.weight": rng.normal(scale=0.05, size=(96, 96)).astype(np.float32) for i in range(2)})
    tensors["layers.0.mlp.bias"] = rng.normal(size=96).astype(np.float32)
    tensors["position_ids"] = np.arange(16, dtype=np.int64)
    return tensors


def write_safetensors_shards(folder, tensors: dict, groups: list[list[str]], *, name="model") -> str:
    """Shards of the safetensors library's layout plus the Hugging Face index (``weight_map``)."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for k, names in enumerate(groups, start=1):
        shard = f"{name}-{k:05d}-of-{len(groups):05d}.safetensors"
        library_write_safetensors({n: tensors[n] for n in names}, folder / shard, metadata={"format": "pt"})
        weight_map.update({n: shard for n in names})
    index = folder / f"{name}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}))
    return str(index)


def groups_of(tensors: dict, count: int) -> list[list[str]]:
    names = sorted(tensors)
    return [names[i::count] for i in range(count)]


def write_sharded_input(tmp_path):
    """``(tensors, index, single)``: :func:`sharded_model` as three safetensors shards with their index,
    and as one file (the ``sharded_input`` fixture)."""
    tensors = sharded_model()
    index = write_safetensors_shards(tmp_path / "in", tensors, groups_of(tensors, 3))
    single = tmp_path / "single.safetensors"
    library_write_safetensors(tensors, single, metadata={"format": "pt"})
    return tensors, index, str(single)


#: The vocabulary of :func:`write_bert_folder`'s tokenizer (besides its special tokens).
BERT_WORDS = "the a of and to in is was for on with as by at from it that this be are not or which can file data value".split()


def write_bert_folder(root) -> None:
    """A small BERT model folder as transformers and its tokenizer save one (config,
    model.safetensors, tokenizer files), for the tests that run a folder's model on text."""
    import torch
    import transformers

    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(root)  # reads vocab.txt (the constructor's vocab_file is ignored)
    assert len(tokenizer) == len(BERT_WORDS) + 5, "the tokenizer lost its vocabulary"
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(BERT_WORDS) + 5, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64
    )
    transformers.BertModel(config).eval().save_pretrained(root)
    tokenizer.save_pretrained(root)
