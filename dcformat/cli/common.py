"""What every subcommand shares: exit codes, escaping names read from files, tables."""

from __future__ import annotations

import json
import os
import sys

from ..hf.folder import RECORD_NAME

#: Exit codes of every subcommand.
EXIT_OK = 0
EXIT_BAD_FILE = 1  # a file (or an input) is invalid, or a library error occurred
EXIT_USAGE = 2  # wrong arguments, missing data, or an optional dependency is missing
EXIT_TARGETS_MISSED = 3  # ``reproduce`` ran to the end but missed one of the paper's targets
EXIT_INTERRUPTED = 130
EXIT_CLOSED_OUTPUT = 141  # the reader of standard output closed it (128 + SIGPIPE, as a shell reports)


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


def print_table(rows: list[tuple[str, ...]], *, left: int, out) -> None:
    """``rows`` (the first is the header) in aligned columns, the first ``left`` of them
    flush left and the rest flush right, with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_json(report) -> int:
    """``--json``: the report on stdout, indented, ASCII only (names escaped); the exit status for success."""
    json.dump(report, sys.stdout, indent=2, ensure_ascii=True)
    print()
    return EXIT_OK


def add_work_options(parser, *, threads: str, report: str = "report") -> None:
    """The options of the commands that work through a model and report on it: ``--threads N``
    (``threads`` says what they do), ``--json`` and ``--no-progress``."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=threads)
    parser.add_argument("--json", action="store_true", help=f"print the {report} as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def bad_threads(command: str, threads: int | None) -> bool:
    """True (and a line on stderr) when ``--threads`` was given and is below 1."""
    if threads is not None and threads < 1:
        print(f"dcformat {command}: --threads must be at least 1, got {threads}", file=sys.stderr)
        return True
    return False


def print_folder_summary(record: dict, out) -> None:
    """What a folder command wrote besides the weights: the files carried over and left out."""
    carried, left_out = record["carried"], record["left_out"]
    print(
        f"folder {printable(record['folder'])}: {', '.join(map(printable, record['weights']['files']))}, "
        f"{len(carried)} file{'' if len(carried) == 1 else 's'} carried over unchanged ({sum(c['bytes'] for c in carried.values()):,} bytes)"
        + (f", {RECORD_NAME} records what was done" if os.path.isfile(os.path.join(record["folder"], RECORD_NAME)) else ""),
        file=out,
    )
    for name, why in left_out.items():
        print(f"left out: {printable(name)}: {why}", file=out)
