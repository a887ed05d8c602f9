"""The ``dcformat`` command line: a thin layer of argparse subcommands over the library.

One module per subcommand, each with ``register(subparsers)`` and ``run(args) -> int``.
Every subcommand that reports has ``--json``. Errors in files become one clear line on
stderr and a non-zero exit status, never a traceback. Nothing in the library imports
this package.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..errors import DCFormatError
from ..interop.formats import format_of
from . import compress, convert, demo, distill, inspect, reproduce, verify
from .common import EXIT_BAD_FILE, EXIT_CLOSED_OUTPUT, EXIT_INTERRUPTED, printable

SUBCOMMANDS = (inspect, verify, convert, compress, distill, demo, reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcformat", description="Deep-Compressed neural-network weight files: inspect, verify, convert, compress, distill, reproduce the paper."
    )
    parser.add_argument("--version", action="version", version=f"dcformat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`dcformat inspect big.dcf | head`): stop quietly, as Unix tools do
        _discard_stdout()
        return EXIT_CLOSED_OUTPUT
    except DCFormatError as exc:
        print(f"dcformat {args.command}: {printable(str(exc))}{_other_format_hint(args, exc)}", file=sys.stderr)
        return EXIT_BAD_FILE
    except OSError as exc:
        print(f"dcformat {args.command}: {exc.strerror or exc}: {printable(str(exc.filename or ''))}", file=sys.stderr)
        return EXIT_BAD_FILE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _other_format_hint(args, exc: DCFormatError) -> str:
    """For ``inspect`` or ``verify`` of a file that is not a ``.dcf`` but has the extension of a
    format ``convert`` reads: what to run instead."""
    path = getattr(args, "file", None)
    if getattr(exc, "field", None) != "header.magic" or path is None:
        return ""
    try:
        fmt = format_of(path)
    except DCFormatError:
        return ""
    if fmt == "dcf":
        return ""
    makers = "`dcformat compress` or `dcformat convert`" if fmt == "safetensors" else "`dcformat convert`"
    return f" ({printable(os.path.basename(path))} is named as {fmt}: {makers} makes a .dcf of it)"


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit, into the closed pipe,
    raises nothing more (the Python documentation's advice on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (captured): nothing to flush into the pipe
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
