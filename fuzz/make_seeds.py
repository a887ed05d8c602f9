#!/usr/bin/env python3
"""Write the small seed files of ``fuzz/corpus/`` (the spec vectors are copied there as well).

Small files with one idea each make the fuzzer's mutations count: every coder in every
layout, multi-lane Huffman streams with non-zero delta widths, u16 zstd symbols, bool and
bfloat16 tensors, float_split tensors of every float dtype (several blocks and
head widths among them), a file of a newer minor version with unknown ids, and a few mutants
with their CRCs re-fixed. Seeds are generated once and committed (everything is seeded,
but a changed encoder may choose other bytes: the committed files are the reference).
``found_*.dcf`` in the corpus are not made here: they are the units a long fuzz run kept
(``-merge=1`` against these seeds).

    python fuzz/make_seeds.py [OUT_DIR]
"""

from __future__ import annotations

import os
import random
import struct
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

import dcformat  # noqa: E402
from dcformat.codecs import huffman  # noqa: E402
from fuzz import dcfbuild as B  # noqa: E402


def _float_split_payload(array: np.ndarray, dtype: int, *, head_bits: int, block_elements: int, coder: int) -> bytes:
    """A float_split payload (spec 6.6.2) with the given h and B, every stream of one coder."""
    from dcformat.codecs import streams
    from dcformat.format import float_split

    bits = np.ascontiguousarray(array).reshape(-1).view(float_split.bits_dtype(dtype))
    parts = [struct.pack("<B3xI", head_bits, block_elements)]
    for lo, hi in float_split.blocks(bits.size, block_elements):
        for symbols, alphabet in zip(float_split.split(bits[lo:hi], dtype, head_bits), float_split.alphabets(dtype, head_bits)):
            parts.append(streams.encode(symbols, alphabet, coder=coder))
    return b"".join(parts)


def _blocks_f16(rng) -> np.ndarray:
    """2 * 4096 + 3 float16 values, nearly all 1.0, a few others in every block."""
    values = np.ones(2 * 4096 + 3, np.float16)
    values[[5, 4100, 8193, 8194]] = np.array([-0.0, np.inf, 6e-8, -2.5], np.float16)
    values[rng.choice(values.size, 20, replace=False)] = rng.normal(size=20).astype(np.float16)
    return values


def seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    out: dict[str, bytes] = {}
    w = rng.normal(size=(12, 25)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0  # about 40 % kept, some long runs of zeros
    q = dcformat.quantize(w, bits=3)
    for layout in ("dense", "sparse"):
        for coder in ("bitpack", "huffman", "zstd"):
            gap_bits = 2 if layout == "sparse" else None
            opts = dcformat.EncodeOptions(layout=layout, coder=coder, gap_bits=gap_bits)
            out[f"seed_{layout}_{coder}.dcf"] = dcformat.save({"w": q}, options=opts)
    half = dcformat.quantize(rng.normal(size=(9, 9)).astype(np.float16), bits=2)
    bf = dcformat.quantize(rng.normal(size=(4, 8)).astype(ml_dtypes.bfloat16), bits=2)
    out["seed_mixed_dtypes.dcf"] = dcformat.save(
        {
            "bf": bf,
            "bool": rng.random((3, 3)) > 0.5,
            "half": half,
            "i64": np.arange(5, dtype=np.int64),
            "scalar": np.float64(2.5),
            "z": np.zeros((0, 2), np.float32),
        },
        metadata={"note": "seed", "nested": {"a": [1, 2.5, None, True]}},
        options=dcformat.EncodeOptions(dense="raw"),  # as committed before dense="auto" became the default
    )
    out["seed_zstd_dense.dcf"] = dcformat.save(
        {"b": np.ones(40, dtype=np.bool_), "r": np.arange(100, dtype=np.uint16)}, options=dcformat.EncodeOptions(dense="zstd")
    )

    # Huffman with several lanes and non-zero lane_delta_width, and u16 zstd symbols.
    symbols = np.minimum(rng.geometric(0.3, size=3000) - 1, 299).astype(np.uint16)
    body = huffman.encode(symbols, 300, lane_symbols=400)
    codebook = B.f32(*np.linspace(-1, 1, 300))
    out["seed_huffman_lanes.dcf"] = B.build([B.T(b"h", 1, 3, (3000,), B.quant(codebook, 300, 3000, B.stream(2, body)))])
    from dcformat.codecs import zstd

    zbody = zstd.compress(symbols.astype("<u2").tobytes())
    out["seed_zstd_u16.dcf"] = B.build([B.T(b"z", 1, 3, (3000,), B.quant(codebook, 300, 3000, B.stream(3, zbody)))])

    # Single-symbol Huffman stream, sparse with fillers at gap width 1.
    single = huffman.encode(np.zeros(50, np.uint8), 1)
    gaps = huffman.encode(np.array([1] * 49 + [0], np.uint8), 2)
    out["seed_single_symbol.dcf"] = B.build(
        [B.T(b"s", 1, 4, (200,), B.quant(B.f32(0.0), 1, 50, B.stream(2, single) + B.stream(2, gaps), gap_bits=1))]
    )

    # A file of a newer minor version: unknown dtype and encoding ids are deferred to get().
    out["seed_newer_minor.dcf"] = B.build(
        [B.T(b"a", 200, 1, (2,), b"\1\2"), B.T(b"b", 1, 99, (1,), b"xyz!"), B.T(b"c", 5, 1, (3,), b"\1\2\3")], version=(1, 7)
    )

    # Mutants of the above with their CRCs re-fixed: start the fuzzer past the checksums.
    rnd = random.Random(7)
    for name in sorted(out)[:6]:
        data = bytearray(out[name])
        for k in range(3):
            mutant = bytearray(data)
            for _ in range(1 + k):
                mutant[rnd.randrange(64, len(mutant))] ^= 1 << rnd.randrange(8)
            out[f"mutant_{k}_{name}"] = B.fix_crcs(bytes(mutant))

    # float_split (format 1.1): every float dtype, every coder, special bit patterns.
    split_rng = np.random.default_rng(11)  # its own generator: the seeds above stay as committed
    weights = split_rng.normal(scale=0.05, size=(6, 40))
    specials = np.array([0x7FC00001, 0x7F800001, 0xFF800000, 0x80000000, 0x00000001], dtype="<u4").view(np.float32)
    split = {
        "f32": np.concatenate([weights.astype(np.float32).ravel(), specials]),
        "f16": weights.astype(np.float16),
        "bf16": weights.astype(ml_dtypes.bfloat16),
        "f64": weights[:2],
    }
    for coder in ("bitpack", "huffman", "zstd"):
        out[f"seed_float_split_{coder}.dcf"] = dcformat.save(split, options=dcformat.EncodeOptions(dense="float_split", coder=coder))

    # Layouts the encoder does not write (spec 6.6.2 leaves h and B to it): three blocks of the
    # smallest B (4096, 4096, 3 elements) with h = 0, and one block with float16's largest h
    # (10: 15-bit heads, the rest a 1-bit plane). Mostly constant, so zstd keeps them small.
    out["seed_float_split_blocks.dcf"] = B.build(
        [
            B.T(b"blocks", 2, 5, (2 * 4096 + 3,), _float_split_payload(_blocks_f16(split_rng), 2, head_bits=0, block_elements=4096, coder=3)),
            B.T(b"h10", 2, 5, (3, 40), _float_split_payload(split["f16"][:3], 2, head_bits=10, block_elements=4096, coder=1)),
        ],
        version=(1, 1),
    )

    for k, name in enumerate(sorted(n for n in out if n.startswith("seed_float_split"))):
        mutant = bytearray(out[name])
        mutant[random.Random(8 + k).randrange(64, len(mutant))] ^= 0x10
        out[f"mutant_{name}"] = B.fix_crcs(bytes(mutant))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else os.path.join(_ROOT, "fuzz", "corpus")
    os.makedirs(target, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} seeds to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
