"""The public surface of ``import dcformat``, pinned (python-zstandard's habit): a name
added or removed here is a decision, not an accident."""

from __future__ import annotations

import builtins

import numpy as np

import dcformat

PUBLIC = {
    "ChecksumError",
    "DCFile",
    "DCFormatError",
    "EncodeError",
    "EncodeOptions",
    "FileWriter",
    "FormatError",
    "LimitError",
    "QuantizedTensor",
    "ShardedFile",
    "ShardedWriter",
    "TensorInfo",
    "UnsupportedError",
    "Writer",
    "__version__",
    "kmeans_1d",
    "load",
    "load_file",
    "open_file",
    "quantize",
    "safe_open",
    "save",
    "save_file",
    "save_sharded",
    "writer",
}


def test_all_is_pinned():
    assert set(dcformat.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(dcformat, name), name


def test_star_import_keeps_the_builtin_open():
    namespace: dict = {}
    exec("from dcformat import *", namespace)
    assert "open" not in namespace
    assert namespace["safe_open"] is dcformat.safe_open
    assert builtins.open is open


def test_safe_open_and_open_are_the_same_reader(tmp_path):
    path = tmp_path / "m.dcf"
    dcformat.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    with dcformat.safe_open(path) as f, dcformat.open(path) as g:
        assert isinstance(f, dcformat.DCFile) and isinstance(g, dcformat.DCFile)
        assert f.keys() == g.keys() == ["a"]
        assert np.array_equal(f.get("a"), g.get("a"))


def test_dcfile_surface_is_small():
    """DCFile's public methods: the user's verbs, and the documented ones for decoders and loaders."""
    public = {name for name in vars(dcformat.DCFile) if not name.startswith("_")}
    assert public == {
        "keys",
        "metadata",
        "get",
        "get_quantized",
        "get_stored",
        "info",
        "verify",
        "close",
        "plan",
        "entry",
        "decoded_bytes",
        "check_padding",
    }
