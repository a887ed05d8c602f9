"""Benchmark of the codec against the targets of the container and kernel issues (run by hand).

    python tools/bench_codec.py            # full run (a few minutes)
    python tools/bench_codec.py --quick    # smaller streams, fewer repeats
    python tools/bench_codec.py --json     # the figures as JSON

It pins itself to one CPU core (but for the thread-scaling part) and reports medians of
repeated runs, and ratios against baselines measured in the same run (this machine is
shared and noisy). Each dcformat figure is measured with the compiled kernels and with the
numpy kernels (``DCFORMAT_KERNELS=numpy``), side by side:

1. Huffman decode and encode speed, and bit-unpacking speed, in million symbols per
   second, on large streams (issue 12 targets: decode >= 600, encode >= 150).
2. Coded size against order-0 entropy (tables and jump tables included) and against
   zstd level 19, on streams of 200,000+ symbols: 5-bit and 8-bit codes of
   Laplacian weights, and the gaps of a random 10%-dense mask.
3. ``load_file`` of a 4096x4096 float32 layer, twice: as ``dcformat compress`` writes it
   at its default 4.5 bits per weight, and 10% dense with 5-bit codes; against a memory
   copy of the dense layer (the floor), safetensors' ``load_file`` of the dense layer
   (page cache) and zstd decompressing its raw bytes (targets: at most the safetensors
   time, and the 10%-dense layer at most half of it).
4. Decoding on two threads against one (not pinned; target >= 1.8x), for symbols and for
   float32 values (decoded into one array allocated beforehand: decoding only, not the
   first touch of fresh pages), in rounds kept only while no other process used the CPUs.
5. Peak memory of the 10%-dense decode (tracemalloc) against decoded bytes + file size.
6. CRC-32 (every load checks its payloads' checksums): zlib's against the extension's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib

import numpy as np
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dcformat
from dcformat import kernels
from dcformat.codecs import bitpack, huffman
from dcformat.compress.plan import compress_tensors
from dcformat.format import sparse as gaps

try:
    from safetensors import numpy as safetensors_numpy
except ImportError:  # pragma: no cover - the test extra installs it
    sys.exit("tools/bench_codec.py needs safetensors (pip install safetensors) for its baseline")

#: The kernels measured side by side: numpy always, compiled when built.
KERNEL_CHOICES = (("compiled",) if kernels._load()[0] is not None else ()) + ("numpy",)


def pin_one_core() -> str:
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        return f"pinned to core {sorted(os.sched_getaffinity(0))[0]}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 entropy of the whole stream, in bits."""
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum() * symbols.size)


def laplace_codes(rng, count: int, bits: int) -> np.ndarray:
    """Codes of Laplacian weights quantized by k-means (linear init) to 2**bits levels."""
    weights = rng.laplace(scale=0.05, size=count).astype(np.float32)
    return dcformat.quantize(weights, bits=bits).codes.astype(np.uint16)


def mask_gaps(rng, count: int, density: float, gap_bits: int) -> np.ndarray:
    """The gap symbols (fillers included) of a random mask with ``count`` nonzeros."""
    total = int(count / density)
    positions = np.sort(rng.choice(total, size=count, replace=False))
    wire_gaps, _ = gaps.with_fillers(gaps.true_gaps(positions), np.zeros(count, np.uint8), gap_bits, 0)
    return wire_gaps.astype(np.uint16)


@contextlib.contextmanager
def kernels_set(choice: str):
    """Run the body with ``DCFORMAT_KERNELS=choice``."""
    saved = os.environ.get(kernels.ENV_KERNELS)
    os.environ[kernels.ENV_KERNELS] = choice
    try:
        yield
    finally:
        if saved is None:
            del os.environ[kernels.ENV_KERNELS]
        else:
            os.environ[kernels.ENV_KERNELS] = saved


def each_kernel(fn, repeats: int) -> dict[str, float]:
    """Median seconds of ``fn`` under each kernel choice available here."""
    out = {}
    for choice in KERNEL_CHOICES:
        with kernels_set(choice):
            out[choice] = median_time(fn, repeats)
    return out


