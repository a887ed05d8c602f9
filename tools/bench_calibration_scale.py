"""Calibrated compression of a 1B-parameter model folder in shards: peak memory and time (issue 14), by hand:

    python tools/bench_calibration_scale.py                 # Llama-3.2-1B's shapes, 16 blocks
    python tools/bench_calibration_scale.py --layers 4      # the same blocks, a quarter of them
    python tools/bench_calibration_scale.py --texts 32 --json

The folder is written here, as a model hub serves one: ``config.json`` of a Llama model
with Llama-3.2-1B's shapes (hidden 2048, intermediate 8192, 32 heads of which 8 for keys
and values, vocabulary 128,256, tied embeddings: 1.24 billion parameters with 16 blocks),
random bfloat16 weights (normal, deviation 0.02; norms 1) in safetensors shards of about
1 GB with ``model.safetensors.index.json``, and a small WordPiece tokenizer (its ids are
valid token ids of the model; a random model needs no particular vocabulary).

Each phase runs in a fresh process reporting its wall time and peak resident memory
(its ``VmHWM``): ``dcformat compress FOLDER OUT`` (no calibration: the
baseline), then ``dcformat compress FOLDER OUT --calibration TEXTS`` (``--texts`` lines of
:func:`dcformat.hf.calibration.stdlib_prose`). The calibration runs block by block
(:mod:`dcformat.torch.layerwise`), its second moments in files beside the output
(their size is reported); with ``--layers 4`` the peak should not change, the time should
shrink about fourfold: memory does not grow with depth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, ROOT)

#: Llama-3.2-1B's shapes.
SHAPES = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)
SHARD_BYTES = 10**9
WORDS = "the a of and to in is was for on with as by at from it that this be are not or which can file data value".split()


def write_folder(folder: str, layers: int, seed: int) -> int:
    """The model folder; returns its parameter count."""
    import numpy as np
    import transformers

    from dcformat.format import dtypes
    from dcformat.format.constants import DType
    from dcformat.interop.safetensors import write_safetensors_lazily
    from dcformat.torch.layerwise import parameters_on_meta

    os.makedirs(folder)
    config = transformers.LlamaConfig(num_hidden_layers=layers, **SHAPES)
    with parameters_on_meta():
        skeleton = transformers.AutoModel.from_config(config)
    shapes = {name: tuple(p.shape) for name, p in skeleton.named_parameters()}
    config.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    bfloat16 = dtypes.bfloat16()

    def read(name: str):
        rng = np.random.default_rng([seed, list(shapes).index(name)])
        if len(shapes[name]) == 1:
            return np.ones(shapes[name], dtype=bfloat16)
        return (rng.standard_normal(shapes[name], dtype=np.float32) * 0.02).astype(bfloat16)

    weight_map = {}
    for number, names in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors_lazily({n: (DType.BFLOAT16, shapes[n]) for n in names}, read, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    total = sum(2 * int(np.prod(s)) for s in shapes.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return sum(int(np.prod(s)) for s in shapes.values())


#: A phase's process: the command line's ``main``, then its own peak memory on stderr. The
#: peak is ``VmHWM``, the high-water mark of the process's own memory: ``ru_maxrss`` would not
#: do, as Linux carries it across ``exec`` from the process that started it (this one, which
#: held a generated embedding of a gigabyte).
_PHASE = (
    "import re, sys\n"
    "from dcformat.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "sys.stderr.write('\\npeak_rss_kib %s\\n' % peak)\n"
    "sys.exit(code)\n"
)


def run_phase(arguments: list[str]) -> dict:
    """``dcformat ARGUMENTS`` in a fresh process: wall seconds, its peak memory, its JSON report."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PHASE, *arguments, "--json", "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dcformat {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = int(done.stderr.rsplit("peak_rss_kib", 1)[1].split()[0])
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "report": json.loads(done.stdout)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16, help="blocks (default 16: Llama-3.2-1B)")
    parser.add_argument("--texts", type=int, default=64, help="calibration texts (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", default=None, help="where the temporary files go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from dcformat.hf.calibration import stdlib_prose

    with tempfile.TemporaryDirectory(prefix="dcformat-bench-calibration-scale-", dir=args.folder) as work:
        model = os.path.join(work, "model")
        started = time.perf_counter()
        parameters = write_folder(model, args.layers, args.seed)
        print(
            f"[{time.strftime('%H:%M:%S')}] wrote {parameters / 1e9:.2f}B parameters in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        texts = os.path.join(work, "texts.txt")
        with open(texts, "w", encoding="utf-8") as f:
            f.write("\n".join(stdlib_prose(args.texts)) + "\n")
        phases = {}
        for label, extra in (("plain", []), ("calibrated", ["--calibration", texts])):
            out = os.path.join(work, f"out-{label}")
            print(f"[{time.strftime('%H:%M:%S')}] dcformat compress MODEL_DIR OUT_DIR {' '.join(extra[:1])}", file=sys.stderr, flush=True)
            phases[label] = run_phase(["compress", model, out, *extra])
        result = {
            "parameters": parameters,
            "layers": args.layers,
            "texts": args.texts,
            "plain": {"seconds": phases["plain"]["seconds"], "peak_rss_mib": phases["plain"]["peak_rss_mib"]},
            "calibrated": {
                "seconds": phases["calibrated"]["seconds"],
                "peak_rss_mib": phases["calibrated"]["peak_rss_mib"],
                "calibration": phases["calibrated"]["report"].get("calibration"),
            },
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{parameters / 1e9:.2f}B parameters, {args.layers} blocks, {args.texts} calibration texts")
        for label in ("plain", "calibrated"):
            row = result[label]
            print(f"  compress {label:10s} {row['seconds']:8.0f} s   peak {row['peak_rss_mib']:8.0f} MiB")
        summary = result["calibrated"]["calibration"] or {}
        print(f"  second moments on disk: {summary.get('moments_bytes', 0) / 2**30:.2f} GiB ({summary.get('run')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
