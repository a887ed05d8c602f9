"""``dcformat inspect FILE``: per tensor, what is stored and what it costs."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..errors import FormatError
from ..hf.folder import is_model_folder, open_folder
from ..io.loading import open_file
from ..io.shards import ShardedFile
from .common import EXIT_OK, print_json, print_table, printable


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="list the tensors of a file with their encodings and sizes",
        description="Per tensor: name, shape, dtype, encoding, density, coded bits per stored code and gap (quantized) or per "
        "exponent (float_split), stored bytes, the ratio against fp32 and the payload's bits per element; then totals. Names are printed with control characters escaped.",
    )
    p.add_argument("file", help="a .dcf file, a sharded model's model.dcf.index.json, or a model folder of .dcf weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="also draw histograms and sizes per layer into a .png, .svg or .pdf (needs matplotlib)")
    p.set_defaults(func=run)


def _fmt_bits(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def inspect_report(path) -> dict:
    """Everything ``inspect`` prints, as data (for a file, or a sharded model's index)."""
    with open_file(path) as reader:
        infos = [reader.info(name) for name in reader.keys()]
        metadata = reader.metadata()
        if isinstance(reader, ShardedFile):
            size = sum(os.path.getsize(os.path.join(reader.folder, shard)) for shard in reader.shards())
            version = ("sharded", f"{len(reader.shards())} files")
        else:
            size = os.path.getsize(path)
            version = reader.version
    elements = sum(int(np.prod(i.shape, dtype=object)) for i in infos)
    fp32 = 4 * elements
    return {
        "file": os.fspath(path),
        "format_version": f"{version[0]}.{version[1]}",
        "file_bytes": size,
        "metadata": metadata,
        "tensors": [i.as_dict() for i in infos],
        "totals": {
            "tensors": len(infos),
            "elements": elements,
            "stored_bytes": sum(i.stored_bytes for i in infos),
            "fp32_bytes": fp32,
            "file_bytes": size,
            "ratio_vs_fp32": fp32 / size if size else None,
            "density": (sum(i.density * int(np.prod(i.shape, dtype=object)) for i in infos) / elements) if elements else 0.0,
        },
    }


def print_inspect(report: dict, out) -> None:
    rows = [("name", "shape", "dtype", "encoding", "density", "code bits", "gap bits", "stored bytes", "x fp32", "bits/elem")]
    for t in report["tensors"]:
        gap = "-" if t["gap_bits"] is None else f"{t['gap_bits']:.2f} (b={t['gap_width']})"
        rows.append(
            (
                printable(t["name"]),
                "x".join(map(str, t["shape"])) or "scalar",
                t["dtype"],
                t["encoding"],
                f"{100 * t['density']:.2f}%",
                _fmt_bits(t["code_bits"]),
                gap,
                f"{t['stored_bytes']:,}",
                f"{t['ratio_vs_fp32']:.1f}" if t["stored_bytes"] else "-",
                _fmt_bits(t["bits_per_element"]),
            )
        )
    print(f"{printable(report['file'])}: dcformat {report['format_version']}, {report['file_bytes']:,} bytes", file=out)
    print_table(rows, left=4, out=out)
    tot = report["totals"]
    ratio = f"{tot['ratio_vs_fp32']:.1f}x smaller than fp32" if tot["ratio_vs_fp32"] else "empty"
    print(
        f"total: {tot['tensors']} tensors, {tot['elements']:,} elements, {100 * tot['density']:.2f}% nonzero, "
        f"file {tot['file_bytes']:,} bytes vs fp32 {tot['fp32_bytes']:,} bytes: {ratio}",
        file=out,
    )
    user = {k: v for k, v in report["metadata"].items()}
    if user:
        print("metadata: " + printable(json.dumps(user, sort_keys=True, ensure_ascii=False)), file=out)


def folder_report(path) -> dict:
    """``inspect`` of a model folder: its weights' report, the record dcformat left, and its other files."""
    folder = open_folder(path)
    if folder.kind != "dcf":
        raise FormatError(folder.path, "holds safetensors weights, not .dcf: compress or convert it first", offset=None)
    report = inspect_report(folder.weights)
    report.update(folder=folder.path, record=folder.record, files=folder.carried, left_out=folder.left_out)
    return report


def run(args) -> int:
    is_folder = is_model_folder(args.file)
    report = folder_report(args.file) if is_folder else inspect_report(args.file)
    if args.plot:
        from .plot import plot_file  # optional extra (matplotlib)

        plot_file(report["file"], args.plot)
        report["plot"] = args.plot
    if args.json:
        return print_json(report)
    print_inspect(report, sys.stdout)
    if is_folder:
        print_folder(report, sys.stdout)
    return EXIT_OK


def print_folder(report: dict, out) -> None:
    record = report["record"]
    count = len(report["files"])
    print(
        f"folder {printable(report['folder'])}: {count} other file{'' if count == 1 else 's'}: " + ", ".join(map(printable, report["files"])),
        file=out,
    )
    if record is None:
        print("no dcformat.json: this folder's record of how it was made is missing", file=out)
        return
    weights = record.get("weights") if isinstance(record.get("weights"), dict) else {}
    bits = weights.get("bits_per_weight")
    print(
        f"dcformat.json: {printable(str(record.get('operation')))} by dcformat {printable(str(record.get('dcformat_version')))}"
        + (f", {bits:.2f} bits per weight" if isinstance(bits, (int, float)) else "")
        + f", settings {printable(json.dumps(record.get('settings'), sort_keys=True))}",
        file=out,
    )
