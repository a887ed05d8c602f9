"""Calibration of a model folder: ``dcformat compress MODEL_DIR OUT_DIR --calibration TEXTFILE``.

The folder's own tokenizer and model (transformers' ``AutoModel``) run over unlabelled
texts, one per line of ``TEXTFILE``; each linear layer's input second moments and each
tensor's sensitivity are measured, and the compressor uses them (error-compensated
quantization, and the allocation's importance). The model runs one block at a time
(:mod:`dcformat.torch.layerwise`: memory holds one block, the moments wait in files), or
whole (:mod:`dcformat.torch.calibration`) when it is not a stack of blocks. No labels and
no task data: any prose in the model's language serves. :func:`stdlib_prose` is prose
every machine has, the docstrings of Python's standard library.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import types
import warnings
from collections.abc import Mapping

import numpy as np

from ..compress.moments import MomentStore
from ..compress.plan import quantized_by_default
from ..errors import EncodeError
from ..interop.sources import as_array, open_source
from .folder import ModelFolder, name_in

#: Texts per forward pass, and tokens per text at most.
BATCH_SIZE = 16
MAX_LENGTH = 128
#: Texts read from a calibration file at most (more cost time and add little).
MAX_TEXTS = 1024
#: Standard-library modules whose docstrings make :func:`stdlib_prose`.
_PROSE_MODULES = (
    "argparse", "asyncio", "bisect", "calendar", "codecs", "collections", "configparser", "contextlib", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "gettext", "hashlib", "heapq", "hmac",
    "http.client", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "mmap", "numbers", "operator",
    "optparse", "os", "pathlib", "pickle", "platform", "pprint", "queue", "random", "re", "sched", "shutil", "socket",
    "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "unittest", "urllib.request", "uuid", "warnings", "weakref", "zipfile",
)  # fmt: skip


def read_texts(path, *, limit: int = MAX_TEXTS) -> list[str]:
    """The non-empty lines of a UTF-8 text file (at most ``limit``), else :class:`EncodeError`."""
    texts = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:  # per line of the calibration text, not per weight
            line = line.strip()
            if line:
                texts.append(line)
                if len(texts) >= limit:
                    break
    if not texts:
        raise EncodeError("holds no text (one text per line is expected)", field=f"calibration file {os.fspath(path)}")
    return texts


def stdlib_prose(count: int = 512, *, seed: int = 0, documentation: bool = False) -> list[str]:
    """``count`` sentences of English prose from the docstrings of Python's standard library
    (6 to 40 words, starting with a capital, no code punctuation), in an order set by ``seed``.
    With ``documentation``, also those of the language reference and library documentation
    topics Python ships for ``help()`` (``pydoc_data.topics``): about half as many again."""
    docs = []
    with warnings.catch_warnings():  # reading some attributes warns of their deprecation
        warnings.simplefilter("ignore")
        for name in _PROSE_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            # A package's submodules appear among its attributes once anything imported them:
            # leaving modules out keeps the texts the same whatever the process imported before.
            members = (getattr(module, a, None) for a in sorted(dir(module)) if not a.startswith("_"))
            for obj in [module, *(m for m in members if not isinstance(m, types.ModuleType))]:
                doc = getattr(obj, "__doc__", None)
                if isinstance(doc, str):
                    docs.append(doc)
    if documentation:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions leave the help topics out
            topics = {}
        docs.extend(topics[key] for key in sorted(topics))
    sentences = set()
    for doc in docs:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            words = len(sentence.split())
            if 6 <= words <= 40 and sentence[:1].isupper() and not any(c in sentence for c in "{}[]<>=|`>"):
                sentences.add(sentence)
    # In an order of their seeded hashes, not a shuffle: a sentence more or less (a library may
    # replace a standard function, docstring and all) moves no other sentence.
    return sorted(sentences, key=lambda text: hashlib.blake2b(f"{seed}\n{text}".encode(), digest_size=8).digest())[:count]


def calibrate_folder(
    folder: ModelFolder, texts: list[str], *, file_names, moments: str, progress: bool = False, **settings
) -> tuple[Mapping, dict, dict]:
    """``(hessians, importance, summary)`` for the compressor, keyed by the names of the
    folder's weight files (``file_names``); ``settings`` are the compressor's
    (``min_elements``, ``keep_dense``) so the right tensors are measured.

    A model that is a stack of blocks (every transformer transformers builds) is calibrated
    one block at a time (:mod:`dcformat.torch.layerwise`), its weights read from the folder's
    files as each block is reached, its second moments written to files in the directory
    ``moments`` (the caller removes it when the compressor is done); any other is loaded
    whole (``AutoModel``) and calibrated so (:func:`dcformat.torch.calibration.calibrate`)."""
    from .load import torch_and_transformers

    torch, transformers = torch_and_transformers("calibration (it runs the model)", operation="compress")
    from ..torch.layerwise import NotSequentialError, calibrate_layerwise, parameters_on_meta

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder.path)
    except (OSError, ValueError) as exc:
        raise EncodeError(f"calibration text needs the folder's tokenizer, which could not be loaded ({exc})", field="calibration") from None
    batches = [
        dict(tokenizer(texts[i : i + BATCH_SIZE], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))
        for i in range(0, len(texts), BATCH_SIZE)
    ]
    chosen = {k: v for k, v in settings.items() if k in ("min_elements", "keep_dense")}
    names = set(file_names)
    with parameters_on_meta():
        model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(folder.path), dtype=torch.float32)
    prefix = getattr(model, "base_model_prefix", "") or ""

    def in_file(name: str) -> str | None:
        return name_in(name, names, prefix)

    try:
        with open_source(folder.weights) as source:

            def load(name: str) -> np.ndarray:
                found = in_file(name)
                if found is None:
                    raise EncodeError(f"the model's parameter {name} is not in the folder's weights", field="calibration")
                return as_array(source[found])

            def weigh(name: str, array: np.ndarray) -> bool:
                return in_file(name) is not None and quantized_by_default(in_file(name), array, **chosen)

            measured = calibrate_layerwise(model, batches, load, MomentStore(moments), weigh=weigh, progress=progress)
        how = "block by block"
        hessians = measured.hessians.renamed({n: in_file(n) for n in measured.hessians})
    except NotSequentialError:
        from ..torch.calibration import calibrate
        from .load import from_pretrained

        if folder.kind == "dcf":
            model = from_pretrained(folder.path)
        else:
            model = transformers.AutoModel.from_pretrained(folder.path, dtype=torch.float32)
        measured = calibrate(model, batches, progress=progress, **chosen)
        how = "whole model"
        hessians = {in_file(n): h for n, h in measured.hessians.items() if in_file(n)}
    importance = {in_file(n): s for n, s in measured.importance.items() if in_file(n)}
    if not hessians and not importance:
        raise EncodeError("no tensor the model was run with is in the folder's weights (names differ)", field="calibration")
    summary = {
        "texts": len(texts),
        "tokens": measured.tokens,
        "run": how,
        "layers_measured": len(hessians),
        "tensors_weighed": len(importance),
    }
    if isinstance(hessians, MomentStore):
        summary["moments_bytes"] = hessians.nbytes()  # on disk beside the output while it was written
    return hessians, importance, summary
