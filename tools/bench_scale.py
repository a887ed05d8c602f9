"""Benchmark at scale: compress and load synthetic models of 100M and 1B parameters (by hand).

    python tools/bench_scale.py                      # 100M and 1B parameters
    python tools/bench_scale.py --sizes 100M 1B 2B   # add a 2B model if memory allows
    python tools/bench_scale.py --sizes 10M 100M --json

Each model is a stack of 4096x4096 float32 matrices (and one remainder) of Laplacian
weights, generated tensor by tensor from a seed, so no phase ever holds the dense model
unless it must (loading it). Every phase runs in a fresh subprocess that reports its own
wall time and peak resident memory (ru_maxrss), so phases do not inherit each other's
memory:

- compress: generate, k-means quantize (5 bits) and write a .dcf with the streaming writer;
- load_dcf_1thread / load_dcf: ``dcformat.load_file`` with 1 thread and with every core;
- write_safetensors / load_safetensors: the dense fp32 model through safetensors' numpy API
  (the baseline a user would otherwise have), when the ``safetensors`` package is installed.

It prints the 1B/100M time ratios (target: at most 11x, i.e. linear) and the speed-up of the
threaded load over one thread (target: at least 1.6x on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SIDE = 4096
UNITS = {"K": 10**3, "M": 10**6, "B": 10**9}


def parse_size(text: str) -> int:
    return int(float(text[:-1]) * UNITS[text[-1].upper()]) if text[-1].upper() in UNITS else int(text)


def model_shapes(parameters: int) -> list[tuple[int, int]]:
    """4096x4096 matrices, then one smaller matrix for the remainder."""
    full, rest = divmod(parameters, SIDE * SIDE)
    shapes = [(SIDE, SIDE)] * full
    if rest:
        shapes.append((-(-rest // SIDE), SIDE))
    return shapes


def layer(seed: int, index: int, shape) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    return rng.laplace(scale=0.02, size=shape).astype(np.float32)


# -- phases (each runs in its own subprocess) ---------------------------------------------

def phase_compress(path: str, parameters: int, seed: int, bits: int) -> dict:
    import dcformat

    with dcformat.writer(path, metadata={"synthetic": f"{parameters} Laplacian parameters", "bits": bits}) as out:
        for i, shape in enumerate(model_shapes(parameters)):
            out.add(f"layers.{i:04d}.weight", dcformat.quantize(layer(seed, i, shape), bits=bits))
    return {"file_bytes": os.path.getsize(path)}


def phase_load_dcf(path: str, threads: int) -> dict:
    import dcformat

    tensors = dcformat.load_file(path, threads=threads)
    return {"tensors": len(tensors), "decoded_bytes": int(sum(t.nbytes for t in tensors.values()))}


def phase_write_safetensors(path: str, parameters: int, seed: int) -> dict:
    from safetensors.numpy import save_file

    tensors = {f"layers.{i:04d}.weight": layer(seed, i, shape) for i, shape in enumerate(model_shapes(parameters))}
    save_file(tensors, path)
    return {"file_bytes": os.path.getsize(path)}


def phase_load_safetensors(path: str) -> dict:
    from safetensors.numpy import load_file

    tensors = load_file(path)
    return {"tensors": len(tensors), "decoded_bytes": int(sum(t.nbytes for t in tensors.values()))}


PHASES = {"compress": phase_compress, "load_dcf": phase_load_dcf, "write_safetensors": phase_write_safetensors,
          "load_safetensors": phase_load_safetensors}


def run_phase(name: str, *args) -> dict:
    """Run one phase in a fresh interpreter; returns its result, wall time and peak RSS."""
    code = ("import json, resource, sys, time; sys.path.insert(0, sys.argv[1]); import bench_scale as b; "
            "t = time.perf_counter(); r = b.PHASES[sys.argv[2]](*json.loads(sys.argv[3])); "
            "r['seconds'] = time.perf_counter() - t; "
            "r['peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), name, json.dumps(list(args))],
                          capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": ROOT})
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(parameters: int, folder: str, *, seed: int, bits: int, threads: int, baseline: bool, progress) -> dict:
    path = os.path.join(folder, f"model-{parameters}.dcf")
    row = {"parameters": parameters, "fp32_bytes": 4 * parameters}
    progress(f"{parameters:,} parameters: compress")
    row["compress"] = run_phase("compress", path, parameters, seed, bits)
    progress(f"{parameters:,} parameters: load, 1 thread")
    row["load_dcf_1thread"] = run_phase("load_dcf", path, 1)
    progress(f"{parameters:,} parameters: load, {threads} threads")
    row["load_dcf"] = run_phase("load_dcf", path, threads)
    os.unlink(path)
    if baseline:
        dense = os.path.join(folder, f"model-{parameters}.safetensors")
        progress(f"{parameters:,} parameters: safetensors baseline")
        row["write_safetensors"] = run_phase("write_safetensors", dense, parameters, seed)
        row["load_safetensors"] = run_phase("load_safetensors", dense)
        os.unlink(dense)
    row["ratio_vs_fp32"] = row["fp32_bytes"] / row["compress"]["file_bytes"]
    row["threaded_speedup"] = row["load_dcf_1thread"]["seconds"] / row["load_dcf"]["seconds"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100M", "1B"], help="model sizes, e.g. 100M 1B 2B")
    parser.add_argument("--bits", type=int, default=5, help="code bits per weight (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="threads of the parallel load (default: all usable CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the safetensors baseline")
    parser.add_argument("--folder", default=None, help="where the temporary files go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from dcformat.parallel import resolve_threads

    threads = resolve_threads(args.threads)
    try:
        import safetensors  # noqa: F401

        baseline = not args.no_baseline
    except ImportError:
        baseline = False
    progress = (lambda message: None) if args.json else (lambda message: print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for size in args.sizes:
            rows.append(bench_model(parse_size(size), folder, seed=args.seed, bits=args.bits, threads=threads, baseline=baseline, progress=progress))
    report = {"threads": threads, "bits": args.bits, "models": rows}
    by_size = {r["parameters"]: r for r in rows}
    if 10**8 in by_size and 10**9 in by_size:
        small, large = by_size[10**8], by_size[10**9]
        report["scaling_1B_over_100M"] = {phase: large[phase]["seconds"] / small[phase]["seconds"]
                                          for phase in ("compress", "load_dcf_1thread", "load_dcf")}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    gib = 2**30
    print(f"\n{'parameters':>14} {'file':>10} {'x fp32':>7} {'compress':>10} {'peak':>8} {'load 1t':>9} {'load':>8} {'peak':>8} "
          f"{'speedup':>8} {'st load':>8} {'st peak':>8}")
    for r in rows:
        st = r.get("load_safetensors")
        print(f"{r['parameters']:>14,} {r['compress']['file_bytes'] / 2**20:>8.1f}Mi {r['ratio_vs_fp32']:>7.2f} "
              f"{r['compress']['seconds']:>9.1f}s {r['compress']['peak_rss_bytes'] / gib:>6.2f}Gi "
              f"{r['load_dcf_1thread']['seconds']:>8.2f}s {r['load_dcf']['seconds']:>7.2f}s {r['load_dcf']['peak_rss_bytes'] / gib:>6.2f}Gi "
              f"{r['threaded_speedup']:>7.2f}x " + (f"{st['seconds']:>7.2f}s {st['peak_rss_bytes'] / gib:>6.2f}Gi" if st else "       -        -"))
    if "scaling_1B_over_100M" in report:
        s = report["scaling_1B_over_100M"]
        print(f"\n1B / 100M time: compress {s['compress']:.2f}x, load (1 thread) {s['load_dcf_1thread']:.2f}x, "
              f"load ({threads} threads) {s['load_dcf']:.2f}x  (target <= 11x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
