"""``dcformat.compress.moments``: second moments on disk, read by the compressor when it needs each."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dcformat.compress import compress_tensors
from dcformat.compress.moments import MomentStore


def layer(seed: int, rows: int = 48, columns: int = 32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, columns)) * np.linspace(0.2, 3.0, columns)
    return rng.standard_normal((rows, columns)).astype(np.float32), x.T @ x


def test_the_store_keeps_float32_files_and_shares_them(tmp_path):
    store = MomentStore(str(tmp_path))
    _, h = layer(0)
    store.put("q.weight", h)
    store.put("k.weight", same_as="q.weight")
    store.put("o.weight", 2 * h)
    assert sorted(store) == ["k.weight", "o.weight", "q.weight"] and len(store) == 3 and "k.weight" in store and "x" not in store
    np.testing.assert_array_equal(store["k.weight"], h.astype(np.float32))
    assert store["o.weight"].dtype == np.float32 and len(list(tmp_path.iterdir())) == 2
    assert store.nbytes() == sum(p.stat().st_size for p in tmp_path.iterdir())
    renamed = store.renamed({"q.weight": "model.q.weight", "o.weight": None})
    assert sorted(renamed) == ["model.q.weight"]
    np.testing.assert_array_equal(renamed["model.q.weight"], store["q.weight"])


class Counting(Mapping):
    """Second moments that count how often each is read."""

    def __init__(self, moments):
        self.moments, self.reads = moments, {}

    def __getitem__(self, name):
        self.reads[name] = self.reads.get(name, 0) + 1
        return self.moments[name]

    def __contains__(self, name):  # Mapping's own would read the value
        return name in self.moments

    def __iter__(self):
        return iter(self.moments)

    def __len__(self):
        return len(self.moments)


def test_the_compressor_reads_moments_when_it_needs_them_and_keeps_none(tmp_path):
    tensors, moments = {}, {}
    for number in range(3):
        tensors[f"l{number}.weight"], moments[f"l{number}.weight"] = layer(number)
    counting = Counting(moments)
    out, report = compress_tensors(tensors, min_elements=100, target_bits_per_weight=4.0, hessians=counting)
    # once when the plan checks it, once when its tensor is quantized: never held in between
    assert counting.reads == {name: 2 for name in moments}
    assert report["settings"]["error_compensated"] == 3
    store = MomentStore(str(tmp_path))
    for name, h in moments.items():
        store.put(name, h)
    from_store, _ = compress_tensors(tensors, min_elements=100, target_bits_per_weight=4.0, hessians=store)
    rounded, _ = compress_tensors(
        tensors, min_elements=100, target_bits_per_weight=4.0, hessians={n: h.astype(np.float32) for n, h in moments.items()}
    )
    for name in tensors:
        np.testing.assert_array_equal(from_store[name].codes, rounded[name].codes)
