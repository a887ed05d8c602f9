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
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dcformat
from dcformat import EncodeOptions, QuantizedTensor
from dcformat.codecs import streams
from dcformat.format import float_split
from dcformat.format.constants import DTYPE_STORAGE, Encoding
from dcformat.format.dtypes import bfloat16, dtype_id, to_storage
from dcformat.format.encode import EncodedTensor
from dcformat.format.structs import FloatSplitHeader

BFLOAT16 = bfloat16()  # ml_dtypes' (None without it: the vectors that need it are left out)

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


@dataclass(frozen=True)
class FloatSplit:
    """An array written float_split even where the encoder would not (it stores a tensor of
    no element raw) or as it would not (it writes ``h = 2``, ``h = 0`` in float32, and
    ``B = 2**18``; the vectors' default ``h`` is 2, what it wrote for every dtype then): the
    writer is given the :class:`EncodedTensor`, the manifest hashes ``array``. The payload is
    built here as spec 6.6.2 lays it out: the 8-byte header, then per block of
    ``block_elements`` the head stream and the plane streams. ``coder`` forces one coder for
    every stream, as ``EncodeOptions(coder=...)``; without it each stream gets its smallest."""

    array: np.ndarray
    coder: str | None = None
    head_bits: int = 2
    block_elements: int = 1 << 18  # the encoder's B when the vectors were written

    def encoded(self) -> EncodedTensor:
        dtype = dtype_id(self.array.dtype)
        bits = to_storage(self.array, dtype).reshape(-1).view(float_split.bits_dtype(dtype))
        coder = None if self.coder is None else EncodeOptions(coder=self.coder).coder_id
        header = FloatSplitHeader.build(dict(head_bits=self.head_bits, reserved=bytes(3), block_elements=self.block_elements))
        alphabets = float_split.alphabets(dtype, self.head_bits)
        parts = [header]
        for lo, hi in float_split.blocks(bits.size, self.block_elements):
            for symbols, alphabet in zip(float_split.split(bits[lo:hi], dtype, self.head_bits), alphabets):
                parts.append(streams.encode(symbols, alphabet, coder=coder))
        return EncodedTensor(dtype, Encoding.FLOAT_SPLIT, tuple(self.array.shape), b"".join(parts))


#: Bit patterns of every float dtype's special values (spec 6.6.3: all of them round-trip):
#: +-0, the smallest and largest subnormals, the smallest normal, the largest finite, +-inf,
#: quiet NaNs (top mantissa bit set) and signalling NaNs (top mantissa bit clear, payload not
#: zero), both signs, with various payloads; then a few ordinary values.
# fmt: off
SPECIAL_BITS = {
    np.float32: [0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                 0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FD5A5A5,
                 0x7F800001, 0xFF800001, 0x7FA5A5A5, 0x7FBFFFFF, 0xFF812345,
                 0x3F800000, 0xC0200000, 0x40490FDB, 0x3D4CCCCD],
    np.float16: [0x0000, 0x8000, 0x0001, 0x83FF, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                 0x7E00, 0xFE00, 0x7E01, 0x7FFF, 0xFFFF, 0x7EAA,
                 0x7C01, 0xFC01, 0x7D55, 0x7DFF, 0xFCAB,
                 0x3C00, 0xC100, 0x4248, 0x2A66],
    np.float64: [0x0000000000000000, 0x8000000000000000, 0x0000000000000001, 0x800FFFFFFFFFFFFF, 0x000FFFFFFFFFFFFF, 0x0010000000000000,
                 0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF, 0x7FF0000000000000, 0xFFF0000000000000,
                 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000001, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFA5A5A5A5A5A5A,
                 0x7FF0000000000001, 0xFFF0000000000001, 0x7FF5A5A5A5A5A5A5, 0x7FF7FFFFFFFFFFFF, 0xFFF4000000000000,
                 0x3FF0000000000000, 0xC004000000000000, 0x400921FB54442D18, 0x3FA999999999999A],
    "bfloat16": [0x0000, 0x8000, 0x0001, 0x807F, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80,
                 0x7FC0, 0xFFC0, 0x7FC1, 0x7FFF, 0xFFFF, 0x7FD5,
                 0x7F81, 0xFF81, 0x7FA5, 0x7FBF, 0xFF92,
                 0x3F80, 0xC020, 0x4049, 0x3D4D],
}
# fmt: on
_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _from_bits(bits, dtype) -> np.ndarray:
    """An array of ``dtype`` holding exactly these bit patterns (a view: no conversion quiets a NaN)."""
    return np.array(bits, dtype=_BITS[np.dtype(dtype).itemsize]).view(dtype)


