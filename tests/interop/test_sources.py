"""dcformat.interop.sources and the safetensors reader: files and shard indexes in, fresh arrays out, bad ones refused.

Moved out of the compress tests, whose inputs these readers are; the synthetic models and
their files come from ``tests/support/models.py``.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from dcformat import DCFormatError, FormatError
from dcformat.interop.convert import read_safetensors, write_safetensors
from dcformat.interop.sources import open_source, read_tensors
from tests.support.models import write_safetensors as write_safetensors_by_hand
from tests.support.models import write_sharded_input, write_transformer_like


@pytest.fixture
def model_file(tmp_path):
    return write_transformer_like(tmp_path)


@pytest.fixture
def sharded_input(tmp_path):
    return write_sharded_input(tmp_path)


# -- reading safetensors ------------------------------------------------------------------------


def test_reader_agrees_with_the_safetensors_package(model_file):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed")
    src, tensors = model_file
    ours, metadata = read_safetensors(src)
    theirs = safetensors_numpy.load_file(str(src))
    assert sorted(ours) == sorted(theirs) and metadata == {"format": "pt"}
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])
        np.testing.assert_array_equal(ours[name], tensors[name])
        assert ours[name].dtype == theirs[name].dtype == tensors[name].dtype


def _patched(tmp_path, patch) -> str:
    path = tmp_path / "bad.safetensors"
    write_safetensors_by_hand(path, {"a": np.ones((4, 4), np.float32), "b": np.zeros(3, np.int64)}, header_patch=patch)
    return path


@pytest.mark.parametrize(
    "patch, match",
    [
        (lambda h: h["a"].update(dtype="F8_E4M3"), "cannot be stored in a .dcf"),
        (lambda h: h["a"].update(shape=[4, -4]), "non-negative integers"),
        (lambda h: h["a"].update(shape=[4, 5]), "needs 80"),
        (lambda h: h["a"].update(data_offsets=[0, 10**9]), "within the 88-byte data area"),
        (lambda h: h["b"].update(data_offsets=[8, 32]), "overlaps"),
        (lambda h: h.update(__metadata__={"k": 1}), "strings to strings"),
    ],
)
def test_malformed_safetensors(tmp_path, patch, match):
    with pytest.raises(DCFormatError, match=match):
        read_safetensors(_patched(tmp_path, patch))


def test_malformed_safetensors_framing(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="shorter than the 8-byte"):
        read_tensors(path)
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(FormatError, match="runs past the end"):
        read_tensors(path)
    path.write_bytes(struct.pack("<Q", 2**40))
    with pytest.raises(FormatError, match="over the limit"):
        read_tensors(path)
    path.write_bytes(struct.pack("<Q", 4) + b"[1] ")
    with pytest.raises(FormatError, match="JSON object"):
        read_tensors(path)
    path.write_bytes(struct.pack("<Q", 2) + b"{}" + b"\0" * 8)
    with pytest.raises(FormatError, match="not covered"):
        read_tensors(path)


# -- hostile or broken shard indexes -------------------------------------------------------


def _index(folder, weight_map, **extra) -> str:
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": weight_map, **extra}))
    return str(path)


def test_malformed_safetensors_indexes(tmp_path):
    tensors = {"a": np.ones((2, 2), np.float32), "b": np.zeros(3, np.float32)}
    write_safetensors(tensors, tmp_path / "s1.safetensors")
    cases = [
        ({"a": "s1.safetensors"}, "in the shard only: \\['b'\\]"),
        ({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"}, "in the index only: \\['c'\\]"),
        ({"a": "../s1.safetensors", "b": "s1.safetensors"}, "not a plain file name"),
        ({"a": "/etc/passwd", "b": "s1.safetensors"}, "not a plain file name"),
        ({"a": "s1.safetensors", "b": "s2.safetensors"}, "shard 's2.safetensors' is missing"),
        ({"a": 3, "b": "s1.safetensors"}, "not a plain file name"),
        ({}, "non-empty weight_map"),
    ]
    for weight_map, message in cases:
        with pytest.raises(FormatError, match=message):
            open_source(_index(tmp_path, weight_map))
    path = tmp_path / "model.safetensors.index.json"
    for raw, message in [
        (b"[1]", "must be a JSON object"),
        (b'{"weight_map": 1', "not valid UTF-8 JSON"),
        (b"\xff", "not valid UTF-8 JSON"),
        (b'{"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}}', "duplicate key"),
    ]:
        path.write_bytes(raw)
        with pytest.raises(FormatError, match=message):
            open_source(path)


def test_shard_truncated_after_its_header_was_read(tmp_path):
    tensors = {"a": np.arange(4096, dtype=np.float32).reshape(64, 64)}
    write_safetensors(tensors, tmp_path / "s.safetensors")
    with open_source(tmp_path / "s.safetensors") as source:
        with open(tmp_path / "s.safetensors", "r+b") as f:
            f.truncate(1000)
        with pytest.raises(FormatError, match="truncated"):
            source["a"]


def test_sources_read_fresh_writable_arrays(sharded_input):
    tensors, index, single = sharded_input
    for path in (index, single):
        with open_source(path) as source:
            assert sorted(source) == sorted(tensors) and len(source) == len(tensors)
            for name in tensors:
                array = source[name]
                assert array.flags.writeable and array.dtype == tensors[name].dtype
                assert array.tobytes() == tensors[name].tobytes()
            with pytest.raises(KeyError, match="no tensor named 'zzz'"):
                source["zzz"]
            assert "zzz" not in source and sorted(tensors)[0] in source
