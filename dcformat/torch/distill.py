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
  (``<name>_latent``) and takes the centroid nearest to it at every forward pass; backward
  passes the weight's gradient to the latent unchanged (straight through the rounding) and
  to each centroid summed over its weights. A weight changes centroid when its latent
  crosses the midpoint between two, so the assignment learns as well as the centroids: on
  MiniLM at 12x, centroids alone recover little of what quantization lost (see the README).

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

__all__ = ["LatentParameter", "distill", "freeze", "install_latent", "pooled_embedding_loss"]


class LatentParameter(reparam.ComputedParameter):
    """``module.<name> = where(mask, codebook[nearest(latent)], 0)``, trained straight through.

    The codebook is kept in any order while training; the forward pass sorts it, so a
    weight's centroid is always the nearest one (the lower of two on an exact tie, as
    :func:`~dcformat.torch.quantize.share_weights` assigns).
    """

    suffixes = ("latent", "codebook", "mask")
    kind = "latent"

    def codes(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The sorted codebook and each weight's index into it (no gradient)."""
        ordered, _ = torch.sort(self.state(module, "codebook"))
        midpoints = (ordered[1:] + ordered[:-1]) / 2
        return ordered, torch.bucketize(self.state(module, "latent").detach(), midpoints, right=False)

    def compute(self, module: nn.Module) -> torch.Tensor:
        latent = self.state(module, "latent")
        ordered, codes = self.codes(module)
        straight_through = latent - latent.detach()  # zero in value, the identity in backward
        return torch.where(self.state(module, "mask"), ordered[codes] + straight_through, 0)


def install_latent(module: nn.Module, name: str, codebook: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Make ``module.<name>`` a weight trained straight through onto ``codebook``: its latent
    starts as the current weight, which keeps ``mask`` (True where it is not pruned;
    default: everywhere)."""
    operation = "install_latent"
    weight = module._parameters.get(name)
    if weight is None or reparam.find(module, name) is not None:
        raise ConfigError(operation, f"{type(module).__name__}.{name} must be a plain parameter, it is {reparam.state_of(module, name)}")
    if not weight.is_floating_point() or codebook.ndim != 1 or codebook.numel() < 1:
        raise ConfigError(operation, f"needs a floating-point weight and a non-empty 1-D codebook, got {weight.dtype} and {tuple(codebook.shape)}")
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    if mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ConfigError(operation, f"the mask must be bool with the weight's shape {tuple(weight.shape)}")
    centroids = nn.Parameter(codebook.detach().to(device=weight.device, dtype=weight.dtype).clone())
    LatentParameter(name).install(module, {"latent": weight, "codebook": centroids}, {"mask": mask.to(weight.device)})


def freeze(model: nn.Module) -> int:
    """Fix every latent weight's centroid: each becomes the paper's shared state (codebook,
    codes, mask), written as such by :func:`~dcformat.torch.to_dcformat`. Returns how many."""
    frozen = 0
    for module in model.modules():
        for hook in reparam.computed_parameters(module):
            if isinstance(hook, LatentParameter):
                with torch.no_grad():
                    codebook, codes = hook.codes(module)
                mask = hook.state(module, "mask")
                weight = hook.state(module, "latent")
                hook.uninstall(module)
                module.register_parameter(hook.name, weight)
                install_shared(module, hook.name, codebook, codes, mask)
                frozen += 1
    return frozen


def pooled_embedding_loss(student_output, teacher_output, batch: Mapping) -> torch.Tensor:
    """The default distillation loss of a transformer encoder: 100 x (1 - cosine) between
    the mean-pooled last hidden states (what a sentence embedding is), plus the hidden
    states' squared error relative to the teacher's variance, both over real tokens only
    (``attention_mask``)."""
    student, teacher = _hidden(student_output), _hidden(teacher_output).detach()
    mask = batch.get("attention_mask")
    mask = torch.ones(student.shape[:2], dtype=student.dtype) if mask is None else mask.to(student.dtype)
    mask = mask.unsqueeze(-1)
    tokens = mask.sum(1).clamp_min(1)
    cosine = nn.functional.cosine_similarity((student * mask).sum(1) / tokens, (teacher * mask).sum(1) / tokens, dim=-1)
    squared = ((student - teacher).square() * mask).sum() / (mask.sum() * student.shape[-1]) / teacher.var().clamp_min(1e-12)
    return 100 * (1 - cosine).mean() + squared


def _hidden(output) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
        raise ConfigError("distill", "the default loss needs outputs with a (batch, tokens, features) last_hidden_state; give loss=")
    return hidden


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
    for name, value in (("lr", lr), ("codebook_lr", codebook_lr)):
        if value is not None and not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ConfigError("distill", f"{name} must be a positive number, got {value!r}")
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
