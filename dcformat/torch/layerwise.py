"""Calibration one block at a time, for models larger than memory should hold.

:func:`dcformat.torch.calibration.calibrate` runs a whole model. A transformer is a stack
of blocks fed one after another, so its calibration can instead hold one block:

1. The model is built with its parameters on the meta device (:func:`parameters_on_meta`:
   no memory; buffers are made as usual). Its blocks are its largest ``nn.ModuleList`` of
   modules of one class (:func:`find_blocks`).
2. The parameters outside the blocks (embeddings, final norms) are loaded, and the model
   is run on every batch with each block's ``forward`` replaced by one that records its
   arguments and hands its hidden states on unchanged: so the first block's inputs, and
   what the model's own loop gives every block (masks, position embeddings), are
   recorded. The outside parameters are then freed. The records also check that the
   blocks are sequential: each block must be given exactly what the one before returned;
   :func:`calibrate_layerwise` raises :class:`NotSequentialError` otherwise.
3. Per block: its parameters are loaded, it is run on the recorded inputs (its linear
   layers' input second moments summed, :class:`~dcformat.torch.calibration.MomentHooks`),
   and each tensor it holds that the compressor will quantize is quantized alone and the
   block rerun on the first batches (its **sensitivity**, as the whole-model calibration
   measures it, but on the block's output). Its moments go to a
   :class:`~dcformat.compress.moments.MomentStore` on disk, its parameters are freed,
   and its outputs are the next block's inputs.
4. A stage's sensitivities are scaled by how much of its change reaches the model's output:
   its weighed tensors quantized together (its **stream**), the changed outputs carried
   through the later blocks, then, with the parameters outside the blocks loaded again,
   through what the model runs after its blocks (a final norm), the blocks bypassed.

Memory holds the calibration activations (inputs and outputs of one block), one block's
parameters and second moments, and twice, the parameters outside the blocks. What grows
with depth waits on disk: the second moments, and the streams, whose outputs sit in files
beside the moments between blocks. Tensors
outside the blocks are weighed on the first block's input (the embeddings'); tensors
that run only after the blocks (a pooler, a head) are not measured.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

from dcformat.compress.moments import MomentStore
from dcformat.interop.torch_arrays import to_torch
from dcformat.progress import progress as _progress
from dcformat.torch.calibration import (
    PROBE_BITS,
    SENSITIVITY_BATCHES,
    Calibration,
    MomentHooks,
    _call,
    _mask_of,
    _output,
    _rows,
    energy,
    floored,
    probe,
    score,
    squared_change,
)
from dcformat.torch.errors import ConfigError


class NotSequentialError(ConfigError):
    """The model has no stack of blocks run one after another (calibrate it whole)."""

    def __init__(self, message: str):
        super().__init__("calibrate_layerwise", message)


@contextmanager
def parameters_on_meta():
    """Modules built inside have their parameters on the meta device (no memory is used or
    initialised); their buffers (position ids, rotary frequencies) are made as usual."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """The qualified name and the ``nn.ModuleList`` of the model's blocks: of the lists of at
    least two modules of one class, the one holding the most parameters; None if none."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2 and len({type(m) for m in module}) == 1:
            count = sum(p.numel() for p in module.parameters())
            if count and (best is None or count > best[2]):
                best = (name, module, count)
    return None if best is None else (best[0], best[1])


def _own_parameters(module: torch.nn.Module, prefix: str, skip: str | None):
    """``(owner, key, qualified name, parameter)`` of every parameter held by ``module``'s
    modules, those under the module named ``skip`` left out."""
    for owner_name, owner in module.named_modules(prefix=prefix):
        if skip is not None and (owner_name == skip or owner_name.startswith(skip + ".")):
            continue
        for key, param in owner._parameters.items():
            if param is not None:
                yield owner, key, f"{owner_name}.{key}" if owner_name else key, param


class _Parameters:
    """Loads a module's parameters from ``load(name) -> array`` and frees them again."""

    def __init__(self, load: Callable[[str], np.ndarray], dtype: torch.dtype):
        self._load = load
        self._dtype = dtype

    def fill(self, module: torch.nn.Module, prefix: str, *, skip: str | None = None) -> dict[str, np.ndarray]:
        """Loads every parameter of ``module`` (those under ``skip`` excepted); returns the
        arrays read, by qualified name. A parameter shared by several modules is loaded once."""
        loaded: dict[str, np.ndarray] = {}
        holders: dict[int, list] = {}
        for owner, key, name, param in _own_parameters(module, prefix, skip):
            holders.setdefault(id(param), []).append((owner, key, name, param))
        for places in holders.values():
            _, _, name, param = places[0]
            array = self._load(name)
            if tuple(array.shape) != tuple(param.shape):
                raise ConfigError("calibrate_layerwise", f"{name}: the weights hold shape {list(array.shape)}, the model {list(param.shape)}")
            value = torch.nn.Parameter(to_torch(array).to(self._dtype), requires_grad=False)
            for owner, key, _, _ in places:
                owner._parameters[key] = value
            loaded[name] = array
        return loaded

    @staticmethod
    def free(module: torch.nn.Module, *, skip: str | None = None, prefix: str = "") -> None:
        """Puts the parameters of ``module`` (those under ``skip`` excepted) back on the meta device."""
        for owner, key, _, param in list(_own_parameters(module, prefix, skip)):
            if param.device.type != "meta":
                owner._parameters[key] = torch.nn.Parameter(param.detach().to("meta"), requires_grad=False)


