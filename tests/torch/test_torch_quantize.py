"""dcformat.torch.quantize: clustering (the core k-means), weight sharing and the centroid gradient."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from dcformat.torch.errors import ConfigError  # noqa: E402
from dcformat.torch.prune import MagnitudePruner, get_mask, prune  # noqa: E402
from dcformat.torch.quantize import (  # noqa: E402
    INITS,
    TrainedQuantizer,
    cluster,
    get_codebook,
    install_shared,
    is_shared,
    make_permanent,
    share_weights,
)


@pytest.mark.parametrize("init", INITS)
def test_kmeans_codes_point_to_the_nearest_sorted_centroid(init):
    values = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    codebook, codes = cluster(values, 16, init=init, generator=torch.Generator().manual_seed(1))
    assert codebook.shape == (16,) and codes.shape == values.shape and codes.dtype == torch.long
    assert (codebook[1:] >= codebook[:-1]).all()
    distance = (values.double()[:, None] - codebook[None, :]).abs()
    assert torch.equal(distance.gather(1, codes[:, None]).squeeze(1), distance.min(1).values)
    # A fixed point of Lloyd's algorithm: each used centroid is the mean of its cluster.
    for k in codes.unique():
        assert codebook[k].item() == pytest.approx(values.double()[codes == k].mean().item(), abs=1e-9)


def test_kmeans_initialisations_differ_as_the_paper_describes():
    values = torch.cat([torch.randn(10000) * 0.1, torch.tensor([5.0, -5.0])])
    linear, _ = cluster(values, 8, init="linear", max_iter=0)
    density, _ = cluster(values, 8, init="density", max_iter=0)
    assert linear.min() == -5 and linear.max() == 5
    assert torch.allclose(linear, torch.linspace(-5, 5, 8, dtype=torch.float64))
    assert (density[1:-1].abs() < 0.5).all()  # evenly spaced on the CDF: crowded near 0
    # Linear keeps a centroid for the rare large weights after clustering too.
    fitted, codes = cluster(values, 8, init="linear")
    assert fitted.max() == pytest.approx(5.0)


def test_kmeans_matches_the_numpy_core():
    import dcformat

    values = np.random.default_rng(0).standard_normal(3000)
    ours, _ = cluster(torch.from_numpy(values), 32, init="linear", max_iter=300)
    theirs = dcformat.kmeans_1d(values, 32, init="linear", max_iter=300)
    np.testing.assert_allclose(ours.numpy(), np.sort(theirs), atol=1e-6)


def test_kmeans_edge_cases():
    codebook, codes = cluster(torch.tensor([]), 4)
    assert codebook.tolist() == [0, 0, 0, 0] and codes.numel() == 0
    codebook, codes = cluster(torch.tensor([1.0, 2.0]), 8)  # fewer values than centroids
    assert codebook[codes].tolist() == [1.0, 2.0]
    codebook, codes = cluster(torch.full((10,), 3.0), 4, init="forgy")
    assert (codebook[codes] == 3.0).all()
    with pytest.raises(ConfigError, match="init"):
        cluster(torch.ones(3), 2, init="kmeans++")
    with pytest.raises(ConfigError, match="k must be"):
        cluster(torch.ones(3), 0)
    with pytest.raises(ConfigError, match="finite"):
        cluster(torch.tensor([1.0, float("inf")]), 2)


def test_centroid_gradient_is_the_sum_over_each_cluster():
    """The paper's rule, checked by hand on a 2x3 layer with one pruned weight."""
    layer = nn.Linear(3, 2, bias=False)
    codebook = torch.tensor([-1.0, 0.5, 2.0])
    codes = torch.tensor([[0, 1, 2], [2, 1, 0]])
    mask = torch.tensor([[True, True, True], [True, False, True]])  # W[1,1] pruned
    install_shared(layer, "weight", codebook, codes, mask)
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()

    # By hand: W = [[-1, .5, 2], [2, 0, -1]]; y = x W^T; dL/dy = 2 (y - t); dL/dW = dL/dy^T x.
    w = torch.tensor([[-1.0, 0.5, 2.0], [2.0, 0.0, -1.0]])
    grad_w = (2 * (x @ w.T - target)).T @ x
    expected = torch.tensor(
        [
            grad_w[0, 0] + grad_w[1, 2],  # code 0: W[0,0], W[1,2]
            grad_w[0, 1],  # code 1: W[0,1] only; W[1,1] is pruned and contributes nothing
            grad_w[0, 2] + grad_w[1, 0],  # code 2: W[0,2], W[1,0]
        ]
    )
    assert torch.allclose(layer.weight_codebook.grad, expected)
    assert torch.equal(layer.weight, w)


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01), lambda p: torch.optim.Adam(p, lr=0.01)],
    ids=["sgd", "adam"],
)
def test_fine_tuning_keeps_codes_mask_and_sharing(make_optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    pruner = MagnitudePruner(model, sparsity={"0.weight": 0.3, "2.weight": 0.8})
    pruner.step()
    masks = {name: mask.clone() for name, mask in pruner.masks.items()}
    quantizer = TrainedQuantizer(model)
    assert quantizer.bits == {"0.weight": 8, "2.weight": 5}
    codebooks = quantizer.quantize()
    codes_before = {name: model.get_submodule(name[0]).weight_codes.clone() for name in codebooks}
    before = {name: cb.detach().clone() for name, cb in codebooks.items()}
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model(x)
    for name in codebooks:
        module = model.get_submodule(name[0])
        assert torch.equal(module.weight_codes, codes_before[name])
        assert torch.equal(get_mask(module) if False else module.weight_mask, masks[name])
        expected = torch.where(module.weight_mask, module.weight_codebook[module.weight_codes], 0)
        assert torch.equal(module.weight, expected)
        assert (module.weight[~masks[name]] == 0).all()
        assert not torch.equal(module.weight_codebook.detach(), before[name]), "codebook should train"
        assert module.weight_codebook.numel() == 2 ** quantizer.bits[name]


def test_every_weight_is_a_centroid_after_quantization():
    torch.manual_seed(0)
    layer = nn.Linear(50, 40)
    prune(layer, sparsity=0.7)
    before = layer.weight.detach().clone()
    codebook = share_weights(layer, bits=3)
    assert codebook.dtype == torch.float32 and codebook.numel() == 8
    w = layer.weight.detach()
    kept = layer.weight_mask
    assert torch.isin(w[kept], codebook.detach()).all()
    assert (w[~kept] == 0).all()
    # Each survivor went to its nearest centroid.
    distance = (before[kept][:, None] - codebook.detach()[None, :]).abs()
    assert torch.allclose((w[kept] - before[kept]).abs(), distance.min(1).values)


def test_bits_overrides_and_defaults():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(10, 2))
    quantizer = TrainedQuantizer(model, bits={"2.weight": 2}, conv_bits=6)
    assert quantizer.bits == {"0.weight": 6, "2.weight": 2}
    quantizer = TrainedQuantizer(model, bits=4, params=["2.weight", "2.bias"])
    assert quantizer.bits == {"2.weight": 4, "2.bias": 4}
    quantizer.quantize()
    assert is_shared(model[2], "bias") and not is_shared(model[0])


