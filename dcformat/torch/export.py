"""Model or state dict <-> ``.dcf`` file, with the verbs of ``safetensors.torch``.

Writing folds the compression state back into plain tensor names: a shared parameter
(``w_codebook``, ``w_codes``, ``w_mask``) is stored under ``w`` as a quantized tensor
(only the centroids some weight uses; the core's encoder then picks the smallest coding:
Huffman or bit-packed codes, sparse gaps of the best width, or dense codes); a pruned-only parameter (``w_orig``, ``w_mask``)
is stored under ``w`` as its masked dense value; every other tensor (biases, buffers) is
stored as it is. So the file of a compressed model has exactly the names of the
uncompressed model's state dict and loads into a fresh instance of it.

Reading gives a plain state dict (``load_file``) or fills a model (``load_model``) after
checking every name and shape. ``load_model(..., keep_quantized=True)`` installs weight
sharing from the file's codebooks and codes, so a compressed model can be fine-tuned further
with its clusters fixed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import dcformat
from dcformat.errors import EncodeError
from dcformat.interop import torch_arrays
from dcformat.interop.torch_arrays import to_torch
from dcformat.torch import reparam
from dcformat.torch.errors import ConfigError, ModelMismatchError
from dcformat.torch.prune import MaskedParameter
from dcformat.torch.quantize import SharedParameter, install_shared

__all__ = ["load", "load_file", "load_model", "save", "save_file", "to_dcformat", "to_torch"]


def _to_numpy(tensor: torch.Tensor, *, name: str) -> np.ndarray:
    try:
        return torch_arrays.to_numpy(tensor, name=name)
    except EncodeError as exc:
        raise ConfigError("save", f"{name!r}: {exc.reason}") from None


def _quantized(codebook: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, *, storage: torch.dtype | None, name: str):
    """A shared parameter's state as the core's QuantizedTensor.

    The codebook is stored as float16 when the parameter was shared with that storage type
    (its forward pass then used exactly those values), else as float32 (what the format
    offers besides float16; exact for float32, float16 and bfloat16 parameters).
    """
    numpy_dtype = _to_numpy(torch.zeros(0, dtype=codebook.dtype), name=name).dtype
    storage = torch.float16 if storage == torch.float16 else torch.float32
    codebook, codes = _used_centroids_only(codebook.detach().cpu(), codes.detach().cpu(), mask.detach().cpu())
    return dcformat.QuantizedTensor.from_codes(
        codebook.to(storage).numpy(),
        codes.detach().to("cpu").numpy(),
        mask=mask.detach().to("cpu").numpy(),
        dtype=numpy_dtype,
    )


def _used_centroids_only(codebook: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the centroids no stored weight uses, renumbering the codes (order kept).

    k-means leaves clusters empty when a layer has few weights (LeNet-5's conv1: 330 weights,
    256 centroids, 158 used); storing those centroids, and their zero-length Huffman
    entries, would only cost bytes. Decoded values do not change.
    """
    used = torch.unique(codes[mask])
    if used.numel() == codebook.numel():
        return codebook, codes
    if used.numel() == 0:  # everything pruned: a one-entry codebook keeps the file valid
        return codebook[:1], torch.zeros_like(codes)
    renumber = torch.zeros(codebook.numel(), dtype=codes.dtype)
    renumber[used] = torch.arange(used.numel(), dtype=codes.dtype)
    return codebook[used], torch.where(mask, renumber[codes], 0)


def _groups_from_model(model: nn.Module) -> dict[str, reparam.ComputedParameter]:
    """``{state-dict name of W: its hook}`` of every computed parameter of the model."""
    groups = {}
    for module_path, module in model.named_modules():
        prefix = f"{module_path}." if module_path else ""
        for hook in reparam.computed_parameters(module):
            groups[prefix + hook.name] = hook
    return groups


def _groups_from_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, reparam.ComputedParameter]:
    """Recognise computed parameters in a bare state dict by their complete sets of suffixes."""
    groups = {}
    for key in state_dict:
        for kind in (SharedParameter, MaskedParameter):
            base = key[: -len(kind.suffixes[0]) - 1]
            if key.endswith("_" + kind.suffixes[0]) and all(f"{base}_{s}" in state_dict for s in kind.suffixes):
                groups[base] = kind(base)
    return groups


