"""The demo job: compress a sample set of tensors the Deep Compression way, write, inspect.

The tensors are synthetic (Laplacian weights, like trained layers) so the demo needs no
data and no torch; ``dcformat reproduce`` runs the real pipeline on MNIST.
"""

from __future__ import annotations

import os

import numpy as np

from .container import save_file
from .progress import progress
from .quantize import quantize

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
    from .cli import inspect_report

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "demo.dcf")
    tensors = sample_tensors(seed, progress_bar=progress)
    save_file(tensors, path, metadata={"demo": "synthetic Laplacian layers, magnitude-pruned, 8-bit conv / 5-bit fc", "seed": seed})
    return {"path": path, "inspect": inspect_report(path)}
