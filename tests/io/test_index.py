"""Shard indexes as hostile input (spec 14): the JSON rules of 4.1, the size caps, plain
shard names, a non-object ``metadata``, and missing shards, each asserting the error type
and the field named; and the writer refusing to write what the reader would reject."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dcformat
from dcformat import DCFormatError, EncodeError, FormatError, LimitError
from dcformat.io import index as index_module
from dcformat.io.index import check_shard_name, read_index, write_index

INDEX = "model.dcf.index.json"


@pytest.fixture
def model(tmp_path):
    """A model saved in two shards; returns the folder."""
    tensors = {"a": np.arange(40, dtype=np.float32), "b": np.ones(40, dtype=np.int16)}
    dcformat.save_sharded(tensors, tmp_path, prefix="model", max_shard_bytes=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00001-of-00002.dcf", "model-00002-of-00002.dcf", INDEX]
    return tmp_path


def index_of(folder) -> dict:
    return json.loads((folder / INDEX).read_text())


def expect_index(folder, exc: type, field: str) -> DCFormatError:
    """The index must fail with exactly ``exc`` naming ``field``, in every reader of it."""
    errors = []
    for read in (lambda: read_index(folder / INDEX), lambda: dcformat.open(folder / INDEX), lambda: dcformat.load_file(folder / INDEX)):
        with pytest.raises(DCFormatError) as info:
            read()
        errors.append(info.value)
    for error in errors:
        assert type(error) is exc, f"{type(error).__name__} instead of {exc.__name__}: {error}"
        assert field in str(error), f"{field!r} not named in: {error}"
    return errors[0]


def test_the_model_loads(model):
    out = dcformat.load_file(model / INDEX)
    assert out["a"].tolist() == list(range(40)) and out["b"].tolist() == [1] * 40


@pytest.mark.parametrize(
    "text",
    [
        b"\xef\xbb\xbf" + b'{"weight_map":{}}',  # a byte-order mark
        b'{"weight_map":{"a":"model-00001-of-00002.dcf","a":"model-00002-of-00002.dcf"}}',  # a repeated key
        b'{"weight_map":{},"weight_map":{}}',
        b'{"weight_map":{},"metadata":{"x":NaN}}',
        b'{"weight_map":{},"metadata":{"x":1e400}}',  # overflows a binary64 (4.1.2)
        b'{"weight_map":{},"metadata":' + b'{"x":' * 63 + b"{}" + b"}" * 63 + b"}",  # 65 levels (4.1.1)
        b'{"weight_map":{},"metadata":{"x":"\\ud800"}}',  # an escaped lone surrogate
        b'{"weight_map":{}',  # not JSON
        b"[]",  # not an object
        b"",
        b'{"weight_map":{"a":"\xff"}}',  # not UTF-8
    ],
    ids=["bom", "duplicate-name", "duplicate-weight-map", "nan", "1e400", "depth-65", "lone-surrogate", "truncated", "array", "empty", "not-utf8"],
)
def test_index_breaks_the_json_rules(model, text):
    """Spec 14.1: the index is JSON under every rule of 4.1."""
    (model / INDEX).write_bytes(text)
    expect_index(model, FormatError, f"{INDEX}: index")


def test_index_at_depth_64_reads(model):
    index = index_of(model)
    deep = {}
    for _ in range(62):  # the index object is level 1, metadata level 2: 62 more make 64
        deep = {"x": deep}
    index["metadata"] = deep
    assert deep == nested(63)
    (model / INDEX).write_text(json.dumps(index))
    assert read_index(model / INDEX).metadata == deep


def test_index_over_the_size_cap(model, monkeypatch):
    """Spec 14.1: the whole index at most 256 MiB, checked before it is parsed (the cap is
    lowered here so as not to write 256 MiB)."""
    size = (model / INDEX).stat().st_size
    monkeypatch.setattr(index_module, "MAX_INDEX_BYTES", size - 1)
    expect_index(model, LimitError, f"{INDEX}: index")
    monkeypatch.setattr(index_module, "MAX_INDEX_BYTES", size)
    read_index(model / INDEX)


def test_index_metadata_over_the_size_cap(model, monkeypatch):
    """Spec 14.1: the index's metadata at most 16 MiB as compact JSON (lowered here)."""
    index = index_of(model)
    index["metadata"] = {"note": "x" * 100}
    (model / INDEX).write_text(json.dumps(index, indent=4))
    compact = len(json.dumps(index["metadata"], separators=(",", ":")))
    monkeypatch.setattr(index_module, "MAX_METADATA_BYTES", compact - 1)
    expect_index(model, LimitError, f"{INDEX}: metadata")
    monkeypatch.setattr(index_module, "MAX_METADATA_BYTES", compact)  # whitespace in the file does not count
    read_index(model / INDEX)


