"""What every subcommand shares: exit codes, escaping names read from files, tables."""

from __future__ import annotations

#: Exit codes of every subcommand.
EXIT_OK = 0
EXIT_BAD_FILE = 1  # a file (or an input) is invalid, or a library error occurred
EXIT_USAGE = 2  # wrong arguments, missing data, or an optional dependency is missing
EXIT_TARGETS_MISSED = 3  # ``reproduce`` ran to the end but missed one of the paper's targets
EXIT_INTERRUPTED = 130


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
