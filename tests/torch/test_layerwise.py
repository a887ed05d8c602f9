"""``dcformat.torch.layerwise``: calibration one block at a time agrees with calibrating the
whole model, and holds one block's parameters at a time."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")
transformers = pytest.importorskip("transformers", reason="pip install 'dcformat[hf]'")

from dcformat.compress.moments import MomentStore  # noqa: E402
from dcformat.torch import ConfigError  # noqa: E402
from dcformat.torch.calibration import calibrate  # noqa: E402
from dcformat.torch.layerwise import NotSequentialError, calibrate_layerwise, find_blocks, parameters_on_meta  # noqa: E402


def bert_config():
    return transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40
    )


def llama_config():
    return transformers.LlamaConfig(
        vocab_size=60,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=40,
    )


def batches_for(seed: int = 0, count: int = 3):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(5, 60, (4, 12), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, 7:] = 0  # padded rows are left out of the moments
        mask[3, 4:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def models(config):
    """The model with its weights, and a skeleton of it with its parameters on the meta device."""
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config, dtype=torch.float32).eval()
    with parameters_on_meta():
        skeleton = transformers.AutoModel.from_config(config, dtype=torch.float32)
    return model, skeleton


def loader(model, reads=None):
    state = {name: tensor.detach().numpy().copy() for name, tensor in model.named_parameters()}

    def load(name):
        if reads is not None:
            reads.append(name)
        return state[name]

    return load


def quantizable(name, array):
    return array.ndim == 2 and array.size >= 512


@pytest.mark.parametrize("config", [bert_config, llama_config], ids=["bert", "llama"])
def test_block_by_block_measures_what_the_whole_model_does(config, tmp_path):
    model, skeleton = models(config())
    batches = batches_for()
    whole = calibrate(model, batches, min_elements=512)
    found = calibrate_layerwise(skeleton, batches, loader(model), MomentStore(str(tmp_path)), weigh=quantizable)
    assert isinstance(found.hessians, MomentStore) and found.tokens == whole.tokens == 3 * (48 - 5 - 8)
    in_blocks = sorted(n for n in whole.hessians if not n.startswith("pooler."))  # run after the blocks: not measured
    assert sorted(found.hessians) == in_blocks
    for name in in_blocks:
        moments = whole.hessians[name]
        np.testing.assert_allclose(found.hessians[name], moments, rtol=1e-5, atol=1e-5 * np.abs(moments).max(), err_msg=name)
    assert set(found.importance) == set(whole.importance)
    assert min(whole.importance.values()) > 0  # every tensor probed: none scored zero
    last = [n for n in whole.importance if n.startswith(("layers.2.", "encoder.layer.2."))]
    assert last, "the last block's tensors are weighed"
    # A stage is measured on its own output and scaled by how much of a change there reaches
    # the model's (carried through the later blocks and what runs after them). BERT (a norm
    # closing each block) agreed within 1%. Llama's blocks add to a residual stream, and a
    # stage's tensors are scaled alike, by their change together: here between 0.87 and 1.42
    # times the whole model's scores (the last block within 14%).
    last_within, others_within = (0.02, 0.02) if config is bert_config else (0.2, 0.5)
    for name in whole.importance:
        assert found.importance[name] == pytest.approx(whole.importance[name], rel=last_within if name in last else others_within), name
    assert all(p.device.type == "meta" for p in skeleton.parameters())  # nothing left loaded


def test_shared_inputs_share_one_file(tmp_path):
    model, skeleton = models(llama_config())
    store = MomentStore(str(tmp_path))
    calibrate_layerwise(skeleton, batches_for(count=1), loader(model), store)
    q, k, v = (f"layers.0.self_attn.{p}_proj.weight" for p in "qkv")
    assert store._files[q] == store._files[k] == store._files[v] != store._files["layers.0.self_attn.o_proj.weight"]
    assert store[q].dtype == np.float32 and len(set(store._files.values())) == 3 * 4  # per block: q/k/v, o, gate/up, down


def test_one_block_is_loaded_at_a_time(tmp_path):
    model, skeleton = models(llama_config())
    blocks_name, blocks = find_blocks(skeleton)
    assert blocks_name == "layers"
    per_block = sum(p.numel() for p in blocks[0].parameters())
    loaded = []

    def count(module, args, kwargs):
        loaded.append(sum(p.numel() for p in skeleton.parameters() if p.device.type != "meta"))

    for block in blocks:
        block.register_forward_pre_hook(count, with_kwargs=True)
    reads = []
    calibrate_layerwise(skeleton, batches_for(), loader(model, reads), MomentStore(str(tmp_path)), weigh=quantizable)
    assert loaded and max(loaded) == per_block  # each block runs with its own parameters alone
    # each block's parameters read once; those outside the blocks twice (before them, and for
    # what runs after them when the sensitivities are put on the model's output)
    outside = [n for n, _ in model.named_parameters() if not n.startswith("layers.")]
    assert sorted(reads) == sorted([n for n, _ in model.named_parameters()] + outside)


def test_the_streams_wait_on_disk_between_blocks(tmp_path):
    """Each stage's change, carried through the later blocks, is in files while a block runs
    (one per probed batch), not in memory; the files go when the calibration ends. (The last
    block's hook also fires when the streams go through what runs after the blocks: by then
    every stage has one.)"""
    model, skeleton = models(llama_config())
    _, blocks = find_blocks(skeleton)
    seen = []

    def listing(module, args, kwargs):
        seen.append(sorted(p.name for p in tmp_path.rglob("stream-*.npy")))

    blocks[-1].register_forward_pre_hook(listing, with_kwargs=True)
    batches = batches_for()
    found = calibrate_layerwise(skeleton, batches, loader(model), MomentStore(str(tmp_path)), weigh=quantizable)
    # the embeddings' stream (stage 0) and each block's, per batch
    assert max(seen, key=len) == [f"stream-{stage:04d}-{batch:04d}.npy" for stage in range(4) for batch in range(len(batches))]
    assert [f"stream-{stage:04d}-{batch:04d}.npy" for stage in range(3) for batch in range(len(batches))] in seen  # as the last block ran
    assert not list(tmp_path.rglob("stream-*")) and not list(tmp_path.glob("streams-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({p.rsplit("/", 1)[-1] for p in found.hessians._files.values()})


class Parallel(torch.nn.Module):
    """Blocks whose outputs are summed: not a stack."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(3))

    def forward(self, x):
        return sum(block(x) for block in self.blocks)


