"""Calibration: what running a model on a few batches of unlabelled inputs says about how
much each weight matters, for post-training compression (``dcformat.compress``).

Two measures, each used where it serves (measured on all-MiniLM-L6-v2; README):

- **Input second moments** of every ``nn.Linear``: ``H = sum x x^T`` over the calibration
  tokens (padding left out when the batch has an ``attention_mask``). With them the
  quantizer compensates each input column's rounding error on the columns still to be
  quantized (``dcformat.compress.gptq``), which lowers the layer's output error at the
  same size.
- **Sensitivity** of every tensor the compressor would quantize: that tensor alone is
  quantized (about ``probe_bits`` bits per weight), the model rerun, and the relative
  squared change of its output divided by the tensor's relative squared error. Given to
  the allocation as ``importance``, it spends the bits where the output needs them.
  The model runs once per tensor, on the first :data:`SENSITIVITY_BATCHES` batches.

``calibrate(model, batches, tensors)`` gathers both; a batch is a dict of keyword
arguments (``tokenizer(...)``'s output), a tuple of positional ones or one tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from dcformat.compress import compress_tensors
from dcformat.compress.plan import plan_compression
from dcformat.interop.torch_arrays import to_numpy, to_torch
from dcformat.progress import progress as _progress
from dcformat.torch.errors import ConfigError

#: Bits per weight at which each tensor is quantized alone to measure its sensitivity.
PROBE_BITS = 5.0
#: Batches the sensitivities are measured on (the model runs once per tensor on each):
#: the first few; the second moments use every batch.
SENSITIVITY_BATCHES = 4


@dataclass
class Calibration:
    """What :func:`calibrate` measured: ``hessians`` (weight name -> ``in x in`` float64
    input second moments), ``importance`` (name -> sensitivity, for the allocation)."""

    hessians: dict[str, np.ndarray] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    batches: int = 0


def _call(model, batch):
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _mask_of(batch) -> torch.Tensor | None:
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    return mask.bool() if isinstance(mask, torch.Tensor) else None


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A layer's inputs or a model's outputs as rows of features, padded positions left out."""
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask]
    return x.reshape(-1, x.shape[-1])


def _output(out) -> torch.Tensor:
    """The tensor a model's output is judged by: ``last_hidden_state``, else the first output."""
    hidden = getattr(out, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError("calibrate", f"cannot tell which output of {type(out).__name__} to measure; give a model whose output is a tensor")


def input_moments(model: torch.nn.Module, batches: list, *, progress: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """``{name + ".weight": sum x x^T}`` over the inputs of every ``nn.Linear`` of ``model``,
    and the number of rows (tokens) summed."""
    sums: dict[str, torch.Tensor] = {}
    current: dict = {"mask": None, "rows": 0}
    handles = []

    def hook_for(key: str):
        def hook(module, inputs):
            x = _rows(inputs[0].detach(), current["mask"]).to(torch.float64)
            sums[key] = sums[key] + x.T @ x if key in sums else x.T @ x

        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_pre_hook(hook_for(f"{name}.weight" if name else "weight")))
    try:
        with torch.no_grad():
            for batch in _progress(batches, enabled=progress, desc="calibrating: layer inputs", total=len(batches)):
                current["mask"] = _mask_of(batch)
                out = _output(_call(model, batch))
                current["rows"] += _rows(out, current["mask"]).shape[0]
    finally:
        for handle in handles:
            handle.remove()
    return {key: value.cpu().numpy() for key, value in sums.items()}, current["rows"]


def sensitivities(
    model: torch.nn.Module, batches: list, tensors: Mapping[str, np.ndarray], *, probe_bits: float = PROBE_BITS, progress: bool = False, **settings
) -> dict[str, float]:
    """Per tensor that ``dcformat.compress`` would quantize (``settings`` are its options):
    the relative squared change of the model's output per unit of the tensor's relative
    squared error, when it alone is quantized at about ``probe_bits`` bits per weight.
    A tensor whose change is lost in noise gets 1% of the median (never zero)."""
    parameters = dict(model.named_parameters())
    plan = plan_compression(tensors, **settings)
    # the tensors the plan classified for quantizing (its rows name a reason for the others)
    names = [row["name"] for row in plan.report()["tensors"] if row["reason"] is None and row["name"] in parameters]
    with torch.no_grad():
        reference = [_rows(_output(_call(model, b)), _mask_of(b)) for b in batches]
        energy = sum(float(r.double().square().sum()) for r in reference)
        scores = {}
        for name in _progress(names, enabled=progress, desc="calibrating: sensitivities", total=len(names)):
            quantized, report = compress_tensors({name: tensors[name]}, target_bits_per_weight=probe_bits, importance=None, metadata_bytes=0)
            relative = report["tensors"][0]["relative_error"]
            parameter = parameters[name]
            original = parameter.detach().clone()
            value = quantized[name]
            parameter.copy_(to_torch(np.asarray(value.dequantize() if hasattr(value, "dequantize") else value)))
            try:
                change = sum(float((_rows(_output(_call(model, b)), _mask_of(b)) - r).double().square().sum()) for b, r in zip(batches, reference))
            finally:
                parameter.copy_(original)
            scores[name] = (change / energy) / relative if relative > 0 and energy > 0 else 0.0
    if not scores:
        return {}
    floor = 0.01 * float(np.median(list(scores.values())))
    return {name: max(score, floor) for name, score in scores.items()} if floor > 0 else scores


def calibrate(
    model: torch.nn.Module,
    batches: Iterable,
    tensors: Mapping[str, np.ndarray] | None = None,
    *,
    hessians: bool = True,
    importance: bool = True,
    progress: bool = False,
    **settings,
) -> Calibration:
    """Run ``model`` (in eval mode, no gradients) on ``batches`` and measure what
    :class:`Calibration` holds. ``tensors`` are the weights the compressor will see
    (default: the model's state dict), ``settings`` its options (``min_elements``,
    ``keep_dense``), so the sensitivities cover the tensors it will quantize."""
    batches = list(batches)
    if not batches:
        raise ConfigError("calibrate", "needs at least one batch of inputs")
    was_training = model.training
    model.eval()
    try:
        if tensors is None:
            tensors = {name: to_numpy(t.detach().cpu(), name=name) for name, t in model.state_dict().items()}
        found = Calibration(batches=len(batches))
        if hessians:
            found.hessians, found.tokens = input_moments(model, batches, progress=progress)
        if importance:
            found.importance = sensitivities(model, batches[:SENSITIVITY_BATCHES], tensors, progress=progress, **settings)
        return found
    finally:
        model.train(was_training)
