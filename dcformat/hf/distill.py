"""The trained pipeline on a model folder: ``dcformat distill MODEL_DIR OUT_DIR --text TEXTFILE``.

Deep Compression retrains after quantizing. For a pretrained model without its task data,
the original model is the teacher (:mod:`dcformat.torch.distill`):

1. post-training compression with calibration (``dcformat compress --calibration``) on
   the first texts picks each tensor's codebook and its share of the size budget;
2. the student, a copy of the model with those codebooks, is trained to give the
   teacher's mean-pooled embeddings and hidden states on the texts, a batch at a time;
   its quantized weights move between centroids (or, with ``move_codes=False``, only
   the centroids train, as in the paper), its exact tensors (biases, norms) train too;
3. the trained weights are written as ``model.dcf`` with every other file carried over,
   and ``dcformat.json`` records the settings, the losses and the mean cosine to the
   teacher on texts held out of training (before and after).

The whole model trains in memory: this is for models that fit in it (the streaming
``compress`` serves larger ones). Needs torch and transformers.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np

from ..compress.files import write_encoded
from ..compress.grid import round_codebook
from ..compress.plan import plan_compression
from ..errors import EncodeError
from ..format.encode import EncodeOptions, encode_tensor
from ..format.encodings import numel_of
from ..interop.sources import open_source
from ..io.writers import FileWriter
from ..parallel import resolve_threads
from ..quantize import QuantizedTensor
from .calibration import BATCH_SIZE as EVAL_BATCH_SIZE
from .calibration import MAX_LENGTH, read_texts
from .folder import carry, name_in, open_folder, staged_folder, write_record
from .load import torch_and_transformers
from .write import DCF_NAME, calibrated_settings, folder_record, moments_directory, weights_written

#: 12x smaller than fp32: the issue's target for the trained pipeline.
DEFAULT_TARGET_BITS_PER_WEIGHT = 32 / 12
DEFAULT_STEPS = 1000
DEFAULT_BATCH_SIZE = 32
#: Adam's learning rates: a latent weight moves about this far per step, so a few hundred steps
#: take it across the 0.01-0.05 between neighbouring centroids (MiniLM at 12x: 3e-5 beat 1e-4
#: and 5e-4 over the first 100 steps); the centroids move faster.
DEFAULT_LR = 3e-5
DEFAULT_CODEBOOK_LR = 1e-4
#: Texts the post-training plan is calibrated on (the first of the training texts).
CALIBRATION_TEXTS = 256
#: Texts kept out of training to measure the result on (chosen at random with the seed).
DEFAULT_HELD_OUT = 64
#: Texts read from a file at most.
MAX_TEXTS = 200_000


def distill_folder(
    in_dir,
    out_dir,
    texts,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    codebook_lr: float = DEFAULT_CODEBOOK_LR,
    move_codes: bool = True,
    token_noise: float = 0.0,
    held_out: int = DEFAULT_HELD_OUT,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
    options=None,
    **settings,
) -> dict:
    """Compress a model folder with the trained pipeline; returns the record it writes.

    ``texts``: a text file (one text per line) or a list of texts, unlabelled, in the
    model's language. ``settings`` are :func:`dcformat.compress.compress_tensors`'
    (``target_bits_per_weight`` defaults to 2.67, 12x smaller than fp32). ``steps`` of
    ``batch_size`` texts drawn at random (with ``seed``) from all but ``held_out`` texts;
    with ``token_noise``, that fraction of their tokens replaced by random ones from the
    vocabulary (so words the texts lack are trained too).
    """
    torch, transformers = torch_and_transformers("distillation (it trains the model)", operation="distill")
    from ..torch.distill import check_rate, distill, freeze, install_latent
    from ..torch.quantize import install_shared

    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("held_out", held_out, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise EncodeError(f"must be an integer of at least {low}, got {value!r}", field=name)
    check_rate("lr", lr)
    check_rate("codebook_lr", codebook_lr)
    if isinstance(token_noise, bool) or not isinstance(token_noise, (int, float)) or not 0 <= token_noise < 1:
        raise EncodeError(f"must be a fraction in [0, 1), got {token_noise!r}", field="token_noise")
    folder = open_folder(in_dir)
    if folder.kind == "dcf":
        raise EncodeError("holds .dcf weights: distil from the original folder", field=f"model folder {folder.path}")
    text_file = os.path.basename(os.fspath(texts)) if isinstance(texts, (str, os.PathLike)) else None
    texts = read_texts(texts, limit=MAX_TEXTS) if isinstance(texts, (str, os.PathLike)) else [str(t) for t in texts if str(t).strip()]
    if len(texts) < held_out + batch_size:
        raise EncodeError(f"{len(texts)} texts are too few for {held_out} held out and batches of {batch_size}", field="texts")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    evaluation = [texts[i] for i in order[:held_out]]
    training = [texts[i] for i in order[held_out:]]
    settings.setdefault("target_bits_per_weight", DEFAULT_TARGET_BITS_PER_WEIGHT)
    threads = resolve_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    with staged_folder(out_dir, source=folder.path) as staging, moments_directory(out_dir) as moments:
        settings, calibration = calibrated_settings(folder, training[:CALIBRATION_TEXTS], moments=moments, progress=progress, **settings)
        # Training replaces error compensation: each weight starts in the cell the plain grid
        # gives it, so the cells are known and the file keeps its planned size until codes move.
        settings.pop("hessians", None)
        with open_source(folder.weights) as source:
            metadata = dict(source.metadata)
            plan = plan_compression(source, threads=threads, progress=progress, **settings)
            planned = {name: _used_centroids_only(plan.apply(name, source[name])) for name in plan.names}
            boundaries = {name: _boundaries(value, source[name]) for name, value in planned.items() if isinstance(value, QuantizedTensor)}
        teacher = transformers.AutoModel.from_pretrained(folder.path, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder.path)
        student = copy.deepcopy(teacher)
        in_model = _model_names(student, planned)
        for name, value in planned.items():
            if isinstance(value, QuantizedTensor) and name in in_model:
                module_path, _, attribute = in_model[name].rpartition(".")
                module = student.get_submodule(module_path)
                codebook = torch.from_numpy(np.asarray(value.codebook, dtype=np.float64))
                mask = torch.from_numpy(_entry_mask(value))
                if move_codes:
                    install_latent(module, attribute, codebook, mask, boundaries[name])
                else:
                    install_shared(module, attribute, codebook, torch.from_numpy(_codes_of(value)), mask)

        replaceable = _replaceable_tokens(tokenizer)

        def batch(_step: int) -> dict:
            picked = rng.integers(0, len(training), batch_size)
            encoded = dict(tokenizer([training[i] for i in picked], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))
            if token_noise:
                encoded["input_ids"] = _with_random_tokens(encoded, replaceable, token_noise, rng, torch)
            return encoded

        before = _mean_cosine(student, teacher, tokenizer, evaluation, torch)
        trained_at = time.perf_counter()
        losses = distill(student, teacher, batch, steps=steps, lr=lr, codebook_lr=codebook_lr, progress=progress)
        trained = time.perf_counter() - trained_at
        after = _mean_cosine(student, teacher, tokenizer, evaluation, torch)
        freeze(student)
        tensors = _trained_tensors(student, planned, in_model)
        options = options or EncodeOptions(dense="auto")
        metadata["dcformat_distill"] = {"source": os.path.basename(folder.weights)}
        with FileWriter(os.path.join(staging, DCF_NAME), metadata=metadata, options=options) as out:
            names = list(planned)
            write_encoded(out, names, lambda n: encode_tensor(tensors[n], options, field=repr(n)), threads=threads, progress=progress, desc="writing")
        weights = weights_written(staging, None, DCF_NAME)
        elements = sum(numel_of(row["shape"]) for row in plan.rows())
        record = folder_record(
            folder,
            "distill",
            carry(folder, staging),
            weights,
            settings={
                **plan.settings,
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "codebook_lr": codebook_lr,
                "move_codes": move_codes,
                "token_noise": token_noise,
                "seed": seed,
            },
        )
        record["calibration"] = calibration
        record["weights"].update(
            quantized=sum(isinstance(v, QuantizedTensor) for v in planned.values()),
            bits_per_weight=8 * weights["file_bytes"] / elements,
            ratio_vs_fp32=4 * elements / weights["file_bytes"],
        )
        record["distillation"] = {
            "file": text_file,
            "texts": len(training),
            "held_out_texts": len(evaluation),
            "held_out_cosine_before": before,
            "held_out_cosine_after": after,
            "loss_first": losses[0] if losses else None,
            "loss_last": float(np.mean(losses[-20:])) if losses else None,
            "training_seconds": trained,
            "seconds": time.perf_counter() - started,
        }
        write_record(staging, record)
    return {**record, "folder": os.path.abspath(out_dir)}


def _model_names(model, tensors) -> dict[str, str]:
    """The model's parameter name of each file tensor it has."""
    parameters = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "") or ""
    found = {name: name_in(name, parameters, prefix) for name in tensors}
    found = {name: model_name for name, model_name in found.items() if model_name is not None}
    if not found:
        raise EncodeError("no tensor of the folder's weights is a parameter of its model (names differ)", field="weights")
    return found


