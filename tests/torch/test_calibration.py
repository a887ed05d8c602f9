"""``dcformat.torch.calibration``: second moments of layer inputs and measured sensitivities."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pip install 'torch==2.13.0'")

from dcformat.torch import ConfigError, calibrate  # noqa: E402
from dcformat.torch.calibration import input_moments, sensitivities  # noqa: E402


class Tagger(torch.nn.Module):
    """Token vectors through two linear layers; the second's output is scaled by ``gate``."""

    def __init__(self, gate: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.first = torch.nn.Linear(12, 64)
        self.second = torch.nn.Linear(64, 80)
        self.gate = gate

    def forward(self, inputs, attention_mask=None):
        return self.second(torch.relu(self.first(inputs))) * self.gate


def test_input_moments_sum_x_xT_over_the_unpadded_tokens():
    model = Tagger()
    x = torch.randn(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    moments, rows = input_moments(model, [{"inputs": x, "attention_mask": mask}])
    assert rows == 10
    kept = x[mask.bool()].double()
    np.testing.assert_allclose(moments["first.weight"], (kept.T @ kept).numpy(), rtol=1e-12)
    hidden = torch.relu(model.first(x))[mask.bool()].double()
    np.testing.assert_allclose(moments["second.weight"], (hidden.T @ hidden).detach().numpy(), rtol=1e-6)
    assert not model.first._forward_pre_hooks  # the hooks are removed


def test_batches_without_a_mask_count_every_row():
    model = Tagger()
    batches = [torch.randn(4, 12), (torch.randn(2, 12),)]
    moments, rows = input_moments(model, batches)
    assert rows == 6
    both = torch.cat([batches[0], batches[1][0]]).double()
    np.testing.assert_allclose(moments["first.weight"], (both.T @ both).numpy(), rtol=1e-12)


def test_sensitivity_follows_what_the_output_feels():
    loud, quiet = Tagger(gate=1.0), Tagger(gate=1.0)
    tensors = {n: t.detach().numpy().copy() for n, t in loud.state_dict().items()}
    batches = [torch.randn(32, 12) for _ in range(2)]
    scores = sensitivities(loud, batches, tensors, min_elements=100)
    assert sorted(scores) == ["first.weight", "second.weight"] and all(s > 0 for s in scores.values())
    # Silence the second layer's effect on the output through the first: its inputs' scale drops 100x.
    with torch.no_grad():
        quiet.second.weight[:, :] = loud.second.weight
        quiet.first.weight.mul_(1e-3)
        quiet.first.bias.zero_()
        quiet.second.bias.add_(5.0)  # the output is then almost only the bias
    quiet_scores = sensitivities(quiet, batches, {n: t.detach().numpy().copy() for n, t in quiet.state_dict().items()}, min_elements=100)
    assert quiet_scores["second.weight"] < 0.01 * scores["second.weight"]
    for name in ("first.weight", "second.weight"):  # the model is left as it was
        assert torch.equal(loud.state_dict()[name], torch.from_numpy(tensors[name]))


def test_calibrate_gathers_both_and_restores_the_mode():
    model = Tagger().train()
    found = calibrate(model, [torch.randn(8, 12)], min_elements=100)
    assert model.training
    assert sorted(found.hessians) == ["first.weight", "second.weight"] and found.tokens == 8 and found.batches == 1
    assert sorted(found.importance) == ["first.weight", "second.weight"]
    with pytest.raises(ConfigError, match="at least one batch"):
        calibrate(model, [])
