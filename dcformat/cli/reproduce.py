"""``dcformat reproduce NETWORK``: the paper's LeNet results on MNIST (``dcformat.paper``)."""

from __future__ import annotations

import sys

from .common import EXIT_USAGE

#: The networks ``dcformat.paper.reproduce.RECIPES`` holds, listed here so that ``--help``
#: works without PyTorch; a test pins the two lists together.
NETWORKS = ("lenet-300-100", "lenet-5")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="reproduce the paper's LeNet results on MNIST (needs PyTorch)",
        description="Train, prune, quantize, fine-tune and write a LeNet, reload the written file, evaluate it, and print the "
                    "paper's table beside the measured one. Sizes are measured from the file. Exit status: 0 when every "
                    "target is met, 3 when one is missed (the file and the result are written either way), 2 when MNIST "
                    "or PyTorch is missing.")
    p.add_argument("network", choices=NETWORKS)
    p.add_argument("--data", default=None,
                   help="folder with the four MNIST IDX files, gzipped or not (default: $DCFORMAT_MNIST)")
    p.add_argument("--out", default="out", help="folder for the written .dcf and the JSON result (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or stage lines")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from ..paper.reproduce import run as reproduce
    except ImportError as exc:
        print(f"dcformat reproduce needs PyTorch: pip install 'dcformat[torch]' ({exc})", file=sys.stderr)
        return EXIT_USAGE
    return reproduce(args.network, data_dir=args.data, out_dir=args.out, seed=args.seed, threads=args.threads,
                     as_json=args.json, progress=args.progress)
