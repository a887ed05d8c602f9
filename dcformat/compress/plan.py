"""Pass 1, the plan: every tensor looked at once (statistics and candidate sizes, no data
kept), the budget allocated; :meth:`CompressionPlan.apply` is pass 2, tensor by tensor;
:meth:`CompressionPlan.report` the JSON-ready report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import EncodeError
from ..format import dtypes
from ..format.constants import ALIGNMENT, DATA_START, FLOAT_DTYPES, DType
from ..format.structs import INDEX_CRC_SIZE, entry_size
from ..interop.sources import as_array
from ..parallel import imap_bounded, resolve_threads
from ..progress import progress as _progress
from ..quantize import INITS, QuantizedTensor, quantize
from .allocate import allocate
from .gptq import check_hessian, quantize_gptq
from .grid import (
    Ladder,
    estimated_payload,
    ladder,
    nonzero_sample,
    prune_smallest,
    quantize_step,
    relative_error,
    sum_of_squares,
)
from .settings import (
    DEFAULT_MIN_ELEMENTS,
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    TRANSFORMER_IMPORTANCE,
    check_bits,
    check_prune,
    check_weight,
    describe_importance,
    first_match,
    patterns,
    rules,
)


def _classify(name: str, array: np.ndarray, keep_dense, min_elements: int) -> str | None:
    """Why a tensor stays exact (None: it is quantized)."""
    if any(p.search(name) for p in keep_dense):
        return "keep-dense"
    wire = dtypes.dtype_id(array.dtype, field=repr(name))
    if wire not in FLOAT_DTYPES:
        return "not float"
    if array.ndim < 2:
        return "fewer than 2 dimensions"
    if array.size < min_elements:
        return f"fewer than {min_elements} elements"
    if not np.isfinite(array).all():
        return "holds NaN or infinity"
    return None


def quantized_by_default(name: str, array: np.ndarray, *, keep_dense=None, min_elements: int = DEFAULT_MIN_ELEMENTS) -> bool:
    """Whether the compressor, with these options and no fixed ``bits``, quantizes the tensor."""
    return _classify(name, array, patterns(keep_dense, option="keep_dense"), int(min_elements)) is None


def _index_bytes(names, ranks, metadata_bytes: int) -> int:
    """The file's fixed cost: header, index, and on average half an alignment per payload."""
    directory = sum(entry_size(len(n.encode("utf-8")), r) for n, r in zip(names, ranks))
    return DATA_START + metadata_bytes + directory + INDEX_CRC_SIZE + (ALIGNMENT // 2) * len(names)


class _Plan:
    """What pass 1 decided for one quantized (or allocated-raw) tensor."""

    __slots__ = ("prune", "pruned_error", "energy", "bits", "step")

    def __init__(self, prune: float, pruned_error: float, energy: float, bits: int | None):
        self.prune = prune  # fraction of the smallest weights zeroed first
        self.pruned_error = pruned_error  # squared error that pruning adds
        self.energy = energy  # |W|^2 of the original tensor
        self.bits = bits  # fixed k-means bits, or None: a step of the ladder
        self.step = None  # the allocated step (None with bits=None: stored exactly)


class CompressionPlan:
    """What :func:`plan_compression` decided for every tensor of a model; it holds no tensor data.

    Compressing is two passes over the model: the plan looks at every tensor once (its
    statistics and candidate sizes) and allocates the size budget; :meth:`apply` then
    takes each tensor again and returns what to write. So a model is compressed
    holding one tensor at a time, whatever its size. ``names`` is the writing order.
    """

    def __init__(
        self,
        names: list[str],
        rows: dict[str, dict],
        plans: dict[str, _Plan],
        settings: dict,
        overhead: int,
        target: float | None,
        init: str,
        seed: int,
        hessians: Mapping[str, np.ndarray] | None = None,
        compensated: Sequence[str] = (),
    ):
        self.names = names
        self.settings = settings
        self._rows = rows
        self._plans = plans
        self._overhead = overhead
        self._target = target
        self._init = init
        self._seed = seed
        # name -> input second moments, for the error-compensated tensors: a mapping that may
        # read each matrix from disk when asked (``compress.moments``), so never copied whole
        self._hessians = hessians if hessians is not None else {}
        self._compensated = frozenset(compensated)

    def apply(self, name: str, tensor) -> np.ndarray | QuantizedTensor:
        """The tensor ``name`` as it is to be written: quantized, pruned or unchanged.

        ``tensor`` must be the one the plan saw (same shape and dtype). The tensor's row of
        the report gets its measured relative error and codebook size.
        """
        row = self._rows.get(name)
        if row is None:
            raise EncodeError("the plan has no tensor of this name", field=repr(name))
        array = as_array(tensor)
        if list(array.shape) != row["shape"] or dtypes.name(dtypes.dtype_id(array.dtype, field=repr(name))) != row["dtype"]:
            raise EncodeError(f"the plan was made for {row['dtype']} {row['shape']}, got {array.dtype} {list(array.shape)}", field=repr(name))
        plan = self._plans.get(name)
        if plan is None:  # stored exactly, as classified
            return array
        work = prune_smallest(array, plan.prune) if plan.prune else array
        energy = plan.energy
        if plan.bits is not None:
            q = quantize(work, bits=plan.bits, init=self._init, seed=self._seed)
            row.update(
                action="quantized", reason=f"bits={plan.bits}", estimated_bytes=estimated_payload(q), relative_error=relative_error(array, q, energy)
            )
        elif plan.step is None:  # exact storage was the best use of the budget
            row.update(reason="allocated raw", relative_error=plan.pruned_error / energy if energy else 0.0)
            return work
        elif name in self._compensated and not plan.prune:
            q, output_error = quantize_gptq(work, self._hessians[name], plan.step, name=name)
            row.update(
                action="quantized", reason="allocated, error-compensated", relative_error=relative_error(array, q, energy), output_error=output_error
            )
        else:
            q, error = quantize_step(work, plan.step)
            row.update(action="quantized", reason="allocated", relative_error=(error + plan.pruned_error) / energy if energy else 0.0)
        size = int(q.codebook.size)
        row.update(codebook_size=size, code_bits=(size - 1).bit_length())
        return q

    def rows(self) -> list[dict]:
        """The report's per-tensor rows, in writing order (updated by :meth:`apply`)."""
        return [self._rows[n] for n in self.names]

    def report(self) -> dict:
        """The JSON-ready report: ``settings``, ``tensors`` and ``totals`` (byte counts are estimates)."""
        rows = self.rows()
        return {"settings": self.settings, "tensors": rows, "totals": _totals(rows, fixed_bytes=self._overhead, target=self._target)}


def plan_compression(
    tensors: Mapping[str, np.ndarray],
    *,
    target_bits_per_weight: float | None = None,
    bits: int | Mapping[str, int] | None = None,
    keep_dense: str | Sequence[str] | None = None,
    prune: float | Mapping[str, float] = 0.0,
    importance: Mapping[str, float] | Callable[[str], float] | None = TRANSFORMER_IMPORTANCE,
    min_elements: int = DEFAULT_MIN_ELEMENTS,
    init: str = "linear",
    metadata_bytes: int = 256,
    seed: int = 0,
    hessians: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> CompressionPlan:
    """Pass 1 of :func:`compress_tensors`: look at every tensor once and decide what each becomes.

    ``tensors`` may be lazy (a :class:`~dcformat.sources.TensorSource`): each value is read
    once and dropped, ``threads`` of them at a time (default: ``$DCFORMAT_THREADS`` or every
    core; reads must then be thread-safe). The options are :func:`compress_tensors`'.
    """
    if not isinstance(tensors, Mapping):
        raise EncodeError(f"tensors must be a mapping of names to arrays, got {type(tensors).__name__}")
    if isinstance(bits, Mapping) or bits is None:
        bit_rules = rules(bits, option="bits", check=check_bits)
        if target_bits_per_weight is None:
            target_bits_per_weight = DEFAULT_TARGET_BITS_PER_WEIGHT
    else:
        bit_rules = rules(check_bits(bits), option="bits", check=check_bits)
        if target_bits_per_weight is not None:
            raise EncodeError("give either one bit width for every tensor or a target size, not both", field="bits")
    if target_bits_per_weight is not None:
        if (
            isinstance(target_bits_per_weight, bool)
            or not isinstance(target_bits_per_weight, (int, float, np.floating, np.integer))
            or not 0.5 <= float(target_bits_per_weight) <= 64
        ):
            raise EncodeError(f"must be a number of bits in [0.5, 64], got {target_bits_per_weight!r}", field="target_bits_per_weight")
        target_bits_per_weight = float(target_bits_per_weight)
    keep = patterns(keep_dense, option="keep_dense")
    prune_rules = [(p, f) for p, f in rules(prune, option="prune", check=check_prune) if f > 0]
    if callable(importance) and not isinstance(importance, Mapping):
        weigh = importance
    else:
        weight_rules = rules(dict(importance or {}), option="importance", check=check_weight)

        def weigh(name: str) -> float:
            found = first_match(weight_rules, name)
            return 1.0 if found is None else found

    if isinstance(min_elements, bool) or not isinstance(min_elements, (int, np.integer)) or min_elements < 0:
        raise EncodeError(f"must be an integer >= 0, got {min_elements!r}", field="min_elements")
    if init not in INITS:
        raise EncodeError(f"must be one of {INITS}, got {init!r}", field="init")
    for name in tensors:
        if not isinstance(name, str):
            raise EncodeError(f"tensor names must be str, got {name!r}")
    hessians = hessians if hessians is not None else {}  # read per tensor, never held whole (it may be on disk)
    if not isinstance(hessians, Mapping):
        raise EncodeError(f"must be a mapping of weight names to matrices, got {type(hessians).__name__}", field="hessians")
    unknown = sorted(set(hessians) - set(tensors))
    if unknown:
        raise EncodeError(f"input second moments given for tensors the model does not have: {unknown[:5]}", field="hessians")

    names = sorted(tensors, key=lambda n: n.encode("utf-8"))
    rows: dict[str, dict] = {}
    plans: dict[str, _Plan] = {}
    ladders: dict[str, Ladder] = {}

    def analyse(number: int, name: str) -> None:
        """Row, plan and ladder of one tensor; a function so that the tensor dies on return."""
        array = as_array(tensors[name])
        reason = _classify(name, array, keep, int(min_elements))
        rows[name] = row = dict(
            name=name,
            shape=list(array.shape),
            dtype=dtypes.name(dtypes.dtype_id(array.dtype, field=repr(name))),
            elements=int(array.size),
            source_bytes=int(array.nbytes),
            action="raw",
            reason=reason,
            importance=None,
            pruned=0.0,
            codebook_size=None,
            code_bits=None,
            relative_error=0.0,
            estimated_bytes=int(array.nbytes),
        )
        if reason is not None:
            return
        fraction = first_match(prune_rules, name) or 0.0
        work = prune_smallest(array, fraction) if fraction else array
        flat = work.reshape(-1)
        nonzero = int(np.count_nonzero(flat))
        energy = sum_of_squares(array)
        kept = sum_of_squares(work)  # zeros add nothing
        row["pruned"] = 1.0 - nonzero / flat.size
        fixed = first_match(bit_rules, name)
        plans[name] = _Plan(fraction, max(energy - kept, 0.0), energy, fixed)
        if fixed is not None:
            row.update(action="quantized", reason=f"bits={fixed}")
            if target_bits_per_weight is not None:  # its size counts in the budget of the others: quantize once to measure it
                q = quantize(work, bits=fixed, init=init, seed=seed)
                row.update(estimated_bytes=estimated_payload(q), relative_error=relative_error(array, q, energy))
            return
        if name in hessians:
            if array.ndim != 2:
                raise EncodeError(f"input second moments apply to matrices (a linear layer's weight), not {array.ndim}-D tensors", field=repr(name))
            check_hessian(hessians[name], array.shape[1], name=name)  # refused now, before anything is written
        row["importance"] = check_weight(weigh(name))
        cb_itemsize = 2 if dtypes.dtype_id(array.dtype) == DType.FLOAT16 else 4
        rng = np.random.default_rng([seed, number])  # per tensor: the same samples whatever the thread count
        ladders[name] = ladder(*nonzero_sample(flat, nonzero, rng), flat.size - nonzero, cb_itemsize, int(array.nbytes))

    for _ in _progress(
        imap_bounded(lambda item: analyse(*item), enumerate(names), resolve_threads(threads)), enabled=progress, desc="analysing", total=len(names)
    ):
        pass

    # -- the size budget, then one candidate per tensor ------------------------------------
    overhead = _index_bytes(names, [len(rows[n]["shape"]) for n in names], metadata_bytes)
    fixed_bytes = overhead + sum(rows[n]["estimated_bytes"] for n in names if n not in ladders)
    total_elements = sum(row["elements"] for row in rows.values())
    budget = None if target_bits_per_weight is None else target_bits_per_weight * total_elements / 8 - fixed_bytes
    choice = allocate({n: (ladders[n], plans[n].pruned_error, plans[n].energy) for n in ladders}, rows, budget)
    for name, j in choice.items():
        if j is not None:
            plans[name].step = float(ladders[name].steps[j])
            rows[name].update(estimated_bytes=int(ladders[name].nbytes[j]))
    settings = dict(
        target_bits_per_weight=target_bits_per_weight,
        bits=None if not bit_rules else {p.pattern: b for p, b in bit_rules},
        keep_dense=[p.pattern for p in keep],
        prune={p.pattern: f for p, f in prune_rules},
        importance=describe_importance(importance),
        min_elements=int(min_elements),
        init=init,
    )
    compensated = sorted(n for n in hessians if n in plans and plans[n].bits is None)
    if compensated:
        settings["error_compensated"] = len(compensated)
    return CompressionPlan(names, rows, plans, settings, overhead, target_bits_per_weight, init, seed, hessians, compensated)


def compress_tensors(tensors: Mapping[str, np.ndarray], *, progress: bool = False, **settings) -> tuple[dict, dict]:
    """Quantize the tensors of a model; returns ``(tensors, report)``.

    ``tensors`` maps names to numpy arrays (any dtype dcformat stores). In the result,
    quantized tensors are :class:`QuantizedTensor` and all others arrays.

    target_bits_per_weight: the file's size as average bits per element over all
        tensors (raw ones, codebooks and the index included); the codebook of every
        tensor not fixed by ``bits`` is chosen to fit it (default
        :data:`DEFAULT_TARGET_BITS_PER_WEIGHT`, 32/4.5 = 7.1x smaller than fp32).
    bits: fixed k-means codebooks of at most ``2**bits`` entries, for every quantized
        tensor (an int) or for names matching a regex (a mapping; first match wins). An
        int cannot be combined with a target.
    keep_dense: regex or regexes of names stored exactly.
    prune: fraction of each quantized tensor's weights (smallest magnitudes) set to
        exactly zero before quantizing, or a mapping regex -> fraction.
    importance: distortion weight per tensor: a mapping regex -> weight (first match
        wins, unmatched names weigh 1), a callable ``name -> weight``, or ``None`` for
        equal weights.
    min_elements: float tensors with fewer elements stay exact.
    init: k-means initialisation for tensors with fixed ``bits`` (see :func:`quantize`).
    metadata_bytes: the expected size of the file's metadata, counted in the budget.
    seed: of the sampling of large tensors and of k-means.
    hessians: per linear layer's weight (``out x in``), the second moments of its inputs
        over calibration data (``in x in``, ``sum x x^T``; ``dcformat.torch.calibration``
        gathers them): those tensors are quantized onto their allocated grid with error
        compensation (:mod:`~dcformat.compress.gptq`) instead of rounding, unless pruned.
    threads: tensors analysed at once (default ``$DCFORMAT_THREADS`` or every core).

    The report is a JSON-ready dict: ``settings``, ``tensors`` (per tensor: what was
    done, codebook size, relative squared error, estimated payload bytes) and
    ``totals``. Byte counts here are the encoder's estimates;
    :func:`compress_file` replaces them by what the file holds. This holds the whole
    model in memory; :func:`compress_file` holds one tensor at a time.
    """
    plan = plan_compression(tensors, progress=progress, **settings)
    out = {name: plan.apply(name, tensors[name]) for name in _progress(plan.names, enabled=progress, desc="quantizing")}
    return out, plan.report()


def _totals(rows: list[dict], *, fixed_bytes: int, target: float | None) -> dict:
    elements = sum(r["elements"] for r in rows)
    source = sum(r["source_bytes"] for r in rows)
    estimated = fixed_bytes + sum(r["estimated_bytes"] for r in rows)
    quantized = [r for r in rows if r["action"] == "quantized"]
    return dict(
        tensors=len(rows),
        quantized=len(quantized),
        target_bits_per_weight=target,
        elements=elements,
        fp32_bytes=4 * elements,
        source_bytes=source,
        estimated_bytes=estimated,
        bits_per_weight=8 * estimated / elements if elements else None,
        ratio_vs_source=source / estimated if estimated else None,
    )
