"""``dcformat convert IN OUT``: a thin layer over :func:`dcformat.interop.convert.convert`.

Formats come from the extensions: ``.dcf``, ``.safetensors``, ``.pt``/``.pth``/``.bin``
(PyTorch, read weights-only), ``.npz``, ``.onnx`` (the model's initializers; writing one
needs ``--graph ORIGINAL.onnx``) and ``.net`` (the Deep Compression authors' layout;
needs ``--prototxt``). A model folder converts to a folder (:func:`dcformat.hf.convert_folder`):
safetensors weights to lossless ``.dcf``, ``.dcf`` weights back to plain safetensors.
"""

from __future__ import annotations

import sys

from ..format.encode import DENSE_CHOICES, EncodeOptions
from ..hf.folder import is_model_folder
from ..hf.write import DEFAULT_MAX_SHARD_BYTES, convert_folder
from ..interop.convert import DEFAULT_MIN_ELEMENTS, convert
from .common import EXIT_OK, EXIT_USAGE, add_work_options, bad_threads, print_folder_summary, print_json, printable
from .compress import parse_size


def register(subparsers) -> None:
    """Add the ``convert`` subcommand to an argparse ``add_subparsers()`` object; its ``func`` is :func:`run`."""
    p = subparsers.add_parser(
        "convert",
        help="convert weights between .dcf and .safetensors, .pt, .npz, .onnx or the authors' .net",
        description="Convert IN to OUT, formats told by their extensions: .dcf, .safetensors, .pt/.pth/.bin (PyTorch, "
        "loaded weights-only), .npz, .onnx (the initializers; writing needs --graph), .net (the authors' "
        "Deep Compression layout; needs --prototxt). Values are kept exactly unless --bits quantizes them "
        "into a .dcf; quantized tensors are dequantized into formats other than .dcf and .net, and the "
        "report names them. A model folder (config, tokenizer, weights) becomes a new folder: safetensors weights "
        "as lossless .dcf, or .dcf weights back to plain safetensors that transformers loads as usual; every "
        "other file is carried over unchanged.",
    )
    p.add_argument("input", metavar="IN", help="the file to read, or a model folder")
    p.add_argument("output", metavar="OUT", help="the file to write (replaced atomically), or the new folder for a model folder IN")
    p.add_argument("--graph", metavar="ORIGINAL.onnx", help="the ONNX model whose initializers OUT.onnx takes from IN")
    p.add_argument("--strip-graph", metavar="GRAPH.onnx", help="with IN.onnx: also write the model without the weights stored in OUT")
    p.add_argument("--prototxt", metavar="NET.prototxt", help="the Caffe network description, to read or write a .net")
    p.add_argument("--bits", type=int, metavar="B", help="quantize float tensors into OUT.dcf with 2**B shared values (k-means)")
    p.add_argument("--min-elements", type=int, default=None, metavar="N", help="with --bits: only tensors of at least N elements (default 1024)")
    p.add_argument("--init", choices=["linear", "density", "forgy"], default="linear", help="with --bits: k-means initialisation (default linear)")
    p.add_argument("--layout", choices=["auto", "dense", "sparse"], default="auto", help=".dcf storage of quantized tensors (default: smallest)")
    p.add_argument("--gap-bits", type=int, metavar="B", help=".dcf gap width for sparse storage (default: smallest)")
    p.add_argument("--coder", choices=["bitpack", "huffman", "zstd"], help=".dcf coder of every symbol stream (default: smallest per stream)")
    p.add_argument(
        "--dense",
        choices=DENSE_CHOICES,
        default="auto",
        help=".dcf storage of plain tensors: auto (default: the smallest lossless, float_split for most float weights), "
        "raw (memory-mappable: loading costs no decoding), zstd, or float_split",
    )
    p.add_argument(
        "--max-shard-size",
        type=parse_size,
        metavar="SIZE",
        default=None,
        help=f"model folders: weights larger than SIZE are written in shards of about SIZE (default {DEFAULT_MAX_SHARD_BYTES // 10**9}GB)",
    )
    add_work_options(p, threads="model folders: tensors worked on at once (default: every core)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Convert, then print what was done; library errors propagate to ``main`` (one line, exit 1)."""
    options = EncodeOptions(layout=args.layout, gap_bits=args.gap_bits, coder=args.coder, dense=args.dense)
    if is_model_folder(args.input):
        return _run_folder(args, options)
    report = convert(
        args.input,
        args.output,
        graph=args.graph,
        prototxt=args.prototxt,
        bits=args.bits,
        min_elements=DEFAULT_MIN_ELEMENTS if args.min_elements is None else args.min_elements,
        init=args.init,
        options=options,
        strip_graph=args.strip_graph,
        progress=not (args.json or args.no_progress),
    )
    if args.json:
        return print_json(report.as_dict())
    ratio = f", {report.bytes_in / report.bytes_out:.2f}x smaller" if report.bytes_out and report.bytes_out < report.bytes_in else ""
    print(
        f"{printable(report.source)} ({report.source_format}, {report.bytes_in:,} bytes) -> "
        f"{printable(report.destination)} ({report.destination_format}, {report.bytes_out:,} bytes{ratio}): {report.tensors} tensors"
    )
    if report.quantized:
        print(f"quantized ({len(report.quantized)}): " + ", ".join(printable(n) for n in report.quantized))
    if report.dequantized:
        print(f"dequantized ({len(report.dequantized)}): " + ", ".join(printable(n) for n in report.dequantized))
    for note in report.notes:
        print("note: " + printable(note))
    return EXIT_OK


def _run_folder(args, options: EncodeOptions) -> int:
    unused = [
        flag
        for flag, value in (("--graph", args.graph), ("--prototxt", args.prototxt), ("--bits", args.bits), ("--strip-graph", args.strip_graph))
        if value
    ]
    if unused:
        print(f"dcformat convert: {', '.join(unused)} do not apply to a model folder (use dcformat compress to quantize one)", file=sys.stderr)
        return EXIT_USAGE
    if bad_threads("convert", args.threads):
        return EXIT_USAGE
    record = convert_folder(
        args.input,
        args.output,
        max_shard_bytes=args.max_shard_size or DEFAULT_MAX_SHARD_BYTES,
        threads=args.threads,
        progress=not (args.json or args.no_progress),
        options=options,
    )
    if args.json:
        return print_json(record)
    weights = record["weights"]
    print(f"{printable(args.input)} -> {printable(args.output)}: weights {weights['file_bytes']:,} bytes, every value kept")
    print_folder_summary(record, sys.stdout)
    return EXIT_OK