def bench_speed(rng, count: int, repeats: int) -> list[dict]:
    streams = {
        "codes 5-bit": (laplace_codes(rng, count, 5), 32),
        "codes 8-bit": (laplace_codes(rng, count, 8), 256),
        "gaps 10% dense, b=5": (mask_gaps(rng, count, 0.10, 5), 32),
    }
    rows = []
    for label, (symbols, alphabet) in streams.items():
        body = huffman.encode(symbols, alphabet)
        for choice in KERNEL_CHOICES:
            with kernels_set(choice):
                assert huffman.encode(symbols, alphabet) == body, (label, choice)
                assert np.array_equal(huffman.decode(body, symbols.size, alphabet), symbols), (label, choice)
        enc = each_kernel(lambda s=symbols, a=alphabet: huffman.encode(s, a), repeats)
        dec = each_kernel(lambda b=body, s=symbols, a=alphabet: huffman.decode(b, s.size, a), repeats)
        packed = bitpack.pack(symbols, bitpack.width_for(alphabet))
        unpack = each_kernel(lambda p=packed, s=symbols, a=alphabet: bitpack.unpack(p, s.size, bitpack.width_for(a)), repeats)
        row = {"stream": label, "symbols": int(symbols.size)}
        for choice in KERNEL_CHOICES:
            row[f"{choice}_huffman_decode_msym_s"] = symbols.size / dec[choice] / 1e6
            row[f"{choice}_huffman_encode_msym_s"] = symbols.size / enc[choice] / 1e6
            row[f"{choice}_bitpack_unpack_msym_s"] = symbols.size / unpack[choice] / 1e6
        rows.append(row)
    return rows


def bench_entropy(rng, count: int) -> list[dict]:
    streams = {
        "codes 5-bit": (laplace_codes(rng, count, 5), 32),
        "codes 8-bit": (laplace_codes(rng, count, 8), 256),
        "gaps 10% dense, b=4": (mask_gaps(rng, count, 0.10, 4), 16),
        "gaps 10% dense, b=5": (mask_gaps(rng, count, 0.10, 5), 32),
    }
    rows = []
    for label, (symbols, alphabet) in streams.items():
        entropy = entropy_bits(symbols)
        body = huffman.encode(symbols, alphabet)
        raw = symbols.astype(np.uint8 if alphabet <= 256 else np.uint16).tobytes()
        zstd19 = zstandard.ZstdCompressor(level=19).compress(raw)
        rows.append(
            {
                "stream": label,
                "symbols": int(symbols.size),
                "entropy_bits_per_symbol": entropy / symbols.size,
                "huffman_bits_per_symbol": 8 * len(body) / symbols.size,
                "huffman_over_entropy_pct": 100 * (8 * len(body) / entropy - 1),
                "zstd19_bits_per_symbol": 8 * len(zstd19) / symbols.size,
                "bitpack_bits_per_symbol": 8 * bitpack.packed_size(symbols.size, bitpack.width_for(alphabet)) / symbols.size,
            }
        )
    return rows


def bench_crc(rng, nbytes: int, repeats: int) -> dict:
    """CRC-32 of a buffer as every load checks its payloads: zlib's against the extension's
    (carry-less folding where the CPU has it), in GB/s, and that both agree."""
    data = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    row = {"bytes": nbytes, "zlib_gb_s": nbytes / median_time(lambda: zlib.crc32(data), repeats) / 1e9}
    native = kernels._load()[0]
    if native is not None:
        assert native.crc32(data) == zlib.crc32(data)
        row["compiled_gb_s"] = nbytes / median_time(lambda: native.crc32(data), repeats) / 1e9
    return row


def sparse_layer(rng, side: int):
    """10% dense, 5-bit k-means codes (the container issue's layer)."""
    weights = rng.laplace(scale=0.05, size=(side, side)).astype(np.float32)
    weights[np.abs(weights) < np.quantile(np.abs(weights), 0.90)] = 0
    return dcformat.quantize(weights, bits=5)


def compressed_layer(rng, side: int):
    """What ``dcformat compress`` writes for a Laplacian layer at its defaults (4.5 bits/weight)."""
    weights = rng.laplace(scale=0.05, size=(side, side)).astype(np.float32)
    tensors, _ = compress_tensors({"layer": weights}, seed=0)
    return tensors["layer"]


