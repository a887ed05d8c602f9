"""``dcformat distill MODEL_DIR OUT_DIR --text TEXTFILE``: a thin layer over
:func:`dcformat.hf.distill_folder`, the paper's trained pipeline on a pretrained model:
post-training compression with calibration, then training the compressed model to give the
original's outputs on unlabelled text (no labels, no task data)."""

from __future__ import annotations

import sys

from ..compress import DEFAULT_MIN_ELEMENTS
from ..hf.distill import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CODEBOOK_LR,
    DEFAULT_HELD_OUT,
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    distill_folder,
)
from ..hf.folder import is_model_folder
from .common import EXIT_OK, EXIT_USAGE, add_work_options, bad_threads, print_folder_summary, print_json


def register(subparsers) -> None:
    """Add the ``distill`` subcommand to an argparse ``add_subparsers()`` object; its ``func`` is :func:`run`."""
    p = subparsers.add_parser(
        "distill",
        help="compress a model folder and train the compressed model on unlabelled text to match the original (needs torch)",
        description="The trained pipeline of Deep Compression for a pretrained model without its training data: compress "
        "with calibration on the first texts, then train the compressed model (its weights move between their codebook's "
        "centroids, the centroids and the exact tensors train too) to give the original model's mean-pooled embeddings and "
        "hidden states on the texts, and write the folder. Texts held out of training measure the result; dcformat.json "
        "records it. The model trains in memory.",
        epilog="Example: dcformat distill all-MiniLM-L6-v2/ minilm-12x/ --text prose.txt --steps 1000 "
        "(any unlabelled prose in the model's language, one text per line; never the sentences you evaluate on).",
    )
    p.add_argument("input", metavar="MODEL_DIR", help="a model folder with safetensors weights, its config and tokenizer")
    p.add_argument("output", metavar="OUT_DIR", help="the new folder: the weights as model.dcf, every other file unchanged, and dcformat.json")
    p.add_argument("--text", required=True, metavar="TEXTFILE", help="unlabelled texts, one per line (UTF-8)")
    p.add_argument(
        "--target-bits-per-weight",
        type=float,
        default=DEFAULT_TARGET_BITS_PER_WEIGHT,
        metavar="BITS",
        help=f"size of the weights in bits per element (default {DEFAULT_TARGET_BITS_PER_WEIGHT:.2f}: 12x smaller than fp32)",
    )
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N", help=f"training steps (default {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help=f"texts per step (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, metavar="RATE", help=f"Adam's learning rate (default {DEFAULT_LR:g})")
    p.add_argument(
        "--codebook-lr",
        type=float,
        default=DEFAULT_CODEBOOK_LR,
        metavar="RATE",
        help=f"the centroids' learning rate (default {DEFAULT_CODEBOOK_LR:g})",
    )
    p.add_argument(
        "--fixed-codes",
        action="store_true",
        help="train only the centroids, each weight keeping the one it was given (the paper's trained quantization; weaker here)",
    )
    p.add_argument(
        "--token-noise",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="replace this fraction of the texts' tokens by random ones from the vocabulary, so words the texts lack train too (default 0)",
    )
    p.add_argument(
        "--held-out", type=int, default=DEFAULT_HELD_OUT, metavar="N", help=f"texts kept out of training to measure on (default {DEFAULT_HELD_OUT})"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the held-out choice, the batches and torch (default 0)")
    p.add_argument(
        "--min-elements",
        type=int,
        default=DEFAULT_MIN_ELEMENTS,
        metavar="N",
        help=f"float tensors with fewer elements stay exact (default {DEFAULT_MIN_ELEMENTS})",
    )
    add_work_options(p, threads="threads for compressing and writing (default: every core)", report="record")
    p.set_defaults(func=run)


def run(args) -> int:
    if bad_threads("distill", args.threads):
        return EXIT_USAGE
    if not is_model_folder(args.input):
        print(f"dcformat distill: MODEL_DIR must be a model folder (config, tokenizer, safetensors weights): {args.input}", file=sys.stderr)
        return EXIT_USAGE
    record = distill_folder(
        args.input,
        args.output,
        args.text,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        codebook_lr=args.codebook_lr,
        move_codes=not args.fixed_codes,
        token_noise=args.token_noise,
        held_out=args.held_out,
        seed=args.seed,
        threads=args.threads,
        progress=not (args.json or args.no_progress),
        target_bits_per_weight=args.target_bits_per_weight,
        min_elements=args.min_elements,
    )
    if args.json:
        return print_json(record)
    weights, trained = record["weights"], record["distillation"]
    print(
        f"weights: {weights['file_bytes']:,} bytes, {weights['bits_per_weight']:.2f} bits/weight, {weights['ratio_vs_fp32']:.2f}x smaller than fp32"
    )
    print(
        f"mean cosine to the original on {trained['held_out_texts']} held-out texts: "
        f"{trained['held_out_cosine_before']:.4f} compressed, {trained['held_out_cosine_after']:.4f} after {args.steps} steps "
        f"({trained['training_seconds']:.0f} s of training, {trained['seconds']:.0f} s in all)"
    )
    print_folder_summary(record, sys.stdout)
    return EXIT_OK
