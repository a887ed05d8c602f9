"""``dcformat verify FILE``: decode everything, check every checksum, size and padding byte."""

from __future__ import annotations

import json
import os

from ..io.loading import open_file
from .common import EXIT_OK, printable


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="decode every tensor and check every checksum and size",
        description="Exit status 0 when the file is valid, 1 with a message naming the bad field when it is not.",
    )
    p.add_argument("file", help="a .dcf file, or a sharded model's model.dcf.index.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    with open_file(args.file) as reader:
        names = reader.verify()
        version = getattr(reader, "version", ("sharded", f"{len(getattr(reader, 'shards', list)())} files"))
    result = {"file": os.fspath(args.file), "ok": True, "tensors": len(names), "format_version": f"{version[0]}.{version[1]}"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"OK: {printable(os.fspath(args.file))}: {len(names)} tensors decoded, every checksum and size verified")
    return EXIT_OK
