"""Input second moments kept on disk until the compressor needs them.

Calibration measures one ``in x in`` matrix per linear layer (``H = sum x x^T``,
:mod:`dcformat.compress.gptq`). For a large model they are more than memory should hold
at once: with Llama-3.2-1B's shapes about 10 GB in float64, each ``down_proj``'s 8192^2
half a gigabyte. :class:`MomentStore` writes each matrix to a file in a directory as soon
as it is measured and reads it back each time it is asked for, so memory holds the
matrices of one block while calibrating and one per thread while compressing. Layers fed
the same input (a block's query, key and value) share one file.

The files are float32: the sums are accumulated in float64, and float32's relative
precision (6e-8) is far below the 1% damping the quantizer adds to the diagonal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np


class MomentStore(Mapping):
    """A read-only mapping of weight names to second-moment matrices held in files of
    ``directory`` (which the caller owns and removes); :meth:`put` adds one."""

    def __init__(self, directory: str, files: dict[str, str] | None = None):
        self.directory = directory
        self._files = dict(files or {})  # name -> file in the directory
        self._written = 0

    def put(self, name: str, matrix: np.ndarray | None = None, *, same_as: str | None = None) -> None:
        """Keep ``matrix`` as ``name``'s moments, or give ``name`` those of ``same_as``."""
        if same_as is not None:
            self._files[name] = self._files[same_as]
            return
        path = os.path.join(self.directory, f"moments-{id(self):x}-{self._written:06d}.npy")  # never one already written
        self._written += 1
        np.save(path, np.asarray(matrix, dtype=np.float32))
        self._files[name] = path

    def renamed(self, names: Mapping[str, str | None]) -> MomentStore:
        """The same files under other names (``names[old]``; None or absent: left out)."""
        return MomentStore(self.directory, {names[n]: f for n, f in self._files.items() if names.get(n) is not None})

    def nbytes(self) -> int:
        """Bytes of the files (each counted once)."""
        return sum(os.path.getsize(f) for f in set(self._files.values()))

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self._files[name], allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._files
