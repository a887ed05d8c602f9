"""dcformat.torch.distill: weights trained straight through onto a codebook, freezing them
into the paper's shared state, and the distillation loop."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")
from torch import nn  # noqa: E402

import dcformat  # noqa: E402
from dcformat.torch import reparam, to_dcformat  # noqa: E402
from dcformat.torch.distill import (  # noqa: E402
    LatentParameter,
    cell_boundaries,
    distill,
    freeze,
    install_latent,
    pooled_embedding_loss,
)
from dcformat.torch.errors import ConfigError  # noqa: E402
from dcformat.torch.quantize import is_shared  # noqa: E402

CODEBOOK = torch.tensor([-0.5, 0.0, 0.25, 0.5])


def nearest(latent: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Each value's nearest centroid, the lower one on a tie, computed independently of the code under test."""
    distance = np.abs(latent[..., None] - codebook)
    best = distance.min(-1, keepdims=True)
    return codebook[np.argmax(distance == best, axis=-1)]  # the first, i.e. lower, of equals


def layer(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(6, 4, bias=False)


def test_the_weight_is_the_nearest_centroid_of_its_latent_and_zero_where_masked():
    module = layer()
    latent = module.weight.detach().clone()
    latent[0, :4] = torch.tensor([0.125, 0.375, -0.25, 0.9])  # two exact ties: the lower centroid wins
    with torch.no_grad():
        module.weight.copy_(latent)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 2] = False
    install_latent(module, "weight", CODEBOOK, mask)
    assert reparam.state_of(module, "weight") == "latent"
    assert set(dict(module.named_parameters())) == {"weight_latent", "weight_codebook"}
    assert set(dict(module.named_buffers())) == {"weight_boundaries", "weight_mask"}
    module(torch.randn(2, 6))
    expected = nearest(latent.numpy(), CODEBOOK.numpy())
    expected[1, 2] = 0
    np.testing.assert_array_equal(module.weight.detach().numpy(), expected)
    assert module.weight[0, :4].tolist() == [0.0, 0.25, -0.5, 0.5]


def test_gradients_go_straight_to_the_latent_and_summed_to_each_centroid():
    module = layer(1)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) > 0.3
    install_latent(module, "weight", CODEBOOK, mask)
    upstream = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    weight = reparam.find(module, "weight").compute(module)  # what the forward pre-hook computes, with autograd
    (weight * upstream).sum().backward()  # dL/dW = upstream
    np.testing.assert_allclose(module.weight_latent.grad.numpy(), torch.where(mask, upstream, 0).numpy(), rtol=0, atol=0)
    values = weight.detach()
    for k, centroid in enumerate(CODEBOOK.tolist()):
        chosen = mask & (values == centroid)
        assert module.weight_codebook.grad[k].item() == pytest.approx(upstream[chosen].sum().item(), abs=1e-6)


def test_a_weight_changes_centroid_when_its_latent_crosses_a_midpoint():
    module = layer(2)
    install_latent(module, "weight", CODEBOOK)
    with torch.no_grad():
        module.weight_latent[0, 0] = 0.37
    module(torch.zeros(1, 6))
    assert module.weight[0, 0].item() == 0.25
    with torch.no_grad():
        module.weight_latent[0, 0] = 0.38
    module(torch.zeros(1, 6))
    assert module.weight[0, 0].item() == 0.5


def test_freeze_keeps_each_weight_on_its_centroid_as_shared_state_that_saves():
    module = nn.Sequential(layer(3))
    install_latent(module[0], "weight", CODEBOOK)
    x = torch.randn(5, 6)
    before = module(x).detach()
    assert freeze(module) == 1
    assert is_shared(module[0], "weight") and not isinstance(reparam.find(module[0], "weight"), LatentParameter)
    assert set(module.state_dict()) == {"0.weight_codebook", "0.weight_codes", "0.weight_mask"}
    torch.testing.assert_close(module(x), before, rtol=0, atol=0)
    stored = dcformat.load(dcformat.save(to_dcformat(module)))["0.weight"]
    np.testing.assert_array_equal(stored, module[0].weight.detach().numpy())
    assert freeze(module) == 0  # nothing latent is left


