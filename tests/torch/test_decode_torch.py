"""The torch decoder gives results bit-identical to the numpy decoder (on the CPU here)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")

import dcformat  # noqa: E402
import dcformat.torch  # noqa: E402
from dcformat import EncodeOptions  # noqa: E402
from dcformat.codecs import streams  # noqa: E402
from dcformat.torch import decode as torch_decode  # noqa: E402
from tests.support.paths import REPO_ROOT  # noqa: E402
from tests.support.strategies import FLOAT_DTYPES, few, raw_arrays  # noqa: E402

VECTORS = REPO_ROOT / "spec" / "vectors"


def same_bits(tensor: "torch.Tensor", array: np.ndarray) -> bool:
    if tensor.dtype == torch.bfloat16:
        got = tensor.view(torch.uint16).numpy()
        want = array.view(np.uint16)
    else:
        got, want = tensor.numpy(), array
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("name", sorted(json.loads((VECTORS / "vectors.json").read_text())))
def test_every_vector_decodes_identically(name):
    path = VECTORS / f"{name}.dcf"
    expected = dcformat.load_file(path)
    got = torch_decode.load_file(path, device="cpu")
    assert sorted(got) == sorted(expected)
    assert sorted(dcformat.torch.decode_file(path)) == sorted(expected)  # the package-level name
    for key in expected:
        assert same_bits(got[key], expected[key]), key


@pytest.mark.parametrize("coder", ["bitpack", "huffman", "zstd"])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_random_layers_decode_identically(coder, layout):
    rng = np.random.default_rng(7)
    w = rng.laplace(scale=0.1, size=(257, 129)).astype(np.float32)
    w[np.abs(w) < 0.15] = 0
    tensors = {"w5": dcformat.quantize(w, bits=5), "w8": dcformat.quantize(w, bits=8), "b": rng.standard_normal(7)}
    data = dcformat.save(tensors, options=EncodeOptions(layout=layout, coder=coder))
    with dcformat.open(data) as f:
        for key in f.keys():
            assert same_bits(torch_decode.get(f, key, device="cpu"), f.get(key)), key


def test_corrupt_huffman_lane_is_rejected_like_numpy():
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(64, 64)).astype(np.float32)
    data = dcformat.save({"w": dcformat.quantize(w, bits=5)}, options=EncodeOptions(layout="dense", coder="huffman"))
    with dcformat.open(data) as f:
        parsed = f.plan("w")
        body = bytearray(parsed.codes.body)
    body[-3] ^= 0x5A  # flip payload bits: some lane no longer ends where declared
    ref = streams.plan(parsed.codes.coder, memoryview(bytes(body)), parsed.codes.count, parsed.codes.alphabet_size, field="w.codes", offset=0)
    with pytest.raises(dcformat.FormatError) as numpy_error:
        streams.decode(ref)
    with pytest.raises(dcformat.FormatError) as torch_error:
        torch_decode.decode_stream(ref, "cpu")
    assert str(numpy_error.value) == str(torch_error.value)


@settings(max_examples=few(40))
@given(
    array=st.sampled_from(FLOAT_DTYPES).flatmap(lambda dtype: raw_arrays(dtype=dtype)), coder=st.sampled_from([None, "bitpack", "huffman", "zstd"])
)
def test_float_split_decodes_identically(array, coder):
    """Every bit pattern of every float dtype, every coder: the torch kernel assembles the
    same bits as numpy (NaN payloads included, so bits are compared, not values)."""
    data = dcformat.save({"x": array}, options=EncodeOptions(dense="float_split", coder=coder))
    with dcformat.open(data) as f:
        assert same_bits(torch_decode.get(f, "x", device="cpu"), np.asarray(f.get("x")))