class _Recorded:
    """What the model's loop gave each block for one batch: the hidden states and the other arguments."""

    __slots__ = ("hidden", "args", "kwargs")

    def __init__(self, hidden, args, kwargs):
        self.hidden, self.args, self.kwargs = hidden, args, kwargs


def _record_blocks(model, blocks: torch.nn.ModuleList, batches: list) -> list[list[_Recorded]]:
    """Runs the model with every block handing its hidden states on unchanged; per block, per
    batch, what it was given. Raises :class:`NotSequentialError` when a block is not given what the
    block before it returned."""
    records: list[list[_Recorded]] = [[] for _ in blocks]
    handed: list = [None]

    def recorder(index: int):
        def forward(*args, **kwargs):
            if args:
                hidden, args = args[0], args[1:]
            elif "hidden_states" in kwargs:
                kwargs = dict(kwargs)
                hidden = kwargs.pop("hidden_states")
            else:
                raise NotSequentialError(f"block {index} is called without hidden states")
            if not isinstance(hidden, torch.Tensor):
                raise NotSequentialError(f"block {index}'s first argument is a {type(hidden).__name__}, not a tensor")
            if index > 0 and hidden is not handed[0]:
                raise NotSequentialError(f"block {index} is not given what block {index - 1} returned")
            records[index].append(_Recorded(hidden, args, kwargs))
            handed[0] = hidden.view(hidden.shape)  # a new tensor object (the same memory): what the next block must be given
            return handed[0]

        return forward

    for index, block in enumerate(blocks):
        block.forward = recorder(index)  # an instance attribute: the module's class and attributes stay
    try:
        with torch.no_grad():
            for batch in batches:
                handed[0] = None
                _call(model, batch)
    finally:
        for block in blocks:
            del block.forward
    if any(len(r) != len(batches) for r in records):
        raise NotSequentialError("the model does not run every block once per batch")
    return records


def _tensors_in(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors_in(item)]
    return []


def _first_block_inputs(model, blocks: torch.nn.ModuleList, batches: list, clean: list[list[_Recorded]]) -> list[torch.Tensor]:
    """The first block's hidden states when the model is run on ``batches``; raises
    :class:`NotSequentialError` if the blocks' other inputs differ from ``clean``'s (per
    block, per batch): they then depend on the weights outside the blocks (an encoder
    feeding a decoder's blocks), which block-by-block calibration would not weigh."""
    records = _record_blocks(model, blocks, batches)
    for block, clean_block in zip(records, clean):
        for recorded, reference in zip(block, clean_block):
            now, before = _tensors_in((recorded.args, recorded.kwargs)), _tensors_in((reference.args, reference.kwargs))
            if len(now) != len(before) or not all(torch.equal(a, b) for a, b in zip(now, before)):
                raise NotSequentialError("the blocks' other inputs depend on weights outside them")
    return [recorded.hidden for recorded in records[0]]