def test_make_permanent_keeps_values():
    layer = nn.Linear(6, 6)
    share_weights(layer, bits=2)
    value = layer.weight.detach().clone()
    make_permanent(layer)
    assert isinstance(layer.weight, nn.Parameter) and torch.equal(layer.weight.detach(), value)
    assert layer.weight.unique().numel() <= 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=0), "bits"),
        (dict(bits=17), "bits"),
        (dict(bits={"nope": 3}), "not among the selected"),
        (dict(init="random"), "init"),
        (dict(params=["0.wieght"]), "no parameter"),
        (dict(conv_bits=True), "bits"),
    ],
)
def test_invalid_quantizer_settings(kwargs, message):
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ConfigError, match=message):
        TrainedQuantizer(model, **kwargs)


def test_cannot_share_twice_or_prune_after_sharing():
    layer = nn.Linear(3, 3)
    share_weights(layer, bits=2)
    with pytest.raises(ConfigError, match="already shared"):
        share_weights(layer, bits=2)
    with pytest.raises(ConfigError, match="shared"):
        prune(layer, sparsity=0.5)
    with pytest.raises(ConfigError, match="not shared"):
        get_codebook(nn.Linear(2, 2))


def test_channels_last_layout_survives_pruning_and_sharing():
    conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    prune(conv, sparsity=0.5)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    share_weights(conv, bits=4)
    conv(torch.randn(1, 3, 6, 6))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
