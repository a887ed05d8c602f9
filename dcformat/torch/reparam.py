"""A parameter computed from visible state: the mechanism behind pruning and weight sharing.

Both compression stages replace a module's parameter ``W`` (say ``fc.weight``) by tensors
from which ``W`` is computed before every forward pass, the way ``torch.nn.utils.prune``
does it:

* pruned:  ``weight_orig`` (the original ``nn.Parameter`` object, so an optimizer built
  before pruning keeps working) and the boolean buffer ``weight_mask``;
  ``weight = where(weight_mask, weight_orig, 0)``.
* shared:  ``weight_codebook`` (an ``nn.Parameter`` of k centroids), the integer buffer
  ``weight_codes`` and the boolean buffer ``weight_mask``;
  ``weight = where(weight_mask, weight_codebook[weight_codes], 0)``.

Computing ``W`` with ``torch.where`` rather than by multiplying with the mask matters:
pruned entries are exactly 0 in every forward pass whatever an optimizer did to the stored
tensors, and their gradient is exactly 0 even if the incoming gradient is inf or nan. The
gather ``codebook[codes]`` makes autograd produce the paper's centroid gradient,
dL/dC_k = sum of dL/dW over the unpruned weights with code k, for any optimizer.

The state stays visible in ``state_dict()`` until :func:`make_permanent` turns the module
back into one with a plain parameter ``W``. The computed ``W`` itself is a plain tensor
attribute (not a parameter, not in the state dict), recomputed with autograd by a forward
pre-hook and detached again by a forward hook, so between forward passes it is a plain value
(code that uses ``module.W`` outside ``module``'s own forward, e.g. tied weights, gets no
gradient through it). The hook object is the record of which parameters are computed (see
:func:`find`).
"""

from __future__ import annotations

import torch
from torch import nn

from dcformat.torch.errors import ConfigError


class ComputedParameter:
    """Forward pre-hook that recomputes ``module.<name>`` from its state tensors."""

    #: Suffixes of the state tensors this kind of parameter keeps on the module.
    suffixes: tuple[str, ...] = ()
    #: What ``state_of`` reports, and error messages say, for this kind.
    kind = "computed"

    def __init__(self, name: str):
        self.name = name
        self._handle = None
        self._post_handle = None

    def compute(self, module: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, module: nn.Module, inputs) -> None:
        setattr(module, self.name, self.compute(module))

    def detach_after_forward(self, module: nn.Module, inputs, output) -> None:
        """Between forward passes ``module.<name>`` holds a detached value.

        The autograd graph keeps what backward needs; dropping the module's own reference to
        the graph lets ``copy.deepcopy`` and pickling work (both refuse non-leaf tensors,
        the known trap of ``torch.nn.utils.prune``).
        """
        setattr(module, self.name, getattr(module, self.name).detach())

    def refresh(self, module: nn.Module) -> None:
        """Recompute ``module.<name>`` now (after an optimizer step, before inspecting it)."""
        with torch.no_grad():
            setattr(module, self.name, self.compute(module))

    def state(self, module: nn.Module, suffix: str) -> torch.Tensor:
        return getattr(module, f"{self.name}_{suffix}")

    def install(self, module: nn.Module, parameters: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor]) -> None:
        """Replace the plain parameter by the given state tensors and register the hook."""
        if find(module, self.name) is not None:
            raise ConfigError("install", f"{self.name!r} of {type(module).__name__} is already {state_of(module, self.name)}")
        del module._parameters[self.name]
        for suffix, parameter in parameters.items():
            module.register_parameter(f"{self.name}_{suffix}", parameter)
        for suffix, buffer in buffers.items():
            module.register_buffer(f"{self.name}_{suffix}", buffer)
        self._handle = module.register_forward_pre_hook(self)
        self._post_handle = module.register_forward_hook(self.detach_after_forward)
        self.refresh(module)

    def uninstall(self, module: nn.Module) -> torch.Tensor:
        """Remove the hook and the state tensors; return the last computed value (detached)."""
        with torch.no_grad():
            value = self.compute(module).detach().clone()
        self._handle.remove()
        self._post_handle.remove()
        delattr(module, self.name)
        for suffix in self.suffixes:
            delattr(module, f"{self.name}_{suffix}")
        return value


def find(module: nn.Module, name: str) -> ComputedParameter | None:
    """The hook computing ``module.<name>``, or None when it is a plain parameter."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, ComputedParameter) and hook.name == name:
            return hook
    return None


def computed_parameters(module: nn.Module) -> list[ComputedParameter]:
    """All hooks of this module (not of its children), in registration order."""
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, ComputedParameter)]


def state_of(module: nn.Module, name: str) -> str:
    """``"dense"`` for a plain parameter, else the kind of computed parameter (``"pruned"``, ``"shared"``)."""
    hook = find(module, name)
    return "dense" if hook is None else hook.kind


def make_permanent(module: nn.Module, name: str = "weight") -> nn.Parameter:
    """Turn a pruned or shared parameter back into a plain ``nn.Parameter`` holding its current value.

    Pruned entries stay 0 and shared ones keep their centroid values; only the mask, codes
    and codebook are dropped. Build a new optimizer afterwards: the old one refers to the
    removed state tensors.
    """
    hook = find(module, name)
    if hook is None:
        raise ConfigError("make_permanent", f"{name!r} of {type(module).__name__} is neither pruned nor shared")
    value = hook.uninstall(module)
    parameter = nn.Parameter(value)
    module.register_parameter(name, parameter)
    return parameter


def refresh_all(model: nn.Module) -> None:
    """Recompute every computed parameter of ``model`` (e.g. right after an optimizer step)."""
    for module in model.modules():
        for hook in computed_parameters(module):
            hook.refresh(module)
