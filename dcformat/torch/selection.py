"""Which parameters of a model a compression stage works on, by their state-dict names.

Users name parameters the way ``model.state_dict()`` does before any compression
(``"features.0.weight"``, ``"ip1.weight"``); this module turns such a name into the owning
module and attribute, whatever state (dense, pruned, shared) the parameter is in now, and
says which parameters are compressed when the user names none: the weights of every
fully connected and convolution layer, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

import torch
from torch import nn

from dcformat.torch import reparam
from dcformat.torch.errors import ConfigError

#: Layers whose ``weight`` is compressed by default. Conv layers of any rank (1-D, 2-D,
#: 3-D, transposed) count as convolutions for the default bit width.
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
FC_TYPES = (nn.Linear, nn.Bilinear)

T = TypeVar("T")


def split_name(name: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> (``"a.b"``, ``"weight"``); a top-level parameter has module path ``""``."""
    module_path, _, attribute = name.rpartition(".")
    return module_path, attribute


def compressible_names(model: nn.Module) -> list[str]:
    """Names of every parameter a stage may be asked to compress, in any state."""
    names = []
    for module_path, module in model.named_modules():
        prefix = f"{module_path}." if module_path else ""
        for attribute, parameter in module._parameters.items():
            if parameter is not None and reparam.find(module, attribute) is None:
                names.append(prefix + attribute)
        names.extend(prefix + hook.name for hook in reparam.computed_parameters(module))
    return names


def default_names(model: nn.Module) -> list[str]:
    """The ``weight`` of every Linear / Bilinear / Conv layer, in module order."""
    names = []
    for module_path, module in model.named_modules():
        if isinstance(module, CONV_TYPES + FC_TYPES) and (module._parameters.get("weight") is not None or reparam.find(module, "weight") is not None):
            names.append(f"{module_path}.weight" if module_path else "weight")
    return names


def resolve(model: nn.Module, name: str, *, operation: str) -> tuple[nn.Module, str]:
    """The module owning parameter ``name`` and the attribute name, or a ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(operation, f"parameter names must be strings, got {type(name).__name__}")
    module_path, attribute = split_name(name)
    try:
        module = model.get_submodule(module_path)
    except AttributeError:
        module = None
    known = module is not None and (module._parameters.get(attribute) is not None or reparam.find(module, attribute) is not None)
    if not known:
        available = ", ".join(compressible_names(model)) or "none"
        raise ConfigError(operation, f"model has no parameter {name!r}; its parameters are: {available}")
    return module, attribute


def current_value(module: nn.Module, attribute: str) -> torch.Tensor:
    """The parameter's value as the forward pass sees it (computed ones recomputed now), detached."""
    hook = reparam.find(module, attribute)
    if hook is not None:
        with torch.no_grad():
            return hook.compute(module).detach()
    return module._parameters[attribute].detach()


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, CONV_TYPES)


def per_name(
    setting: T | Mapping[str, T] | None,
    names: Iterable[str],
    *,
    operation: str,
    what: str,
) -> dict[str, T | None]:
    """Spread a setting given as one value or as ``{name: value}`` over ``names``.

    A mapping must only name parameters in ``names``, so a typo is an error and not a
    silently uncompressed layer.
    """
    names = list(names)
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - set(names))
        if unknown:
            raise ConfigError(operation, f"{what} given for {', '.join(map(repr, unknown))}, not among the selected parameters {names}")
        return {name: setting.get(name) for name in names}
    return {name: setting for name in names}
