"""Writing ``.dcf`` files to disk: ``save`` (to bytes), ``save_file`` and the streaming
``FileWriter``, each atomic through ``io/atomic.py``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

from ..errors import EncodeError
from ..format.encode import EncodeOptions
from ..format.rules import name_order
from ..format.writer import Writer
from .atomic import AllOrNothing, AtomicFile


def _checked_overrides(tensors, overrides) -> dict:
    if not isinstance(tensors, Mapping):
        raise EncodeError(f"tensors must be a mapping of names to arrays, got {type(tensors).__name__}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(tensors)
    if unknown:
        raise EncodeError(f"overrides name tensors that are not being saved: {sorted(unknown)}")
    return overrides


def save(tensors: Mapping, *, metadata=None, options: EncodeOptions | None = None, overrides=None) -> bytes:
    """Encode ``tensors`` (name -> ndarray or QuantizedTensor) into the bytes of a file."""
    overrides = _checked_overrides(tensors, overrides)
    sink = io.BytesIO()
    writer = Writer(sink, options=options)
    for name in name_order(tensors):
        writer.add(name, tensors[name], options=overrides.get(name))
    writer.finish(metadata)
    return sink.getvalue()


class FileWriter(AllOrNothing):
    """A file written tensor by tensor, atomically: ``with dcformat.writer(path) as w: w.add(...)``.

    Payloads go to an :class:`~dcformat.io.atomic.AtomicFile` beside ``path`` as they are
    added, so memory holds about one tensor, not the model. Leaving the ``with`` block
    normally writes the index and commits the file over ``path``; an exception (or
    :meth:`abort`) leaves whatever was at ``path`` untouched.
    """

    def __init__(self, path, *, metadata=None, options: EncodeOptions | None = None):
        self.path = os.fspath(path)
        self.metadata = dict(metadata or {})
        self._out = AtomicFile(self.path)
        self._writer = Writer(self._out.file, options=options)
        self.size: int | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes of the file so far (header block and payloads; the index comes at the end)."""
        return self._writer.bytes_written

    def add(self, name: str, tensor, *, options: EncodeOptions | None = None) -> None:
        """Encode and write one tensor now."""
        try:
            self._writer.add(name, tensor, options=options)
        except BaseException:
            self.abort()
            raise

    def close(self) -> int:
        """Finish the file and move it into place; returns its size in bytes."""
        if self.size is not None:
            return self.size
        try:
            size = self._writer.finish(self.metadata)
        except BaseException:
            self.abort()
            raise
        self._out.commit()
        self.size = size
        return size

    def abort(self) -> None:
        """Drop the temporary file; ``path`` keeps its previous content."""
        self._out.abort()

    _complete = close


def save_file(tensors: Mapping, path, *, metadata=None, options: EncodeOptions | None = None, overrides=None) -> int:
    """Write a file atomically: to a temporary file beside ``path``, synced, then renamed.

    A crash at any moment leaves either the old file or the new one at ``path``, never
    a partial one. Returns the file's size in bytes.
    """
    overrides = _checked_overrides(tensors, overrides)
    with FileWriter(path, metadata=metadata, options=options) as out:
        for name in name_order(tensors):
            out.add(name, tensors[name], options=overrides.get(name))
    return out.size
