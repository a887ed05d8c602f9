"""Model folders in and out without torch: compress, convert both ways, inspect and verify.

The folders are built here (an independent safetensors writer, hand-written config and
tokenizer files); what the package wrote is read back with the safetensors library and
compared with the tensors written in, byte for byte for the files carried over.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import dcformat
from dcformat import hf
from dcformat.cli import main
from dcformat.compress import compress_file
from dcformat.errors import EncodeError, FormatError, LimitError, UnsupportedError
from dcformat.interop.common import MissingDependencyError
from tests.support.models import transformer_like, write_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="pip install safetensors to read back what is written")

SMALL = dict(min_elements=256)  # the synthetic matrices are small: quantize them anyway
OTHER_FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 64}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"vocab": {"[PAD]": 0}}}',
    "vocab.txt": "[PAD]\n[UNK]\nk\u00f6nig\n".encode(),
    "README.md": b"---\nlicense: apache-2.0\n---\n# a model card\n",
    "1_Pooling/config.json": b'{"word_embedding_dimension": 64, "pooling_mode_mean_tokens": true}',
    "modules.json": b'[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]',
}


def make_folder(root, *, shards: int = 1, extra: dict | None = None):
    """A model folder: transformer_like() weights (one file or ``shards`` shards and their index) and OTHER_FILES."""
    root.mkdir(parents=True)
    tensors = transformer_like()
    if shards == 1:
        write_safetensors(root / "model.safetensors", tensors, metadata={"format": "pt"})
    else:
        names = sorted(tensors)
        weight_map = {}
        for k in range(shards):
            shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[k::shards]}
            write_safetensors(root / shard, part, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, shard))
        (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    for name, data in {**OTHER_FILES, **(extra or {})}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return tensors


def all_files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_compress_folder_carries_every_other_file_and_records_what_was_done(tmp_path):
    source = tmp_path / "model"
    make_folder(source, extra={"onnx/model.onnx": b"\x08\x07dense weights", "pytorch_model.bin": b"pickle"})
    record = hf.compress_folder(source, tmp_path / "out", **SMALL)
    out = all_files(tmp_path / "out")
    assert sorted(out) == sorted([*OTHER_FILES, "model.dcf", "dcformat.json"])  # no dense weights left
    for name, data in OTHER_FILES.items():
        assert out[name] == data
    written = json.loads(out["dcformat.json"])
    assert written == {k: v for k, v in record.items() if k not in ("folder", "compress")}
    assert written["dcformat_version"] == dcformat.__version__
    assert written["operation"] == "compress"
    assert written["settings"]["target_bits_per_weight"] == 4.5
    assert written["weights"]["files"] == ["model.dcf"]
    assert written["weights"]["file_bytes"] == (tmp_path / "out" / "model.dcf").stat().st_size
    assert written["weights"]["quantized"] > 0
    assert sorted(written["left_out"]) == ["onnx/model.onnx", "pytorch_model.bin"]
    assert written["carried"]["vocab.txt"]["bytes"] == len(OTHER_FILES["vocab.txt"])
    # The weights are exactly what compress_file makes of the folder's safetensors.
    compress_file(source / "model.safetensors", tmp_path / "alone.dcf", **SMALL)
    assert dcformat.load_file(tmp_path / "out" / "model.dcf").keys() == dcformat.load_file(tmp_path / "alone.dcf").keys()
    for name, array in dcformat.load_file(tmp_path / "alone.dcf").items():
        np.testing.assert_array_equal(dcformat.load_file(tmp_path / "out" / "model.dcf")[name], array)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_sharded_input_and_output(tmp_path):
    tensors = make_folder(tmp_path / "model", shards=3)
    small = hf.compress_folder(tmp_path / "model", tmp_path / "sharded", max_shard_bytes=20_000, **SMALL)
    files = small["weights"]["files"]
    assert files[0] == "model.dcf.index.json" and len(files) > 2 and all(f.endswith(".dcf") for f in files[1:])
    assert not any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in all_files(tmp_path / "sharded"))
    one = hf.compress_folder(tmp_path / "model", tmp_path / "single", **SMALL)
    assert one["weights"]["files"] == ["model.dcf"]
    loaded = dcformat.load_file(tmp_path / "sharded" / "model.dcf.index.json")
    single = dcformat.load_file(tmp_path / "single" / "model.dcf")
    assert sorted(loaded) == sorted(single) == sorted(tensors)
    for name in tensors:
        np.testing.assert_array_equal(loaded[name], single[name])


def test_convert_round_trip_keeps_every_value_and_transformers_metadata(tmp_path):
    tensors = make_folder(tmp_path / "model", shards=2)
    record = hf.convert_folder(tmp_path / "model", tmp_path / "lossless")
    assert record["weights"]["files"] == ["model.dcf"] and record["operation"] == "convert"
    assert (tmp_path / "lossless" / "dcformat.json").exists()
    back = hf.convert_folder(tmp_path / "lossless", tmp_path / "plain")
    files = all_files(tmp_path / "plain")
    assert sorted(files) == sorted([*OTHER_FILES, "model.safetensors"])  # a plain folder: no record
    assert back["weights"]["files"] == ["model.safetensors"]
    read = safetensors_numpy.load_file(tmp_path / "plain" / "model.safetensors")
    assert sorted(read) == sorted(tensors)
    for name, array in tensors.items():
        assert read[name].dtype == array.dtype
        np.testing.assert_array_equal(read[name], array)
    from safetensors import safe_open

    with safe_open(tmp_path / "plain" / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}  # transformers refuses a file without it


def test_lossless_convert_of_a_large_model_writes_dcf_shards(tmp_path):
    tensors = make_folder(tmp_path / "model", shards=2)
    record = hf.convert_folder(tmp_path / "model", tmp_path / "dcf", max_shard_bytes=100_000)
    files = record["weights"]["files"]
    assert files[0] == "model.dcf.index.json" and len(files) >= 3
    assert record["weights"]["file_bytes"] == sum((tmp_path / "dcf" / f).stat().st_size for f in files)
    loaded = dcformat.load_file(tmp_path / "dcf" / files[0])
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_convert_back_in_shards_with_an_index(tmp_path):
    tensors = make_folder(tmp_path / "model")
    hf.compress_folder(tmp_path / "model", tmp_path / "dcf", **SMALL)
    record = hf.convert_folder(tmp_path / "dcf", tmp_path / "plain", max_shard_bytes=60_000)
    files = record["weights"]["files"]
    assert files[0] == "model.safetensors.index.json" and len(files) >= 3
    index = json.loads((tmp_path / "plain" / files[0]).read_text())
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
    dequantized = dcformat.load_file(tmp_path / "dcf" / "model.dcf")
    for shard in files[1:]:
        for name, array in safetensors_numpy.load_file(tmp_path / "plain" / shard).items():
            assert index["weight_map"][name] == shard
            np.testing.assert_array_equal(array, dequantized[name])


def test_an_existing_output_is_never_touched(tmp_path):
    make_folder(tmp_path / "model")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(EncodeError, match="not an empty folder"):
        hf.compress_folder(tmp_path / "model", tmp_path / "out", **SMALL)
    assert all_files(tmp_path / "out") == {"keep.txt": b"mine"}
    with pytest.raises(EncodeError, match="outside the model folder"):
        hf.convert_folder(tmp_path / "model", tmp_path / "model" / "inside")
    (tmp_path / "empty").mkdir()
    hf.convert_folder(tmp_path / "model", tmp_path / "empty")  # an empty folder is a fine destination
    assert "model.dcf" in all_files(tmp_path / "empty")


def test_a_failure_leaves_no_folder(tmp_path, monkeypatch):
    make_folder(tmp_path / "model")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dcformat.hf.write.carry", broken)
    with pytest.raises(OSError):
        hf.compress_folder(tmp_path / "model", tmp_path / "out", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"notes.txt": b"x"}, "holds no model.safetensors"),
        ({"pytorch_model.bin": b"x"}, "convert the weights to safetensors first"),
        ({"a.safetensors": None, "b.safetensors": None}, "several weight files"),
        ({"a.safetensors.index.json": b"{}", "b.safetensors.index.json": b"{}"}, "several shard indexes"),
    ],
)
def test_folders_without_one_clear_set_of_weights(tmp_path, layout, message):
    (tmp_path / "m").mkdir()
    for name, data in layout.items():
        if data is None:
            write_safetensors(tmp_path / "m" / name, {"w": np.zeros(3, np.float32)})
        else:
            (tmp_path / "m" / name).write_bytes(data)
    with pytest.raises(FormatError, match=message):
        hf.compress_folder(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sentence_transformers_module_with_weights_of_its_own_is_refused(tmp_path):
    make_folder(tmp_path / "model", extra={"2_Dense/model.safetensors": b"dense"})
    with pytest.raises(UnsupportedError, match="2_Dense"):
        hf.compress_folder(tmp_path / "model", tmp_path / "out", **SMALL)


def test_verify_checks_the_carried_files_against_the_record(tmp_path):
    make_folder(tmp_path / "model")
    hf.compress_folder(tmp_path / "model", tmp_path / "out", **SMALL)
    folder = hf.open_folder(tmp_path / "out")
    assert folder.kind == "dcf" and folder.record is not None
    assert hf.folder.check_carried(folder) == sorted(OTHER_FILES)
    (tmp_path / "out" / "vocab.txt").write_bytes(b"changed")
    with pytest.raises(FormatError, match=r"carried\['vocab.txt'\].*SHA-256 differs"):
        hf.folder.check_carried(hf.open_folder(tmp_path / "out"))
    (tmp_path / "out" / "vocab.txt").unlink()
    with pytest.raises(FormatError, match=r"carried\['vocab.txt'\].*missing"):
        hf.folder.check_carried(hf.open_folder(tmp_path / "out"))


@pytest.mark.parametrize(
    "record, error",
    [(b"not json", FormatError), (b'{"a": 1, "a": 2}', FormatError), (b"[]", FormatError), (b" " * (hf.folder.MAX_RECORD_BYTES + 1), LimitError)],
)
def test_a_hostile_record_is_refused(tmp_path, record, error):
    make_folder(tmp_path / "model")
    hf.compress_folder(tmp_path / "model", tmp_path / "out", **SMALL)
    (tmp_path / "out" / "dcformat.json").write_bytes(record)
    with pytest.raises(error, match="dcformat.json"):
        hf.open_folder(tmp_path / "out")


def test_the_command_line_takes_folders(tmp_path, capsys):
    make_folder(tmp_path / "model")
    assert main(["compress", str(tmp_path / "model"), str(tmp_path / "out"), "--min-elements", "256", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 files carried over unchanged" in printed and "dcformat.json records what was done" in printed
    assert main(["inspect", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["record"]["operation"] == "compress" and report["files"] == sorted(OTHER_FILES)
    assert main(["inspect", str(tmp_path / "out")]) == 0
    assert "dcformat.json: compress by dcformat" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file": str(tmp_path / "out"),
        "ok": True,
        "tensors": len(transformer_like()),
        "weights": ["model.dcf"],
        "files_checked": len(OTHER_FILES),
    }
    assert main(["convert", str(tmp_path / "out"), str(tmp_path / "plain"), "--no-progress"]) == 0
    assert "model.safetensors, 6 files carried over" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "plain")]) == 2  # plain safetensors: nothing of dcformat's
    assert main(["compress", str(tmp_path / "model"), str(tmp_path / "x.dcf")]) == 2
    assert main(["compress", str(tmp_path / "model"), str(tmp_path / "t"), "--threads", "0"]) == 2
    assert main(["convert", str(tmp_path / "model"), str(tmp_path / "t"), "--threads", "0"]) == 2
    assert main(["convert", str(tmp_path / "model"), str(tmp_path / "y"), "--bits", "4"]) == 2
    assert main(["compress", str(tmp_path / "model"), str(tmp_path / "out")]) == 1  # exists
    err = capsys.readouterr().err
    assert "OUT is the new folder" in err and "do not apply to a model folder" in err and "not an empty folder" in err
    assert err.count("--threads must be at least 1") == 2
    assert not os.path.exists(tmp_path / "x.dcf") and not os.path.exists(tmp_path / "y") and not os.path.exists(tmp_path / "t")


def test_missing_optional_packages_are_named(tmp_path, monkeypatch, capsys):
    make_folder(tmp_path / "model")
    hf.convert_folder(tmp_path / "model", tmp_path / "dcf")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(MissingDependencyError, match="load error: dcformat.hf.from_pretrained needs the package 'transformers'"):
        hf.from_pretrained(tmp_path / "dcf")
    (tmp_path / "cal.txt").write_text("Some text.\n")
    assert main(["compress", str(tmp_path / "model"), str(tmp_path / "out"), "--calibration", str(tmp_path / "cal.txt")]) == 1
    assert "compress error: calibration (it runs the model) needs the package 'transformers'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
