"""Trained quantization of a pretrained model by distillation: the paper's second stage
without labels (issue 14, part 2).

The paper retrains every compressed network on its task's data. A pretrained model
arrives without that data, so here a copy of the original model, the teacher, supplies
the targets: the student, whose quantized weights are computed from trainable state,
learns to give the teacher's outputs on unlabelled inputs (any text in the model's
language, for a language model).

Two ways to train a quantized weight, both through :mod:`dcformat.torch.reparam`:

* ``move_codes=False``, the paper's trained quantization: each weight keeps its centroid
  (:class:`~dcformat.torch.quantize.SharedParameter`) and only the centroids train, each by
  the sum of its weights' gradients.
* ``move_codes=True`` (the default): the weight also keeps a full-precision latent value
  (``<name>_latent``) and takes the centroid of the cell its latent lies in at every forward
  pass; backward passes the weight's gradient to the latent unchanged (straight through
  the rounding) and to each centroid summed over its weights. The cells are fixed when
  training starts (``<name>_boundaries``: by default halfway between neighbouring
  centroids, the k-means assignment; the compressor's grid gives its own cell edges), so
  before any step every weight has the code the compressor gave it and the file keeps the
  size it was planned to have. A weight changes centroid when its latent crosses into
  another cell, so the assignment learns as well as the centroids: on MiniLM at 12x,
  centroids alone recover little of what quantization lost (see the README).

:func:`freeze` ends training: every weight keeps the centroid it has now, as the paper's
shared state, which :func:`dcformat.torch.to_dcformat` and ``save_file`` write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from dcformat.progress import progress as progress_bar
from dcformat.torch import reparam
from dcformat.torch.errors import ConfigError
from dcformat.torch.quantize import install_shared

__all__ = [
    "LatentParameter",
    "cell_boundaries",
    "check_rate",
    "distill",
    "freeze",
    "install_latent",
    "last_hidden_state",
    "mean_pooled",
    "pooled_embedding_loss",
]


class LatentParameter(reparam.ComputedParameter):
    """``module.<name> = where(mask, codebook[cell(latent)], 0)``, trained straight through.

    ``cell(x)`` is the number of boundaries below ``x`` (``boundaries`` ascending, one fewer
    than the centroids; a latent exactly on one goes to the lower cell). The boundaries stay
    fixed; the centroids train and may move past each other.
    """

    suffixes = ("latent", "codebook", "boundaries", "mask")
    kind = "latent"

    def codes(self, module: nn.Module) -> torch.Tensor:
        """Each weight's code: the cell its latent lies in (no gradient)."""
        return torch.bucketize(self.state(module, "latent").detach(), self.state(module, "boundaries"), right=False)

    def compute(self, module: nn.Module) -> torch.Tensor:
        latent = self.state(module, "latent")
        straight_through = latent - latent.detach()  # zero in value, the identity in backward
        return torch.where(self.state(module, "mask"), self.state(module, "codebook")[self.codes(module)] + straight_through, 0)


def cell_boundaries(values: torch.Tensor, codes: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size - 1`` boundaries that give ``values`` exactly ``codes`` again: halfway
    between the largest value of each code and the smallest of the next. The assignment
    must be monotone (a larger value never has a smaller code) and use every code, as a
    grid's or k-means' does; else :class:`ConfigError`."""
    values, codes = values.reshape(-1).double(), codes.reshape(-1).long()
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
        raise ConfigError("cell_boundaries", f"codes must lie in [0, {size})")
    highest = torch.full((size,), -torch.inf, dtype=torch.float64).scatter_reduce(0, codes, values, "amax")
    lowest = torch.full((size,), torch.inf, dtype=torch.float64).scatter_reduce(0, codes, values, "amin")
    if not (torch.isfinite(highest).all() and (highest[:-1] < lowest[1:]).all()):
        raise ConfigError("cell_boundaries", "the codes must be a monotone assignment of the values that uses every code")
    return (highest[:-1] + lowest[1:]) / 2


def _rounded_down(boundaries: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each boundary as the largest value of ``dtype`` not above it: a weight of that dtype is
    then in the same cell whether compared in it or exactly (rounding to nearest could
    carry a boundary onto the smallest weight of the cell above)."""
    rounded = boundaries.to(dtype)
    above = rounded.double() > boundaries.double()
    return torch.where(above, torch.nextafter(rounded, torch.full_like(rounded, -torch.inf)), rounded)


def install_latent(
    module: nn.Module, name: str, codebook: torch.Tensor, mask: torch.Tensor | None = None, boundaries: torch.Tensor | None = None
) -> None:
    """Make ``module.<name>`` a weight trained straight through onto ``codebook``: its latent
    starts as the current weight, which keeps ``mask`` (True where it is not pruned;
    default: everywhere). ``boundaries`` are its cells' (default: halfway between
    neighbouring centroids of an ascending codebook, the nearest-centroid rule;
    :func:`cell_boundaries` gives those of an existing assignment)."""
    operation = "install_latent"
    weight = module._parameters.get(name)
    if reparam.find(module, name) is not None:
        raise ConfigError(operation, f"{type(module).__name__}.{name} must be a plain parameter, it is {reparam.state_of(module, name)}")
    if weight is None:
        raise ConfigError(operation, f"{type(module).__name__} has no parameter {name!r}")
    if not weight.is_floating_point() or codebook.ndim != 1 or codebook.numel() < 1:
        raise ConfigError(operation, f"needs a floating-point weight and a non-empty 1-D codebook, got {weight.dtype} and {tuple(codebook.shape)}")
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    if mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ConfigError(operation, f"the mask must be bool with the weight's shape {tuple(weight.shape)}")
    if boundaries is None:
        if (codebook[1:] < codebook[:-1]).any():
            raise ConfigError(operation, "the codebook must be ascending when no boundaries are given")
        boundaries = (codebook[1:] + codebook[:-1]) / 2
    if boundaries.shape != (codebook.numel() - 1,) or (boundaries[1:] < boundaries[:-1]).any():
        raise ConfigError(operation, f"boundaries must be {codebook.numel() - 1} ascending values, one fewer than the centroids")
    centroids = nn.Parameter(codebook.detach().to(device=weight.device, dtype=weight.dtype).clone())
    buffers = {"boundaries": _rounded_down(boundaries.detach(), weight.dtype).to(weight.device), "mask": mask.to(weight.device)}
    LatentParameter(name).install(module, {"latent": weight, "codebook": centroids}, buffers)


def freeze(model: nn.Module) -> int:
    """Fix every latent weight's centroid: each becomes the paper's shared state (codebook,
    codes, mask), written as such by :func:`~dcformat.torch.to_dcformat`. Returns how many."""
    frozen = 0
    for module in model.modules():
        for hook in reparam.computed_parameters(module):
            if isinstance(hook, LatentParameter):
                codebook, codes = hook.state(module, "codebook").detach(), hook.codes(module)
                mask = hook.state(module, "mask")
                weight = hook.state(module, "latent")
                hook.uninstall(module)
                module.register_parameter(hook.name, weight)
                install_shared(module, hook.name, codebook, codes, mask)
                frozen += 1
    return frozen


def token_mask(hidden: torch.Tensor, batch: Mapping) -> torch.Tensor:
    """``(batch, tokens, 1)``: 1 at the real tokens of ``batch`` (its ``attention_mask``), 0 at padding."""
    mask = batch.get("attention_mask")
    mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype) if mask is None else mask.to(hidden.dtype)
    return mask.unsqueeze(-1)