def test_cell_boundaries_give_every_value_its_code_again_even_one_float_apart():
    values = torch.tensor([0.1, 0.2, 0.21, 0.5, 0.9, 1.0], dtype=torch.float32)
    values[3] = torch.nextafter(values[2], torch.tensor(1.0))  # neighbouring float32s in different cells
    codes = torch.tensor([0, 0, 0, 1, 2, 2])
    boundaries = cell_boundaries(values, codes, 3)
    assert boundaries.dtype == torch.float64 and boundaries[1].item() == pytest.approx((values[3].item() + 0.9) / 2)
    module = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(values.reshape(1, 6))
    install_latent(module, "weight", torch.tensor([0.2, 0.5, 0.95]), boundaries=boundaries)
    assert module.weight_boundaries.dtype == torch.float32
    torch.testing.assert_close(module.weight.detach().reshape(-1), torch.tensor([0.2, 0.2, 0.2, 0.5, 0.95, 0.95]), rtol=0, atol=0)


@pytest.mark.parametrize("codes, why", [([0, 1, 0, 2, 2, 2], "monotone"), ([0, 0, 0, 2, 2, 2], "uses every code"), ([0, 0, 0, 1, 1, 3], r"\[0, 3\)")])
def test_cell_boundaries_need_a_monotone_assignment_using_every_code(codes, why):
    with pytest.raises(ConfigError, match=why):
        cell_boundaries(torch.arange(6.0), torch.tensor(codes), 3)


def test_install_latent_refuses_what_it_cannot_train():
    module = layer()
    with pytest.raises(ConfigError, match="1-D codebook"):
        install_latent(module, "weight", torch.zeros(0))
    with pytest.raises(ConfigError, match="bool with the weight's shape"):
        install_latent(module, "weight", CODEBOOK, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="Linear has no parameter 'scale'"):
        install_latent(module, "scale", CODEBOOK)
    with pytest.raises(ConfigError, match="ascending when no boundaries are given"):
        install_latent(module, "weight", CODEBOOK.flip(0))
    with pytest.raises(ConfigError, match="3 ascending values"):
        install_latent(module, "weight", CODEBOOK, boundaries=torch.tensor([0.3, 0.1, 0.4]))
    install_latent(module, "weight", CODEBOOK)
    with pytest.raises(ConfigError, match="must be a plain parameter, it is latent"):
        install_latent(module, "weight", CODEBOOK)


class Encoder(nn.Module):
    """A token embedding and one linear layer: outputs (batch, tokens, features) as transformers' encoders do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)

    def forward(self, input_ids, attention_mask=None):
        return (torch.tanh(self.mix(self.embed(input_ids))),)


def test_pooled_embedding_loss_is_zero_for_equal_outputs_and_ignores_padding():
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert pooled_embedding_loss((hidden,), (hidden,), {"attention_mask": mask}).item() == pytest.approx(0, abs=1e-5)
    other = hidden.clone()
    other[0, 3:] = 100.0  # padding only
    assert pooled_embedding_loss((other,), (hidden,), {"attention_mask": mask}).item() == pytest.approx(0, abs=1e-5)
    other[0, 0] += 1.0
    assert pooled_embedding_loss((other,), (hidden,), {"attention_mask": mask}).item() > 0.01
    with pytest.raises(ConfigError, match="last_hidden_state"):
        pooled_embedding_loss(torch.zeros(2, 8), torch.zeros(2, 8), {})


def test_distillation_brings_a_quantized_student_closer_to_its_teacher():
    torch.manual_seed(0)
    teacher = Encoder()
    student = Encoder()
    student.load_state_dict(teacher.state_dict())
    for module in (student.embed, student.mix):
        values = module.weight.detach()
        install_latent(module, "weight", torch.linspace(float(values.min()), float(values.max()), 4))
    generator = torch.Generator().manual_seed(1)

    def batch(step: int) -> dict:
        return {"input_ids": torch.randint(0, 20, (16, 6), generator=generator), "attention_mask": torch.ones(16, 6, dtype=torch.long)}

    held = batch(0)
    before = pooled_embedding_loss(student(**held), teacher(**held), held).item()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    losses = distill(student, teacher, batch, steps=60, lr=3e-3)
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert pooled_embedding_loss(student(**held), teacher(**held), held).item() < 0.7 * before
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())  # the teacher never trains
    assert all(not p.requires_grad for p in teacher.parameters())
    assert len(torch.unique(student.mix.weight.detach())) <= 4  # still on the codebook


@pytest.mark.parametrize("option, value, message", [("steps", -1, "steps"), ("lr", 0.0, "lr"), ("codebook_lr", float("nan"), "codebook_lr")])
def test_distill_checks_its_settings(option, value, message):
    settings = {"steps": 1, "lr": 1e-3, option: value}
    with pytest.raises(ConfigError, match=message):
        distill(Encoder(), Encoder(), lambda step: {}, **settings)
