"""``dcformat compress MODEL_DIR OUT_DIR --calibration TEXTFILE`` on a small BERT folder
with its own tokenizer, saved here by transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dcformat
from dcformat import hf
from dcformat.cli import main
from dcformat.errors import EncodeError
from dcformat.hf.calibration import read_texts, stdlib_prose

torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]'")

WORDS = "the a of and to in is was for on with as by at from it that this be are not or which can file data value".split()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert") / "model"
    root.mkdir()
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64
    )
    transformers.BertModel(config).eval().save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_stdlib_prose_is_sentences_of_prose():
    texts = stdlib_prose(64)
    assert len(texts) == 64 and len(set(texts)) == 64
    assert all(6 <= len(t.split()) <= 40 and t[0].isupper() for t in texts)
    assert stdlib_prose(64) == texts  # deterministic for a seed


def test_read_texts(tmp_path):
    path = tmp_path / "cal.txt"
    path.write_text("first line\n\n  second line  \nthird\n")
    assert read_texts(path) == ["first line", "second line", "third"]
    assert read_texts(path, limit=2) == ["first line", "second line"]
    path.write_text("\n \n")
    with pytest.raises(EncodeError, match="holds no text"):
        read_texts(path)


def test_compress_with_calibration(folder, tmp_path):
    texts = stdlib_prose(48)
    record = hf.compress_folder(folder, tmp_path / "out", calibration=texts, min_elements=1024, target_bits_per_weight=4.0)
    calibration = record["calibration"]
    assert calibration["texts"] == 48 and calibration["tokens"] > 48 and calibration["importance"] == "measured"
    assert calibration["layers_measured"] >= 12 and calibration["tensors_weighed"] >= 12
    report = record["compress"]
    assert report["settings"]["error_compensated"] >= 12
    reasons = {r["name"]: r["reason"] for r in report["tensors"]}
    assert reasons["encoder.layer.0.intermediate.dense.weight"] == "allocated, error-compensated"
    assert reasons["embeddings.word_embeddings.weight"] != "allocated, error-compensated"  # not a linear layer
    written = json.loads((tmp_path / "out" / "dcformat.json").read_text())
    assert written["calibration"] == calibration
    model = hf.from_pretrained(tmp_path / "out")  # loads like any compressed folder
    stored = dcformat.load_file(tmp_path / "out" / "model.dcf")
    np.testing.assert_array_equal(
        model.state_dict()["encoder.layer.0.intermediate.dense.weight"].numpy(), stored["encoder.layer.0.intermediate.dense.weight"]
    )


def test_command_line_calibration(folder, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "cal.txt"
    texts.write_text("\n".join(stdlib_prose(32)) + "\n")
    args = [str(folder), str(tmp_path / "out"), "--calibration", str(texts), "--min-elements", "1024", "--no-progress", "--json"]
    assert main(["compress", *args]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"]["file"] == "cal.txt"
    with monkeypatch.context() as patch:  # the output exists: refused before the model runs
        patch.setattr("dcformat.hf.write._calibrated", lambda *a, **k: pytest.fail("calibrated for a refused output"))
        assert main(["compress", *args]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    weights = folder / "model.safetensors"
    assert main(["compress", str(weights), str(tmp_path / "x.dcf"), "--calibration", str(texts)]) == 2
    assert "--calibration needs a model folder" in capsys.readouterr().err
