"""Loading a folder of ``.dcf`` weights into a ``transformers`` model, or a
sentence-transformers pipeline: ``from_pretrained`` and ``sentence_transformer``.

The weights are decoded with the package's own kernels into torch tensors and handed to
transformers as a state dict (its documented ``from_pretrained(None, config=...,
state_dict=...)``), which builds the model, ties its shared weights and fills its
non-persistent buffers as for any checkpoint: nothing dense is written to disk, nothing
is unpickled. transformers only warns about tensors that do not fit the model; here,
unless ``strict=False``, any missing, unexpected or mis-shaped tensor is an error naming
them. torch and transformers (and sentence-transformers for its pipelines) are optional
extras, imported when these functions run.
"""

from __future__ import annotations

import itertools
import os
import threading
from contextlib import contextmanager

import numpy as np

from ..errors import FormatError, UnsupportedError
from ..interop.common import require
from ..io.loading import decode_all, decoding
from ..io.loading import open_file as _open_weights
from ..torch.errors import ModelMismatchError
from .folder import open_folder

#: Options of transformers' from_pretrained that do not apply here: the Hub's (a local folder has no
#: use for them; sentence-transformers passes them on) and those this loader sets itself.
_IGNORED_OPTIONS = (
    "cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder", "trust_remote_code",
    "output_loading_info", "ignore_mismatched_sizes",
)  # fmt: skip
#: How many names of missing or unexpected tensors an error message lists.
_NAMES_SHOWN = 8


def torch_and_transformers(purpose: str = "dcformat.hf.from_pretrained", *, operation: str = "load"):
    """The modules torch and transformers, or a :class:`MissingDependencyError` saying which to install."""
    torch = require("torch", purpose, "torch==2.13.0", operation=operation)
    return torch, require("transformers", purpose, operation=operation)


def model_class_for(model_class, config, transformers):
    """The concrete class to build: ``model_class`` may be a transformers class (an auto
    class picks its class for ``config``), its name, or a pipeline task such as
    ``"fill-mask"``; ``None`` means ``AutoModel``."""
    if model_class is None:
        model_class = transformers.AutoModel
    elif isinstance(model_class, str):
        named = getattr(transformers, model_class, None)
        if named is None:
            from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES

            task = TASK_ALIASES.get(model_class, model_class)
            if task not in SUPPORTED_TASKS or not SUPPORTED_TASKS[task].get("pt"):
                raise ValueError(f"{model_class!r} is neither a transformers model class nor a task (such as 'fill-mask', 'text-classification')")
            named = SUPPORTED_TASKS[task]["pt"][0]
        model_class = named
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is not None:  # an auto class: its choice for this configuration
        try:
            return mapping[type(config)]
        except KeyError:
            raise UnsupportedError(
                "config.json", f"{model_class.__name__} has no model for a {type(config).__name__}; give the model class", offset=None
            ) from None
    return model_class


def _as_torch(array: np.ndarray, torch, dtype):
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: torch reads it through its bits
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)  # now, one tensor at a time, rather than after all are decoded
    return tensor


def decode_state(path, *, dtype=None, threads: int | None = None) -> dict:
    """The tensors of ``path`` (a ``.dcf`` or its shard index) as torch tensors, floats cast to ``dtype``."""
    torch, _ = torch_and_transformers()
    with _open_weights(path) as reader:
        reader.check_padding()
        arrays = decode_all(reader, threads=threads)
    return {name: _as_torch(arrays.pop(name), torch, dtype) for name in list(arrays)}


def from_pretrained(path, model_class=None, *, dtype=None, device=None, strict: bool = True, threads: int | None = None, config=None, **kwargs):
    """A ``transformers`` model from a folder of ``.dcf`` weights (what ``dcformat compress
    MODEL_DIR OUT_DIR`` writes), its parameters decoded straight from the files.

    ``model_class``: ``AutoModel``'s choice for the folder's ``config.json`` by default; a
    model class (``AutoModelForMaskedLM``, ``BertModel``), its name, or a pipeline task
    (``"fill-mask"``). ``dtype`` (a ``torch.dtype``) casts floating tensors as they are
    decoded; ``device`` is where the model goes. With ``strict`` (the default) a tensor the
    model lacks, a parameter the files lack (beyond those the model ties to others) or a
    shape that differs raises :class:`dcformat.torch.ModelMismatchError` naming them; without it
    transformers' warnings stand and missing parameters keep their fresh initialisation.
    Other keyword arguments go to transformers (configuration overrides, ``attn_implementation``).

    With more than one thread and no ``dtype``, transformers builds the model around the
    tensors while a worker decodes their values (``io.loading.decoding``); should it have
    copied one of them meanwhile (converting it), the model is built again from the decoded
    tensors.
    """
    torch, transformers = torch_and_transformers()
    dtype = _torch_dtype(dtype, torch)
    folder = open_folder(path)
    if folder.kind != "dcf":
        raise FormatError(folder.path, "holds safetensors weights, not .dcf: load it with transformers itself, or compress it first", offset=None)
    for option in _IGNORED_OPTIONS:
        kwargs.pop(option, None)
    if dtype is None:  # the model is built while the values are decoded (io.loading.decoding)
        with _open_weights(folder.weights) as reader:
            reader.check_padding()
            with decoding(reader, threads=threads) as (arrays, arriving):
                build = _builder(folder, model_class, config, None, kwargs, transformers)  # config.json read while the workers decode
                state = {name: _as_torch(array, torch, None) for name, array in arrays.items()}
                model, info = build(state)
        if strict:  # a model that does not fit is refused before any second build
            _check_fit(info, folder.weights)
        unexpected = {str(key) for key in info.get("unexpected_keys") or ()}  # not in the model: nothing to hold
        if not _holds(model, [state[name] for name in arriving if name not in unexpected]):  # transformers copied one before its values were in
            model, info = build(state)
    else:
        build = _builder(folder, model_class, config, dtype, kwargs, transformers)
        model, info = build(decode_state(folder.weights, dtype=dtype, threads=threads))
        if strict:
            _check_fit(info, folder.weights)
    if device is not None:
        model = model.to(device)
    return model