def _entry_mask(q: QuantizedTensor) -> np.ndarray:
    """True where the tensor has an entry (a pruned or unstored element is False)."""
    if q.positions is None:
        return np.ones(q.shape, dtype=bool)
    mask = np.zeros(numel_of(q.shape), dtype=bool)
    mask[q.positions] = True
    return mask.reshape(q.shape)


def _used_centroids_only(value):
    """A quantized tensor without the centroids no entry uses (k-means can leave some empty),
    its codes renumbered in order; anything else as it is."""
    if not isinstance(value, QuantizedTensor) or value.codes.size == 0:
        return value
    used, codes = np.unique(value.codes, return_inverse=True)
    if used.size == value.codebook.size:
        return value
    if value.positions is None:
        return QuantizedTensor.from_codes(value.codebook[used], codes.reshape(value.shape), dtype=value.dtype)
    return QuantizedTensor.from_entries(value.shape, value.codebook[used], value.positions, codes, dtype=value.dtype)


def _boundaries(q: QuantizedTensor, original):
    """The cell boundaries (a torch tensor) of a quantized tensor's codes over its original
    values (entries only)."""
    import torch

    from ..torch.distill import cell_boundaries

    values = np.asarray(original, dtype=np.float64).reshape(-1)
    if q.positions is not None:
        values = values[q.positions]
    return cell_boundaries(torch.from_numpy(values), torch.from_numpy(q.codes.astype(np.int64)), int(q.codebook.size))


