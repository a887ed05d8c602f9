"""``dcformat.hf.from_pretrained``: a transformers model from a folder of ``.dcf`` weights.

A small BERT made and saved here by transformers itself (``save_pretrained``) is the
original; what loads from the compressed or converted folder is compared with it and
with the tensors in the ``.dcf`` files.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

import dcformat
from dcformat import hf
from dcformat.errors import FormatError
from dcformat.torch import ModelMismatchError

torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0' to load models")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]' to load models")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """``(folder, model)``: a small BertForMaskedLM saved as transformers saves any model."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=32
    )
    model = transformers.BertForMaskedLM(config).eval()
    folder = tmp_path_factory.mktemp("bert") / "original"
    model.save_pretrained(folder)
    return folder, model


def base_state(model) -> dict:
    return {k: v for k, v in model.bert.state_dict().items()}


INPUT = torch.tensor([[2, 17, 45, 99, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])


def test_lossless_folder_gives_the_same_model(original, tmp_path):
    folder, model = original
    hf.convert_folder(folder, tmp_path / "dcf")
    loaded = hf.from_pretrained(tmp_path / "dcf", "AutoModelForMaskedLM")
    assert type(loaded) is type(model) and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        assert torch.equal(loaded(INPUT, attention_mask=MASK).logits, model(INPUT, attention_mask=MASK).logits)


def test_compressed_folder_loads_the_decoded_tensors(original, tmp_path):
    folder, model = original
    hf.compress_folder(folder, tmp_path / "dcf", min_elements=1024)
    stored = dcformat.load_file(tmp_path / "dcf" / "model.dcf")
    loaded = hf.from_pretrained(tmp_path / "dcf", transformers.BertForMaskedLM)
    state = loaded.state_dict()
    for name, array in stored.items():
        np.testing.assert_array_equal(state[name].numpy(), array)
    quantized = [n for n in stored if np.unique(stored[n]).size < np.unique(model.state_dict()[n].numpy()).size]
    assert len(quantized) >= 8  # the folder really is compressed
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()  # tied
    # It computes what the original computes with the stored tensors in place of its own.
    reference = copy.deepcopy(model)
    reference.load_state_dict({n: torch.from_numpy(a) for n, a in stored.items()}, strict=False)
    with torch.no_grad():
        assert torch.equal(loaded(INPUT, attention_mask=MASK).logits, reference(INPUT, attention_mask=MASK).logits)


def test_model_class_by_default_name_or_task(original, tmp_path):
    folder, _ = original
    hf.convert_folder(folder, tmp_path / "dcf")
    assert type(hf.from_pretrained(tmp_path / "dcf", "fill-mask")).__name__ == "BertForMaskedLM"
    assert type(hf.from_pretrained(tmp_path / "dcf", "BertForMaskedLM")).__name__ == "BertForMaskedLM"
    with pytest.raises(ModelMismatchError, match=r"tensors the model has no place for: cls\.predictions"):
        hf.from_pretrained(tmp_path / "dcf")  # AutoModel is BertModel: the head's tensors are unexpected
    base = hf.from_pretrained(tmp_path / "dcf", strict=False)
    assert type(base).__name__ == "BertModel"
    with pytest.raises(ValueError, match="neither a transformers model class nor a task"):
        hf.from_pretrained(tmp_path / "dcf", "no-such-task")


def test_dtype_and_device(original, tmp_path):
    folder, model = original
    hf.convert_folder(folder, tmp_path / "dcf")
    half = hf.from_pretrained(tmp_path / "dcf", "fill-mask", dtype=torch.float16, device="cpu")
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert torch.equal(half.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight.half())
    named = hf.from_pretrained(tmp_path / "dcf", "fill-mask", dtype="bfloat16")
    assert {p.dtype for p in named.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in hf.from_pretrained(tmp_path / "dcf", "fill-mask", dtype="auto").parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="dtype must be a torch.dtype"):
        hf.from_pretrained(tmp_path / "dcf", "fill-mask", dtype="int4ish")


def _folder_without(tmp_path, original, drop=(), add=None):
    """A .dcf folder of the original's tensors, some dropped or replaced."""
    folder, _ = original
    hf.convert_folder(folder, tmp_path / "dcf")
    tensors = dcformat.load_file(tmp_path / "dcf" / "model.dcf")
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    dcformat.save_file(tensors, tmp_path / "dcf" / "model.dcf")
    return tmp_path / "dcf"


def test_missing_tensors_are_named(original, tmp_path):
    dcf = _folder_without(tmp_path, original, drop=["bert.encoder.layer.1.output.dense.weight"])
    with pytest.raises(ModelMismatchError, match=r"1 parameters of the model that the files lack: bert\.encoder\.layer\.1\.output\.dense\.weight"):
        hf.from_pretrained(dcf, "fill-mask")
    hf.from_pretrained(dcf, "fill-mask", strict=False)


def test_shapes_that_differ_are_named(original, tmp_path):
    dcf = _folder_without(tmp_path, original, add={"bert.encoder.layer.0.output.dense.bias": np.zeros(3, np.float32)})
    with pytest.raises(ModelMismatchError, match=r"1 tensors whose shape differs from the model.s: bert\.encoder\.layer\.0\.output\.dense\.bias"):
        hf.from_pretrained(dcf, "fill-mask")


def test_a_safetensors_folder_is_not_taken_for_a_compressed_one(original):
    folder, _ = original
    with pytest.raises(FormatError, match="holds safetensors weights, not .dcf"):
        hf.from_pretrained(folder)


def test_the_way_back_loads_in_transformers_as_usual(original, tmp_path):
    folder, model = original
    hf.compress_folder(folder, tmp_path / "dcf", min_elements=1024)
    hf.convert_folder(tmp_path / "dcf", tmp_path / "plain")
    plain = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "plain")
    compressed = hf.from_pretrained(tmp_path / "dcf", "fill-mask")
    for name, tensor in compressed.state_dict().items():
        assert torch.equal(plain.state_dict()[name], tensor), name


