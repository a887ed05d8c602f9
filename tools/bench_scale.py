"""Benchmark at scale: compress and load synthetic models of 100M and 1B parameters (by hand).

    python tools/bench_scale.py                      # 100M and 1B parameters
    python tools/bench_scale.py --sizes 100M 1B 2B   # add a 2B model if memory allows
    python tools/bench_scale.py --sizes 10M 100M --json

Each model is a stack of 4096x4096 float32 matrices (and one remainder) of Laplacian
weights, generated tensor by tensor from a seed. Every phase runs in a fresh subprocess
that reports its own wall time and peak resident memory (ru_maxrss), so phases do not
inherit each other's memory:

- write_safetensors: the dense fp32 model as safetensors shards of about 512 MiB plus
  ``model.safetensors.index.json``, as a model hub would serve it (one shard in memory);
- compress: what ``dcformat compress model.safetensors.index.json out/ --max-shard-size
  256MiB`` does (:func:`dcformat.compress.compress_file`: plan, then quantize and write
  tensor by tensor; default settings, 4.5 bits per weight, or ``--bits``);
- load_dcf_1thread / load_dcf: ``dcformat.load_file`` of the shard index with 1 thread and
  with every core;
- decode_dcf_1thread / decode_dcf: every tensor decoded and dropped, so memory is
  recycled: the decoder's own cost, without the first touch of the model's memory;
- load_safetensors: the dense shards through safetensors' numpy API (the baseline a user
  would otherwise have), when the ``safetensors`` package is installed.

Loads are repeated (``--repeat``, alternating 1 thread, all threads and safetensors) and
the medians reported. Right before each compress and load phase a throwaway process
touches as much memory as that phase will use (``--no-warm`` turns this off). This
machine is a virtual machine whose host backs guest memory lazily and takes freed pages
back a second or two after they are freed (free page reporting): measured here, filling
1 GiB costs 0.15-0.23 s with memory freed just before, 1.0-3.7 s after 2-10 s idle.
Without the warm-up each phase pays the host's cost for its output at a rate that depends
on how long ago other phases freed memory. The warm-up is not counted in the phase's time,
and it only partly helps a phase that runs for many seconds (the host takes back what the
phase has not reached yet), which favours short phases: read the 1B/100M load ratios with
that in mind, beside the decode-only ones.

It prints the 1B/100M time ratios (target: at most 11x, i.e. linear) and the speed-up of the
threaded load over one thread (target: at least 1.6x on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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

SAFETENSORS_SHARD_BYTES = 512 << 20
DCF_SHARD_BYTES = 256 << 20


def phase_write_safetensors(folder: str, parameters: int, seed: int) -> dict:
    """Dense safetensors shards and their index, written one shard at a time."""
    from dcformat.interop.convert import write_safetensors

    os.makedirs(folder, exist_ok=True)
    groups, current, size = [], [], 0
    for i, shape in enumerate(model_shapes(parameters)):
        if current and size + 4 * shape[0] * shape[1] > SAFETENSORS_SHARD_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append((i, shape))
        size += 4 * shape[0] * shape[1]
    groups.append(current)
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors({f"layers.{i:04d}.weight": layer(seed, i, shape) for i, shape in group}, os.path.join(folder, shard))
        weight_map.update({f"layers.{i:04d}.weight": shard for i, _ in group})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 4 * parameters}, "weight_map": weight_map}, f)
    return {"file_bytes": sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)), "shards": len(groups)}


def phase_compress(source_index: str, out_folder: str, bits) -> dict:
    from dcformat.compress import compress_file

    settings = {} if bits is None else {"bits": bits}
    report = compress_file(source_index, out_folder, max_shard_bytes=DCF_SHARD_BYTES, **settings)
    return {
        "file_bytes": report["totals"]["file_bytes"],
        "shards": len(report["shards"]),
        "quantized": report["totals"]["quantized"],
        "bits_per_weight": report["totals"]["bits_per_weight"],
        "plan_seconds": report["seconds"]["plan"],
        "write_seconds": report["seconds"]["quantize_and_write"],
    }


def phase_load_dcf(index: str, threads: int) -> dict:
    import dcformat

    tensors = dcformat.load_file(index, threads=threads)
    return {"tensors": len(tensors), "decoded_bytes": int(sum(t.nbytes for t in tensors.values()))}


def phase_decode_dcf(index: str, threads: int) -> dict:
    """Decode every tensor and drop it: the decoder's work without holding the model (memory is recycled)."""
    import dcformat
    from dcformat.parallel import map_threads

    with dcformat.open(index) as f:
        sizes = map_threads(lambda name: f.get(name).nbytes, f.keys(), threads)
    return {"tensors": len(sizes), "decoded_bytes": int(sum(sizes))}