def bench_load(rng, side: int, repeats: int) -> dict:
    layers = {"compress default": compressed_layer(rng, side), "10% dense, 5-bit": sparse_layer(rng, side)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, q in layers.items():
            path, dense_path = os.path.join(folder, "layer.dcf"), os.path.join(folder, "layer.safetensors")
            dcformat.save_file({"layer": q}, path)
            expected = q.dequantize()
            safetensors_numpy.save_file({"layer": expected}, dense_path)
            for choice in KERNEL_CHOICES:
                with kernels_set(choice):
                    assert np.array_equal(dcformat.load_file(path, threads=1)["layer"], expected), choice
            frame = zstandard.ZstdCompressor(level=3).compress(expected.tobytes())
            dctx = zstandard.ZstdDecompressor()
            load = each_kernel(lambda p=path: dcformat.load_file(p, threads=1), repeats)
            copy_s = median_time(lambda e=expected: e.copy(), repeats)
            safetensors_s = median_time(lambda p=dense_path: safetensors_numpy.load_file(p), repeats)
            zstd_s = median_time(lambda d=dctx, f=frame: d.decompress(f), repeats)
            with dcformat.open(path) as f:
                info = f.info("layer")
            row = {
                "layer": label,
                "shape": [side, side],
                "bits_per_weight": 8 * os.path.getsize(path) / expected.size,
                "density": info.density,
                "file_bytes": os.path.getsize(path),
                "encoding": info.encoding,
                "codes_coder": info.codes_coder,
                "gaps_coder": info.gaps_coder,
                "memory_copy_s": copy_s,
                "safetensors_load_s": safetensors_s,
                "zstd3_decompress_s": zstd_s,
            }
            for choice in KERNEL_CHOICES:
                row[f"{choice}_load_s"] = load[choice]
                row[f"{choice}_over_safetensors"] = load[choice] / safetensors_s
            rows.append(row)
            if label.startswith("10%"):
                # tracemalloc sees numpy's allocations only, not the pages the extension maps
                # for large outputs: here numpy allocates every output, the decode is the same
                own_pages, kernels.OWN_PAGES_MIN_BYTES = kernels.OWN_PAGES_MIN_BYTES, 1 << 62
                try:
                    tracemalloc.start()
                    dcformat.load_file(path)
                    _, peak = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
                finally:
                    kernels.OWN_PAGES_MIN_BYTES = own_pages
                row["peak_bytes"] = peak
                row["peak_over_decoded_plus_file"] = peak / (expected.nbytes + row["file_bytes"])
    return {"layers": rows}


def cpu_busy_seconds() -> float:
    """CPU seconds every process has used so far (Linux ``/proc/stat``), or NaN elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def bench_threads(rng, count: int, repeats: int, cores: set, *, quiet_rounds: int = 3, patience_s: float = 120.0) -> dict:
    """Decode on one thread and on two (the process may use every core for this part).

    Two threads can only be faster while the other core is free: on a shared machine a round
    (one thread, then two) counts only if other processes used under 5% of a core meanwhile,
    until ``quiet_rounds`` rounds are kept or ``patience_s`` has passed; the medians are over
    the kept rounds (over every round if none was quiet, and the report says so).
    """
    os.sched_setaffinity(0, cores)
    try:
        symbols = laplace_codes(rng, count, 5)
        body = huffman.encode(symbols, 32)
        values = np.linspace(-1, 1, 32, dtype=np.float32)
        plan = huffman.prepare(body, symbols.size, 32)
        # decode only: the values into one array whose pages are mapped once, allocated as a
        # load allocates its outputs (page-aligned; numpy's 16-byte alignment splits the
        # decoder's 64-byte stores across cache lines, ~10% slower on one thread and two)
        into = kernels.output_array(count, np.float32)
        out = {"cores": len(cores)}
        for label, table in (("symbols", None), ("float32 values", values)):
            kept, every = [], []
            deadline = time.monotonic() + patience_s
            while len(kept) < quiet_rounds and (time.monotonic() < deadline or not every):
                busy, own, start = cpu_busy_seconds(), time.process_time(), time.perf_counter()
                target = None if table is None else into
                one = median_time(lambda t=table, o=target: huffman.decode_plan(plan, threads=1, values=t, out=o), repeats)
                two = median_time(lambda t=table, o=target: huffman.decode_plan(plan, threads=2, values=t, out=o), repeats)
                others = (cpu_busy_seconds() - busy) - (time.process_time() - own)  # this process's threads included
                every.append((one, two))
                if others < 0.05 * (time.perf_counter() - start):
                    kept.append((one, two))
            rounds = kept or every
            one, two = statistics.median(a for a, _ in rounds), statistics.median(b for _, b in rounds)
            out[label] = {
                "one_thread_msym_s": count / one / 1e6,
                "two_threads_msym_s": count / two / 1e6,
                "speedup": statistics.median(a / b for a, b in rounds),
                "quiet_rounds": len(kept),
                "rounds": len(every),
            }
        return out
    finally:
        pin_one_core()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller streams and fewer repeats")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pinned = pin_one_core()
    rng = np.random.default_rng(args.seed)
    speed_count, repeats = (2_000_000, 3) if args.quick else (16_000_000, 7)
    report = {
        "machine": {"cpu": pinned, "numpy": np.__version__, "zstandard": zstandard.__version__, "kernels": list(KERNEL_CHOICES)},
        "speed": bench_speed(rng, speed_count, repeats),
        "entropy": bench_entropy(rng, 200_000) + ([] if args.quick else bench_entropy(rng, 2_000_000)),
        "load": bench_load(rng, 4096, repeats),
        "crc32": bench_crc(rng, (8 if args.quick else 64) << 20, repeats),
    }
    if len(cores) >= 2 and "compiled" in KERNEL_CHOICES:
        with kernels_set("compiled"):
            report["threads"] = bench_threads(rng, 16_000_000, repeats, cores)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dcformat codec benchmark ({pinned}; medians of {repeats} runs; kernels: {', '.join(KERNEL_CHOICES)})\n")
    print("Huffman speed, million symbols/s (issue 12 targets, compiled: decode >= 600, encode >= 150)")
    for r in report["speed"]:
        cells = "  ".join(
            f"{k}: decode {r[f'{k}_huffman_decode_msym_s']:6.1f} encode {r[f'{k}_huffman_encode_msym_s']:6.1f} "
            f"unpack {r[f'{k}_bitpack_unpack_msym_s']:6.1f}"
            for k in KERNEL_CHOICES
        )
        print(f"  {r['stream']:<20} {r['symbols']:>10,}  {cells}")
    print("\nCoded bits per symbol (target: Huffman within 2% of entropy, tables included)")
    for r in report["entropy"]:
        print(
            f"  {r['stream']:<22} {r['symbols']:>9,} symbols  entropy {r['entropy_bits_per_symbol']:.3f}  "
            f"huffman {r['huffman_bits_per_symbol']:.3f} ({r['huffman_over_entropy_pct']:+.2f}%)  "
            f"zstd-19 {r['zstd19_bits_per_symbol']:.3f}  bitpack {r['bitpack_bits_per_symbol']:.0f}"
        )
    print("\nload_file of a float32 layer, ms (targets: <= safetensors; the 10%-dense layer <= half of it)")
    for r in report["load"]["layers"]:
        kernels_ms = "  ".join(f"dcformat[{k}] {1e3 * r[f'{k}_load_s']:6.1f} ({r[f'{k}_over_safetensors']:.2f}x)" for k in KERNEL_CHOICES)
        print(
            f"  {r['layer']:<17} {r['shape'][0]}x{r['shape'][1]}, {r['bits_per_weight']:.2f} bits/weight, {r['encoding']}: "
            f"memory copy {1e3 * r['memory_copy_s']:.1f}  safetensors {1e3 * r['safetensors_load_s']:.1f}  "
            f"zstd {1e3 * r['zstd3_decompress_s']:.1f}  {kernels_ms}"
        )
        if "peak_bytes" in r:
            print(f"    peak memory {r['peak_bytes'] / 2**20:.1f} MiB = {r['peak_over_decoded_plus_file']:.3f} x (decoded + file) (target <= 1.2)")
    crc = report["crc32"]
    compiled_crc = f"  compiled {crc['compiled_gb_s']:.1f} GB/s" if "compiled_gb_s" in crc else ""
    print(f"\nCRC-32 of {crc['bytes'] >> 20} MiB: zlib {crc['zlib_gb_s']:.1f} GB/s{compiled_crc}")
    if "threads" in report:
        print(f"\nHuffman decode on 2 threads vs 1 (compiled, {report['threads']['cores']} cores, not pinned; target >= 1.8x)")
        for label in ("symbols", "float32 values"):
            t = report["threads"][label]
            quiet = (
                f"{t['quiet_rounds']} of {t['rounds']} rounds quiet"
                if t["quiet_rounds"]
                else f"no quiet round in {t['rounds']}: the CPUs were shared"
            )
            print(
                f"  {label:<15} 1 thread {t['one_thread_msym_s']:6.1f}  2 threads {t['two_threads_msym_s']:6.1f} M/s: {t['speedup']:.2f}x ({quiet})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