def _specials(rng, dtype, key=None) -> np.ndarray:
    """The special values of ``dtype``, then 40 random bit patterns (every plane's full range)."""
    itemsize = np.dtype(dtype).itemsize
    noise = rng.integers(0, 2 ** (8 * itemsize), size=40, dtype=_BITS[itemsize])
    return _from_bits(SPECIAL_BITS[dtype if key is None else key] + noise.tolist(), dtype)


def _weights(rng, shape, dtype, specials: int = 0) -> np.ndarray:
    """Trained-looking weights (normal * 0.05), with ``specials`` of the special values spread in."""
    w = (rng.standard_normal(shape) * 0.05).astype(dtype)
    if specials:
        key = "bfloat16" if np.dtype(dtype) == BFLOAT16 else dtype
        pick = _from_bits(SPECIAL_BITS[key][:specials], dtype)
        w.reshape(-1)[rng.choice(w.size, size=specials, replace=False)] = pick
    return w


def _float_split_vectors(rng) -> dict:
    """Encoding 5 (spec 6.6, format 1.1): every float dtype, special values, shapes (), a tensor
    of no element (the 8-byte header and no block) and realistic weights, with the encoder's
    coder per stream and with each coder forced for every stream; then head_bits and
    block_elements the encoder does not choose (several blocks, h = 0, the largest h).
    bfloat16 has a file of its own, so a reader without ml_dtypes skips only that one."""
    vectors = {}
    forced = EncodeOptions(dense="float_split")
    tensors = {
        "f32.specials": _specials(rng, np.float32),
        "f16.specials": _specials(rng, np.float16),
        "f64.specials": _specials(rng, np.float64),
        "f32.weight": _weights(rng, (64, 48), np.float32),
        "f16.weight": _weights(rng, (32, 40), np.float16),
        "f64.weight": _weights(rng, (16, 20), np.float64),
        "f32.scalar": _from_bits([0xBE4CCCCD], np.float32).reshape(()),
        "f64.scalar_nan": _from_bits([0x7FF0000000000ABC], np.float64).reshape(()),
        "f32.empty": FloatSplit(np.zeros((0, 4), np.float32)),
        "f16.empty": FloatSplit(np.zeros((3, 0), np.float16)),
        "f64.empty": FloatSplit(np.zeros(0, np.float64)),
    }
    vectors["float_split"] = (tensors, {"purpose": "float_split (spec 6.6), each stream with the encoder's coder"}, forced, None)

    for coder in ("bitpack", "huffman", "zstd"):
        tensors = {
            "f32": _weights(rng, (48, 50), np.float32, specials=21),
            "f16": _weights(rng, (20, 12), np.float16, specials=21),
            "f64": _weights(rng, (12, 10), np.float64, specials=21),
            "scalar": np.float16(-1.5).reshape(()),
            "empty": FloatSplit(np.zeros((2, 0, 3), np.float32), coder=coder),
        }
        vectors[f"float_split_{coder}"] = (tensors, None, EncodeOptions(dense="float_split", coder=coder), None)

    # Layouts the encoder does not write (spec 6.6.2 leaves h and B to it): several blocks of
    # B = 4096 (the smallest) with the last one full, short or of one element, a B that is no
    # power of two, the largest B, and for every dtype h = 0 and the largest h. A generator of
    # their own, so that the vectors around them draw what they drew before these were added.
    layouts_rng = np.random.default_rng(20261203)
    smallest = float_split.MIN_BLOCK_ELEMENTS
    blocks = _weights(layouts_rng, (5, 2 * smallest // 5 + 1), np.float16, specials=21)  # 2 * 4096 + 3 elements
    assert blocks.size == 2 * smallest + 3
    tensors = {
        "f16.blocks": FloatSplit(blocks, block_elements=smallest),
        "f16.blocks_5000.bitpack": FloatSplit(blocks.reshape(-1), coder="bitpack", block_elements=5000),
        "f16.blocks_full.h0.zstd": FloatSplit(_weights(layouts_rng, (2, smallest), np.float16), coder="zstd", head_bits=0, block_elements=smallest),
        "f32.blocks_last_one.huffman": FloatSplit(
            _weights(layouts_rng, (smallest + 1,), np.float32, specials=21), coder="huffman", block_elements=smallest
        ),
        "f32.block_max": FloatSplit(_specials(layouts_rng, np.float32), block_elements=2**32 - 1),
    }
    for key, dtype in (("f32", np.float32), ("f16", np.float16), ("f64", np.float64)):
        wire = dtype_id(np.dtype(dtype))
        for head_bits in (0, float_split.max_head_bits(wire)):
            tensors[f"{key}.h{head_bits}"] = FloatSplit(_specials(layouts_rng, dtype), head_bits=head_bits)
            tensors[f"{key}.h{head_bits}.weight"] = FloatSplit(_weights(layouts_rng, (24, 10), dtype, specials=21), head_bits=head_bits)
    tensors["f32.h0.empty"] = FloatSplit(np.zeros((0,), np.float32), head_bits=0, block_elements=smallest)
    vectors["float_split_layouts"] = (
        tensors,
        {"purpose": "float_split (spec 6.6): head_bits and block_elements other than the encoder's"},
        None,
        None,
    )

    if BFLOAT16 is not None:
        tensors = {
            "specials": _specials(rng, BFLOAT16, "bfloat16"),
            "weight": _weights(rng, (48, 40), BFLOAT16),
            "scalar": _from_bits([0xFF81], BFLOAT16).reshape(()),
            "empty": FloatSplit(np.zeros((0,), BFLOAT16)),
        }
        overrides = {}
        for coder in ("bitpack", "huffman", "zstd"):
            tensors[f"weight.{coder}"] = _weights(rng, (16, 12), BFLOAT16, specials=21)
            tensors[f"empty.{coder}"] = FloatSplit(np.zeros((1, 0), BFLOAT16), coder=coder)
            overrides[f"weight.{coder}"] = EncodeOptions(dense="float_split", coder=coder)
        for head_bits in (0, float_split.max_head_bits(dtype_id(BFLOAT16))):
            tensors[f"specials.h{head_bits}"] = FloatSplit(_specials(rng, BFLOAT16, "bfloat16"), head_bits=head_bits)
            tensors[f"weight.h{head_bits}"] = FloatSplit(_weights(rng, (20, 12), BFLOAT16, specials=21), head_bits=head_bits)
        tensors["blocks.h7"] = FloatSplit(_weights(rng, (smallest + 5,), BFLOAT16, specials=21), head_bits=7, block_elements=smallest)
        vectors["float_split_bfloat16"] = (tensors, None, forced, overrides)
    return vectors


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
    # Format 1.1. A generator of its own, so that adding these left the draws above, and the
    # frozen 1.0 vectors they made, as they were.
    vectors.update(_float_split_vectors(np.random.default_rng(20261202)))
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
        inputs = {key: value.encoded() if isinstance(value, FloatSplit) else value for key, value in tensors.items()}
        data = dcformat.save(inputs, metadata=metadata, options=options, overrides=overrides)
        with open(path, "wb") as f:
            f.write(data)
        expected = {}
        for key, value in tensors.items():
            if isinstance(value, FloatSplit):
                value = value.array
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