class Flat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.first(x)


class Conditioned(torch.nn.Module):
    """Blocks given a context computed from weights outside them (as an encoder feeds a decoder)."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 64)

        def forward(self, x, context=None):
            return self.linear(x) + context

    def __init__(self):
        super().__init__()
        self.context = torch.nn.Linear(64, 64)
        self.blocks = torch.nn.ModuleList(self.Block() for _ in range(3))

    def forward(self, x):
        context = self.context(x)
        for block in self.blocks:
            x = block(x, context=context)
        return x


@pytest.mark.parametrize(
    ("model_class", "match"),
    [
        (Parallel, "block 1 is not given what block 0 returned"),
        (Flat, "no list of repeated blocks"),
        (Conditioned, "the blocks' other inputs depend on weights outside them"),
    ],
)
def test_models_that_are_not_a_stack_of_blocks_are_refused(model_class, match, tmp_path):
    torch.manual_seed(0)
    model = model_class()
    with parameters_on_meta():
        skeleton = model_class()
    with pytest.raises(NotSequentialError, match=match):
        calibrate_layerwise(skeleton, [torch.randn(4, 64)], loader(model), MomentStore(str(tmp_path)), weigh=lambda name, array: True)
    assert all(p.device.type == "meta" for p in skeleton.parameters()) and not list(tmp_path.iterdir())


def test_parameters_on_meta_leaves_buffers_and_restores_itself():
    with parameters_on_meta():
        skeleton = transformers.AutoModel.from_config(llama_config(), dtype=torch.float32)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert skeleton.rotary_emb.inv_freq.device.type == "cpu" and torch.isfinite(skeleton.rotary_emb.inv_freq).all()
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_a_parameter_whose_shape_differs_is_named(tmp_path):
    model, skeleton = models(bert_config())
    load = loader(model)

    def wrong(name):
        array = load(name)
        return array[:-1] if name == "encoder.layer.1.output.dense.weight" else array

    with pytest.raises(ConfigError, match=r"encoder.layer.1.output.dense.weight: the weights hold shape \[31, 64\], the model \[32, 64\]"):
        calibrate_layerwise(skeleton, batches_for(count=1), wrong, MomentStore(str(tmp_path)))
