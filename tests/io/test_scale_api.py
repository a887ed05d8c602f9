"""The scale features: streaming atomic writer, threaded decoding, sharded models.

The thread pool itself (``dcformat.parallel``) is tested in ``tests/test_parallel.py``.
"""

import json
import os

import numpy as np
import pytest

import dcformat
from dcformat.errors import EncodeError, FormatError


def layer(rng, shape, kept=0.1, bits=5):
    w = rng.laplace(scale=0.05, size=shape).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), 1 - kept)] = 0
    return dcformat.quantize(w, bits=bits)


def test_writer_streams_tensors_and_replaces_atomically(tmp_path):
    path = tmp_path / "m.dcf"
    dcformat.save_file({"old": np.ones(3)}, path)
    rng = np.random.default_rng(0)
    q = layer(rng, (64, 64))
    with dcformat.writer(path, metadata={"k": "v"}) as w:
        w.add("b", np.arange(4))
        w.add("a", q)
        assert dcformat.load_file(path).keys() == {"old"}  # not replaced until the end
    out = dcformat.load_file(path)
    assert sorted(out) == ["a", "b"]
    assert np.array_equal(out["a"], q.dequantize())
    assert dcformat.open(path).metadata()["k"] == "v"
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcf"]


def test_writer_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.dcf"
    dcformat.save_file({"old": np.ones(3)}, path)
    with pytest.raises(EncodeError):
        with dcformat.writer(path) as w:
            w.add("x", np.ones(2))
            w.add("x", np.ones(2))  # duplicate name
    assert sorted(dcformat.load_file(path)) == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcf"]


def test_streaming_and_batch_writers_give_identical_bytes(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"a": layer(rng, (40, 50)), "b": rng.standard_normal(5)}
    with dcformat.writer(tmp_path / "s.dcf") as w:
        for name in sorted(tensors):
            w.add(name, tensors[name])
    assert (tmp_path / "s.dcf").read_bytes() == dcformat.save(tensors)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_threaded_decoding_is_identical(threads):
    rng = np.random.default_rng(2)
    tensors = {
        "big": layer(rng, (1500, 1200), kept=0.3),
        "dense8": layer(rng, (300, 300), kept=1.0, bits=8),
        "small": layer(rng, (10, 10)),
        "raw": rng.standard_normal((7, 3)),
    }
    data = dcformat.save(tensors)
    expected = {k: (v.dequantize() if isinstance(v, dcformat.QuantizedTensor) else v) for k, v in tensors.items()}
    out = dcformat.load(data, threads=threads)
    for key in tensors:
        assert out[key].tobytes() == expected[key].tobytes()
    with dcformat.open(data) as f:
        assert f.get("big", threads=threads).tobytes() == expected["big"].tobytes()


def test_sharded_save_and_load(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"layer.{i}.weight": layer(rng, (200, 100)) for i in range(5)}
    tensors["bias"] = rng.standard_normal(10).astype(np.float32)
    index = dcformat.save_sharded(tensors, tmp_path, max_shard_bytes=3000, metadata={"model": "toy"})
    names = sorted(p.name for p in tmp_path.iterdir())
    shards = [n for n in names if n.endswith(".dcf")]
    assert len(shards) >= 2 and all(n.startswith("model-") and f"-of-{len(shards):05d}.dcf" in n for n in shards)
    assert names == sorted(shards + ["model.dcf.index.json"])
    weight_map = json.loads((tmp_path / "model.dcf.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(tensors) and set(weight_map.values()) == set(shards)
    loaded = dcformat.load_file(index)
    for key, value in tensors.items():
        expected = value.dequantize() if isinstance(value, dcformat.QuantizedTensor) else value
        assert loaded[key].tobytes() == expected.tobytes()
    with dcformat.open(index) as f:
        assert f.metadata()["model"] == "toy"
        assert f.keys() == sorted(tensors)
        assert f.info("layer.0.weight").encoding == "quant_sparse"
        f.verify()


def test_sharded_index_cannot_point_outside_its_folder(tmp_path):
    index = dcformat.save_sharded({"a": np.ones(3)}, tmp_path / "m")
    data = json.loads(open(index).read())
    data["weight_map"]["a"] = "../elsewhere.dcf"
    with open(index, "w") as f:
        json.dump(data, f)
    with pytest.raises(FormatError, match="plain file name"):
        dcformat.open(index)


def test_sharded_index_must_match_its_shards(tmp_path):
    index = dcformat.save_sharded({"a": np.ones(3), "b": np.ones(2)}, tmp_path)
    data = json.loads(open(index).read())
    data["weight_map"]["c"] = data["weight_map"]["a"]
    with open(index, "w") as f:
        json.dump(data, f)
    with pytest.raises(FormatError, match="differ"):
        dcformat.load_file(index)


def test_cli_inspects_and_verifies_a_sharded_model(tmp_path, capsys):
    from dcformat.cli import main

    index = dcformat.save_sharded({"a": np.ones(3), "b": np.zeros((2, 2))}, tmp_path, max_shard_bytes=1)
    assert main(["inspect", index, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["tensors"] == 2
    assert report["file_bytes"] == sum(os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path) if n.endswith(".dcf"))
    assert main(["verify", index]) == 0


def test_writer_takes_tensors_encoded_elsewhere(tmp_path):
    from dcformat.format.encode import EncodeOptions, encode_tensor

    rng = np.random.default_rng(4)
    tensors = {"a": layer(rng, (60, 70)), "b": rng.standard_normal(9)}
    options = EncodeOptions()
    with dcformat.writer(tmp_path / "pre.dcf", options=options) as w:
        for name in sorted(tensors):
            w.add(name, encode_tensor(tensors[name], options, field=name))
    assert (tmp_path / "pre.dcf").read_bytes() == dcformat.save(tensors, options=options)


def test_resaving_in_fewer_shards_removes_the_stale_ones(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {f"t{i}": rng.standard_normal(300) for i in range(4)}
    dcformat.save_sharded(tensors, tmp_path, max_shard_bytes=1)  # one tensor per shard
    assert len(list(tmp_path.glob("model-*-of-00004.dcf"))) == 4
    (tmp_path / "other-00001-of-00001.dcf").write_bytes(b"not ours")  # another prefix: kept
    index = dcformat.save_sharded(tensors, tmp_path, max_shard_bytes=10**6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00001-of-00001.dcf", "model.dcf.index.json", "other-00001-of-00001.dcf"]
    out = dcformat.load_file(index)
    assert all(np.array_equal(out[k], v) for k, v in tensors.items())


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_dense_codes_are_gathered_in_chunks_identically(monkeypatch, chunk):
    from dcformat.codecs import huffman

    monkeypatch.setenv("DCFORMAT_KERNELS", "numpy")  # the chunks are the numpy path's
    monkeypatch.setattr(huffman, "GATHER_CHUNK", chunk)
    rng = np.random.default_rng(6)
    q = dcformat.quantize(rng.laplace(size=(37, 53)).astype(np.float32), bits=6)
    data = dcformat.save(
        {"q": q, "h": dcformat.quantize(rng.normal(size=(5, 300)).astype(np.float16), bits=4)}, options=dcformat.EncodeOptions(layout="dense")
    )
    out = dcformat.load(data)
    assert out["q"].tobytes() == q.dequantize().tobytes()
    with dcformat.open(data) as f:
        h = f.get_quantized("h")
        assert out["h"].dtype == np.float16 and out["h"].tobytes() == h.dequantize().tobytes()
        assert f.info("q").encoding == "quant_dense"
