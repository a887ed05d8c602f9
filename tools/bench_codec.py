"""Benchmark of the codec against the targets of the container issue (run by hand, one core).

    python tools/bench_codec.py            # full run (a few minutes)
    python tools/bench_codec.py --quick    # smaller streams, fewer repeats
    python tools/bench_codec.py --json     # the figures as JSON

It pins itself to one CPU core and reports medians of repeated runs, and ratios against
baselines measured in the same run (this machine is shared and noisy):

1. Huffman decode and encode speed, in million symbols per second, on large streams.
2. Coded size against order-0 entropy (tables and jump tables included) and against
   zstd level 19, on streams of 200,000+ symbols: 5-bit and 8-bit codes of
   Laplacian weights, and the gaps of a random 10%-dense mask.
3. ``load_file`` of a 4096x4096 float32 layer stored 10% dense with 5-bit codes, against
   ``zstandard`` decompressing that layer's raw fp32 bytes.
4. Peak memory of that decode (tracemalloc) against decoded bytes + file size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dcformat
from dcformat.codecs import bitpack, huffman
from dcformat.format import sparse as gaps


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


def bench_speed(rng, count: int, repeats: int) -> list[dict]:
    streams = {
        "codes 5-bit": (laplace_codes(rng, count, 5), 32),
        "codes 8-bit": (laplace_codes(rng, count, 8), 256),
        "gaps 10% dense, b=5": (mask_gaps(rng, count, 0.10, 5), 32),
    }
    rows = []
    for label, (symbols, alphabet) in streams.items():
        body = huffman.encode(symbols, alphabet)
        decoded = huffman.decode(body, symbols.size, alphabet)
        assert np.array_equal(decoded, symbols), label
        enc = median_time(lambda s=symbols, a=alphabet: huffman.encode(s, a), repeats)
        dec = median_time(lambda b=body, s=symbols, a=alphabet: huffman.decode(b, s.size, a), repeats)
        packed = bitpack.pack(symbols, bitpack.width_for(alphabet))
        unpack = median_time(lambda p=packed, s=symbols, a=alphabet: bitpack.unpack(p, s.size, bitpack.width_for(a)), repeats)
        rows.append(
            {
                "stream": label,
                "symbols": int(symbols.size),
                "huffman_decode_msym_s": symbols.size / dec / 1e6,
                "huffman_encode_msym_s": symbols.size / enc / 1e6,
                "bitpack_unpack_msym_s": symbols.size / unpack / 1e6,
            }
        )
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


def make_layer_file(rng, folder: str, side: int) -> tuple[str, np.ndarray]:
    weights = rng.laplace(scale=0.05, size=(side, side)).astype(np.float32)
    weights[np.abs(weights) < np.quantile(np.abs(weights), 0.90)] = 0
    q = dcformat.quantize(weights, bits=5)
    path = os.path.join(folder, "layer.dcf")
    dcformat.save_file({"layer": q}, path)
    return path, q.dequantize()


def bench_load(rng, side: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path, expected = make_layer_file(rng, folder, side)
        assert np.array_equal(dcformat.load_file(path)["layer"], expected)
        raw = expected.tobytes()
        frame = zstandard.ZstdCompressor(level=3).compress(raw)
        dctx = zstandard.ZstdDecompressor()
        load_s = median_time(lambda: dcformat.load_file(path), repeats)
        zstd_s = median_time(lambda: dctx.decompress(frame), repeats)
        with dcformat.open(path) as f:
            info = f.info("layer")
        tracemalloc.start()
        dcformat.load_file(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        file_bytes = os.path.getsize(path)
    decoded = expected.nbytes
    return {
        "shape": [side, side],
        "density": info.density,
        "file_bytes": file_bytes,
        "raw_fp32_bytes": decoded,
        "zstd3_frame_bytes": len(frame),
        "encoding": info.encoding,
        "gap_width": info.gap_width,
        "codes_coder": info.codes_coder,
        "gaps_coder": info.gaps_coder,
        "load_file_s": load_s,
        "zstd_decompress_raw_s": zstd_s,
        "load_over_zstd": load_s / zstd_s,
        "peak_bytes": peak,
        "peak_over_decoded_plus_file": peak / (decoded + file_bytes),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller streams and fewer repeats")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pinned = pin_one_core()
    rng = np.random.default_rng(args.seed)
    speed_count, repeats = (2_000_000, 3) if args.quick else (16_000_000, 7)
    report = {
        "machine": {"cpu": pinned, "numpy": np.__version__, "zstandard": zstandard.__version__},
        "speed": bench_speed(rng, speed_count, repeats),
        "entropy": bench_entropy(rng, 200_000) + ([] if args.quick else bench_entropy(rng, 2_000_000)),
        "load": bench_load(rng, 4096, repeats),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dcformat codec benchmark ({pinned}; medians of {repeats} runs)\n")
    print("Huffman speed (million symbols/s; targets: decode >= 100, encode >= 30)")
    for r in report["speed"]:
        print(
            f"  {r['stream']:<22} {r['symbols']:>10,} symbols  decode {r['huffman_decode_msym_s']:7.1f}  "
            f"encode {r['huffman_encode_msym_s']:6.1f}  (bitpack unpack {r['bitpack_unpack_msym_s']:6.1f})"
        )
    print("\nCoded bits per symbol (target: Huffman within 2% of entropy, tables included)")
    for r in report["entropy"]:
        print(
            f"  {r['stream']:<22} {r['symbols']:>9,} symbols  entropy {r['entropy_bits_per_symbol']:.3f}  "
            f"huffman {r['huffman_bits_per_symbol']:.3f} ({r['huffman_over_entropy_pct']:+.2f}%)  "
            f"zstd-19 {r['zstd19_bits_per_symbol']:.3f}  bitpack {r['bitpack_bits_per_symbol']:.0f}"
        )
    load = report["load"]
    print(
        f"\nload_file of a {load['shape'][0]}x{load['shape'][1]} float32 layer, {100 * load['density']:.1f}% dense, 5-bit codes "
        f"({load['file_bytes']:,} bytes: {load['encoding']}, b={load['gap_width']}, codes {load['codes_coder']}, gaps {load['gaps_coder']})"
    )
    print(
        f"  load_file {1e3 * load['load_file_s']:.1f} ms vs zstd decompress of raw fp32 ({load['zstd3_frame_bytes']:,} bytes) "
        f"{1e3 * load['zstd_decompress_raw_s']:.1f} ms: ratio {load['load_over_zstd']:.2f} (target <= 1)"
    )
    print(f"  peak memory {load['peak_bytes'] / 2**20:.1f} MiB = {load['peak_over_decoded_plus_file']:.3f} x (decoded + file) (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
