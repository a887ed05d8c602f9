"""The whole pipeline, quickly: a slice of MNIST, one epoch per stage, a real file at the end."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

torch = pytest.importorskip("torch", reason="the paper's reproduction needs PyTorch (pip install 'dcformat[torch]')")

import dcformat  # noqa: E402
from dcformat.cli import reproduce as command  # noqa: E402
from dcformat.cli.common import EXIT_TARGETS_MISSED, EXIT_USAGE  # noqa: E402
from dcformat.paper import reproduce as repro  # noqa: E402
from dcformat.paper.mnist import FILE_NAMES, load_mnist, write_idx  # noqa: E402
from tests.support.paths import require_mnist  # noqa: E402

TRAIN, TEST = 2000, 1000


@pytest.fixture(scope="module")
def mnist_slice(tmp_path_factory):
    """The first 2000 training and 1000 test images, written as IDX files."""
    mnist = load_mnist(require_mnist())
    directory = tmp_path_factory.mktemp("mnist")
    slices = {
        "train_images": mnist.train_images[:TRAIN],
        "train_labels": mnist.train_labels[:TRAIN],
        "test_images": mnist.test_images[:TEST],
        "test_labels": mnist.test_labels[:TEST],
    }
    for role, array in slices.items():
        write_idx(array, directory / FILE_NAMES[role])
    return directory


def _quick(network: str) -> repro.Recipe:
    return dataclasses.replace(repro.RECIPES[network], dense_epochs=1, prune_rounds=1, retrain_epochs=[1], finetune_epochs=1, batch_size=64)


@pytest.mark.parametrize("network", ["lenet-300-100", "lenet-5"])
def test_short_pipeline_beats_chance_and_writes_a_valid_file(network, mnist_slice, tmp_path, monkeypatch):
    monkeypatch.setitem(repro.RECIPES, network, _quick(network))
    result = repro.reproduce(network, data_dir=mnist_slice, out_dir=tmp_path, seed=0, progress=False)
    assert result["error_after"] < 50.0, "one epoch per stage should be far better than chance (90%)"
    assert result["error_after"] == pytest.approx(result["error_in_memory"]), "the file holds the trained model"
    path = tmp_path / f"{network}.dcf"
    assert result["file_bytes"] == path.stat().st_size
    with dcformat.open(path) as f:
        assert f.verify()
        metadata = f.metadata()
        assert metadata["network"] == network and metadata["recipe"]["dense_epochs"] == 1
        for name, sparsity in repro.RECIPES[network].sparsity.items():
            info = f.info(name)
            assert info.encoding.startswith("quant")
            assert info.density == pytest.approx(1 - sparsity, abs=0.01)
    assert result["ratio"] > 20
    saved = json.loads((tmp_path / f"{network}.json").read_text())
    assert saved["file_bytes"] == result["file_bytes"]
    text = repro.format_result(result)
    assert "paper" in text and network in text


def _parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` through the one ``reproduce`` parser, the CLI's (``dcformat.cli.reproduce.register``)."""
    parser = argparse.ArgumentParser(prog="dcformat")
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_networks_are_the_recipes():
    assert command.NETWORKS == tuple(sorted(repro.RECIPES))


def test_cli_entry_points(mnist_slice, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(repro.RECIPES, "lenet-300-100", _quick("lenet-300-100"))
    args = _parse(["reproduce", "lenet-300-100", "--data", str(mnist_slice), "--out", str(tmp_path), "--json", "--no-progress", "--seed", "3"])
    status = args.func(args)
    assert status == EXIT_TARGETS_MISSED == 3, "a one-epoch run misses the paper's targets, and says so"
    result = json.loads(capsys.readouterr().out)
    assert result["seed"] == 3 and result["targets_met"]["ratio"] in (True, False)


def test_cli_says_which_files_are_missing(tmp_path, capsys):
    args = _parse(["reproduce", "lenet-5", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert args.func(args) == EXIT_USAGE == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_unknown_network():
    with pytest.raises(dcformat.DCFormatError, match="network must be one of"):
        repro.reproduce("alexnet", data_dir=None, out_dir="/nonexistent")
