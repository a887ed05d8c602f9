"""``dcformat verify FILE``: decode everything, check every checksum, size and padding byte."""

from __future__ import annotations

import json
import os
import sys

from ..hf.folder import check_carried, is_model_folder, open_folder
from ..io.loading import open_file
from .common import EXIT_OK, EXIT_USAGE, add_work_options, bad_threads, printable


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="decode every tensor and check every checksum and size",
        description="Exit status 0 when the file is valid, 1 with a message naming the bad field when it is not. "
        "For a model folder: its .dcf weights, and every file dcformat.json lists against its recorded SHA-256.",
    )
    p.add_argument("file", help="a .dcf file, a sharded model's model.dcf.index.json, or a model folder dcformat wrote")
    add_work_options(p, threads="threads to decode each tensor on (default: $DCFORMAT_THREADS, else every core)", report="result")
    p.set_defaults(func=run)


def run(args) -> int:
    if bad_threads("verify", args.threads):
        return EXIT_USAGE
    if is_model_folder(args.file):
        return _run_folder(args)
    with open_file(args.file) as reader:
        names = reader.verify(threads=args.threads, progress=_progress(args))
        version = getattr(reader, "version", ("sharded", f"{len(getattr(reader, 'shards', list)())} files"))
    result = {"file": os.fspath(args.file), "ok": True, "tensors": len(names), "format_version": f"{version[0]}.{version[1]}"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"OK: {printable(os.fspath(args.file))}: {len(names)} tensors decoded, every checksum and size verified")
    return EXIT_OK


def _run_folder(args) -> int:
    folder = open_folder(args.file)
    if folder.kind != "dcf":
        print(f"dcformat verify: {printable(folder.path)} holds safetensors weights, not .dcf: nothing of dcformat's to verify", file=sys.stderr)
        return EXIT_USAGE
    with open_file(folder.weights) as reader:
        names = reader.verify(threads=args.threads, progress=_progress(args))
    checked = check_carried(folder) if folder.record is not None else []
    result = {"file": os.fspath(args.file), "ok": True, "tensors": len(names), "weights": folder.weight_files, "files_checked": len(checked)}
    if args.json:
        print(json.dumps(result))
    else:
        count = len(checked)
        record = (
            f"{count} file{'' if count == 1 else 's'} match{'es' if count == 1 else ''} dcformat.json"
            if folder.record is not None
            else "no dcformat.json to check the other files against"
        )
        print(f"OK: {printable(os.fspath(args.file))}: {len(names)} tensors decoded, every checksum and size verified; {record}")
    return EXIT_OK


def _progress(args) -> bool:
    """A bar while tensors are decoded, on a terminal only (a check in a script or CI log
    stays one line), and neither with ``--json`` nor ``--no-progress``."""
    return not (args.json or args.no_progress) and sys.stderr.isatty()
