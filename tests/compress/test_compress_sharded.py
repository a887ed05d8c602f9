"""Post-training compression at scale: shard indexes in, dcformat shards out, one tensor in memory at a time.

Hostile shard indexes and the sources that read them are tested in ``tests/interop/test_sources.py``.
"""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest

import dcformat
from dcformat.cli import main
from dcformat.cli.compress import parse_size
from dcformat.compress import compress_file, compress_tensors, files, grid, plan_compression
from dcformat.errors import EncodeError
from tests.support.models import sharded_model, write_sharded_input


@pytest.fixture
def sharded_input(tmp_path):
    return write_sharded_input(tmp_path)


def test_safetensors_shards_in_one_file_out(sharded_input, tmp_path):
    tensors, index, single = sharded_input
    report = compress_file(index, tmp_path / "a.dcf")
    reference = compress_file(single, tmp_path / "b.dcf")
    a, b = dcformat.load_file(tmp_path / "a.dcf"), dcformat.load_file(tmp_path / "b.dcf")
    assert sorted(a) == sorted(tensors)
    for name in tensors:  # the same plan whichever way the model was split
        assert a[name].tobytes() == b[name].tobytes(), name
    assert [r["stored_bytes"] for r in report["tensors"]] == [r["stored_bytes"] for r in reference["tensors"]]
    assert report["totals"]["quantized"] == 6
    metadata = dcformat.open(tmp_path / "a.dcf").metadata()
    assert metadata["safetensors.metadata"] == {"format": "pt"}
    assert metadata["safetensors.index.metadata"] == {"total_size": sum(t.nbytes for t in tensors.values())}


def test_dcformat_shards_out(sharded_input, tmp_path):
    tensors, index, single = sharded_input
    out = tmp_path / "out"
    report = compress_file(index, out, max_shard_bytes=8_000)
    one = compress_file(single, tmp_path / "one.dcf")
    files = sorted(p.name for p in out.iterdir())
    assert "model.dcf.index.json" in files
    shards = [f for f in files if f.endswith(".dcf")]
    assert len(shards) >= 2 and report["shards"] == shards
    assert shards[0] == f"model-00001-of-{len(shards):05d}.dcf"
    assert report["output"] == str(out / "model.dcf.index.json")
    assert report["totals"]["file_bytes"] == sum((out / f).stat().st_size for f in files)
    loaded = dcformat.load_file(out / "model.dcf.index.json")
    expected = dcformat.load_file(tmp_path / "one.dcf")
    assert sorted(loaded) == sorted(expected)
    for name in expected:
        assert loaded[name].tobytes() == expected[name].tobytes(), name
    with dcformat.open(out / "model.dcf.index.json") as f:
        for row in report["tensors"]:
            assert f.shard_of(row["name"]) == row["shard"]
            assert f.entry(row["name"]).length == row["stored_bytes"]
    assert [r["stored_bytes"] for r in report["tensors"]] == [r["stored_bytes"] for r in one["tensors"]]
    assert dcformat.open(out / "model.dcf.index.json").metadata()["dcformat_compress"]["source"] == "model.safetensors.index.json"


def test_dcformat_shards_in(sharded_input, tmp_path):
    tensors, index, _ = sharded_input
    compress_file(index, tmp_path / "q", max_shard_bytes=8_000, bits=8)
    again = compress_file(tmp_path / "q" / "model.dcf.index.json", tmp_path / "again.dcf", bits=8)
    assert again["totals"]["tensors"] == len(tensors)
    metadata = dcformat.open(tmp_path / "again.dcf").metadata()
    assert "shards" not in metadata and metadata["safetensors.metadata"] == {"format": "pt"}
    first = dcformat.load_file(tmp_path / "q" / "model.dcf.index.json")
    second = dcformat.load_file(tmp_path / "again.dcf")
    for name in tensors:  # k-means of already quantized values finds the same levels
        assert np.array_equal(first[name], second[name]), name


