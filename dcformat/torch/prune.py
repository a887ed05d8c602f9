"""Magnitude pruning with fixed masks (stage 1 of Deep Compression).

Han et al. (NIPS 2015) remove every connection whose magnitude is below a threshold,
retrain the survivors with the mask held fixed, and repeat; iterating reaches higher
sparsity at the same accuracy than pruning once. Two ways to set the threshold, per layer:

* ``quality``: threshold = quality x the standard deviation of the layer's surviving
  weights (the paper's rule);
* ``sparsity``: the fraction of the layer's entries that end up pruned (the paper reports
  its results this way: "weights kept" = 1 - sparsity); the largest magnitudes are kept,
  ties broken by position so the result is deterministic.

A pruned parameter ``weight`` becomes ``weight_orig`` (the same ``nn.Parameter`` object)
plus the boolean buffer ``weight_mask``; see :mod:`dcformat.torch.reparam`. The forward
pass sees ``where(weight_mask, weight_orig, 0)``, so pruned weights are exactly 0 and get
an exactly-0 gradient whatever the optimizer, momentum or weight decay does.
:meth:`MagnitudePruner.attach` also zeroes the pruned entries of ``weight_orig`` after
every optimizer step, so the stored tensor agrees with what the forward pass sees.
Masks only ever shrink: pruning again never brings a weight back.

Functional API: :func:`magnitude_mask` (pure), :func:`prune`, :func:`apply_mask`,
:func:`get_mask`, :func:`is_pruned`, :func:`make_permanent`.
Class API: :class:`MagnitudePruner` and the schedule :func:`iterative_prune`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from dcformat.torch import distributed, reparam, selection
from dcformat.torch.errors import ConfigError

__all__ = [
    "MagnitudePruner",
    "MaskedParameter",
    "apply_mask",
    "get_mask",
    "is_pruned",
    "iterative_prune",
    "magnitude_mask",
    "make_permanent",
    "prune",
]


class MaskedParameter(reparam.ComputedParameter):
    """``module.<name> = where(<name>_mask, <name>_orig, 0)``, recomputed before each forward."""

    suffixes = ("orig", "mask")
    kind = "pruned"

    def compute(self, module: nn.Module) -> torch.Tensor:
        return torch.where(self.state(module, "mask"), self.state(module, "orig"), 0)

    def enforce(self, module: nn.Module) -> None:
        """Zero the pruned entries of the stored parameter (an optimizer may have moved them)."""
        with torch.no_grad():
            self.state(module, "orig").masked_fill_(~self.state(module, "mask"), 0)


def _check_quality(quality: Any, *, operation: str) -> float:
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not math.isfinite(quality) or quality < 0:
        raise ConfigError(operation, f"quality must be a finite number >= 0, got {quality!r}")
    return float(quality)


def _check_sparsity(sparsity: Any, *, operation: str) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity <= 1:
        raise ConfigError(operation, f"sparsity must be a fraction in [0, 1] (of entries pruned), got {sparsity!r}")
    return float(sparsity)


def _one_criterion(quality: Any, sparsity: Any, *, operation: str) -> None:
    if (quality is None) == (sparsity is None):
        raise ConfigError(operation, "give exactly one of quality= (threshold in stds) or sparsity= (fraction pruned)")


def magnitude_mask(
    weight: torch.Tensor,
    *,
    quality: float | None = None,
    sparsity: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boolean keep-mask of magnitude pruning; a pure function of its arguments.

    ``mask`` is the current mask (entries already pruned stay pruned). With ``quality``,
    entries whose magnitude is below ``quality * std`` of the surviving entries are pruned
    (population std, over survivors only, so a repeated call keeps raising the bar the way
    iterative pruning does). With ``sparsity``, the ``round((1 - sparsity) * numel)``
    largest surviving magnitudes are kept (fewer if fewer survive).
    """
    operation = "prune"
    _one_criterion(quality, sparsity, operation=operation)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise ConfigError(operation, f"can only prune floating-point tensors, got {getattr(weight, 'dtype', type(weight))}")
    weight = weight.detach()
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    elif mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ConfigError(operation, f"mask must be a bool tensor of shape {tuple(weight.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    magnitude = weight.abs()
    if quality is not None:
        quality = _check_quality(quality, operation=operation)
        survivors = weight[mask]
        if survivors.numel() == 0:
            return mask.clone()
        threshold = quality * survivors.double().std(correction=0).item()
        return mask & (magnitude >= threshold)
    sparsity = _check_sparsity(sparsity, operation=operation)
    keep = round((1.0 - sparsity) * weight.numel())
    if keep >= int(mask.sum()):
        return mask.clone()
    # Pruned entries sort last; a stable sort breaks ties between equal magnitudes by
    # position, so every process (and every run) keeps the same entries.
    ranked = torch.where(mask, magnitude, -1.0).flatten()
    order = torch.sort(ranked, descending=True, stable=True).indices
    new_mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    new_mask[order[:keep]] = True
    return new_mask.view_as(mask)


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    return isinstance(reparam.find(module, name), MaskedParameter)


def get_mask(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The boolean keep-mask of a pruned parameter (the live buffer, not a copy)."""
    if not is_pruned(module, name):
        raise ConfigError("get_mask", f"{name!r} of {type(module).__name__} is {reparam.state_of(module, name)}, not pruned")
    return getattr(module, f"{name}_mask")


def apply_mask(module: nn.Module, name: str, mask: torch.Tensor) -> torch.Tensor:
    """Prune ``module.<name>`` with a given boolean keep-mask (intersected with any current one)."""
    operation = "apply_mask"
    hook = reparam.find(module, name)
    if hook is not None and not isinstance(hook, MaskedParameter):
        raise ConfigError(operation, f"{name!r} is {hook.kind}; prune before quantizing, not after")
    if hook is None:
        parameter = module._parameters.get(name)
        if parameter is None:
            raise ConfigError(operation, f"{type(module).__name__} has no parameter {name!r}")
        if not parameter.is_floating_point():
            raise ConfigError(operation, f"can only prune floating-point parameters, {name!r} is {parameter.dtype}")
        shape = parameter.shape
    else:
        shape = hook.state(module, "orig").shape
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != shape:
        raise ConfigError(
            operation,
            f"mask must be a bool tensor of shape {tuple(shape)}, got {getattr(mask, 'dtype', type(mask))} {tuple(getattr(mask, 'shape', ()))}",
        )
    if hook is None:
        hook = MaskedParameter(name)
        # The mask takes the parameter's memory layout (e.g. channels_last), so the computed
        # weight keeps it too and convolutions stay on their fast path.
        buffer = torch.empty_like(parameter, dtype=torch.bool).copy_(mask.detach())
        hook.install(module, {"orig": parameter}, {"mask": buffer})
    else:
        get_mask(module, name).logical_and_(mask.to(get_mask(module, name).device))
    hook.enforce(module)
    hook.refresh(module)
    return get_mask(module, name)


def prune(module: nn.Module, name: str = "weight", *, quality: float | None = None, sparsity: float | None = None) -> torch.Tensor:
    """Magnitude-prune ``module.<name>`` once (see :func:`magnitude_mask`); returns the mask."""
    _one_criterion(quality, sparsity, operation="prune")
    current = get_mask(module, name) if is_pruned(module, name) else None
    if reparam.find(module, name) is None and module._parameters.get(name) is None:
        raise ConfigError("prune", f"{type(module).__name__} has no parameter {name!r}")
    value = selection.current_value(module, name)
    mask = magnitude_mask(value, quality=quality, sparsity=sparsity, mask=current)
    return apply_mask(module, name, mask)


def make_permanent(module: nn.Module, name: str = "weight") -> nn.Parameter:
    """Drop the mask: ``module.<name>`` becomes a plain parameter again (pruned entries 0)."""
    if not is_pruned(module, name):
        raise ConfigError("make_permanent", f"{name!r} of {type(module).__name__} is {reparam.state_of(module, name)}, not pruned")
    return reparam.make_permanent(module, name)


class MagnitudePruner:
    """Prunes selected parameters of a model to per-layer targets, and keeps them pruned.

    ``sparsity`` (fraction pruned) or ``quality`` (threshold in stds): one number for all
    selected parameters or ``{name: value}``. ``params``: the state-dict names to prune;
    default: the names of a ``{name: value}`` setting, else the weight of every Linear and
    Conv layer. :meth:`step` prunes part of the way (``progress`` in (0, 1]) for iterative
    schedules; kept fraction at ``progress`` p is ``(1 - sparsity) ** p`` (each round removes
    the same share of the survivors), quality is scaled by p.

    In a distributed job, create it on every process; masks are broadcast from rank 0 after
    each step (``sync=True``) so all replicas prune the same connections.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        sparsity: float | Mapping[str, float] | None = None,
        quality: float | Mapping[str, float] | None = None,
        params: Iterable[str] | None = None,
        sync: bool = True,
    ):
        operation = "MagnitudePruner"
        if not isinstance(model, nn.Module):
            raise ConfigError(operation, f"model must be an nn.Module, got {type(model).__name__}")
        _one_criterion(quality, sparsity, operation=operation)
        setting = sparsity if sparsity is not None else quality
        if params is not None:
            names = [params] if isinstance(params, str) else list(params)
        elif isinstance(setting, Mapping):
            names = list(setting)
        else:
            names = selection.default_names(model)
        if not names:
            raise ConfigError(operation, "no parameters selected (the model has no Linear/Conv layer; pass params=)")
        if len(set(names)) != len(names):
            raise ConfigError(operation, f"parameter names repeat: {names}")
        self.model = model
        self.criterion = "sparsity" if sparsity is not None else "quality"
        self.targets: dict[str, float] = {}
        check = _check_sparsity if sparsity is not None else _check_quality
        for name, value in selection.per_name(setting, names, operation=operation, what=self.criterion).items():
            if value is None:
                raise ConfigError(operation, f"no {self.criterion} given for {name!r}")
            module, attribute = selection.resolve(model, name, operation=operation)
            state = reparam.state_of(module, attribute)
            if state not in ("dense", "pruned"):
                raise ConfigError(operation, f"{name!r} is {state}; prune before quantizing")
            if not selection.current_value(module, attribute).is_floating_point():
                raise ConfigError(operation, f"{name!r} is not floating point")
            self.targets[name] = check(value, operation=operation)
        self.sync = sync

    @property
    def names(self) -> list[str]:
        return list(self.targets)

    def _modules(self):
        for name in self.targets:
            module, attribute = selection.resolve(self.model, name, operation="prune")
            yield name, module, attribute

    def step(self, progress: float = 1.0) -> dict[str, float]:
        """Prune every selected parameter ``progress`` of the way to its target; returns :meth:`kept`."""
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 < progress <= 1:
            raise ConfigError("prune", f"progress must be in (0, 1], got {progress!r}")
        for name, module, attribute in self._modules():
            target = self.targets[name]
            if self.criterion == "sparsity":
                prune(module, attribute, sparsity=1.0 - (1.0 - target) ** progress)
            else:
                prune(module, attribute, quality=target * progress)
            if self.sync:
                distributed.broadcast_(get_mask(module, attribute))
                reparam.find(module, attribute).enforce(module)
                reparam.find(module, attribute).refresh(module)
        return self.kept()

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{name: bool keep-mask}`` of the parameters pruned so far (live buffers)."""
        return {name: get_mask(m, a) for name, m, a in self._modules() if is_pruned(m, a)}

    def kept(self) -> dict[str, float]:
        """Fraction of entries kept, per selected parameter (1.0 if not pruned yet)."""
        result = {}
        for name, module, attribute in self._modules():
            result[name] = get_mask(module, attribute).float().mean().item() if is_pruned(module, attribute) else 1.0
        return result

    def enforce(self) -> None:
        """Zero the pruned entries of every stored parameter and recompute the forward weights."""
        for _, module, attribute in self._modules():
            hook = reparam.find(module, attribute)
            if isinstance(hook, MaskedParameter):
                hook.enforce(module)
                hook.refresh(module)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Call :meth:`enforce` after every ``optimizer.step()``; returns a removable handle.

        The forward pass never sees pruned weights anyway; this keeps ``weight_orig`` (what
        a checkpoint stores) equal to it when momentum or decoupled weight decay would move
        a pruned entry, and keeps ``module.weight`` current between steps.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError("attach", f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.enforce())

    def make_permanent(self) -> None:
        """Drop all masks (weights keep their zeros); build a new optimizer afterwards."""
        for _, module, attribute in self._modules():
            if is_pruned(module, attribute):
                make_permanent(module, attribute)


def iterative_prune(
    pruner: MagnitudePruner,
    *,
    rounds: int,
    retrain: Callable[[int], Any],
) -> list[dict[str, float]]:
    """The paper's schedule: ``rounds`` times, prune a further step toward the targets, then
    call ``retrain(round_number)`` (1-based) with the masks fixed. Returns the kept fractions
    after each round."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError("iterative_prune", f"rounds must be an integer >= 1, got {rounds!r}")
    if not callable(retrain):
        raise ConfigError("iterative_prune", "retrain must be callable as retrain(round_number)")
    history = []
    for round_number in range(1, rounds + 1):
        history.append(pruner.step(round_number / rounds))
        retrain(round_number)
    return history
