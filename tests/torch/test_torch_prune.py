"""dcformat.torch.prune: masks, their invariants through training, and input validation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from dcformat.errors import DCFormatError  # noqa: E402
from dcformat.torch import reparam  # noqa: E402
from dcformat.torch.errors import ConfigError  # noqa: E402
from dcformat.torch.prune import (  # noqa: E402
    MagnitudePruner,
    apply_mask,
    get_mask,
    is_pruned,
    iterative_prune,
    magnitude_mask,
    make_permanent,
    prune,
)


class SmallNet(nn.Module):
    """Conv 1-D, 2-D and 3-D, a linear layer and a free-standing parameter."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(2, 3, 3)
        self.conv2d = nn.Conv2d(1, 4, 3)
        self.conv3d = nn.Conv3d(1, 2, 2)
        self.fc = nn.Linear(4 * 4 * 4 + 3 * 6 + 2 * 27, 5)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5))

    def forward(self, x2, x1, x3):
        a = self.conv2d(x2).flatten(1)
        b = self.conv1d(x1).flatten(1)
        c = self.conv3d(x3).flatten(1)
        return self.fc(torch.cat([a, b, c], 1)) * self.scale


def _inputs(batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 1, 6, 6, generator=g),
        torch.randn(batch, 2, 8, generator=g),
        torch.randn(batch, 1, 4, 4, 4, generator=g),
        torch.randint(0, 5, (batch,), generator=g),
    )


def _step(model, optimizer, seed):
    x2, x1, x3, y = _inputs(seed=seed)
    optimizer.zero_grad()
    F.cross_entropy(model(x2, x1, x3), y).backward()
    optimizer.step()


def test_magnitude_mask_by_sparsity_keeps_the_largest():
    weight = torch.tensor([[0.1, -0.5, 0.3], [-0.2, 0.05, 0.4]])
    mask = magnitude_mask(weight, sparsity=0.5)
    assert mask.tolist() == [[False, True, True], [False, False, True]]


def test_magnitude_mask_ties_are_broken_by_position():
    weight = torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert magnitude_mask(weight, sparsity=0.5).tolist() == [True, True, False, False]


def test_magnitude_mask_by_quality_uses_std_of_survivors():
    weight = torch.tensor([0.0, 1.0, -2.0, 3.0, -4.0])
    current = torch.tensor([False, True, True, True, True])
    std = torch.tensor([1.0, -2.0, 3.0, -4.0]).std(correction=0).item()
    expected = (weight.abs() >= 1.0 * std) & current
    assert torch.equal(magnitude_mask(weight, quality=1.0, mask=current), expected)


def test_masks_only_shrink():
    weight = torch.randn(50, generator=torch.Generator().manual_seed(1))
    first = magnitude_mask(weight, sparsity=0.5)
    # Pruning to a lower sparsity afterwards revives nothing.
    assert torch.equal(magnitude_mask(weight, sparsity=0.2, mask=first), first)
    second = magnitude_mask(weight * -3, sparsity=0.8, mask=first)
    assert not (second & ~first).any() and int(second.sum()) == 10


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
    ],
    ids=["sgd-momentum-wd", "sgd-nesterov", "adam", "adamw", "rmsprop"],
)
def test_pruned_weights_stay_exactly_zero_through_training(make_optimizer):
    torch.manual_seed(0)
    model = SmallNet()
    # The optimizer exists before pruning and has momentum / moment buffers for every
    # weight: the hardest case, since those buffers would move pruned weights.
    optimizer = make_optimizer(model.parameters())
    for seed in range(3):
        _step(model, optimizer, seed)
    pruner = MagnitudePruner(model, sparsity=0.6, params=["conv1d.weight", "conv2d.weight", "conv3d.weight", "fc.weight", "scale"])
    pruner.step()
    pruner.attach(optimizer)
    masks = {name: mask.clone() for name, mask in pruner.masks.items()}
    for seed in range(3, 8):
        _step(model, optimizer, seed)
        for name, mask in masks.items():
            module_path, _, attribute = name.rpartition(".")
            module = model.get_submodule(module_path)
            assert torch.equal(get_mask(module, attribute), mask), f"{name}: mask changed"
            assert (getattr(module, attribute)[~mask] == 0).all(), f"{name}: forward weight revived"
            assert (getattr(module, f"{attribute}_orig")[~mask] == 0).all(), f"{name}: stored weight revived"
            assert (getattr(module, f"{attribute}_orig").grad[~mask] == 0).all(), f"{name}: pruned weight got a gradient"
            assert (getattr(module, attribute)[mask] != 0).any(), f"{name}: survivors should train"


def test_forward_never_sees_pruned_weights_even_without_attach():
    torch.manual_seed(0)
    model = SmallNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    _step(model, optimizer, 0)
    pruner = MagnitudePruner(model, sparsity=0.5)
    pruner.step()
    _step(model, optimizer, 1)  # stale momentum moves weight_orig where pruned ...
    _step(model, optimizer, 2)
    model(*_inputs()[:3])  # ... but the forward pass recomputes the weight from the mask
    for name, mask in pruner.masks.items():
        module = model.get_submodule(name.rpartition(".")[0])
        assert (module.weight[~mask] == 0).all()


def test_nan_gradient_does_not_reach_pruned_weights():
    layer = nn.Linear(3, 2)
    prune(layer, sparsity=0.5)
    mask = get_mask(layer)
    out = layer(torch.ones(1, 3))
    out.backward(torch.full_like(out, float("nan")))  # a hostile upstream gradient
    assert layer.weight_orig.grad[mask].isnan().all()
    assert (layer.weight_orig.grad[~mask] == 0).all()