def phase_load_safetensors(folder: str) -> dict:
    from safetensors.numpy import load_file

    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(folder, name)))
    return {"tensors": len(tensors), "decoded_bytes": int(sum(t.nbytes for t in tensors.values()))}


def phase_warm(nbytes: int) -> dict:
    """Touch ``nbytes`` of fresh memory once (see the module's docstring), then exit."""
    block = np.ones(nbytes // 8, dtype=np.float64)
    return {"touched_bytes": int(block.nbytes)}


PHASES = {
    "warm": phase_warm,
    "compress": phase_compress,
    "load_dcf": phase_load_dcf,
    "decode_dcf": phase_decode_dcf,
    "write_safetensors": phase_write_safetensors,
    "load_safetensors": phase_load_safetensors,
}


def run_phase(name: str, *args, module: str = "bench_scale") -> dict:
    """Run one phase (of ``module``'s ``PHASES``, a script in tools/) in a fresh interpreter;
    returns its result, wall time and peak RSS."""
    code = (
        "import importlib, json, resource, sys, time; sys.path.insert(0, sys.argv[1]); b = importlib.import_module(sys.argv[4]); "
        "t = time.perf_counter(); r = b.PHASES[sys.argv[2]](*json.loads(sys.argv[3])); "
        "r['seconds'] = time.perf_counter() - t; "
        "r['peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; print(json.dumps(r))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), name, json.dumps(list(args)), module],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(parameters: int, folder: str, *, seed: int, bits, threads: int, baseline: bool, repeat: int, warm: bool, progress) -> dict:
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def measured(phase: str, *args) -> dict:
        """The phase, right after a process touched about the memory it will use (see the docstring)."""
        if warm:
            need = 4 * parameters * 1.15 if phase.startswith("load") else 2 << 30
            run_phase("warm", int(min(need + (256 << 20), 0.7 * available)))
        return run_phase(phase, *args)

    dense = os.path.join(folder, f"dense-{parameters}")
    out = os.path.join(folder, f"dcf-{parameters}")
    index = os.path.join(out, "model.dcf.index.json")
    row = {"parameters": parameters, "fp32_bytes": 4 * parameters}
    progress(f"{parameters:,} parameters: write the dense safetensors shards")
    row["write_safetensors"] = run_phase("write_safetensors", dense, parameters, seed)
    progress(f"{parameters:,} parameters: compress")
    row["compress"] = measured("compress", os.path.join(dense, "model.safetensors.index.json"), out, bits)
    samples: dict[str, list[dict]] = {"load_dcf_1thread": [], "load_dcf": [], "load_safetensors": [], "decode_dcf_1thread": [], "decode_dcf": []}
    for k in range(repeat):  # alternating, so drifting load on the machine hits every variant alike
        progress(
            f"{parameters:,} parameters: load with 1 thread, with {threads}" + (", with safetensors" if baseline else "") + f" ({k + 1}/{repeat})"
        )
        samples["load_dcf_1thread"].append(measured("load_dcf", index, 1))
        samples["load_dcf"].append(measured("load_dcf", index, threads))
        if baseline:
            samples["load_safetensors"].append(measured("load_safetensors", dense))
        samples["decode_dcf_1thread"].append(run_phase("decode_dcf", index, 1))
        samples["decode_dcf"].append(run_phase("decode_dcf", index, threads))
    for phase, runs in samples.items():
        if runs:
            row[phase] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "samples_seconds": [r["seconds"] for r in runs],
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            }
    shutil.rmtree(dense)
    shutil.rmtree(out)
    row["ratio_vs_fp32"] = row["fp32_bytes"] / row["compress"]["file_bytes"]
    row["threaded_speedup"] = row["load_dcf_1thread"]["seconds"] / row["load_dcf"]["seconds"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100M", "1B"], help="model sizes, e.g. 100M 1B 2B")
    parser.add_argument(
        "--bits", type=int, default=None, help="fixed k-means bits for every matrix (default: the pipeline's 4.5 bits per weight target)"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads of the parallel load (default: all usable CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the safetensors baseline")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each load, medians reported (default 3)")
    parser.add_argument("--no-warm", action="store_true", help="no memory warm-up before the phases (see above)")
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
    sizes = [parse_size(size) for size in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for size in sizes:
            rows.append(
                bench_model(
                    size,
                    folder,
                    seed=args.seed,
                    bits=args.bits,
                    threads=threads,
                    baseline=baseline,
                    repeat=max(1, args.repeat),
                    warm=not args.no_warm,
                    progress=progress,
                )
            )
    report = {"threads": threads, "bits": args.bits, "warm_up": not args.no_warm, "repeat": args.repeat, "models": rows}
    by_size = {r["parameters"]: r for r in rows}
    if 10**8 in by_size and 10**9 in by_size:
        small, large = by_size[10**8], by_size[10**9]
        report["scaling_1B_over_100M"] = {
            phase: large[phase]["seconds"] / small[phase]["seconds"]
            for phase in ("compress", "load_dcf_1thread", "load_dcf", "decode_dcf_1thread", "decode_dcf")
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    gib = 2**30
    print(
        f"\n{'parameters':>14} {'file':>10} {'x fp32':>7} {'compress':>10} {'peak':>8} {'load 1t':>9} {'load':>8} {'peak':>8} "
        f"{'speedup':>8} {'st load':>8} {'st peak':>8}"
    )
    for r in rows:
        st = r.get("load_safetensors")
        print(
            f"{r['parameters']:>14,} {r['compress']['file_bytes'] / 2**20:>8.1f}Mi {r['ratio_vs_fp32']:>7.2f} "
            f"{r['compress']['seconds']:>9.1f}s {r['compress']['peak_rss_bytes'] / gib:>6.2f}Gi "
            f"{r['load_dcf_1thread']['seconds']:>8.2f}s {r['load_dcf']['seconds']:>7.2f}s {r['load_dcf']['peak_rss_bytes'] / gib:>6.2f}Gi "
            f"{r['threaded_speedup']:>7.2f}x " + (f"{st['seconds']:>7.2f}s {st['peak_rss_bytes'] / gib:>6.2f}Gi" if st else "       -        -")
        )
    print(f"\nloads: medians of {max(1, args.repeat)} runs; samples (s):")
    for r in rows:
        spread = "; ".join(
            f"{phase} {', '.join(f'{x:.2f}' for x in r[phase]['samples_seconds'])}"
            for phase in ("load_dcf_1thread", "load_dcf", "load_safetensors", "decode_dcf_1thread", "decode_dcf")
            if phase in r
        )
        c = r["compress"]
        print(f"  {r['parameters']:,}: {spread}; compress = plan {c['plan_seconds']:.1f} + quantize/write {c['write_seconds']:.1f}")
    if "scaling_1B_over_100M" in report:
        s = report["scaling_1B_over_100M"]
        print(
            f"\n1B / 100M time: compress {s['compress']:.2f}x, load (1 thread) {s['load_dcf_1thread']:.2f}x, "
            f"load ({threads} threads) {s['load_dcf']:.2f}x, decode only (1 thread) {s['decode_dcf_1thread']:.2f}x, "
            f"decode only ({threads} threads) {s['decode_dcf']:.2f}x  (target <= 11x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