def _builder(folder, model_class, config, dtype, kwargs: dict, transformers):
    """``build(state)``: the model class's ``from_pretrained`` of a state dict, with the
    folder's configuration (read here unless given), ``dtype`` (None: the tensors' own) and
    the caller's options for transformers; returns the model and transformers' loading report."""
    if config is None:
        config, kwargs = transformers.AutoConfig.from_pretrained(folder.path, return_unused_kwargs=True, **kwargs)
    cls = model_class_for(model_class, config, transformers)
    if dtype is not None:
        kwargs = {**kwargs, "dtype": dtype}

    def build(state: dict):
        with _tensors_in_memory():
            return cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)

    return build


#: transformers (5.x) hands each tensor of a checkpoint to a pool of threads, which read files
#: in parallel; this switch of its makes it take them in turn. For a state dict already in
#: memory the pool only adds hand-offs: without it MiniLM builds in 18 ms rather than 21.
_SEQUENTIAL_LOADING = "HF_DEACTIVATE_ASYNC_LOAD"
_SEQUENTIAL_LOCK = threading.Lock()
_sequential_loads = 0


@contextmanager
def _tensors_in_memory():
    """While open, transformers loads checkpoints without its thread pool, unless the user
    has set the switch either way; restored when the last concurrent load ends."""
    global _sequential_loads
    with _SEQUENTIAL_LOCK:
        owned = _sequential_loads > 0 or _SEQUENTIAL_LOADING not in os.environ
        if owned:
            _sequential_loads += 1
            os.environ[_SEQUENTIAL_LOADING] = "1"
    try:
        yield
    finally:
        if owned:
            with _SEQUENTIAL_LOCK:
                _sequential_loads -= 1
                if _sequential_loads == 0:
                    del os.environ[_SEQUENTIAL_LOADING]


def _holds(model, tensors) -> bool:
    """Whether the model's tensors are the memory of every one of ``tensors`` (transformers keeps
    a state dict's tensors as its parameters unless it converts them)."""
    held = {tensor.untyped_storage().data_ptr() for tensor in itertools.chain(model.parameters(), model.buffers())}
    return all(tensor.untyped_storage().data_ptr() in held for tensor in tensors if tensor.numel())


def _torch_dtype(dtype, torch):
    """``None`` for the files' own dtypes (what transformers' ``"auto"`` means too), else a
    ``torch.dtype`` given as one or by name (``"float16"``), as transformers accepts."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return None
    found = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(found, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype or the name of one (such as 'float16'), got {dtype!r}")
    return found


def _check_fit(info: dict, where: str) -> None:
    """One error naming every tensor that does not fit (transformers' loading report, as data)."""
    problems = []
    for key, what in (
        ("mismatched_keys", "tensors whose shape differs from the model's"),
        ("missing_keys", "parameters of the model that the files lack"),
        ("unexpected_keys", "tensors the model has no place for"),
    ):
        found = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if found:
            shown = ", ".join(found[:_NAMES_SHOWN]) + (f" and {len(found) - _NAMES_SHOWN} more" if len(found) > _NAMES_SHOWN else "")
            problems.append(f"{len(found)} {what}: {shown}")
    if problems:
        raise ModelMismatchError(
            f"{os.path.basename(where)}: " + "; ".join(problems) + " (strict=False loads anyway, leaving what is missing freshly initialised)"
        )


_ROUTING = threading.Lock()


@contextmanager
def _routed_to_dcf(folder: str, **options):
    """While open, transformers' ``from_pretrained`` of ``folder`` (and of nothing else)
    loads the folder's ``.dcf`` weights through :func:`from_pretrained`: how a library that
    loads the transformer itself, as sentence-transformers does, gets the compressed weights."""
    _, transformers = torch_and_transformers()
    base = transformers.PreTrainedModel
    original = base.__dict__["from_pretrained"]
    target = os.path.realpath(folder)

    def routed(cls, name_or_path, *args, **kwargs):
        if not args and isinstance(name_or_path, (str, os.PathLike)) and os.path.realpath(os.fspath(name_or_path)) == target:
            return from_pretrained(target, model_class=cls, **{**kwargs, **options})
        return original.__func__(cls, name_or_path, *args, **kwargs)

    with _ROUTING:
        base.from_pretrained = classmethod(routed)
        try:
            yield
        finally:
            base.from_pretrained = original


def sentence_transformer(path, *, dtype=None, threads: int | None = None, **kwargs):
    """A ``sentence_transformers.SentenceTransformer`` from a compressed sentence-transformers
    folder: its modules, pooling and normalisation from the folder's files, the
    transformer's weights from its ``.dcf``. ``kwargs`` go to ``SentenceTransformer``
    (``device`` among them)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            f"dcformat.hf.sentence_transformer needs sentence-transformers (pip install 'dcformat[sentence-transformers]'): {exc}"
        ) from None
    folder = open_folder(path)
    with _routed_to_dcf(folder.path, dtype=dtype, threads=threads):
        return SentenceTransformer(folder.path, **kwargs)