def mean_pooled(output, batch: Mapping) -> torch.Tensor:
    """A sentence embedding per text: the last hidden state averaged over its real tokens."""
    hidden = last_hidden_state(output)
    mask = token_mask(hidden, batch)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


def pooled_embedding_loss(student_output, teacher_output, batch: Mapping) -> torch.Tensor:
    """The default distillation loss of a transformer encoder: 100 x (1 - cosine) between
    the mean-pooled last hidden states (what a sentence embedding is), plus the hidden
    states' squared error relative to the teacher's variance, both over real tokens only
    (``attention_mask``)."""
    student, teacher = last_hidden_state(student_output), last_hidden_state(teacher_output).detach()
    mask = token_mask(student, batch)
    cosine = nn.functional.cosine_similarity(mean_pooled(student, batch), mean_pooled(teacher, batch), dim=-1)
    squared = ((student - teacher).square() * mask).sum() / (mask.sum() * student.shape[-1]) / teacher.var().clamp_min(1e-12)
    return 100 * (1 - cosine).mean() + squared


def last_hidden_state(output) -> torch.Tensor:
    """A transformer encoder's ``(batch, tokens, features)`` output: ``last_hidden_state``, the
    first item of a tuple, or the tensor itself."""
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
        raise ConfigError("distill", "the default loss needs outputs with a (batch, tokens, features) last_hidden_state; give loss=")
    return hidden


def check_rate(name: str, value) -> None:
    """A learning rate must be a positive finite number (else :class:`ConfigError` naming it)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
        raise ConfigError("distill", f"{name} must be a positive number, got {value!r}")


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterator[Mapping] | Callable[[int], Mapping],
    *,
    steps: int,
    lr: float = 1e-4,
    codebook_lr: float | None = None,
    loss: Callable = pooled_embedding_loss,
    progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``student`` to give ``teacher``'s outputs for ``steps`` steps of Adam; returns the losses.

    ``batches`` is an iterator of keyword-argument dicts for both models (a tokenizer's
    output) or a function of the step number giving one. Every trainable parameter of the
    student trains: latent weights, codebooks, and the tensors stored exactly (biases,
    norms) at ``lr``, codebooks at ``codebook_lr`` (default ``lr``). Both models run in
    eval mode (no dropout: the teacher's outputs are the targets as they are).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError("distill", f"steps must be a non-negative integer, got {steps!r}")
    check_rate("lr", lr)
    if codebook_lr is not None:
        check_rate("codebook_lr", codebook_lr)
    next_batch = batches if callable(batches) else (lambda _step: next(batches))
    codebooks = [p for n, p in student.named_parameters() if n.endswith("_codebook") and p.requires_grad]
    others = [p for n, p in student.named_parameters() if not n.endswith("_codebook") and p.requires_grad]
    optimizer = torch.optim.Adam([{"params": others, "lr": lr}, {"params": codebooks, "lr": codebook_lr or lr}])
    student.eval()
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    losses = []
    for step in progress_bar(range(steps), enabled=progress, desc="distilling", total=steps, unit="step"):
        batch = next_batch(step)
        with torch.no_grad():
            target = teacher(**batch)
        value = loss(student(**batch), target, batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    reparam.refresh_all(student)
    return losses
