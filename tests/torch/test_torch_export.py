"""dcformat.torch.export: model / state dict <-> .dcf, with strict name and shape checks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")
from torch import nn  # noqa: E402

import dcformat  # noqa: E402
from dcformat.torch import (  # noqa: E402
    ConfigError,
    MagnitudePruner,
    ModelMismatchError,
    TrainedQuantizer,
    file_report,
    format_report,
    load,
    load_file,
    load_model,
    save,
    save_file,
    to_dcformat,
)
from dcformat.torch.quantize import get_codebook, is_shared  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _compressed(seed=0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    model.bn.running_mean.uniform_()  # buffers of every kind travel too
    model.bn.num_batches_tracked.fill_(7)
    MagnitudePruner(model, sparsity={"conv.weight": 0.3, "fc.weight": 0.9}).step()
    TrainedQuantizer(model).quantize()
    return model


def _effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a plain model with the same forward pass would have."""
    fresh = Net()
    state = {name: value for name, value in model.state_dict().items()}
    out = {}
    for name in fresh.state_dict():
        if name in state:
            out[name] = state[name]
        else:
            module_path, _, attribute = name.rpartition(".")
            out[name] = getattr(model.get_submodule(module_path), attribute).detach()
    return out


def test_round_trip_of_a_dense_model_is_exact(tmp_path):
    torch.manual_seed(0)
    model = Net()
    path = tmp_path / "dense.dcf"
    save_file(model, path)
    loaded = load_file(path)
    expected = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value), name


def test_round_trip_of_a_compressed_model_is_exact(tmp_path):
    model = _compressed()
    path = tmp_path / "model.dcf"
    size = save_file(model, path, metadata={"accuracy": 0.5, "pipeline": {"bits": [8, 5]}})
    assert size == path.stat().st_size
    loaded = load_file(path)
    for name, value in _effective_state(model).items():
        assert torch.equal(loaded[name], value), name
    with dcformat.open(path) as f:
        f.verify()
        assert f.info("fc.weight").encoding.startswith("quant")
        # Only the centroids in use are stored (+1 if the encoder prepended a zero for fillers).
        assert f.info("conv.weight").codebook_size <= int(model.conv.weight_mask.sum()) + 1
        assert f.metadata()["accuracy"] == 0.5
        q = f.get_quantized("fc.weight")
        assert q.entry_count >= int(model.fc.weight_mask.sum())

    fresh = Net()
    assert load_model(fresh, path) == ([], [])
    x = torch.randn(3, 1, 8, 8)
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))


def test_bytes_api_and_state_dict_input_agree(tmp_path):
    model = _compressed()
    data = save(model)
    assert save(model.state_dict()) == data, "a bare state dict is folded the same way"
    assert dcformat.save(to_dcformat(model)) == data
    for name, value in load(data).items():
        assert torch.equal(value, load_file(_write(tmp_path, data))[name])


def _write(tmp_path, data):
    path = tmp_path / "bytes.dcf"
    path.write_bytes(data)
    return path


def test_pruned_only_parameters_are_stored_masked(tmp_path):
    torch.manual_seed(0)
    model = Net()
    MagnitudePruner(model, sparsity=0.5).step()
    model.fc.weight_orig.data += 1.0  # what an optimizer might do to pruned entries
    path = tmp_path / "pruned.dcf"
    save_file(model, path)
    loaded = load_file(path)["fc.weight"]
    assert torch.equal(loaded, torch.where(model.fc.weight_mask, model.fc.weight_orig, 0))


def test_keep_quantized_restores_codebooks_for_further_fine_tuning(tmp_path):
    model = _compressed()
    path = tmp_path / "model.dcf"
    save_file(model, path)
    fresh = Net()
    load_model(fresh, path, keep_quantized=True)
    assert is_shared(fresh.fc) and is_shared(fresh.conv)
    assert torch.equal(fresh.fc.weight, model.fc.weight)
    assert torch.equal(fresh.fc.weight_mask, model.fc.weight_mask)
    assert (get_codebook(fresh.fc)[fresh.fc.weight_codes[fresh.fc.weight_mask]] != 0).all()
    # Fine-tuning the reloaded codebook moves shared values but never revives a pruned weight.
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.5)
    fresh(torch.randn(4, 1, 8, 8)).square().sum().backward()
    optimizer.step()
    fresh(torch.randn(1, 1, 8, 8))
    assert (fresh.fc.weight[~model.fc.weight_mask] == 0).all()
    assert not torch.equal(fresh.fc.weight, model.fc.weight)


def test_strict_name_and_shape_checks(tmp_path):
    path = tmp_path / "model.dcf"
    save_file(_compressed(), path)

    class Renamed(Net):
        def __init__(self):
            super().__init__()
            self.head = self.fc
            del self.fc

        def forward(self, x):  # pragma: no cover - never run
            raise NotImplementedError

    with pytest.raises(ModelMismatchError, match=r"missing from the file: head.weight, head.bias; not in the model: fc.bias, fc.weight"):
        load_model(Renamed(), path)
    missing, unexpected = load_model(Renamed(), path, strict=False)
    assert missing == ["head.weight", "head.bias"] and unexpected == ["fc.bias", "fc.weight"]

    class Wider(Net):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4 * 6 * 6, 11)

    with pytest.raises(ModelMismatchError, match=r"fc.weight: file \(10, 144\), model \(11, 144\)"):
        load_model(Wider(), path, strict=False)