def _replaceable_tokens(tokenizer) -> np.ndarray:
    """The vocabulary's ids less the special tokens (padding, separators, masks)."""
    return np.setdiff1d(np.arange(len(tokenizer), dtype=np.int64), np.array(tokenizer.all_special_ids, dtype=np.int64))


def _with_random_tokens(encoded: dict, replaceable: np.ndarray, fraction: float, rng: np.random.Generator, torch):
    """``input_ids`` with about ``fraction`` of the real, non-special tokens replaced by tokens
    drawn from the whole vocabulary: the teacher's outputs on them are targets as good as
    any, and every embedding row, not only those of the training texts' words, gets trained."""
    ids = encoded["input_ids"].numpy().copy()
    eligible = encoded["attention_mask"].numpy().astype(bool) & np.isin(ids, replaceable)
    chosen = eligible & (rng.random(ids.shape) < fraction)
    ids[chosen] = replaceable[rng.integers(0, replaceable.size, int(chosen.sum()))]
    return torch.from_numpy(ids)


def _codes_of(q: QuantizedTensor) -> np.ndarray:
    """Each element's code (0 where it has no entry), in the tensor's shape."""
    codes = np.zeros(numel_of(q.shape), dtype=np.int64)
    codes[slice(None) if q.positions is None else q.positions] = q.codes
    return codes.reshape(q.shape)


def _trained_tensors(student, planned: dict, in_model: dict) -> dict:
    """What to write under each file name: the student's trained tensor in the file's
    dtype (a quantized one as its codebook, codes and mask), or the planned one where the
    model has no such parameter."""
    out = {}
    for name, value in planned.items():
        if name not in in_model:
            out[name] = value
            continue
        module_path, _, attribute = in_model[name].rpartition(".")
        module = student.get_submodule(module_path)
        if isinstance(value, QuantizedTensor):  # frozen: the paper's shared state
            codebook = getattr(module, f"{attribute}_codebook").detach().double().numpy()
            mask = getattr(module, f"{attribute}_mask").numpy()
            codes = getattr(module, f"{attribute}_codes").numpy()
            out[name] = QuantizedTensor.from_codes(round_codebook(codebook, value.dtype), codes, mask=None if mask.all() else mask, dtype=value.dtype)
        else:
            out[name] = getattr(module, attribute).detach().numpy().astype(np.asarray(value).dtype)
    return out


def _mean_cosine(student, teacher, tokenizer, texts: list[str], torch) -> float:
    """Mean cosine between the two models' mean-pooled last hidden states on ``texts``."""
    from ..torch.distill import mean_pooled

    cosines = []
    with torch.no_grad():
        for i in range(0, len(texts), EVAL_BATCH_SIZE):
            batch = dict(tokenizer(texts[i : i + EVAL_BATCH_SIZE], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))
            cosines.append(torch.nn.functional.cosine_similarity(mean_pooled(student(**batch), batch), mean_pooled(teacher(**batch), batch), dim=-1))
    return float(torch.cat(cosines).mean())
