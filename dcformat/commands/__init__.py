"""Subcommands of the ``dcformat`` command line, one module each, each with ``register(subparsers)``."""


def print_table(rows: list[tuple[str, ...]], *, left: int, out) -> None:
    """``rows`` (the first is the header) in aligned columns, the first ``left`` of them
    flush left and the rest flush right, with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
