"""The ``dcformat`` command line: a thin layer of argparse subcommands over the library.

Every subcommand that reports has ``--json``. Errors in files become one clear line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import __version__
from .container import open_file
from .commands import print_table
from .shards import ShardedFile
from .errors import DCFormatError

EXIT_OK = 0
EXIT_BAD_FILE = 1
EXIT_USAGE = 2


def printable(name: str) -> str:
    """A name read from a file, with control and other unprintable characters escaped.

    Printable non-ASCII stays readable (``conv1.gewicht`` or ``层1``); a name cannot move
    the cursor, clear the terminal or hide text.
    """
    out = []
    for ch in name:  # per character of a name, never per weight
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


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


def _print_inspect(report: dict, out) -> None:
    rows = [("name", "shape", "dtype", "encoding", "density", "code bits", "gap bits", "stored bytes", "x fp32")]
    for t in report["tensors"]:
        gap = "-" if t["gap_bits"] is None else f"{t['gap_bits']:.2f} (b={t['gap_width']})"
        rows.append((printable(t["name"]), "x".join(map(str, t["shape"])) or "scalar", t["dtype"], t["encoding"], f"{100 * t['density']:.2f}%",
                     _fmt_bits(t["code_bits"]), gap, f"{t['stored_bytes']:,}", f"{t['ratio_vs_fp32']:.1f}" if t["stored_bytes"] else "-"))
    print(f"{printable(report['file'])}: dcformat {report['format_version']}, {report['file_bytes']:,} bytes", file=out)
    print_table(rows, left=4, out=out)
    tot = report["totals"]
    ratio = f"{tot['ratio_vs_fp32']:.1f}x smaller than fp32" if tot["ratio_vs_fp32"] else "empty"
    print(f"total: {tot['tensors']} tensors, {tot['elements']:,} elements, {100 * tot['density']:.2f}% nonzero, "
          f"file {tot['file_bytes']:,} bytes vs fp32 {tot['fp32_bytes']:,} bytes: {ratio}", file=out)
    user = {k: v for k, v in report["metadata"].items()}
    if user:
        print("metadata: " + printable(json.dumps(user, sort_keys=True, ensure_ascii=False)), file=out)


def cmd_inspect(args) -> int:
    report = inspect_report(args.file)
    if args.plot:
        from .plot import plot_file  # optional extra (matplotlib)

        plot_file(args.file, args.plot)
        report["plot"] = args.plot
    if args.json:
        json.dump(report, sys.stdout, indent=2, ensure_ascii=True)
        print()
    else:
        _print_inspect(report, sys.stdout)
    return EXIT_OK


def cmd_verify(args) -> int:
    with open_file(args.file) as reader:
        names = reader.verify()
        version = getattr(reader, "version", ("sharded", f"{len(getattr(reader, 'shards', list)())} files"))
    result = {"file": os.fspath(args.file), "ok": True, "tensors": len(names), "format_version": f"{version[0]}.{version[1]}"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"OK: {printable(os.fspath(args.file))}: {len(names)} tensors decoded, every checksum and size verified")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, seed=args.seed, progress=not args.json)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_inspect(report["inspect"], sys.stdout)
        print(f"written: {printable(report['path'])}")
    return EXIT_OK


def cmd_reproduce(args) -> int:
    try:
        from .torch.reproduce import run
    except ImportError as exc:
        print(f"dcformat reproduce needs PyTorch: pip install 'dcformat[torch]' ({exc})", file=sys.stderr)
        return EXIT_USAGE
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcformat", description="Deep-Compressed neural-network weight files: inspect, verify, reproduce.")
    parser.add_argument("--version", action="version", version=f"dcformat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("inspect", help="list the tensors of a file with their encodings and sizes",
                       description="Per tensor: name, shape, dtype, encoding, density, coded bits per stored code and gap, stored bytes, "
                                   "and the ratio against fp32; then totals. Names are printed with control characters escaped.")
    p.add_argument("file", help="a .dcf file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="also draw histograms and sizes per layer (needs matplotlib)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="decode every tensor and check every checksum and size",
                       description="Exit status 0 when the file is valid, 1 with a message naming the bad field when it is not.")
    p.add_argument("file", help="a .dcf file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_verify)

    from .commands import compress as compress_command
    from .commands import convert as convert_command

    convert_command.register(sub)
    compress_command.register(sub)

    p = sub.add_parser("demo", help="compress a sample set of tensors, write a file and inspect it")
    p.add_argument("--out", default="out", help="folder for demo.dcf (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", help="reproduce the paper's LeNet results on MNIST (needs PyTorch)",
                       description="Train, prune, quantize, fine-tune and write a LeNet, reload the written file, evaluate it, "
                                   "and print the paper's table beside the measured one. Sizes are measured from the file.")
    p.add_argument("network", choices=["lenet-300-100", "lenet-5"])
    p.add_argument("--data", default=None, help="folder with the four MNIST IDX files, gzipped or not (default: $DCFORMAT_MNIST or ../shared/data/mnist)")
    p.add_argument("--out", default="out", help="folder for the written .dcf and the JSON result (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or stage lines")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DCFormatError as exc:
        print(f"dcformat {args.command}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_BAD_FILE
    except OSError as exc:
        print(f"dcformat {args.command}: {exc.strerror or exc}: {printable(str(exc.filename or ''))}", file=sys.stderr)
        return EXIT_BAD_FILE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