def to_dcformat(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``{name: ndarray | QuantizedTensor}`` that :func:`save_file` writes.

    Prefer passing the model: a bare state dict shows the compression state only through
    its key suffixes, and not a float16 codebook storage type (such codebooks are then
    written as float32 of the unrounded parameter).
    """
    if isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
        groups = _groups_from_model(model_or_state_dict)
    elif isinstance(model_or_state_dict, Mapping):
        state_dict = model_or_state_dict
        groups = _groups_from_names(state_dict)
    else:
        raise ConfigError("save", f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    tensors: dict[str, Any] = {}
    consumed = set()
    for base, hook in groups.items():
        state = {suffix: state_dict[f"{base}_{suffix}"] for suffix in hook.suffixes}
        consumed.update(f"{base}_{suffix}" for suffix in hook.suffixes)
        if isinstance(hook, SharedParameter):
            tensors[base] = _quantized(state["codebook"], state["codes"], state["mask"], storage=hook.storage_dtype, name=base)
        else:
            tensors[base] = _to_numpy(torch.where(state["mask"], state["orig"], 0), name=base)
    for key, value in state_dict.items():
        if key in consumed:
            continue
        if key in tensors:
            raise ConfigError("save", f"{key!r} appears both as a tensor and as a compressed parameter")
        if not isinstance(value, torch.Tensor):
            raise ConfigError("save", f"{key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = _to_numpy(value, name=key)
    return tensors


def save(model_or_state_dict, *, metadata: Mapping[str, Any] | None = None) -> bytes:
    """The bytes of a ``.dcf`` file holding the model's (or state dict's) tensors."""
    return dcformat.save(to_dcformat(model_or_state_dict), metadata=metadata)


def save_file(model_or_state_dict, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None) -> int:
    """Write a ``.dcf`` file (atomically); returns its size in bytes.

    ``metadata``: a JSON-able dict (keys must not start with ``dcformat.``), e.g. the
    pipeline's settings and the measured accuracy.
    """
    return dcformat.save_file(to_dcformat(model_or_state_dict), path, metadata=metadata)


def load(data: bytes, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A plain state dict from the bytes of a ``.dcf`` file."""
    return {name: to_torch(array, device=device) for name, array in dcformat.load(data).items()}


def load_file(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A plain state dict (quantized tensors decoded to dense) from a ``.dcf`` file."""
    return {name: to_torch(array, device=device) for name, array in dcformat.load_file(path).items()}


def load_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    keep_quantized: bool = False,
) -> tuple[list[str], list[str]]:
    """Fill ``model`` from a ``.dcf`` file; returns ``(missing, unexpected)`` names.

    Every name present in both must have the same shape (always an error otherwise). With
    ``strict``, a name of the model missing from the file or a name of the file unknown to
    the model is an error too. The model must be plain (no pruning or sharing state); with
    ``keep_quantized``, every quantized tensor of the file becomes a shared parameter
    (codebook trainable, codes and mask fixed) instead of a dense one.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("load_model", f"expected an nn.Module, got {type(model).__name__}")
    compressed = sorted(_groups_from_model(model))
    if compressed:
        raise ModelMismatchError(
            f"the model has pruning or weight-sharing state on {', '.join(compressed)}; load into a fresh model, or call make_permanent() first"
        )
    expected = model.state_dict()
    with dcformat.open(path) as dcf:
        stored = {name: _shape_and_encoding(dcf, name) for name in dcf.keys()}
        missing = [name for name in expected if name not in stored]
        unexpected = [name for name in stored if name not in expected]
        wrong_shape = [
            f"{name}: file {stored[name][0]}, model {tuple(expected[name].shape)}"
            for name in expected
            if name in stored and stored[name][0] != tuple(expected[name].shape)
        ]
        if wrong_shape:
            raise ModelMismatchError(f"shapes differ in {os.fspath(path)}: " + "; ".join(wrong_shape))
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing from the file: {', '.join(missing)}")
            if unexpected:
                parts.append(f"not in the model: {', '.join(unexpected)}")
            raise ModelMismatchError(f"names differ in {os.fspath(path)}: " + "; ".join(parts))
        loaded = {}
        quantized = {}
        for name in expected:
            if name not in stored:
                continue
            device = expected[name].device
            if keep_quantized and stored[name][1].startswith("quant"):
                quantized[name] = dcf.get_quantized(name)
            loaded[name] = to_torch(dcf.get(name), device=device)
    model.load_state_dict(loaded, strict=False)
    for name, q in quantized.items():
        module_path, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_path)
        _install_from_file(module, attribute, q)
    return missing, unexpected


def _shape_and_encoding(dcf, name: str) -> tuple[tuple[int, ...], str]:
    """A stored tensor's shape and encoding name, from the directory alone when the reader
    offers it (``info()`` also decodes the payload to measure its density)."""
    if hasattr(dcf, "entry"):
        entry = dcf.entry(name)
        encoding = entry.encoding.name.lower() if hasattr(entry.encoding, "name") else str(entry.encoding)
        return tuple(int(d) for d in entry.shape), encoding
    info = dcf.info(name)
    return tuple(int(d) for d in info.shape), info.encoding


def _install_from_file(module: nn.Module, attribute: str, q) -> None:
    """Weight sharing from a file's quantized tensor: its entries become the mask and codes.

    Entries whose centroid is exactly 0 (the fillers of sparse storage, and the unstored
    elements of dense storage) are left out of the mask: they decode to 0 either way, and
    leaving them in would let fine-tuning move the 0 centroid and revive pruned weights.
    """
    parameter = getattr(module, attribute)
    codebook = torch.from_numpy(np.asarray(q.codebook, dtype=np.float64))
    storage = torch.float16 if q.codebook.dtype == np.float16 else None
    positions = torch.from_numpy(np.asarray(q.positions, dtype=np.int64))
    codes = torch.from_numpy(np.asarray(q.codes, dtype=np.int64))
    kept = codebook[codes] != 0
    flat_mask = torch.zeros(parameter.numel(), dtype=torch.bool)
    flat_codes = torch.zeros(parameter.numel(), dtype=torch.long)
    flat_mask[positions[kept]] = True
    flat_codes[positions[kept]] = codes[kept]
    install_shared(module, attribute, codebook, flat_codes.view(parameter.shape), flat_mask.view(parameter.shape), codebook_dtype=storage)
