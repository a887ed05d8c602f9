"""dcformat.plot and ``dcformat inspect --plot``: a readable PNG from any valid file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import dcformat
from dcformat import DCFormatError, QuantizedTensor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def lenet(tmp_path):
    """LeNet-300-100-like: pruned sparse layers, a dense quantized one, raw biases."""
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape, bits, kept in [("fc1", (300, 784), 6, 0.08), ("fc2", (100, 300), 6, 0.09), ("fc3", (10, 100), 5, 0.26)]:
        w = rng.laplace(scale=0.05, size=shape).astype(np.float32)
        w[np.abs(w) < np.quantile(np.abs(w), 1 - kept)] = 0
        tensors[name + ".weight"] = dcformat.quantize(w, bits=bits)
        tensors[name + ".bias"] = rng.normal(scale=0.01, size=shape[0]).astype(np.float32)
    tensors["dense.weight"] = dcformat.quantize(rng.normal(size=(64, 64)).astype(np.float32), bits=4)
    path = tmp_path / "lenet.dcf"
    dcformat.save_file(tensors, path)
    return path


def _png(path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    return data


def _size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk


def test_plot_writes_a_png(lenet, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli.plot import plot_file

    out = tmp_path / "lenet.png"
    assert plot_file(lenet, out) == str(out)
    width, height = _size(_png(out))
    assert width > 1000 and height > 500


def test_many_layers_are_capped(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli.plot import plot_file

    rng = np.random.default_rng(1)
    tensors = {f"layer.{i:02d}.weight": dcformat.quantize(rng.normal(size=(32, 16 + i)).astype(np.float32), bits=3) for i in range(40)}
    tensors["evil\x1b[2J\nname"] = np.zeros(3, np.float32)  # names from a file are escaped
    tensors["all_zero"] = QuantizedTensor.from_codes(np.zeros(1, np.float32), np.zeros((4, 4), np.int64), mask=np.zeros((4, 4), bool))
    path = tmp_path / "many.dcf"
    dcformat.save_file(tensors, path)
    plot_file(path, tmp_path / "few.png", max_histograms=4, max_bars=8)
    plot_file(path, tmp_path / "many.png")
    small, large = _size(_png(tmp_path / "few.png")), _size(_png(tmp_path / "many.png"))
    assert small[1] < large[1] < 4000  # capped: twelve histograms and 24 bars at most by default


def test_file_without_quantized_tensors(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli.plot import plot_file

    path = tmp_path / "raw.dcf"
    dcformat.save_file({"a": np.arange(10, dtype=np.float32), "b": np.zeros((0, 3), np.float32)}, path)
    plot_file(path, tmp_path / "raw.png")
    assert (tmp_path / "raw.png").read_bytes()[:8] == PNG_SIGNATURE


def test_inspect_plot_command(lenet, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli import main

    out = tmp_path / "inspect.png"
    assert main(["inspect", str(lenet), "--plot", str(out)]) == 0
    assert "fc1.weight" in capsys.readouterr().out
    _png(out)


def test_bad_arguments_and_files(lenet, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli.plot import plot_file

    with pytest.raises(DCFormatError, match="max_histograms"):
        plot_file(lenet, tmp_path / "x.png", max_histograms=-1)
    with pytest.raises(DCFormatError, match="max_bars"):
        plot_file(lenet, tmp_path / "x.png", max_bars=0)
    bad = tmp_path / "bad.dcf"
    bad.write_bytes(b"not a dcformat file at all, no no no no no no no no no no no no no no no no")
    with pytest.raises(DCFormatError, match="magic"):
        plot_file(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_sharded_model_and_other_picture_formats(lenet, tmp_path, capsys):
    """A sharded model's index plots as its shards together (the title counts every file);
    .svg and .pdf by their extension; another extension is refused before anything is drawn."""
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib (pip install 'dcformat[plot]')")
    from dcformat.cli import main
    from dcformat.cli.plot import plot_file

    index = dcformat.save_sharded(dcformat.load_file(lenet), tmp_path / "shards", max_shard_bytes=20_000)
    _png(tmp_path / plot_file(index, tmp_path / "sharded.png"))
    assert main(["inspect", index, "--plot", str(tmp_path / "cli.png")]) == 0
    _png(tmp_path / "cli.png")
    assert (tmp_path / "x.svg").name in plot_file(lenet, tmp_path / "x.svg")
    assert (tmp_path / "x.svg").read_bytes().startswith(b"<?xml")
    plot_file(lenet, tmp_path / "x.pdf")
    assert (tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(DCFormatError, match=r"x\.gif: name the picture \.png, \.svg or \.pdf"):
        plot_file(lenet, tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


def test_missing_matplotlib_is_one_clear_error(lenet, tmp_path, monkeypatch):
    from dcformat.cli.plot import plot_file

    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    with pytest.raises(DCFormatError, match=r"plot error: .*matplotlib"):
        plot_file(lenet, tmp_path / "x.png")
