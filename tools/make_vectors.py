"""Write the frozen test vectors in spec/vectors/ (run once; then they are only read).

Each vector is a small .dcf file covering some encodings, coders and dtypes. Beside them,
``vectors.json`` records for every file its SHA-256 and, for every tensor, its dtype,
shape and the SHA-256 of its *intended* content: the C-order little-endian bytes of the
input array (or of ``QuantizedTensor.dequantize()``), computed from the inputs here, not
by decoding the written file. ``tests/test_vectors.py`` decodes every file and compares.

The script refuses to overwrite existing vectors: a change of the wire format must be a
decision (``--force``, a spec version bump, and a note in the spec's history), never an
accident.

    python tools/make_vectors.py            # writes only missing vectors
    python tools/make_vectors.py --force    # rewrites all of them
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dcformat
from dcformat import EncodeOptions, QuantizedTensor
from dcformat.format.constants import DTYPE_STORAGE
from dcformat.format.dtypes import BFLOAT16, dtype_id

VECTORS = os.path.join(os.path.dirname(__file__), "..", "spec", "vectors")


def content_sha256(array: np.ndarray) -> str:
    """SHA-256 of a tensor's storage bytes (C order, little-endian; bool as bytes, bf16 as bits)."""
    wire = dtype_id(array.dtype)
    storage = DTYPE_STORAGE[wire]
    data = (
        np.ascontiguousarray(array).view(storage)
        if array.dtype.kind in "bV" or array.dtype == BFLOAT16
        else np.ascontiguousarray(array, dtype=storage)
    )
    return hashlib.sha256(data.tobytes()).hexdigest()


def _laplace_quantized(rng, shape, bits, kept, dtype=np.float32):
    w = rng.laplace(scale=0.05, size=shape).astype(dtype)
    if kept < 1.0:
        w[np.abs(w) < np.quantile(np.abs(w), 1.0 - kept)] = 0
    return dcformat.quantize(w, bits=bits)