def test_state_is_visible_until_made_permanent():
    model = SmallNet()
    pruner = MagnitudePruner(model, sparsity={"fc.weight": 0.9, "conv2d.weight": 0.5})
    pruner.step()
    keys = model.state_dict().keys()
    assert {"fc.weight_orig", "fc.weight_mask", "conv2d.weight_orig", "conv2d.weight_mask"} <= set(keys)
    assert "fc.weight" not in keys
    assert get_mask(model.fc).dtype == torch.bool
    assert pruner.kept()["fc.weight"] == pytest.approx(0.1, abs=0.01)
    value = model.fc.weight.detach().clone()
    pruner.make_permanent()
    assert isinstance(model.fc.weight, nn.Parameter) and torch.equal(model.fc.weight, value)
    assert "fc.weight_mask" not in model.state_dict() and not is_pruned(model.fc)


def test_pruning_keeps_the_same_parameter_object():
    layer = nn.Linear(4, 4)
    parameter = layer.weight
    prune(layer, sparsity=0.5)
    assert layer.weight_orig is parameter


def test_iterative_schedule_is_geometric_in_kept_fraction():
    model = nn.Sequential(nn.Linear(100, 100))
    pruner = MagnitudePruner(model, sparsity=0.92)
    seen = []
    history = iterative_prune(pruner, rounds=3, retrain=lambda r: seen.append(r))
    assert seen == [1, 2, 3]
    kept = [h["0.weight"] for h in history]
    assert kept == pytest.approx([0.08 ** (1 / 3), 0.08 ** (2 / 3), 0.08], abs=1e-4)


def test_quality_criterion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100))
    pruner = MagnitudePruner(model, quality=1.0)
    kept = pruner.step()["0.weight"]
    # Uniform init on [-a, a]: std a/sqrt(3), so |w| >= std keeps 1 - 1/sqrt(3) of them.
    assert kept == pytest.approx(1 - 3**-0.5, abs=0.02)


def test_apply_mask_and_functional_api():
    layer = nn.Conv2d(2, 2, 3)
    mask = torch.zeros_like(layer.weight, dtype=torch.bool)
    mask[0] = True
    apply_mask(layer, "weight", mask)
    assert torch.equal(get_mask(layer), mask)
    assert (layer.weight[1] == 0).all()
    make_permanent(layer)
    assert reparam.state_of(layer, "weight") == "dense"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sparsity=1.5), "sparsity must be a fraction"),
        (dict(sparsity=-0.1), "sparsity must be a fraction"),
        (dict(quality=-1.0), "quality must be a finite number"),
        (dict(quality=float("nan")), "quality must be a finite number"),
        (dict(sparsity=0.5, quality=1.0), "exactly one of"),
        (dict(), "exactly one of"),
        (dict(sparsity={"nope.weight": 0.5}), "no parameter 'nope.weight'"),
        (dict(sparsity=0.5, params=["fc.weight", "fc.weight"]), "repeat"),
        (dict(sparsity={"fc.weight": 0.5}, params=["conv2d.weight"]), "not among the selected"),
        (dict(sparsity="half"), "sparsity must be a fraction"),
    ],
)
def test_invalid_input_is_a_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        MagnitudePruner(SmallNet(), **kwargs)
    assert isinstance(caught.value, DCFormatError) and isinstance(caught.value, ValueError)


def test_unknown_name_lists_the_parameters():
    with pytest.raises(ConfigError, match="fc.weight"):
        MagnitudePruner(SmallNet(), sparsity=0.5, params=["fc.wieght"])


def test_other_invalid_calls():
    layer = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="not pruned"):
        get_mask(layer)
    with pytest.raises(ConfigError, match="no parameter"):
        prune(layer, "nope", sparsity=0.5)
    with pytest.raises(ConfigError, match="bool tensor"):
        apply_mask(layer, "weight", torch.ones(3, 3))
    with pytest.raises(ConfigError, match="floating-point"):
        magnitude_mask(torch.arange(4), sparsity=0.5)
    with pytest.raises(ConfigError, match="progress"):
        MagnitudePruner(nn.Sequential(layer), sparsity=0.5).step(0)
    with pytest.raises(ConfigError, match="rounds"):
        iterative_prune(MagnitudePruner(nn.Sequential(nn.Linear(2, 2)), sparsity=0.5), rounds=0, retrain=print)
    with pytest.raises(ConfigError, match="Optimizer"):
        MagnitudePruner(nn.Sequential(nn.Linear(2, 2)), sparsity=0.5).attach(object())
    with pytest.raises(ConfigError, match="nn.Module"):
        MagnitudePruner({"weight": torch.zeros(2)}, sparsity=0.5)


def test_compressed_models_can_be_deep_copied_and_pickled():
    import copy
    import io

    from dcformat.torch.quantize import TrainedQuantizer

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    MagnitudePruner(model, sparsity=0.5).step()
    model(torch.randn(2, 4)).sum().backward()  # leaves a computed weight behind, the torch.nn.utils.prune trap
    twin = copy.deepcopy(model)
    make_permanent(twin[0])
    assert is_pruned(model[0]) and not is_pruned(twin[0])
    TrainedQuantizer(model).quantize()
    model(torch.randn(2, 4)).sum().backward()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    x = torch.randn(3, 4)
    assert torch.equal(restored(x), model(x))
