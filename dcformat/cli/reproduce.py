"""``dcformat reproduce NETWORK``: the paper's LeNet results on MNIST (``dcformat.paper``)."""

from __future__ import annotations

import json
import sys

from .common import EXIT_OK, EXIT_TARGETS_MISSED, EXIT_USAGE

#: The networks ``dcformat.paper.reproduce.RECIPES`` holds, listed here so that ``--help``
#: works without PyTorch; a test pins the two lists together.
NETWORKS = ("lenet-300-100", "lenet-5")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's LeNet results on MNIST (needs PyTorch)",
        description="Train, prune, quantize, fine-tune and write a LeNet, reload the written file, evaluate it, and print the "
        "paper's table beside the measured one. Sizes are measured from the file. Exit status: 0 when every "
        f"target is met, {EXIT_TARGETS_MISSED} when one is missed (the file and the result are written either way), "
        f"{EXIT_USAGE} when MNIST or PyTorch is missing.",
    )
    p.add_argument("network", choices=NETWORKS)
    p.add_argument("--data", default=None, help="folder with the four MNIST IDX files, gzipped or not (default: $DCFORMAT_MNIST)")
    p.add_argument("--out", default="out", help="folder for the written .dcf and the JSON result (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or stage lines")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from ..paper import reproduce
        from ..paper.mnist import MNISTNotFoundError
    except ImportError as exc:
        print(f"dcformat reproduce needs PyTorch: pip install 'dcformat[torch]' ({exc})", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = reproduce.run(args.network, data_dir=args.data, out_dir=args.out, seed=args.seed, threads=args.threads, progress=args.progress)
    except MNISTNotFoundError as error:
        print(f"dcformat reproduce: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result, indent=2) if args.json else reproduce.format_result(result))
    return EXIT_OK if all(result["targets_met"].values()) else EXIT_TARGETS_MISSED
