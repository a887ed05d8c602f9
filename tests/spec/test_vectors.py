"""Every frozen vector in spec/vectors decodes to the tensors its manifest records.

The manifest's hashes were computed from the *inputs* when the vectors were written
(tools/make_vectors.py), so this checks the decoder against intended content, and the
file hashes catch any edit of a frozen file.
"""

import hashlib
import json

import numpy as np
import pytest

import dcformat
from dcformat.format.constants import DTYPE_STORAGE, DType
from tests.support.optional import needs_ml_dtypes
from tests.support.paths import REPO_ROOT

VECTORS = REPO_ROOT / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))


def _needs_bfloat16(name: str) -> bool:
    return any(t["dtype"] == "bfloat16" for t in MANIFEST[name]["tensors"].values())


#: Every vector; those holding a bfloat16 tensor skip without ml_dtypes.
VECTOR_NAMES = [pytest.param(name, marks=[needs_ml_dtypes] if _needs_bfloat16(name) else []) for name in sorted(MANIFEST)]


def storage_sha256(array: np.ndarray, dtype_name: str) -> str:
    storage = DTYPE_STORAGE[DType[dtype_name.upper()]]
    return hashlib.sha256(np.ascontiguousarray(array).view(storage).tobytes()).hexdigest()


def test_every_vector_file_is_in_the_manifest():
    files = {p.name for p in VECTORS.glob("*.dcf")}
    assert files == {v["file"] for v in MANIFEST.values()}
    assert len(files) >= 10


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vector_is_frozen(name):
    data = (VECTORS / MANIFEST[name]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["file_sha256"], "a frozen vector changed: see tools/make_vectors.py"


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_decodes(name):
    entry = MANIFEST[name]
    path = VECTORS / entry["file"]
    with dcformat.open(path) as f:
        assert f.keys() == sorted(entry["tensors"], key=lambda k: k.encode())
        metadata = f.metadata()
        assert metadata.pop("dcformat.producer").startswith("dcformat ")
        assert metadata == entry["metadata"]
        f.verify()
        for key, expected in entry["tensors"].items():
            array = f.get(key)
            assert list(array.shape) == expected["shape"], key
            assert dcformat.format.dtypes.name(dcformat.format.dtypes.dtype_id(array.dtype)) == expected["dtype"], key
            assert storage_sha256(array, expected["dtype"]) == expected["sha256"], key
    loaded = dcformat.load_file(path)
    assert sorted(loaded) == sorted(entry["tensors"])


@needs_ml_dtypes  # info() of a bfloat16 tensor needs its numpy dtype
def test_vectors_cover_every_encoding_and_coder():
    encodings, coders = set(), set()
    for entry in MANIFEST.values():
        with dcformat.open(VECTORS / entry["file"]) as f:
            for key in f.keys():
                info = f.info(key)
                encodings.add(info.encoding)
                # a float_split tensor names every coder its streams use, joined by "+"
                coders.update(part for c in (info.codes_coder, info.gaps_coder) if c for part in c.split("+"))
    assert encodings == {e.name.lower() for e in dcformat.format.constants.Encoding}
    assert coders == {c.name.lower() for c in dcformat.format.constants.Coder}
