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


class MomentHooks:
    """Forward pre-hooks on every ``nn.Linear`` inside ``module`` that add ``x x^T`` of the
    layer's input rows to a float64 sum, keyed ``prefix + name + ".weight"``. Layers given
    the very same input tensor (a block's query, key and value; an MLP's gate and up) share
    one sum, computed once. Call :meth:`batch` before each batch, :meth:`remove` after."""

    def __init__(self, module: torch.nn.Module, prefix: str = ""):
        self.sums: dict[str, torch.Tensor] = {}
        self.shared: dict[str, str] = {}  # key -> the key whose sum it shares
        self._inputs: dict[str, torch.Tensor] = {}  # key -> its input in the current batch
        self._batches: dict[str, int] = {}
        self._mask = None
        self._handles = [
            m.register_forward_pre_hook(self._hook_for(f"{prefix}{name}.weight" if name else f"{prefix}weight"))
            for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear)
        ]

    def batch(self, mask: torch.Tensor | None) -> None:
        self._mask = mask
        self._inputs.clear()

    def _hook_for(self, key: str):
        def hook(module, inputs):
            x = inputs[0]
            self._batches[key] = self._batches.get(key, 0) + 1
            target = self.shared.get(key)
            if target is not None:
                seen = self._inputs.get(target)
                if seen is x:
                    return
                # The inputs part ways: the sum up to the last batch is common (less the
                # target's own input of this batch, when it was already added).
                common = self.sums[target].clone()
                if seen is not None:
                    earlier = _rows(seen.detach(), self._mask).to(torch.float64)
                    common -= earlier.T @ earlier
                self.sums[key] = common
                del self.shared[key]
            elif key not in self.sums:
                for other, seen in self._inputs.items():
                    if seen is x and self._batches[other] == 1 and other not in self.shared:
                        self.shared[key] = other
                        return
            self._inputs[key] = x
            rows = _rows(x.detach(), self._mask).to(torch.float64)
            self.sums[key] = self.sums[key] + rows.T @ rows if key in self.sums else rows.T @ rows

        return hook

    def moments(self) -> dict[str, np.ndarray]:
        """Every hooked layer's sum (shared ones are the same array)."""
        arrays = {key: value.cpu().numpy() for key, value in self.sums.items()}
        return {**arrays, **{key: arrays[target] for key, target in self.shared.items()}}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._inputs.clear()


def input_moments(model: torch.nn.Module, batches: list, *, progress: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """``{name + ".weight": sum x x^T}`` over the inputs of every ``nn.Linear`` of ``model``,
    and the number of rows (tokens) summed."""
    hooks = MomentHooks(model)
    rows = 0
    try:
        with torch.no_grad():
            for batch in _progress(batches, enabled=progress, desc="calibrating: layer inputs", total=len(batches)):
                hooks.batch(_mask_of(batch))
                out = _output(_call(model, batch))
                rows += _rows(out, _mask_of(batch)).shape[0]
    finally:
        hooks.remove()
    return hooks.moments(), rows


def probe(array: np.ndarray, probe_bits: float = PROBE_BITS) -> tuple[np.ndarray, float]:
    """``array`` quantized alone at about ``probe_bits`` bits per weight, as values of its
    dtype, and its relative squared error: the perturbation a sensitivity is measured by.
    Quantized whatever its size: the caller chose it as a tensor the compressor will quantize
    (under ``min_elements`` by default it would stay exact, and every score be zero)."""
    quantized, report = compress_tensors({"probe": array}, target_bits_per_weight=probe_bits, importance=None, metadata_bytes=0, min_elements=0)
    value = quantized["probe"]
    return np.asarray(value.dequantize() if hasattr(value, "dequantize") else value), float(report["tensors"][0]["relative_error"])


def squared_change(outputs: list[torch.Tensor], reference: list[torch.Tensor], masks: list) -> float:
    """Sum over batches of the squared difference of outputs (padding left out)."""
    return sum(float((_rows(o, m) - _rows(r, m)).double().square().sum()) for o, r, m in zip(outputs, reference, masks))


def energy(outputs: list[torch.Tensor], masks: list) -> float:
    """Sum over batches of the outputs' squares (padding left out): what a change is relative to."""
    return sum(float(_rows(o, m).double().square().sum()) for o, m in zip(outputs, masks))


def score(change: float, energy: float, relative: float) -> float:
    """A sensitivity: the output's relative squared change per unit of the tensor's relative squared error."""
    return (change / energy) / relative if relative > 0 and energy > 0 else 0.0


def floored(scores: dict[str, float]) -> dict[str, float]:
    """``scores`` with those lost in noise raised to 1% of the median (an importance is never zero)."""
    if not scores:
        return {}
    floor = 0.01 * float(np.median(list(scores.values())))
    return {name: max(value, floor) for name, value in scores.items()} if floor > 0 else dict(scores)


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
    masks = [_mask_of(b) for b in batches]
    with torch.no_grad():
        reference = [_output(_call(model, b)) for b in batches]
        total = energy(reference, masks)
        scores = {}
        for name in _progress(names, enabled=progress, desc="calibrating: sensitivities", total=len(names)):
            values, relative = probe(tensors[name], probe_bits)
            parameter = parameters[name]
            original = parameter.detach().clone()
            parameter.copy_(to_torch(values))
            try:
                change = squared_change([_output(_call(model, b)) for b in batches], reference, masks)
            finally:
                parameter.copy_(original)
            scores[name] = score(change, total, relative)
    return floored(scores)


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
