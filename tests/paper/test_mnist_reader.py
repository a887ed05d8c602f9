"""dcformat.paper.mnist: the numpy-only IDX reader (no torch needed, so no importorskip here)."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from dcformat.errors import DCFormatError, FormatError
from dcformat.paper.mnist import (
    ENV_VAR,
    FILE_NAMES,
    MNISTNotFoundError,
    find_mnist_dir,
    load_mnist,
    parse_idx,
    read_idx,
    write_idx,
)
from tests.support.paths import REPO_ROOT, require_mnist


def _fake_mnist(directory, *, train=12, test=5, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, test, dtype=np.uint8),
    }
    suffix = ".gz" if compress else ""
    for role, array in arrays.items():
        write_idx(array, directory / (FILE_NAMES[role] + suffix))
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gzipped", "plain"])
def test_load_round_trip(tmp_path, compress):
    arrays = _fake_mnist(tmp_path, compress=compress)
    loaded = load_mnist(tmp_path)
    for role, array in arrays.items():
        np.testing.assert_array_equal(getattr(loaded, role), array)
        assert getattr(loaded, role).dtype == np.uint8


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "plain-name-but-gzipped"
    with gzip.open(path, "wb") as stream:
        stream.write(bytes([0, 0, 8, 2]) + np.array([2, 3], ">u4").tobytes() + array.tobytes())
    np.testing.assert_array_equal(read_idx(path), array)


def test_exact_header_bytes():
    data = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])
    np.testing.assert_array_equal(parse_idx(data), [7, 8, 9])
    big_endian_ints = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + (258).to_bytes(4, "big")
    np.testing.assert_array_equal(parse_idx(big_endian_ints), [1, 258])


@pytest.mark.parametrize(
    "data, field",
    [
        (b"\x00\x00", "magic"),  # shorter than the magic
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "magic"),  # first byte not zero
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00", "magic"),  # unknown type byte
        (b"\x00\x00\x08\x00", "magic"),  # zero dimensions
        (b"\x00\x00\x08\x02" + b"\x00\x00\x00\x01", "dims"),  # ends inside the dims
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x04" + b"\x00\x00\x00", "data"),  # one byte short
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00\x00", "data"),  # one byte too many
    ],
)
def test_malformed_idx(data, field):
    with pytest.raises(FormatError, match=f"idx: {field}"):
        parse_idx(data)


def test_bad_magic_in_a_file_names_the_file(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / (FILE_NAMES["test_labels"] + ".gz")).unlink()
    with gzip.open(tmp_path / (FILE_NAMES["test_labels"] + ".gz"), "wb") as stream:
        stream.write(b"\x00\x00\x08\x03" + b"junk")  # labels claiming 3 dims, then garbage
    with pytest.raises(FormatError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(FormatError, match="cannot decompress"):
        read_idx(path)


def test_wrong_image_shape_and_count_mismatch(tmp_path):
    _fake_mnist(tmp_path)
    write_idx(np.zeros((12, 28, 27), np.uint8), tmp_path / (FILE_NAMES["train_images"] + ".gz"))
    with pytest.raises(FormatError, match=r"\(N, 28, 28\)"):
        load_mnist(tmp_path)
    _fake_mnist(tmp_path)
    write_idx(np.zeros(11, np.uint8), tmp_path / (FILE_NAMES["train_labels"] + ".gz"))
    with pytest.raises(FormatError, match="11 labels for 12 images"):
        load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    _fake_mnist(tmp_path)
    write_idx(np.full(5, 10, np.uint8), tmp_path / (FILE_NAMES["test_labels"] + ".gz"))
    with pytest.raises(FormatError, match="not a digit"):
        load_mnist(tmp_path)


def test_missing_files_say_which(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / (FILE_NAMES["train_labels"] + ".gz")).unlink()
    with pytest.raises(MNISTNotFoundError) as caught:
        load_mnist(tmp_path)
    message = str(caught.value)
    assert "missing there: train-labels-idx1-ubyte" in message
    assert "t10k-images-idx3-ubyte" in message and ENV_VAR in message
    assert isinstance(caught.value, DCFormatError) and isinstance(caught.value, FileNotFoundError)


def test_environment_variable_is_searched_first(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, train=3, test=2)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_mnist_dir() == tmp_path
    assert len(load_mnist().train_labels) == 3


def test_dotted_file_names_are_accepted(tmp_path):
    arrays = _fake_mnist(tmp_path, compress=False)
    for name in FILE_NAMES.values():
        (tmp_path / name).rename(tmp_path / name[::-1].replace("-", ".", 1)[::-1])
    np.testing.assert_array_equal(load_mnist(tmp_path).test_labels, arrays["test_labels"])


def test_mnist_module_does_not_import_torch():
    import subprocess

    root = REPO_ROOT
    code = "import sys, dcformat.paper.mnist; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_real_mnist_if_present():
    mnist = load_mnist(require_mnist())
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