def build_vectors() -> dict[str, tuple[dict, dict, EncodeOptions | None, dict | None]]:
    """name -> (tensors, metadata, options, per-tensor overrides)."""
    rng = np.random.default_rng(20261129)
    vectors = {}

    example_w = QuantizedTensor.from_entries((2, 4), np.array([0.5, -1.0], np.float32), [1, 7], [0, 1])
    vectors["example"] = (
        {"b": np.array([1, -2, 3], np.int8), "w": example_w},
        None,
        EncodeOptions(layout="sparse", gap_bits=2, coder="bitpack"),
        None,
    )

    raw = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "f64": np.array([np.pi, -0.0, np.inf, -np.inf, np.nan]),
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.arange(-3, 3, dtype=np.int16).reshape(2, 3),
        "i32": np.array([-(2**31), 2**31 - 1], np.int32),
        "i64": np.array([-(2**63), 2**63 - 1], np.int64),
        "u8": np.arange(256, dtype=np.uint8),
        "u16": np.array([0, 65535], np.uint16),
        "u32": np.array([0, 2**32 - 1], np.uint32),
        "u64": np.array([0, 2**64 - 1], np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.float32(2.5).reshape(()),
        "empty": np.zeros((0, 4), np.float32),
        "names/unicode \u00e9\u5c42": np.ones(1, np.float32),
    }
    if BFLOAT16 is not None:
        raw["bf16"] = np.array([1.0, -2.5, 0.0, 3.0e38], dtype=BFLOAT16)
    vectors["raw_dtypes"] = (raw, {"purpose": "every dtype raw", "\u00fcnicode": ["\u2713", 1, {"nested": None}]}, None, None)

    vectors["zstd"] = (
        {"zeros": np.zeros((64, 64), np.float32), "ramp": np.arange(1000, dtype=np.int32), "noise": rng.standard_normal(500).astype(np.float16)},
        None,
        EncodeOptions(dense="zstd"),
        None,
    )

    for coder in ("bitpack", "huffman", "zstd"):
        tensors = {
            "fc.weight": _laplace_quantized(rng, (40, 50), 5, 1.0),
            "conv.weight": _laplace_quantized(rng, (8, 4, 3, 3), 8, 1.0),
            "half.weight": _laplace_quantized(rng, (30, 30), 4, 1.0, np.float16),
            "one_entry_codebook": QuantizedTensor.from_codes(np.array([0.25], np.float32), np.zeros((5, 5), np.int64)),
            "empty": QuantizedTensor.from_codes(np.array([1.0], np.float32), np.zeros((0, 3), np.int64)),
        }
        vectors[f"quant_dense_{coder}"] = (tensors, None, EncodeOptions(layout="dense", coder=coder), None)

    for coder in ("bitpack", "huffman", "zstd"):
        tensors = {
            "fc1.weight": _laplace_quantized(rng, (100, 80), 5, 0.08),
            "conv1.weight": _laplace_quantized(rng, (16, 8, 3, 3), 8, 0.3),
            "f64.weight": _laplace_quantized(rng, (20, 20), 3, 0.5, np.float64),
            "last_only": QuantizedTensor.from_entries((64, 64), np.array([0.75], np.float32), [4095], [0]),
            "no_entries": QuantizedTensor.from_entries((10, 10), np.array([0.75], np.float32), [], []),
        }
        overrides = {
            "last_only": EncodeOptions(layout="sparse", gap_bits=1, coder=coder),
            "no_entries": EncodeOptions(layout="sparse", gap_bits=3, coder=coder),
        }
        if BFLOAT16 is not None:
            tensors["bf16.weight"] = _laplace_quantized(rng, (12, 12), 4, 0.5, BFLOAT16)
        vectors[f"quant_sparse_{coder}"] = (tensors, None, EncodeOptions(layout="sparse", coder=coder), overrides)

    big = rng.integers(0, 65536, size=70000)
    big[:65536] = np.arange(65536)  # every code of a full 16-bit codebook occurs
    vectors["huffman_edge_cases"] = (
        {
            "codebook_65536": QuantizedTensor.from_codes(np.linspace(-1, 1, 65536).astype(np.float32), big),
            "single_symbol": QuantizedTensor.from_codes(np.array([0.5, 1.5], np.float32), np.ones(300, np.int64)),
            "many_lanes": _laplace_quantized(rng, (300, 200), 5, 1.0),
            "gap_width_16": QuantizedTensor.from_entries((3, 70000), np.array([1.0, 2.0], np.float32), [5, 70000, 209999], [0, 1, 0]),
        },
        None,
        EncodeOptions(coder="huffman"),
        {"gap_width_16": EncodeOptions(layout="sparse", gap_bits=16, coder="huffman")},
    )

    vectors["no_tensors"] = ({}, {"note": "a file with metadata only"}, None, None)
    return vectors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="overwrite existing vectors (a deliberate wire-format change)")
    args = parser.parse_args(argv)
    os.makedirs(VECTORS, exist_ok=True)
    manifest_path = os.path.join(VECTORS, "vectors.json")
    manifest = {}
    if os.path.exists(manifest_path) and not args.force:
        with open(manifest_path) as f:
            manifest = json.load(f)
    for name, (tensors, metadata, options, overrides) in build_vectors().items():
        path = os.path.join(VECTORS, name + ".dcf")
        if name in manifest and os.path.exists(path) and not args.force:
            print(f"kept   {name}.dcf (frozen)")
            continue
        data = dcformat.save(tensors, metadata=metadata, options=options, overrides=overrides)
        with open(path, "wb") as f:
            f.write(data)
        expected = {}
        for key, value in tensors.items():
            array = value.dequantize() if isinstance(value, QuantizedTensor) else np.asarray(value)
            expected[key] = {
                "dtype": str(dcformat.format.dtypes.name(dtype_id(array.dtype))),
                "shape": list(array.shape),
                "sha256": content_sha256(array),
            }
        manifest[name] = {
            "file": name + ".dcf",
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "metadata": metadata or {},
            "tensors": expected,
        }
        print(f"wrote  {name}.dcf ({len(data)} bytes)")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
