"""``dcformat demo``: compress a sample set of tensors the Deep Compression way, write, inspect.

The tensors are synthetic (Laplacian weights, like trained layers) so the demo needs no
data and no torch; ``dcformat reproduce`` runs the real pipeline on MNIST.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..io.writers import save_file
from ..progress import progress
from ..quantize import quantize
from .common import EXIT_OK, printable
from .inspect import inspect_report, print_inspect

#: (name, shape, code bits, fraction kept): LeNet-5-like layers with the paper's settings.
SAMPLE_LAYERS = [
    ("conv1.weight", (20, 1, 5, 5), 8, 0.66),
    ("conv2.weight", (50, 20, 5, 5), 8, 0.12),
    ("fc1.weight", (500, 800), 5, 0.08),
    ("fc2.weight", (10, 500), 5, 0.19),
]


def sample_tensors(seed: int = 0, *, progress_bar: bool = False) -> dict:
    """Pruned (by magnitude) and quantized sample layers, plus their raw biases."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape, bits, kept in progress(SAMPLE_LAYERS, enabled=progress_bar, desc="compressing"):
        weight = rng.laplace(scale=0.05, size=shape).astype(np.float32)
        threshold = np.quantile(np.abs(weight), 1.0 - kept)
        weight[np.abs(weight) < threshold] = 0.0
        tensors[name] = quantize(weight, bits=bits)
        tensors[name.replace("weight", "bias")] = rng.normal(scale=0.01, size=shape[0]).astype(np.float32)
    return tensors


def run_demo(out_dir, *, seed: int = 0, progress: bool = True) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "demo.dcf")
    tensors = sample_tensors(seed, progress_bar=progress)
    save_file(tensors, path, metadata={"demo": "synthetic Laplacian layers, magnitude-pruned, 8-bit conv / 5-bit fc", "seed": seed})
    return {"path": path, "inspect": inspect_report(path)}


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="compress a sample set of tensors, write a file and inspect it")
    p.add_argument("--out", default="out", help="folder for demo.dcf (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    report = run_demo(args.out, seed=args.seed, progress=not args.json)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_inspect(report["inspect"], sys.stdout)
        print(f"written: {printable(report['path'])}")
    return EXIT_OK