def test_a_sharded_folder_loads_the_same(original, tmp_path):
    folder, _ = original
    hf.compress_folder(folder, tmp_path / "one", min_elements=1024)
    record = hf.compress_folder(folder, tmp_path / "shards", min_elements=1024, max_shard_bytes=20_000)
    assert record["weights"]["files"][0] == "model.dcf.index.json" and len(record["weights"]["files"]) > 2
    one = hf.from_pretrained(tmp_path / "one", "fill-mask").state_dict()
    for name, tensor in hf.from_pretrained(tmp_path / "shards", "fill-mask").state_dict().items():
        assert torch.equal(one[name], tensor), name


def test_the_state_dict_is_loaded_without_transformers_thread_pool(original, tmp_path, monkeypatch):
    """The decoded tensors are in memory: transformers takes them in turn, and its switch is
    left as it was found."""
    from transformers import core_model_loading

    folder, model = original
    hf.convert_folder(folder, tmp_path / "dcf")

    def no_pool(*args, **kwargs):
        raise AssertionError("transformers started its loading thread pool")

    monkeypatch.delenv(SEQUENTIAL, raising=False)
    with monkeypatch.context() as patched:
        patched.setattr(core_model_loading, "ThreadPoolExecutor", no_pool)
        loaded = hf.from_pretrained(tmp_path / "dcf", "fill-mask")
    assert SEQUENTIAL not in os.environ
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


SEQUENTIAL = "HF_DEACTIVATE_ASYNC_LOAD"


def test_the_loading_switch_is_set_while_loads_run_and_a_users_choice_kept(monkeypatch):
    from dcformat.hf.load import _tensors_in_memory

    monkeypatch.delenv(SEQUENTIAL, raising=False)
    with _tensors_in_memory():
        assert os.environ[SEQUENTIAL] == "1"
        with _tensors_in_memory():  # a second load at the same time
            assert os.environ[SEQUENTIAL] == "1"
        assert os.environ[SEQUENTIAL] == "1"  # still the first load's
    assert SEQUENTIAL not in os.environ
    with pytest.raises(RuntimeError), _tensors_in_memory():
        raise RuntimeError("a load that fails")
    assert SEQUENTIAL not in os.environ
    monkeypatch.setenv(SEQUENTIAL, "0")  # the user's choice: the pool
    with _tensors_in_memory():
        assert os.environ[SEQUENTIAL] == "0"
    assert os.environ[SEQUENTIAL] == "0"


def test_the_model_is_the_same_built_while_its_values_are_decoded_or_after(original, tmp_path):
    folder, _ = original
    hf.compress_folder(folder, tmp_path / "dcf", min_elements=1024)
    after = hf.from_pretrained(tmp_path / "dcf", "fill-mask", threads=1).state_dict()
    meanwhile = hf.from_pretrained(tmp_path / "dcf", "fill-mask", threads=2).state_dict()
    assert after.keys() == meanwhile.keys()
    for name, tensor in after.items():
        assert torch.equal(meanwhile[name], tensor), name


def test_tensors_the_model_has_no_place_for_cause_no_second_build(original, tmp_path, monkeypatch):
    """A masked LM's folder loaded as the base model (strict=False): the head's tensors are
    unexpected, not copies the model failed to hold, so the model is built once; with
    strict, the misfit is refused before any check of what the model holds."""
    from dcformat.hf import load as hf_load

    folder, model = original
    hf.convert_folder(folder, tmp_path / "dcf")
    checks = []
    holds = hf_load._holds
    monkeypatch.setattr(hf_load, "_holds", lambda *args: checks.append(holds(*args)) or checks[-1])
    base = hf.from_pretrained(tmp_path / "dcf", strict=False, threads=2)
    assert checks == [True]
    assert torch.equal(base.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)
    checks.clear()
    with pytest.raises(ModelMismatchError, match="tensors the model has no place for"):
        hf.from_pretrained(tmp_path / "dcf", threads=2)
    assert checks == []


def test_a_model_that_copied_tensors_before_their_values_were_in_is_built_again(original, tmp_path, monkeypatch):
    """transformers copying every tensor as it loads (as when it converts one), with the values
    decoded only once the model is built: the copies hold none of them, so the model is
    built again from the decoded tensors."""
    from transformers import core_model_loading

    from dcformat import parallel
    from dcformat.hf import load as hf_load

    folder, _ = original
    hf.compress_folder(folder, tmp_path / "dcf", min_elements=1024)
    stored = dcformat.load_file(tmp_path / "dcf" / "model.dcf")
    materialize = core_model_loading._materialize_copy
    monkeypatch.setattr(core_model_loading, "_materialize_copy", lambda *args, **kwargs: materialize(*args, **kwargs).clone())
    monkeypatch.setattr(parallel.Backlog, "_work", lambda self: None)  # no worker: every value comes after the build
    checks = []
    holds = hf_load._holds
    monkeypatch.setattr(hf_load, "_holds", lambda *args: checks.append(holds(*args)) or checks[-1])
    loaded = hf.from_pretrained(tmp_path / "dcf", "fill-mask", threads=2)
    assert checks == [False]
    state = loaded.state_dict()
    for name, array in stored.items():
        if name in state:  # the base model's tensors under the masked LM's names
            assert np.array_equal(state[name].numpy(), array), name
        else:
            assert np.array_equal(state[f"bert.{name}"].numpy(), array), name