def test_loading_into_a_compressed_model_is_refused(tmp_path):
    path = tmp_path / "model.dcf"
    save_file(_compressed(), path)
    with pytest.raises(ModelMismatchError, match="fresh model"):
        load_model(_compressed(), path)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ConfigError, match="nn.Module or a state dict"):
        save_file([1, 2], tmp_path / "x.dcf")
    with pytest.raises(ConfigError, match="not a tensor"):
        save({"a": 3})
    with pytest.raises(ConfigError, match="cannot store"):
        save({"a": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(dcformat.DCFormatError):
        save_file({"a": torch.zeros(2)}, tmp_path / "x.dcf", metadata={"dcformat.producer": "me"})


def test_bfloat16_round_trip(tmp_path):
    pytest.importorskip("ml_dtypes")
    layer = nn.Linear(8, 4).to(torch.bfloat16)
    path = tmp_path / "bf16.dcf"
    save_file(layer, path)
    assert torch.equal(load_file(path)["weight"], layer.weight.detach())
    share_model = nn.Sequential(nn.Linear(8, 4)).to(torch.bfloat16)
    TrainedQuantizer(share_model, bits=3).quantize()
    save_file(share_model, path)
    loaded = load_file(path)["0.weight"]
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded, share_model[0].weight.detach())


def test_report_is_measured_from_the_file(tmp_path):
    model = _compressed()
    path = tmp_path / "model.dcf"
    save_file(model, path)
    report = file_report(path)
    assert report.file_bytes == path.stat().st_size
    names = [layer.name for layer in report.layers]
    assert names == sorted(model_name for model_name in load_file(path))
    fc = next(layer for layer in report.layers if layer.name == "fc.weight")
    assert fc.kept == pytest.approx(float(model.fc.weight_mask.double().mean()), abs=1e-9)
    assert fc.code_bits is not None and fc.stored_bytes > 0
    assert report.fp32_bytes == 4 * sum(v.numel() for v in load_file(path).values())
    data = report.as_dict()
    assert data["ratio"] == pytest.approx(report.fp32_bytes / report.file_bytes)
    text = format_report(report, reference={"fc.weight": {"kept": 10}})
    assert "fc.weight" in text and "paper" in text
    np.testing.assert_equal(len(data["layers"]), len(names))


def test_importing_dcformat_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, dcformat, dcformat.paper.mnist; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0


def test_float16_codebooks_are_stored_exactly_at_half_the_size(tmp_path):
    torch.manual_seed(0)
    model = Net()
    MagnitudePruner(model, sparsity={"conv.weight": 0.3, "fc.weight": 0.9}).step()
    TrainedQuantizer(model, codebook_dtype=torch.float16).quantize()
    # Fine-tuning steps far below float16's resolution still accumulate in the parameter.
    codebook = model.conv.weight_codebook
    before = codebook.detach().clone()
    with torch.no_grad():
        codebook += 1e-6
    assert not torch.equal(codebook.detach(), before)
    model(torch.randn(1, 1, 8, 8))
    assert torch.equal(model.conv.weight.to(torch.float16).float(), model.conv.weight), "forward uses float16 values"
    path16, path32 = tmp_path / "f16.dcf", tmp_path / "f32.dcf"
    save_file(model, path16)
    with dcformat.open(path16) as f:
        assert f.get_quantized("conv.weight").codebook.dtype == np.float16
    assert torch.equal(load_file(path16)["conv.weight"], model.conv.weight)
    fresh = Net()
    load_model(fresh, path16, keep_quantized=True)
    fresh.eval()(torch.randn(1, 1, 8, 8))  # eval: leave batch-norm statistics as loaded
    assert torch.equal(fresh.conv.weight, model.conv.weight)
    save_file(fresh, tmp_path / "again.dcf")
    assert (tmp_path / "again.dcf").read_bytes() == path16.read_bytes(), "a reloaded model writes the same file"
    plain = _compressed()
    save_file(plain, path32)
    assert path16.stat().st_size < path32.stat().st_size


def test_unused_centroids_are_not_stored(tmp_path):
    layer = nn.Linear(4, 3)
    TrainedQuantizer(nn.Sequential(layer), bits=6).quantize()  # 12 weights, 64 centroids
    path = tmp_path / "small.dcf"
    save_file(layer, path)
    with dcformat.open(path) as f:
        q = f.get_quantized("weight")
        assert q.codebook.size <= 12 + 1  # used centroids (+ a zero for fillers, if any)
    assert torch.equal(load_file(path)["weight"], layer.weight.detach())
    everything_pruned = nn.Linear(3, 2)
    MagnitudePruner(nn.Sequential(everything_pruned), sparsity=1.0).step()
    TrainedQuantizer(nn.Sequential(everything_pruned)).quantize()
    save_file(everything_pruned, path)
    assert (load_file(path)["weight"] == 0).all()