@pytest.mark.parametrize(
    "shard",
    ["", ".", "..", "../model-00001-of-00002.dcf", "sub/model.dcf", "/abs.dcf", "a\\b.dcf", "..\\x.dcf", "a\0b.dcf", 5, None, ["x"]],
    ids=["empty", "dot", "dotdot", "parent", "subfolder", "absolute", "backslash", "backslash-parent", "nul", "number", "null", "array"],
)
def test_index_shard_name_not_a_plain_name(model, shard):
    """Spec 14: no '/', no '\\\\' (on every platform), no NUL, not empty, not '.' or '..', a string."""
    index = index_of(model)
    index["weight_map"]["a"] = shard
    (model / INDEX).write_text(json.dumps(index))
    error = expect_index(model, FormatError, f"{INDEX}: weight_map['a']")
    assert "plain file name" in str(error)
    with pytest.raises(FormatError):
        check_shard_name(shard, field="x")


@pytest.mark.parametrize("name", ["model-00001-of-00002.dcf", "a b.dcf", "ünï.dcf", "x", ".hidden.dcf", "..."])
def test_plain_shard_names_pass(name):
    check_shard_name(name, field="x")


@pytest.mark.parametrize("metadata", [[], "text", None, 3], ids=["array", "string", "null", "number"])
def test_index_metadata_not_an_object(model, metadata):
    index = index_of(model)
    index["metadata"] = metadata
    (model / INDEX).write_text(json.dumps(index))
    expect_index(model, FormatError, f"{INDEX}: metadata")


@pytest.mark.parametrize("weight_map", [[], "x", None], ids=["array", "string", "null"])
def test_index_weight_map_not_an_object(model, weight_map):
    (model / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    expect_index(model, FormatError, f"{INDEX}: weight_map")


def test_index_shard_missing_on_disk(model):
    """Spec 14.1: a shard the index names but the folder lacks is a format error of the
    index (not an OSError), found before any shard is opened."""
    (model / "model-00002-of-00002.dcf").unlink()
    error = expect_index(model, FormatError, f"{INDEX}: weight_map")
    assert "missing" in str(error) and "model-00002-of-00002.dcf" in str(error)


def test_index_shard_that_is_a_folder(model):
    (model / "model-00002-of-00002.dcf").unlink()
    (model / "model-00002-of-00002.dcf").mkdir()
    expect_index(model, FormatError, f"{INDEX}: weight_map")


def test_index_shard_holding_other_tensors(model):
    index = index_of(model)
    index["weight_map"]["a"], index["weight_map"]["b"] = index["weight_map"]["b"], index["weight_map"]["a"]
    (model / INDEX).write_text(json.dumps(index))
    with pytest.raises(FormatError):
        dcformat.load_file(model / INDEX)


@pytest.mark.parametrize("shard", ["", "..", "../x.dcf", "a/b.dcf", "a\\b.dcf", "a\0b"])
def test_writer_refuses_a_shard_name_the_reader_rejects(tmp_path, shard):
    with pytest.raises(EncodeError):
        write_index(tmp_path / INDEX, metadata={}, weight_map={"a": shard})
    assert not (tmp_path / INDEX).exists()


def nested(levels: int) -> dict:
    """A dict ``levels`` deep: ``nested(1) == {}``."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [{"x": 10**400}, {"x": float("inf")}, {"x": float("nan")}, {"x": "\ud800"}, {"x": object()}, nested(64)],
    ids=["huge-int", "inf", "nan", "lone-surrogate", "not-json", "too-deep"],  # too-deep: index 1 + 64 = 65 levels
)
def test_writer_refuses_metadata_the_reader_rejects(tmp_path, metadata):
    with pytest.raises(EncodeError):
        write_index(tmp_path / INDEX, metadata=metadata, weight_map={})
    assert not (tmp_path / INDEX).exists()
    write_index(tmp_path / INDEX, metadata=nested(63), weight_map={})  # 64 levels: written, and read back
    assert read_index(tmp_path / INDEX).metadata == nested(63)


def test_errors_in_a_shard_name_the_shard(tmp_path):
    """A model of many files: a bad shard's error starts with its file name, whatever the
    check that caught it (opening, padding, a tensor's checksum), its error type kept."""
    from dcformat.errors import ChecksumError

    rng = np.random.default_rng(0)
    tensors = {f"w{k}": rng.normal(size=4000).astype(np.float32) for k in range(4)}
    index = dcformat.save_sharded(tensors, tmp_path, max_shard_bytes=20_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*.dcf"))
    assert len(shards) >= 2
    second = tmp_path / shards[1]
    good = second.read_bytes()

    second.write_bytes(good[:-1])  # truncated
    with pytest.raises(FormatError, match=rf"^decode error: {shards[1]}: header\.index_offset .*truncated"):
        dcformat.load_file(index)

    data = bytearray(good)
    second.write_bytes(good)
    with dcformat.open(second) as f:  # one payload byte changed: that tensor's checksum fails
        name = f.keys()[0]
        data[f.entry(name).offset + 10] ^= 0xFF
    second.write_bytes(bytes(data))
    with dcformat.open(index) as f, pytest.raises(ChecksumError, match=rf"^decode error: {shards[1]}: tensors\['{name}'\]"):
        f.verify(threads=1)