def _after_blocks(model, blocks: torch.nn.ModuleList, batches: list, finals: list[torch.Tensor]) -> list[torch.Tensor]:
    """The model's outputs (what the whole-model calibration measures) had its last block
    returned ``finals[k]`` for batch ``k``: the blocks are bypassed (each hands its input on,
    the last hands ``finals[k]``), so only what runs outside them is computed (a final norm)."""
    current: list[torch.Tensor] = []  # the final hidden states of the batch being run

    def handing_on(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def last(*args, **kwargs):
        return current[0]

    for block in blocks:
        block.forward = handing_on  # instance attributes, as in _record_blocks
    blocks[-1].forward = last
    outputs = []
    try:
        for batch, final in zip(batches, finals):
            current[:] = [final]
            outputs.append(_output(_call(model, batch)))
    finally:
        for block in blocks:
            del block.forward
    return outputs


def _hidden_of(output) -> torch.Tensor:
    """A block's output hidden states: the output, or its first element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise NotSequentialError(f"a block returned a {type(output).__name__}, not hidden states")


def _run_block(block, inputs: list[_Recorded], hidden: list[torch.Tensor], hooks: MomentHooks | None = None, masks=None) -> list[torch.Tensor]:
    outputs = []
    for number, (recorded, x) in enumerate(zip(inputs, hidden)):
        if hooks is not None:
            hooks.batch(masks[number])
        outputs.append(_hidden_of(block(x, *recorded.args, **recorded.kwargs)))
    return outputs


class _Stream:
    """A stage's weighed tensors quantized all at once: the outputs they give, carried through
    every later block, tell how much of a change at that stage reaches the model's output.

    The outputs wait on disk between blocks (one ``.npy`` file per batch in ``directory``):
    every stage has a stream, so held in memory they would grow with the model's depth (with
    Llama-3.2-1B's shapes about 20 MB a block on 64 texts), as no other part of the
    calibration does. A block reads each file, runs it and writes it back."""

    __slots__ = ("names", "local", "files", "dtypes")

    def __init__(self, names: list[str], local: float, hidden: list[torch.Tensor], *, directory: str, number: int):
        self.names = names  # the stage's weighed tensors
        self.local = local  # the relative squared change of the stage's output
        self.files = [os.path.join(directory, f"stream-{number:04d}-{k:04d}.npy") for k in range(len(hidden))]
        self.dtypes: list[torch.dtype] = []
        self._keep(hidden)

    def hidden(self) -> list[torch.Tensor]:
        """The changed outputs, as far as the blocks have carried them."""
        return [torch.from_numpy(np.load(file, allow_pickle=False)).to(dtype) for file, dtype in zip(self.files, self.dtypes)]

    def carry(self, step: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> None:
        """The outputs one block further: ``step(hidden)``."""
        self._keep(step(self.hidden()))

    def _keep(self, hidden: list[torch.Tensor]) -> None:
        self.dtypes = [h.dtype for h in hidden]
        for file, h in zip(self.files, hidden):  # numpy has no bfloat16: such outputs go as float32, exactly
            np.save(file, (h.float() if h.dtype == torch.bfloat16 else h).detach().cpu().numpy())


class _Streams:
    """Every stage's :class:`_Stream`, their files in a folder of their own inside
    ``directory``, removed when the ``with`` block ends."""

    def __init__(self, directory: str):
        self.directory = tempfile.mkdtemp(prefix="streams-", dir=directory)
        self.streams: list[_Stream] = []

    def __enter__(self) -> _Streams:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def add(self, weighed: tuple[list[str], float, list[torch.Tensor]] | None) -> None:
        """A stage's stream, as :func:`_weigh` returns it (None: nothing to carry)."""
        if weighed is not None:
            self.streams.append(_Stream(*weighed, directory=self.directory, number=len(self.streams)))

    def carry(self, step: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> None:
        """Every stream one block further."""
        for stream in self.streams:
            stream.carry(step)

    def scale(
        self, importance: dict[str, float], tail: Callable[[list[torch.Tensor]], list[torch.Tensor]], final: list[torch.Tensor], masks: list
    ) -> None:
        """A stage's sensitivities were measured on its own output; the share of that change
        which reaches the model's output scales them, as the model's output is what the
        whole-model calibration measures: each stream's outputs, carried to the last block,
        go through ``tail`` (what the model runs after its blocks), as the last block's own
        outputs (``final``) do."""
        reference = tail(final)
        total = energy(reference, masks)
        for stream in self.streams:
            reached = squared_change(tail(stream.hidden()), reference, masks) / total if total > 0 else 0.0
            for name in stream.names:
                importance[name] *= reached / stream.local


def _weigh(
    module: torch.nn.Module,
    names: list[str],
    arrays: dict[str, np.ndarray],
    prefix: str,
    rerun: Callable[[], list[torch.Tensor]],
    reference: list[torch.Tensor],
    masks: list,
    probe_bits: float,
) -> tuple[dict[str, float], tuple[list[str], float, list[torch.Tensor]] | None]:
    """The sensitivity of each of ``names`` (parameters of ``module`` under ``prefix``) on
    the stage's output: that tensor alone quantized, ``rerun()``'s outputs against
    ``reference``; and, for a :class:`_Stream`, all of them quantized together: their names,
    the relative squared change of the output and the changed outputs."""
    parameters = dict(module.named_parameters(prefix=prefix))
    total = energy(reference, masks)
    scores: dict[str, float] = {}
    probes: dict[str, torch.Tensor] = {}
    try:
        for name in names:
            values, relative = probe(arrays[name], probe_bits)
            probes[name] = to_torch(values)
            parameter = parameters[name]
            parameter.data.copy_(probes[name])
            try:
                change = squared_change(rerun(), reference, masks)
            finally:
                parameter.data.copy_(to_torch(arrays[name]))
            scores[name] = score(change, total, relative)
        if not probes or total <= 0:
            return scores, None
        for name, values in probes.items():
            parameters[name].data.copy_(values)
        changed = rerun()
    finally:
        for name in probes:
            parameters[name].data.copy_(to_torch(arrays[name]))
    local = squared_change(changed, reference, masks) / total
    return scores, ((list(probes), local, changed) if local > 0 else None)


def calibrate_layerwise(
    model: torch.nn.Module,
    batches: Iterable,
    load: Callable[[str], np.ndarray],
    store: MomentStore,
    *,
    weigh: Callable[[str, np.ndarray], bool] | None = None,
    dtype: torch.dtype = torch.float32,
    probe_bits: float = PROBE_BITS,
    progress: bool = False,
) -> Calibration:
    """Calibrate ``model`` (built under :func:`parameters_on_meta`) one block at a time.

    ``load(name)`` returns the values of the parameter ``name`` (as ``named_parameters``
    names it) as a numpy array; they are cast to ``dtype``. ``store`` keeps the second
    moments (the returned :class:`Calibration`'s ``hessians`` is that store).
    ``weigh(name, array)`` tells which tensors to measure the sensitivity of (those the
    compressor will quantize); default: none. Raises :class:`NotSequentialError` for a model
    that is not a stack of blocks (then calibrate it whole), before anything heavy is done.
    The model's parameters are left on the meta device.
    """
    batches = list(batches)
    if not batches:
        raise ConfigError("calibrate_layerwise", "needs at least one batch of inputs")
    found_blocks = find_blocks(model)
    if found_blocks is None:
        raise NotSequentialError("the model has no list of repeated blocks")
    blocks_name, blocks = found_blocks
    weigh = weigh or (lambda name, array: False)
    parameters = _Parameters(load, dtype)
    masks = [_mask_of(b) for b in batches]
    probed = masks[:SENSITIVITY_BATCHES]
    model.eval()
    if getattr(getattr(model, "config", None), "use_cache", False):
        model.config.use_cache = False  # a key/value cache would keep every block's keys for nothing
    found = Calibration(hessians=store, batches=len(batches))
    records: list[list[_Recorded]] = []
    hidden: list[torch.Tensor] = []
    stages = _progress(range(len(blocks) + 1), enabled=progress, desc="calibrating", total=len(blocks) + 1, unit="block")
    with _Streams(store.directory) as streams, torch.no_grad():
        for stage in stages:  # 0: what runs before the blocks; then each block
            if stage == 0:
                outside = parameters.fill(model, "", skip=blocks_name)
                try:
                    records = _record_blocks(model, blocks, batches)
                    hidden = [r.hidden for r in records[0]]
                    found.tokens = sum(_rows(h, m).shape[0] for h, m in zip(hidden, masks))
                    names = [n for n, a in outside.items() if weigh(n, a)]
                    clean = [r[: len(probed)] for r in records]
                    rerun = partial(_first_block_inputs, model, blocks, batches[: len(probed)], clean)
                    scores, weighed = _weigh(model, names, outside, "", rerun, hidden[: len(probed)], probed, probe_bits)
                    found.importance.update(scores)
                    streams.add(weighed)
                finally:
                    del outside
                    parameters.free(model, skip=blocks_name)
                continue
            index = stage - 1
            block, prefix = blocks[index], f"{blocks_name}.{index}"
            arrays = parameters.fill(block, prefix)
            try:
                hooks = MomentHooks(block, prefix=prefix + ".")
                try:
                    outputs = _run_block(block, records[index], hidden, hooks, masks)
                finally:
                    hooks.remove()
                streams.carry(partial(_run_block, block, records[index][: len(probed)]))  # the earlier stages' changes
                for name, total in hooks.sums.items():
                    store.put(name, total.numpy())
                for name, target in hooks.shared.items():
                    store.put(name, same_as=target)
                del hooks
                rerun = partial(_run_block, block, records[index][: len(probed)], hidden[: len(probed)])
                names = [n for n, a in arrays.items() if weigh(n, a)]
                scores, weighed = _weigh(block, names, arrays, prefix, rerun, outputs[: len(probed)], probed, probe_bits)
                found.importance.update(scores)
                streams.add(weighed)
            finally:
                del arrays
                parameters.free(block, prefix=prefix)
            hidden, records[index] = outputs, []
        outside = parameters.fill(model, "", skip=blocks_name)  # again: what runs after the blocks needs them
        try:
            tail = partial(_after_blocks, model, blocks, batches[: len(probed)])
            streams.scale(found.importance, tail, hidden[: len(probed)], probed)
        finally:
            del outside
            parameters.free(model, skip=blocks_name)
    found.importance = floored(found.importance)
    return found
