"""``dcformat distill MODEL_DIR OUT_DIR --text TEXTFILE`` (the trained pipeline) on a small
BERT folder with its own tokenizer, saved here by transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dcformat
from dcformat import hf
from dcformat.cli import main
from dcformat.errors import EncodeError
from dcformat.hf.calibration import stdlib_prose
from dcformat.hf.distill import _replaceable_tokens, _with_random_tokens
from dcformat.quantize import QuantizedTensor
from tests.support.models import BERT_WORDS, write_bert_folder

torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]'")

#: Small enough that every matrix of the small BERT is quantized.
SETTINGS = dict(min_elements=1024, target_bits_per_weight=3.0, held_out=32, batch_size=16, lr=1e-4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert") / "model"
    write_bert_folder(root)
    return root


@pytest.fixture(scope="module")
def texts():
    return stdlib_prose(240)


def partition(q: QuantizedTensor) -> np.ndarray:
    """Which elements share a value: each element's code, renumbered by first appearance."""
    codes = np.zeros(int(np.prod(q.shape)), dtype=np.int64)
    codes[slice(None) if q.positions is None else q.positions] = q.codes + 1
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


def test_distillation_writes_a_loadable_folder_closer_to_the_original(folder, texts, tmp_path):
    record = hf.distill_folder(folder, tmp_path / "out", texts, steps=25, **SETTINGS)
    trained = record["distillation"]
    assert record["operation"] == "distill" and trained["texts"] == 240 - 32 and trained["held_out_texts"] == 32
    # the held-out embeddings' distance from the original's at least halved by the training
    assert 1 - trained["held_out_cosine_after"] < 0.5 * (1 - trained["held_out_cosine_before"])
    assert trained["loss_last"] < trained["loss_first"]
    out = tmp_path / "out"
    written = json.loads((out / "dcformat.json").read_text())
    assert written["distillation"] == trained and written["settings"]["steps"] == 25 and written["settings"]["move_codes"] is True
    assert {"config.json", "tokenizer.json", "vocab.txt"} <= set(written["carried"]) and not (out / "model.safetensors").exists()
    assert written["weights"]["ratio_vs_fp32"] > 8  # 3 bits per weight asked for: 10.7x, less the exact tensors' share
    with dcformat.open(out / "model.dcf") as f:
        quantized = [n for n in f.keys() if f.info(n).encoding.startswith("quant")]
        assert len(quantized) == written["weights"]["quantized"] >= 12
        stored = {n: f.get(n) for n in f.keys()}
    model = hf.from_pretrained(out)  # strict: every tensor in place
    state = model.state_dict()
    for name, value in stored.items():
        np.testing.assert_array_equal(state[name].numpy(), value)
    original = transformers.AutoModel.from_pretrained(folder)
    changed = [n for n in stored if n.endswith(".bias") and not np.array_equal(original.state_dict()[n].numpy(), stored[n])]
    assert changed  # the exact tensors trained too


def test_fixed_codes_train_only_the_centroids(folder, texts, tmp_path):
    untrained = hf.distill_folder(folder, tmp_path / "zero", texts, steps=0, move_codes=False, **SETTINGS)
    trained = hf.distill_folder(folder, tmp_path / "fixed", texts, steps=5, move_codes=False, **SETTINGS)
    assert untrained["distillation"]["held_out_cosine_before"] == untrained["distillation"]["held_out_cosine_after"]
    assert trained["settings"]["move_codes"] is False
    with dcformat.open(tmp_path / "zero" / "model.dcf") as before, dcformat.open(tmp_path / "fixed" / "model.dcf") as after:
        names = [n for n in before.keys() if before.info(n).encoding.startswith("quant")]
        moved = 0
        for name in names:
            q0, q1 = before.get_quantized(name), after.get_quantized(name)
            np.testing.assert_array_equal(partition(q0), partition(q1))  # the same weights share a value
            moved += not np.array_equal(np.sort(q0.codebook), np.sort(q1.codebook))
        assert moved >= len(names) // 2  # the values they share moved


def test_command_line(folder, texts, tmp_path, capsys):
    text = tmp_path / "prose.txt"
    text.write_text("\n".join(texts) + "\n")
    args = ["distill", str(folder), str(tmp_path / "out"), "--text", str(text), "--steps", "3", "--batch-size", "8", "--held-out", "16"]
    assert main([*args, "--min-elements", "1024", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "smaller than fp32" in out and "held-out texts" in out and "files carried over" in out
    assert main([*args, "--json"]) == 1  # the output exists now: refused, nothing lost
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["distill", str(folder / "model.safetensors"), str(tmp_path / "x"), "--text", str(text)]) == 2
    assert "must be a model folder" in capsys.readouterr().err
    assert main(["distill", str(folder), str(tmp_path / "y"), "--text", str(text), "--threads", "0"]) == 2
    record = tmp_path / "z"
    options = ["--steps", "1", "--held-out", "16", "--batch-size", "4", "--token-noise", "0.1", "--json"]
    assert main(["distill", str(folder), str(record), "--text", str(text), *options]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["distillation"]["held_out_texts"] == 16 and written["settings"]["token_noise"] == 0.1


def test_token_noise_replaces_only_real_tokens_and_never_by_special_ones(folder):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    sentences = [" ".join(BERT_WORDS[i : i + 3 + i % 9]) + " zebra" for i in range(16)]  # "zebra" is [UNK]: special
    encoded = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    special = np.array(tokenizer.all_special_ids)
    replaceable = _replaceable_tokens(tokenizer)
    assert replaceable.size == len(tokenizer) - special.size and not np.isin(special, replaceable).any()
    before = encoded["input_ids"].numpy()
    after = _with_random_tokens(encoded, replaceable, 0.5, np.random.default_rng(0), torch).numpy()
    eligible = encoded["attention_mask"].numpy().astype(bool) & ~np.isin(before, special)
    changed = after != before
    assert not changed[~eligible].any()  # padding, [CLS], [SEP] and the like stay
    assert not np.isin(after[changed], special).any()
    assert 0.35 < changed.sum() / eligible.sum() < 0.6  # half drawn, a few drawn as themselves
    assert np.array_equal(encoded["input_ids"].numpy(), before)  # the batch itself is not changed


def test_too_few_texts_or_bad_settings_are_refused_before_any_work(folder, tmp_path):
    with pytest.raises(EncodeError, match="too few"):
        hf.distill_folder(folder, tmp_path / "a", ["One text only."] * 10, steps=1)
    with pytest.raises(EncodeError, match="batch_size"):
        hf.distill_folder(folder, tmp_path / "b", stdlib_prose(100), batch_size=0)
    with pytest.raises(EncodeError, match="token_noise"):
        hf.distill_folder(folder, tmp_path / "f", stdlib_prose(100), token_noise=1.0)
    with pytest.raises(EncodeError, match="seed"):
        hf.distill_folder(folder, tmp_path / "c", stdlib_prose(100), seed=-1)
    with pytest.raises(dcformat.DCFormatError, match="codebook_lr must be a positive number"):
        hf.distill_folder(folder, tmp_path / "d", stdlib_prose(100), codebook_lr=0.0)
    hf.convert_folder(folder, tmp_path / "lossless")
    with pytest.raises(EncodeError, match="holds .dcf weights: distil from the original folder"):
        hf.distill_folder(tmp_path / "lossless", tmp_path / "e", stdlib_prose(100))
    assert not any((tmp_path / name).exists() for name in "abcdef")
