"""``dcformat convert IN OUT``: a thin layer over :func:`dcformat.interop.convert.convert`.

Formats come from the extensions: ``.dcf``, ``.safetensors``, ``.pt``/``.pth``/``.bin``
(PyTorch, read weights-only), ``.npz``, ``.onnx`` (the model's initializers; writing one
needs ``--graph ORIGINAL.onnx``) and ``.net`` (the Deep Compression authors' layout;
needs ``--prototxt``).
"""

from __future__ import annotations

import json
import sys

from ..format.encode import DENSE_CHOICES, EncodeOptions
from ..interop.convert import DEFAULT_MIN_ELEMENTS, convert
from .common import EXIT_OK, printable


def register(subparsers) -> None:
    """Add the ``convert`` subcommand to an argparse ``add_subparsers()`` object; its ``func`` is :func:`run`."""
    p = subparsers.add_parser(
        "convert",
        help="convert weights between .dcf and .safetensors, .pt, .npz, .onnx or the authors' .net",
        description="Convert IN to OUT, formats told by their extensions: .dcf, .safetensors, .pt/.pth/.bin (PyTorch, "
        "loaded weights-only), .npz, .onnx (the initializers; writing needs --graph), .net (the authors' "
        "Deep Compression layout; needs --prototxt). Values are kept exactly unless --bits quantizes them "
        "into a .dcf; quantized tensors are dequantized into formats other than .dcf and .net, and the "
        "report names them.",
    )
    p.add_argument("input", metavar="IN", help="the file to read")
    p.add_argument("output", metavar="OUT", help="the file to write (replaced atomically)")
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
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """Convert, then print what was done; library errors propagate to ``main`` (one line, exit 1)."""
    options = EncodeOptions(layout=args.layout, gap_bits=args.gap_bits, coder=args.coder, dense=args.dense)
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
        json.dump(report.as_dict(), sys.stdout, indent=2, ensure_ascii=True)
        print()
        return EXIT_OK
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
