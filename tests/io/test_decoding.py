"""``io.loading.decoding``: every tensor's array at once, the values decoded on a worker
thread while the caller works, errors raised when the block is left."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dcformat
from dcformat.errors import DCFormatError
from dcformat.format.encode import EncodeOptions
from dcformat.io.loading import decode_all, decoding, open_file
from tests.support.strategies import patch_payload

DECODED = {"quant_dense", "quant_sparse", "float_split"}


def workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "dcformat-backlog"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A file of every encoding: quantized dense and sparse, float_split, zstd, raw, bool."""
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((300, 200)).astype(np.float32)
    pruned = rng.laplace(scale=0.05, size=(256, 256)).astype(np.float32)
    pruned[np.abs(pruned) < 0.08] = 0
    path = tmp_path_factory.mktemp("decoding") / "m.dcf"
    with dcformat.FileWriter(path) as writer:
        writer.add("dense", dcformat.quantize(dense, bits=5), options=EncodeOptions(layout="dense", coder="huffman"))
        writer.add("sparse", dcformat.quantize(pruned, bits=4), options=EncodeOptions(layout="sparse"))
        writer.add("floats", rng.standard_normal(150_000).astype(np.float32), options=EncodeOptions(dense="float_split"))
        writer.add("halves", rng.standard_normal(70_000).astype(np.float16), options=EncodeOptions(dense="float_split"))
        writer.add("zstd", np.arange(50_000, dtype=np.int32) % 7, options=EncodeOptions(dense="zstd"))
        writer.add("raw", np.arange(12, dtype=np.int64), options=EncodeOptions(dense="raw"))
        writer.add("mask", rng.random(1000) > 0.5)
    return path


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_arrays_hold_the_values_once_the_block_is_left(model, threads):
    with open_file(model) as reader:
        expected = decode_all(reader, threads=1)
        encodings = {name: reader.info(name).encoding for name in reader.keys()}
        with decoding(reader, threads=threads) as (arrays, arriving):
            assert list(arrays) == reader.keys()
            assert all(array.flags.writeable for array in arrays.values())
            assert arriving == ({name for name, encoding in encodings.items() if encoding in DECODED} if threads > 1 else set())
        for name, array in arrays.items():
            assert array.dtype == expected[name].dtype and array.shape == expected[name].shape, name
            assert np.array_equal(array, expected[name]), name
    assert not workers()


def corrupt_lanes(path) -> bytes:
    """The file with one bit of the quantized tensor's Huffman payload flipped, checksums
    made honest: every structure still checks out, the lanes no longer end where declared."""
    blob = path.read_bytes()
    for back in range(1, 200):
        bad = patch_payload(
            blob, "dense", lambda payload, back=back: payload[:-back] + bytes([payload[-back] ^ 0x10]) + payload[len(payload) - back + 1 :]
        )
        with dcformat.open(bad) as reader:
            reader.plan("dense")  # the checks made before anything is decoded pass
            try:
                reader.get("dense")
            except DCFormatError:
                return bad
    raise AssertionError("no flipped bit upset the lanes")


def test_an_error_found_while_decoding_is_raised_when_the_block_is_left(model):
    bad = corrupt_lanes(model)
    with dcformat.open(bad) as reader:
        expected = pytest.raises(DCFormatError, reader.get, "dense").value
        body_ran = False
        with pytest.raises(DCFormatError) as raised:
            with decoding(reader, threads=2) as (arrays, arriving):
                assert "dense" in arriving
                body_ran = True
        assert body_ran and str(raised.value) == str(expected)
    assert not workers()


def test_an_error_in_the_block_stops_the_decoding_and_passes_through(model):
    with open_file(model) as reader:
        with pytest.raises(KeyError, match="the caller's"):
            with decoding(reader, threads=2):
                raise KeyError("the caller's")
    assert not workers()


def test_a_file_without_tensors(tmp_path):
    dcformat.save_file({}, tmp_path / "empty.dcf")
    with open_file(tmp_path / "empty.dcf") as reader, decoding(reader, threads=2) as (arrays, arriving):
        assert arrays == {} and arriving == set()


def test_one_tensor_is_decoded_at_once_with_every_thread(tmp_path, monkeypatch):
    from dcformat.format import decode as decoders

    rng = np.random.default_rng(4)
    path = tmp_path / "one.dcf"
    dcformat.save_file({"w": dcformat.quantize(rng.standard_normal((512, 512)).astype(np.float32), bits=5)}, path)
    used = []
    start = decoders.start

    def spied(plan, **kwargs):
        array, fill = start(plan, **kwargs)
        return array, (lambda threads: used.append(threads) or fill(threads))

    monkeypatch.setattr(decoders, "start", spied)
    with open_file(path) as reader, decoding(reader, threads=3) as (arrays, arriving):
        assert arriving == set() and used == [3] and not workers()
    with open_file(path) as reader:
        assert np.array_equal(arrays["w"], reader.get("w"))
