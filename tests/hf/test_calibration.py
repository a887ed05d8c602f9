"""``dcformat compress MODEL_DIR OUT_DIR --calibration TEXTFILE`` on a small BERT folder
with its own tokenizer, saved here by transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dcformat
from dcformat import hf
from dcformat.cli import main
from dcformat.errors import EncodeError
from dcformat.hf.calibration import read_texts, stdlib_prose
from tests.support.models import write_bert_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]'")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert") / "model"
    write_bert_folder(root)
    return root


def test_stdlib_prose_is_sentences_of_prose():
    texts = stdlib_prose(64)
    assert len(texts) == 64 and len(set(texts)) == 64
    assert all(6 <= len(t.split()) <= 40 and t[0].isupper() for t in texts)
    assert stdlib_prose(64) == texts  # deterministic for a seed
    assert stdlib_prose(64, seed=1) != texts and set(stdlib_prose(100_000, seed=1)) == set(stdlib_prose(100_000))
    with_docs = stdlib_prose(100_000, documentation=True)
    assert len(with_docs) > 1.3 * len(stdlib_prose(100_000)) and set(stdlib_prose(100_000)) <= set(with_docs)


def test_stdlib_prose_does_not_depend_on_what_the_process_imported_before():
    script = (
        "import unittest.mock, email.mime.text, asyncio.subprocess, json, sys\n"  # submodules that appear as package attributes
        "from dcformat.hf.calibration import stdlib_prose\n"
        "json.dump(stdlib_prose(128), sys.stdout)"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(found.stdout) == stdlib_prose(128)


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
    assert calibration["run"] == "block by block"
    # q/k/v share one matrix, as do nothing else in BERT: 4 matrices a block, 64^2 or 128^2 float32
    assert calibration["moments_bytes"] >= 2 * (3 * 64 * 64 + 128 * 128) * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the second moments' files are gone
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


def test_a_model_that_is_not_a_stack_of_blocks_is_calibrated_whole(folder, tmp_path, monkeypatch):
    texts = stdlib_prose(32)
    layerwise = hf.compress_folder(folder, tmp_path / "layerwise", calibration=texts, min_elements=1024, target_bits_per_weight=4.0)
    monkeypatch.setattr("dcformat.torch.layerwise.find_blocks", lambda model: None)
    whole = hf.compress_folder(folder, tmp_path / "whole", calibration=texts, min_elements=1024, target_bits_per_weight=4.0)
    assert whole["calibration"]["run"] == "whole model"
    # The pooler runs after the blocks: only the whole model measures its inputs.
    assert whole["calibration"]["layers_measured"] == layerwise["calibration"]["layers_measured"] + 1
    assert whole["compress"]["settings"]["error_compensated"] == layerwise["compress"]["settings"]["error_compensated"] + 1


def test_command_line_calibration(folder, tmp_path, capsys, monkeypatch):
    texts = tmp_path / "cal.txt"
    texts.write_text("\n".join(stdlib_prose(32)) + "\n")
    args = [str(folder), str(tmp_path / "out"), "--calibration", str(texts), "--min-elements", "1024", "--no-progress", "--json"]
    assert main(["compress", *args]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"]["file"] == "cal.txt"
    with monkeypatch.context() as patch:  # the output exists: refused before the model runs
        patch.setattr("dcformat.hf.write.calibrated_settings", lambda *a, **k: pytest.fail("calibrated for a refused output"))
        assert main(["compress", *args]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    weights = folder / "model.safetensors"
    assert main(["compress", str(weights), str(tmp_path / "x.dcf"), "--calibration", str(texts)]) == 2
    assert "--calibration needs a model folder" in capsys.readouterr().err
