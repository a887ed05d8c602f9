"""The worked example of spec section 12, byte for byte.

The expected bytes are the hex column of the spec's table, written by hand from the
spec's rules; the test checks that the encoder writes exactly them, that the frozen vector
holds exactly them, and that they decode to the tensors the spec describes.
"""

import numpy as np

import dcformat
from dcformat import EncodeOptions, QuantizedTensor
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
SPEC = (ROOT / "spec" / "dcformat.md").read_text(encoding="utf-8")


def example_bytes_from_spec() -> bytes:
    section = SPEC[SPEC.index("## 12. Worked example") : SPEC.index("## 13.")]
    out = bytearray()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("|") or not cells[0].isdigit():
            continue
        assert int(cells[0]) == len(out), f"offset column disagrees at {cells[0]}"
        parts = cells[1].split()
        if len(parts) == 2 and parts[1].startswith("x"):
            out += bytes([int(parts[0], 16)]) * int(parts[1][1:])
        else:
            out += bytes(int(p, 16) for p in parts)
    return bytes(out)


def example_tensors():
    w = QuantizedTensor.from_entries((2, 4), np.array([0.5, -1.0], np.float32), [1, 7], [0, 1])
    return {"b": np.array([1, -2, 3], np.int8), "w": w}


def test_encoder_writes_the_spec_bytes(monkeypatch):
    monkeypatch.setattr(dcformat, "__version__", "0.1.0")  # the example's producer string
    data = dcformat.save(example_tensors(), options=EncodeOptions(layout="sparse", gap_bits=2, coder="bitpack"))
    assert data == example_bytes_from_spec()


def test_frozen_vector_is_the_spec_example():
    assert (ROOT / "spec" / "vectors" / "example.dcf").read_bytes() == example_bytes_from_spec()


def test_spec_example_decodes_as_described():
    out = dcformat.load(example_bytes_from_spec())
    assert out["b"].dtype == np.int8 and out["b"].tolist() == [1, -2, 3]
    assert out["w"].dtype == np.float32
    assert out["w"].tolist() == [[0, 0.5, 0, 0], [0, 0, 0, -1]]
    with dcformat.open(example_bytes_from_spec()) as f:
        q = f.get_quantized("w")
        assert q.positions.tolist() == [1, 5, 7]  # the middle entry is the filler
        assert q.codebook.tolist() == [0.0, 0.5, -1.0]