class CountingSource(dict):
    """A model whose tensors are made on each read, with weak references to all it handed out."""

    def __init__(self, tensors):
        super().__init__(tensors)
        self.handed_out: list[weakref.ref] = []
        self.most_alive = 0
        self.files = ()  # read from no file: no output can replace one

    def __getitem__(self, name):
        alive = sum(ref() is not None for ref in self.handed_out)
        self.most_alive = max(self.most_alive, alive)
        array = super().__getitem__(name).copy()
        self.handed_out.append(weakref.ref(array))
        return array

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _contents(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_output_that_would_replace_the_input_is_refused(sharded_input, tmp_path):
    """Nothing lost: the model's own files (followed through links), or the shards a sharded
    save would replace or delete as stale, are never the output; nothing is written."""
    _, index, single = sharded_input
    (tmp_path / "link.safetensors").symlink_to(single)
    (tmp_path / "elsewhere").mkdir()
    compress_file(index, tmp_path / "q", max_shard_bytes=8_000, bits=8)  # dcformat shards to read from
    dcf_index = tmp_path / "q" / "model.dcf.index.json"
    last_shard = sorted((tmp_path / "q").glob("model-*.dcf"))[-1]
    (tmp_path / "elsewhere" / "one.dcf").symlink_to(last_shard)  # a shard is a .dcf of its own, read here through a link
    first_shard = tmp_path / "in" / sorted(set(json.loads(open(index).read())["weight_map"].values()))[0]
    folders = (tmp_path, tmp_path / "in", tmp_path / "q", tmp_path / "elsewhere")
    before = [_contents(folder) for folder in folders]
    for source, output, shard_bytes in [
        (single, single, None),
        (single, tmp_path / "link.safetensors", None),
        (index, first_shard, None),  # one of the index's shards
        (dcf_index, tmp_path / "q", 8_000),  # its shards and index, rewritten in place
        (dcf_index, tmp_path / "q", 10**9),  # ... even as fewer shards (the stale ones deleted)
        (tmp_path / "elsewhere" / "one.dcf", tmp_path / "q", 8_000),
        (dcf_index, last_shard, None),
    ]:
        with pytest.raises(EncodeError, match="would replace .* which the model is read from"):
            compress_file(source, output, max_shard_bytes=shard_bytes, bits=8)
    assert [_contents(folder) for folder in folders] == before
    compress_file(dcf_index, tmp_path / "q" / "next.dcf", bits=8)  # beside its files is fine
    compress_file(single, tmp_path, max_shard_bytes=10**9, one_file_if_fits="model.dcf", bits=8)


@pytest.mark.parametrize(("shards", "threads"), [(None, 1), (6_000, 1), (None, 2), (6_000, 3)])
def test_tensors_in_memory_are_bounded_by_the_threads(monkeypatch, tmp_path, shards, threads):
    source = CountingSource(sharded_model())
    source.metadata = {}
    monkeypatch.setattr(files, "open_source", lambda path: source)
    compress_file("anything", tmp_path / ("out" if shards else "out.dcf"), max_shard_bytes=shards, threads=threads)
    assert len(source.handed_out) == 2 * len(source)  # read twice: to plan, to write
    # with one thread each tensor is released before the next is read; with more, the
    # others being worked on at that moment may be alive
    assert source.most_alive <= threads - 1
    assert all(ref() is None for ref in source.handed_out)


def test_output_does_not_depend_on_the_thread_count(monkeypatch, sharded_input, tmp_path):
    monkeypatch.setattr(grid, "SAMPLE_LIMIT", 5_000)  # the larger tensors are sized on samples
    index = sharded_input[1]
    compress_file(index, tmp_path / "one.dcf", threads=1)
    compress_file(index, tmp_path / "three.dcf", threads=3)
    assert (tmp_path / "one.dcf").read_bytes() == (tmp_path / "three.dcf").read_bytes()
    compress_file(index, tmp_path / "s1", threads=1, max_shard_bytes=9_000)
    compress_file(index, tmp_path / "s4", threads=4, max_shard_bytes=9_000)
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == sorted(p.name for p in (tmp_path / "s4").iterdir())
    for p in (tmp_path / "s1").iterdir():
        assert p.read_bytes() == (tmp_path / "s4" / p.name).read_bytes(), p.name


def test_compress_tensors_is_the_two_passes(sharded_input):
    tensors = sharded_input[0]
    out, report = compress_tensors(tensors)
    plan = plan_compression(tensors)
    for name in plan.names:
        again = plan.apply(name, tensors[name])
        first = out[name]
        assert type(again) is type(first)
        assert (again.dequantize() if hasattr(again, "dequantize") else again).tobytes() == (
            first.dequantize() if hasattr(first, "dequantize") else first
        ).tobytes()
    assert plan.report() == report


def test_plan_checks_what_it_is_given(sharded_input):
    tensors = sharded_input[0]
    plan = plan_compression(tensors)
    with pytest.raises(EncodeError, match="plan was made for float32"):
        plan.apply("layers.0.mlp.weight", np.zeros((2, 2), np.float32))
    with pytest.raises(EncodeError, match="no tensor of this name"):
        plan.apply("nope", np.zeros(2))


def test_bad_shard_size(sharded_input, tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(EncodeError, match="max_shard_bytes"):
            compress_file(sharded_input[2], tmp_path / "x", max_shard_bytes=bad)
    assert not (tmp_path / "x").exists()


# -- the command line ------------------------------------------------------------------------


def test_command_writes_shards(sharded_input, tmp_path, capsys):
    _, index, _ = sharded_input
    assert main(["compress", index, str(tmp_path / "out"), "--max-shard-size", "8KB", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    shards = sorted(p.name for p in (tmp_path / "out").glob("*.dcf"))
    assert len(shards) >= 2
    assert f"{len(shards)} shards and their index" in printed
    assert main(["compress", index, str(tmp_path / "out2"), "--max-shard-size", "8KB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards"] == shards and all("shard" in r for r in report["tensors"])


def test_command_shard_errors(sharded_input, tmp_path, capsys):
    _, index, _ = sharded_input
    assert main(["compress", index, str(tmp_path / "x.dcf"), "--max-shard-size", "1GB"]) == 2
    assert "OUT is a folder" in capsys.readouterr().err
    assert main(["compress", index, str(tmp_path / "x.dcf"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["compress", index, str(tmp_path / "x"), "--max-shard-size", "lots"])
    assert exit_.value.code == 2
    assert "expected a size such as 2GB" in capsys.readouterr().err
    broken = tmp_path / "in" / "model.safetensors.index.json"
    broken.write_text('{"weight_map": {"x": "../../etc/passwd"}}')
    assert main(["compress", str(broken), str(tmp_path / "y.dcf")]) == 1
    assert "weight_map['x']" in capsys.readouterr().err
    assert not (tmp_path / "y.dcf").exists()


@pytest.mark.parametrize(("text", "size"), [("4GB", 4 * 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("123", 123), ("1.5 kb", 1500)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_quantizing_in_chunks_gives_the_same_cells(monkeypatch, chunk):
    rng = np.random.default_rng(9)
    tensors = {"dense": rng.laplace(scale=0.02, size=(64, 80)).astype(np.float32), "half": rng.normal(size=(50, 90)).astype(np.float16)}
    pruned = rng.laplace(scale=0.02, size=(70, 60)).astype(np.float32)
    pruned[np.abs(pruned) < 0.01] = 0
    tensors["pruned"] = pruned
    whole, _ = compress_tensors(tensors, min_elements=16)
    monkeypatch.setattr(grid, "QUANTIZE_CHUNK", chunk)
    chunked, _ = compress_tensors(tensors, min_elements=16)
    for name in tensors:
        a, b = whole[name], chunked[name]
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.positions, b.positions), name
        np.testing.assert_allclose(a.codebook, b.codebook, rtol=1e-6)  # sums added in another order
    assert whole["dense"].is_dense and chunked["dense"]._positions is None  # no positions kept for a dense tensor
