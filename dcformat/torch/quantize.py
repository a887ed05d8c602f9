"""Trained quantization, i.e. weight sharing (stage 2 of Deep Compression).

Per layer, never across layers, the surviving weights are clustered with 1-D k-means into
k = 2^bits centroids; each weight is then replaced by the index of its centroid. The
paper's defaults are 8 bits for convolution layers and 5 for fully connected ones.

k-means here is Lloyd's algorithm made cheap by the one dimension: the values are sorted
once, the clusters of sorted values are contiguous runs split at the midpoints between
neighbouring centroids, so one iteration is a ``searchsorted`` of k-1 midpoints plus
prefix-sum differences: O(k log n), no per-weight work after the sort.

Initialisations (the paper's section 3.2): ``linear`` spaces the centroids evenly between
the smallest and largest weight (the default and the paper's best: it keeps centroids for
the rare large weights), ``density`` spaces them evenly on the weights' CDF, ``forgy``
picks k distinct weights at random.

After clustering, the parameter ``weight`` becomes ``weight_codebook`` (an ``nn.Parameter``
of the k centroids) plus the buffers ``weight_codes`` (int64, the tensor's shape) and
``weight_mask`` (bool); the forward pass computes ``where(weight_mask,
weight_codebook[weight_codes], 0)`` (see :mod:`dcformat.torch.reparam`). Autograd through
the gather gives exactly the paper's centroid gradient, dL/dC_k = sum of dL/dW over the
unpruned weights with code k, so fine-tuning works with any optimizer over
``model.parameters()``; assignments and mask never change, and every weight equals
``codebook[code]`` (0 where pruned) at every moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from dcformat.errors import EncodeError
from dcformat.quantize import INITS as CORE_INITS
from dcformat.quantize import assign, kmeans_1d
from dcformat.torch import distributed, reparam, selection
from dcformat.torch.errors import ConfigError
from dcformat.torch.prune import MaskedParameter

__all__ = [
    "INITS",
    "SharedParameter",
    "TrainedQuantizer",
    "get_codebook",
    "is_shared",
    "cluster",
    "make_permanent",
    "share_weights",
]

#: Centroid initialisations, as the paper names them.
INITS = CORE_INITS
#: The format stores at most 2^16 centroids per tensor.
MAX_BITS = 16
DEFAULT_CONV_BITS = 8
DEFAULT_FC_BITS = 5


def cluster(
    values: torch.Tensor,
    k: int,
    *,
    init: str = "linear",
    max_iter: int = 300,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``values`` (any shape) into ``k`` centroids with the core's one k-means
    (:func:`dcformat.kmeans_1d`); returns ``(codebook, codes)``.

    ``codebook`` is float64, ascending, length ``k`` (centroids of empty clusters keep their
    initial value; an empty input gives zeros); ``codes`` is int64 with ``values``' shape,
    each the index of the nearest centroid (the lower one on an exact tie). ``generator``
    seeds forgy's random picks.
    """
    operation = "kmeans"
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1 << MAX_BITS:
        raise ConfigError(operation, f"k must be an integer in [1, {1 << MAX_BITS}], got {k!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ConfigError(operation, f"max_iter must be an integer >= 0, got {max_iter!r}")
    x = values.detach().to(device="cpu", dtype=torch.float64).flatten().numpy()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if init == "forgy" else 0
    try:
        centroids = kmeans_1d(x, k, init=init, seed=seed, max_iter=max_iter)
    except EncodeError as exc:
        raise ConfigError(operation, exc.reason) from None
    if x.size == 0:
        return torch.zeros(k, dtype=torch.float64), torch.zeros(values.shape, dtype=torch.long)
    codes = assign(x, centroids)
    return torch.from_numpy(centroids), torch.from_numpy(codes.astype(np.int64)).view(values.shape)


#: Codebook storage types the format offers (spec 6.3).
CODEBOOK_DTYPES = (torch.float32, torch.float16)


class SharedParameter(reparam.ComputedParameter):
    """``module.<name> = where(<name>_mask, <name>_codebook[<name>_codes], 0)`` before each forward.

    With ``storage_dtype=torch.float16`` the forward pass uses the codebook rounded to
    float16, the values a file then stores exactly at half the codebook's bytes; the
    parameter itself stays in full precision, so fine-tuning steps smaller than float16's
    resolution still add up (the rounding is passed straight through in backward).
    """

    suffixes = ("codebook", "codes", "mask")
    kind = "shared"

    def __init__(self, name: str, *, storage_dtype: torch.dtype | None = None):
        super().__init__(name)
        self.storage_dtype = storage_dtype

    def stored_codebook(self, module: nn.Module) -> torch.Tensor:
        """The codebook as the forward pass uses it (and a file stores it)."""
        codebook = self.state(module, "codebook")
        if self.storage_dtype is None or self.storage_dtype == codebook.dtype:
            return codebook
        return codebook.to(self.storage_dtype).to(codebook.dtype)

    def compute(self, module: nn.Module) -> torch.Tensor:
        codebook = self.stored_codebook(module)
        return torch.where(self.state(module, "mask"), codebook[self.state(module, "codes")], 0)


def is_shared(module: nn.Module, name: str = "weight") -> bool:
    return isinstance(reparam.find(module, name), SharedParameter)


def get_codebook(module: nn.Module, name: str = "weight") -> nn.Parameter:
    if not is_shared(module, name):
        raise ConfigError("get_codebook", f"{name!r} of {type(module).__name__} is {reparam.state_of(module, name)}, not shared")
    return getattr(module, f"{name}_codebook")


def _check_storage_dtype(storage_dtype, *, operation: str) -> None:
    if storage_dtype is not None and storage_dtype not in CODEBOOK_DTYPES:
        raise ConfigError(operation, f"codebook_dtype must be one of {CODEBOOK_DTYPES} or None, got {storage_dtype!r}")


def install_shared(
    module: nn.Module,
    name: str,
    codebook: torch.Tensor,
    codes: torch.Tensor,
    mask: torch.Tensor,
    *,
    codebook_dtype: torch.dtype | None = None,
) -> None:
    """Make ``module.<name>`` shared with the given codebook, codes and mask (which replace a
    pruned state's mask). Used after k-means and when loading a quantized file for fine-tuning.
    ``codebook_dtype``: how a file stores the codebook (see :class:`SharedParameter`)."""
    operation = "share_weights"
    _check_storage_dtype(codebook_dtype, operation=operation)
    hook = reparam.find(module, name)
    if hook is not None and not isinstance(hook, MaskedParameter):
        raise ConfigError(operation, f"{name!r} of {type(module).__name__} is already {hook.kind}")
    old = getattr(module, f"{name}_orig") if hook is not None else module._parameters.get(name)
    if old is None:
        raise ConfigError(operation, f"{type(module).__name__} has no parameter {name!r}")
    if codes.shape != old.shape or mask.shape != old.shape or mask.dtype != torch.bool:
        raise ConfigError(operation, f"codes and bool mask must have the parameter's shape {tuple(old.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook.numel()):
        raise ConfigError(operation, f"codes must index the {codebook.numel()}-entry codebook")
    if hook is not None:
        # Leave the plain parameter in place, as install() expects to replace one.
        hook.uninstall(module)
        module.register_parameter(name, old)
    parameter = nn.Parameter(codebook.detach().to(device=old.device, dtype=old.dtype).clone(), requires_grad=old.requires_grad)
    # Codes and mask take the old parameter's memory layout (e.g. channels_last); the
    # gather and the where() then produce the weight in that layout too.
    SharedParameter(name, storage_dtype=codebook_dtype).install(
        module,
        {"codebook": parameter},
        {
            "codes": torch.empty_like(old, dtype=torch.long).copy_(codes.detach()),
            "mask": torch.empty_like(old, dtype=torch.bool).copy_(mask.detach()),
        },
    )


def share_weights(
    module: nn.Module,
    name: str = "weight",
    *,
    bits: int,
    init: str = "linear",
    max_iter: int = 300,
    generator: torch.Generator | None = None,
    codebook_dtype: torch.dtype | None = None,
) -> nn.Parameter:
    """Cluster the surviving weights of ``module.<name>`` into ``2**bits`` shared values.

    A pruned parameter keeps its mask; a dense one gets an all-true mask. Returns the
    codebook parameter (``module.<name>_codebook``), to fine-tune. ``codebook_dtype``
    (``torch.float16`` or ``torch.float32``; default: the parameter's dtype) is the codebook's
    storage precision in a file; the forward pass uses exactly those values.
    """
    operation = "share_weights"
    _check_storage_dtype(codebook_dtype, operation=operation)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ConfigError(operation, f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
    hook = reparam.find(module, name)
    if hook is not None and not isinstance(hook, MaskedParameter):
        raise ConfigError(operation, f"{name!r} of {type(module).__name__} is already {hook.kind}")
    if hook is None and module._parameters.get(name) is None:
        raise ConfigError(operation, f"{type(module).__name__} has no parameter {name!r}")
    weight = selection.current_value(module, name)
    if not weight.is_floating_point():
        raise ConfigError(operation, f"can only share floating-point weights, {name!r} is {weight.dtype}")
    mask = hook.state(module, "mask") if hook is not None else torch.ones_like(weight, dtype=torch.bool)
    codebook, survivor_codes = cluster(weight[mask], 1 << bits, init=init, max_iter=max_iter, generator=generator)
    # Round the centroids to the precision they will be used in before assigning codes, so
    # each weight gets the nearest of the values it will actually take.
    codebook = codebook.to(weight.dtype)
    if codebook_dtype is not None:
        codebook = codebook.to(codebook_dtype).to(weight.dtype)
    codebook = codebook.double()
    midpoints = (codebook[1:] + codebook[:-1]) / 2
    survivor_codes = torch.searchsorted(midpoints, weight[mask].double().cpu(), right=False)
    codes = torch.zeros(weight.shape, dtype=torch.long)
    codes[mask.cpu()] = survivor_codes
    install_shared(module, name, codebook, codes, mask, codebook_dtype=codebook_dtype)
    return get_codebook(module, name)


def make_permanent(module: nn.Module, name: str = "weight") -> nn.Parameter:
    """Drop codebook and codes: ``module.<name>`` becomes a plain parameter of its shared values."""
    if not is_shared(module, name):
        raise ConfigError("make_permanent", f"{name!r} of {type(module).__name__} is {reparam.state_of(module, name)}, not shared")
    return reparam.make_permanent(module, name)


class TrainedQuantizer:
    """Weight sharing for a whole model, with the paper's per-layer bit widths.

    ``params``: state-dict names to quantize; default: every pruned parameter plus the weight
    of every Linear and Conv layer. ``bits``: one width for all, or ``{name: bits}`` overriding
    the defaults (``conv_bits`` for convolution weights, ``fc_bits`` for everything else).
    ``init``: ``"linear"``, ``"density"`` or ``"forgy"`` (one, or per name); ``seed`` drives forgy.
    ``codebook_dtype``: ``torch.float16`` halves the stored codebooks (see :class:`SharedParameter`).
    Codebooks are broadcast from rank 0 in a distributed job (``sync=True``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        bits: int | Mapping[str, int] | None = None,
        conv_bits: int = DEFAULT_CONV_BITS,
        fc_bits: int = DEFAULT_FC_BITS,
        init: str | Mapping[str, str] = "linear",
        params: Iterable[str] | None = None,
        max_iter: int = 300,
        seed: int = 0,
        sync: bool = True,
        codebook_dtype: torch.dtype | None = None,
    ):
        operation = "TrainedQuantizer"
        _check_storage_dtype(codebook_dtype, operation=operation)
        self.codebook_dtype = codebook_dtype
        if not isinstance(model, nn.Module):
            raise ConfigError(operation, f"model must be an nn.Module, got {type(model).__name__}")
        if params is not None:
            names = [params] if isinstance(params, str) else list(params)
        else:
            names = selection.default_names(model)
            for module_path, module in model.named_modules():
                prefix = f"{module_path}." if module_path else ""
                names += [prefix + h.name for h in reparam.computed_parameters(module) if isinstance(h, MaskedParameter)]
            names = list(dict.fromkeys(names))
        if not names:
            raise ConfigError(operation, "no parameters selected (the model has no Linear/Conv layer; pass params=)")
        if len(set(names)) != len(names):
            raise ConfigError(operation, f"parameter names repeat: {names}")
        for default in (conv_bits, fc_bits):
            if isinstance(default, bool) or not isinstance(default, int) or not 1 <= default <= MAX_BITS:
                raise ConfigError(operation, f"bits must be integers in [1, {MAX_BITS}], got {default!r}")
        explicit_bits = selection.per_name(bits, names, operation=operation, what="bits")
        inits = selection.per_name(init, names, operation=operation, what="init")
        self.model = model
        self.bits: dict[str, int] = {}
        self.inits: dict[str, str] = {}
        for name in names:
            module, attribute = selection.resolve(model, name, operation=operation)
            state = reparam.state_of(module, attribute)
            if state not in ("dense", "pruned"):
                raise ConfigError(operation, f"{name!r} is already {state}")
            chosen = explicit_bits[name]
            if chosen is None:
                chosen = conv_bits if selection.is_conv(module) and attribute == "weight" else fc_bits
            if isinstance(chosen, bool) or not isinstance(chosen, int) or not 1 <= chosen <= MAX_BITS:
                raise ConfigError(operation, f"bits for {name!r} must be an integer in [1, {MAX_BITS}], got {chosen!r}")
            if inits[name] not in INITS:
                raise ConfigError(operation, f"init for {name!r} must be one of {INITS}, got {inits[name]!r}")
            self.bits[name] = chosen
            self.inits[name] = inits[name]
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
            raise ConfigError(operation, f"max_iter must be an integer >= 0, got {max_iter!r}")
        self.max_iter = max_iter
        self.seed = seed
        self.sync = sync

    @property
    def names(self) -> list[str]:
        return list(self.bits)

    def quantize(self, *, progress: bool = False) -> dict[str, nn.Parameter]:
        """Run k-means on every selected parameter and install weight sharing; returns the codebooks."""
        from tqdm.auto import tqdm

        generator = torch.Generator().manual_seed(self.seed)
        codebooks = {}
        for name in tqdm(self.names, desc="quantize", unit="layer", disable=not progress, leave=False):
            module, attribute = selection.resolve(self.model, name, operation="quantize")
            codebook = share_weights(
                module,
                attribute,
                bits=self.bits[name],
                init=self.inits[name],
                max_iter=self.max_iter,
                generator=generator,
                codebook_dtype=self.codebook_dtype,
            )
            if self.sync:
                with torch.no_grad():
                    distributed.broadcast_(codebook.data)
                    distributed.broadcast_(getattr(module, f"{attribute}_codes"))
                reparam.find(module, attribute).refresh(module)
            codebooks[name] = codebook
        return codebooks

    @property
    def codebooks(self) -> dict[str, nn.Parameter]:
        result = {}
        for name in self.names:
            module, attribute = selection.resolve(self.model, name, operation="codebooks")
            if is_shared(module, attribute):
                result[name] = get_codebook(module, attribute)
        return result

    def make_permanent(self) -> None:
        for name in self.names:
            module, attribute = selection.resolve(self.model, name, operation="make_permanent")
            if is_shared(module, attribute):
                make_permanent(module, attribute)
