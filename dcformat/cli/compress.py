"""``dcformat compress IN OUT``: a thin layer over :func:`dcformat.compress.compress_file`
and, for a model folder, :func:`dcformat.hf.compress_folder`.

Post-training compression of a ``.safetensors`` or ``.dcf`` model (one file, or shards
and their index, or a Hugging Face model folder) into a ``.dcf``, dcformat shards or a
folder: per-tensor k-means codebooks sized by a sensitivity-weighted allocation to fit a
bits per weight target, with options to fix bit widths, keep tensors exact and prune.
"""

from __future__ import annotations

import argparse
import sys

from ..compress import DEFAULT_MIN_ELEMENTS, DEFAULT_TARGET_BITS_PER_WEIGHT, TRANSFORMER_IMPORTANCE, compress_file
from ..format.encode import DENSE_CHOICES, EncodeOptions
from ..hf.folder import is_model_folder
from ..hf.write import DEFAULT_MAX_SHARD_BYTES, compress_folder
from .common import EXIT_OK, EXIT_USAGE, add_work_options, bad_threads, print_folder_summary, print_json, print_table, printable

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """``4GB``, ``500MB``, ``2GiB`` or a plain number of bytes (the units of ``save_pretrained(max_shard_size=...)``)."""
    cleaned = text.strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGTIB")
    try:
        value = float(number) * _UNITS[cleaned[len(number) :]]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a size such as 2GB, 500MB or 1GiB, got {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a shard must hold at least one byte, got {text!r}")
    return int(value)


def _rule(kind, what: str):
    """An argparse type for ``VALUE`` or ``REGEX=VALUE`` (the regex may itself hold '=')."""

    def parse(text: str):
        pattern, sep, value = text.rpartition("=")
        try:
            parsed = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or REGEX={what}, got {text!r}") from None
        return (pattern if sep else None, parsed)

    return parse


def _collect(pairs, *, option: str):
    """The library's form of repeated ``--option [REGEX=]VALUE``: a value, or an ordered mapping whose catch-all comes last."""
    if not pairs:
        return None
    plain = [value for pattern, value in pairs if pattern is None]
    if len(plain) > 1:
        raise argparse.ArgumentTypeError(f"{option} takes at most one value without REGEX=")
    rules = {pattern: value for pattern, value in pairs if pattern is not None}
    if not rules:
        return plain[0]
    if plain:
        rules[".*"] = plain[0]
    return rules


def register(subparsers) -> None:
    """Add the ``compress`` subcommand to an argparse ``add_subparsers()`` object; its ``func`` is :func:`run`."""

    p = subparsers.add_parser(
        "compress",
        help="compress a trained model (.safetensors, .dcf or a model folder) into a .dcf or a folder without retraining",
        description="Quantize every float matrix of IN with its own k-means codebook, sized per tensor by a sensitivity-weighted "
        "allocation so the whole file fits --target-bits-per-weight; biases, LayerNorm, small and non-float tensors "
        "stay exact. Prints bytes per tensor and in total, measured on the written file.",
        epilog="Examples: dcformat compress model.safetensors model.dcf; "
        "dcformat compress model.safetensors.index.json out/ --max-shard-size 2GB; "
        "dcformat compress all-MiniLM-L6-v2/ minilm-dcf/ (a Hugging Face model folder: every other file carried over); "
        "dcformat compress model.safetensors model.dcf --target-bits-per-weight 6 --keep-dense 'embeddings'; "
        "dcformat compress model.safetensors model.dcf --bits 8 --bits 'attention=6'.",
    )
    p.add_argument(
        "input",
        metavar="IN",
        help="a .safetensors or .dcf file, a shard index of either (model.safetensors.index.json, model.dcf.index.json), "
        "or a model folder (config, tokenizer and safetensors weights, single or sharded)",
    )
    p.add_argument(
        "output",
        metavar="OUT",
        help="the .dcf to write (replaced atomically), or with --max-shard-size the folder that receives the shards and model.dcf.index.json; "
        "for a model folder IN, a new folder: the weights as model.dcf (or shards), every other file unchanged, and dcformat.json",
    )
    p.add_argument(
        "--max-shard-size",
        type=parse_size,
        metavar="SIZE",
        default=None,
        help="write dcformat shards of about SIZE bytes each (e.g. 2GB, 500MB) into the folder OUT, with an index "
        f"(for a model folder: only when the weights are larger, default {DEFAULT_MAX_SHARD_BYTES // 10**9}GB)",
    )
    p.add_argument(
        "--target-bits-per-weight",
        type=float,
        metavar="BITS",
        default=None,
        help=f"size of the whole file in bits per element (default {DEFAULT_TARGET_BITS_PER_WEIGHT}, "
        f"{32 / DEFAULT_TARGET_BITS_PER_WEIGHT:.1f}x smaller than fp32); more is closer to the original",
    )
    p.add_argument(
        "--bits",
        action="append",
        type=_rule(int, "BITS"),
        metavar="[REGEX=]BITS",
        help="fixed k-means codebooks of at most 2**BITS entries, for every tensor or those whose name matches REGEX "
        "(repeatable; first match wins); tensors without one are sized by the target",
    )
    p.add_argument("--keep-dense", action="append", metavar="REGEX", help="store tensors whose name matches REGEX exactly (repeatable)")
    p.add_argument(
        "--prune",
        action="append",
        type=_rule(float, "FRACTION"),
        metavar="[REGEX=]FRACTION",
        help="set this fraction of each quantized tensor's smallest weights to zero first (repeatable); "
        "without retraining this costs accuracy quickly",
    )
    p.add_argument(
        "--importance",
        action="append",
        type=_rule(float, "WEIGHT"),
        metavar="REGEX=WEIGHT",
        help="weight of a kind of tensor in the allocation (repeatable, first match wins, others weigh 1); "
        "replaces the default, which gives attention query/key projections 0.1",
    )
    p.add_argument("--equal-importance", action="store_true", help="weigh every tensor's relative error the same")
    p.add_argument(
        "--calibration",
        metavar="TEXTFILE",
        help="model folders: run the model on these texts (one per line; any prose in its language) and use what it measures: "
        "error-compensated quantization of linear layers, bits allocated by measured sensitivity (needs torch and transformers; "
        "the model runs one block at a time, its measurements kept in a temporary folder beside OUTPUT)",
    )
    p.add_argument(
        "--min-elements",
        type=int,
        default=DEFAULT_MIN_ELEMENTS,
        metavar="N",
        help=f"float tensors with fewer elements stay exact (default {DEFAULT_MIN_ELEMENTS})",
    )
    p.add_argument("--init", choices=["linear", "density", "forgy"], default="linear", help="k-means initialisation with --bits (default linear)")
    p.add_argument(
        "--dense",
        choices=DENSE_CHOICES,
        default="auto",
        help="storage of exact tensors: auto (default: the smallest lossless of raw, zstd and float_split), raw (memory-mappable), zstd, float_split",
    )
    add_work_options(p, threads="tensors worked on at once (default: $DCFORMAT_THREADS, else every core); the output is the same for any N")
    p.set_defaults(func=run)


def settings_from_args(args) -> dict:
    """The keyword arguments of :func:`dcformat.compress.compress_tensors` that ``args`` ask for."""

    importance = TRANSFORMER_IMPORTANCE
    if args.equal_importance:
        importance = None
    elif args.importance:
        if any(pattern is None for pattern, _ in args.importance):
            raise argparse.ArgumentTypeError("--importance takes REGEX=WEIGHT")
        importance = {pattern: weight for pattern, weight in args.importance}
    return dict(
        target_bits_per_weight=args.target_bits_per_weight,
        bits=_collect(args.bits, option="--bits"),
        keep_dense=args.keep_dense,
        prune=_collect(args.prune, option="--prune") or 0.0,
        importance=importance,
        min_elements=args.min_elements,
        init=args.init,
    )


def run(args) -> int:
    """Compress, then print the report; library errors propagate to ``main`` (one line, exit 1)."""

    try:
        settings = settings_from_args(args)
    except argparse.ArgumentTypeError as exc:
        print(f"dcformat compress: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if bad_threads("compress", args.threads):
        return EXIT_USAGE
    if is_model_folder(args.input):
        return _run_folder(args, settings)
    if args.calibration:
        print("dcformat compress: --calibration needs a model folder (its tokenizer and config run the model)", file=sys.stderr)
        return EXIT_USAGE
    if args.max_shard_size is not None and args.output.endswith(".dcf"):
        print(f"dcformat compress: with --max-shard-size OUT is a folder for the shards, not a .dcf file: {args.output}", file=sys.stderr)
        return EXIT_USAGE
    report = compress_file(
        args.input,
        args.output,
        options=EncodeOptions(dense=args.dense),
        max_shard_bytes=args.max_shard_size,
        threads=args.threads,
        progress=not (args.json or args.no_progress),
        **settings,
    )
    if args.json:
        return print_json(report)
    print_report(report, sys.stdout, printable=printable)
    return EXIT_OK


def _run_folder(args, settings: dict) -> int:
    if args.output.endswith(".dcf"):
        print(f"dcformat compress: IN is a model folder, so OUT is the new folder to write, not a .dcf file: {args.output}", file=sys.stderr)
        return EXIT_USAGE
    record = compress_folder(
        args.input,
        args.output,
        calibration=args.calibration,
        options=EncodeOptions(dense=args.dense),
        max_shard_bytes=args.max_shard_size or DEFAULT_MAX_SHARD_BYTES,
        threads=args.threads,
        progress=not (args.json or args.no_progress),
        **settings,
    )
    if args.json:
        return print_json(record)
    print_report(record["compress"], sys.stdout, printable=printable)
    print_folder_summary(record, sys.stdout)
    return EXIT_OK


def print_report(report: dict, out, *, printable=str) -> None:
    """The per-tensor table and the totals of a :func:`compress_file` report."""
    header = ("name", "shape", "stored as", "K", "bits/weight", "rel. error", "weight", "bytes", "x fp32")
    rows = [header]
    for t in report["tensors"]:
        stored = t.get("stored_bytes", t["estimated_bytes"])
        how = t.get("encoding", t["action"]) if t["action"] == "quantized" else f"{t.get('encoding', 'raw')} ({t['reason']})"
        rows.append(
            (
                printable(t["name"]),
                "x".join(map(str, t["shape"])) or "scalar",
                how,
                "-" if t["codebook_size"] is None else str(t["codebook_size"]),
                f"{8 * stored / t['elements']:.2f}" if t["elements"] else "-",
                f"{t['relative_error']:.1e}" if t["action"] == "quantized" or t["pruned"] else "0",
                "-" if t["importance"] is None else f"{t['importance']:g}",
                f"{stored:,}",
                f"{4 * t['elements'] / stored:.1f}" if stored else "-",
            )
        )
    print_table(rows, left=3, out=out)
    tot = report["totals"]
    size = tot.get("file_bytes", tot["estimated_bytes"])
    if report.get("shards"):
        print(f"{len(report['shards'])} shards and their index: {size:,} bytes in all", file=out)
    head = f"total: {tot['tensors']} tensors ({tot['quantized']} quantized), {tot['elements']:,} elements; {printable(report.get('output', ''))} holds {size:,} bytes"
    if not tot["elements"]:  # nothing to count bits per weight or ratios on
        print(head + " (no weights)", file=out)
    else:
        print(
            f"{head}, {tot['bits_per_weight']:.2f} bits per weight: "
            f"{tot['ratio_vs_source']:.2f}x smaller than the input's {tot['source_bytes']:,} tensor bytes "
            f"({tot['fp32_bytes'] / size:.2f}x vs fp32)",
            file=out,
        )
    if "seconds" in report:
        t = report["seconds"]
        print(
            f"time: {t['plan'] + t['quantize_and_write']:.1f} s on {t['threads']} thread(s) "
            f"(planning {t['plan']:.1f} s, quantizing and writing {t['quantize_and_write']:.1f} s)",
            file=out,
        )
