"""Which kernels do the bulk work: the compiled extension ``dcformat._kernels``, or numpy.

The numpy kernels are the reference and the fallback; the compiled ones (one C file,
``dcformat/_kernels.c``, built by ``pip install``) must give the same bytes and are tested
against them. The choice follows python-zstandard's backend policy, read from the
environment variable ``DCFORMAT_KERNELS`` at each call (once per load: see :func:`fixed`):

* unset or ``auto``: compiled if the extension was built, else numpy with a one-line
  warning (once per process);
* ``compiled``: the extension, and an error if it is missing;
* ``numpy``: the numpy kernels, silently.

Compiled kernels run only over plans the Python validation path has checked; see the C
file's header for what they still bound themselves.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType

import numpy as np

from .errors import DCFormatError

ENV_KERNELS = "DCFORMAT_KERNELS"
CHOICES = ("auto", "compiled", "numpy")

_loaded: tuple[ModuleType | None, str] | None = None  # (module, why it is missing)
_warned = False
#: What :func:`compiled` answers inside :func:`fixed` (in that thread's context).
_fixed: ContextVar[ModuleType | None] = ContextVar("dcformat_kernels_fixed")
_UNFIXED = object()


def _load() -> tuple[ModuleType | None, str]:
    global _loaded
    if _loaded is None:
        try:
            from . import _kernels  # the C extension: a binary module, not a layer of its own

            _loaded = (_kernels, "")
        except ImportError as error:
            _loaded = (None, str(error))
    return _loaded


def choice() -> str:
    """The policy in force: ``auto``, ``compiled`` or ``numpy``."""
    text = os.environ.get(ENV_KERNELS, "").strip().lower() or "auto"
    if text not in CHOICES:
        raise DCFormatError(f"{ENV_KERNELS} must be one of {', '.join(CHOICES)}, got {text!r}")
    return text


def compiled() -> ModuleType | None:
    """The compiled kernels when they are to be used, else None (use numpy)."""
    global _warned
    module = _fixed.get(_UNFIXED)
    if module is not _UNFIXED:
        return module
    policy = choice()
    if policy == "numpy":
        return None
    module, why = _load()
    if module is None:
        if policy == "compiled":
            raise DCFormatError(f"{ENV_KERNELS}=compiled but dcformat._kernels is not built ({why}); reinstall with a C compiler")
        if not _warned:
            _warned = True
            warnings.warn(f"dcformat: compiled kernels unavailable ({why}); decoding with numpy (slower)", RuntimeWarning, stacklevel=3)
    return module


@contextmanager
def fixed() -> Iterator[None]:
    """Within the block, :func:`compiled` in this thread answers as it did on entry, without
    reading the environment again: a model's load asks a few hundred times, and a read of an
    unset variable costs about a microsecond (two KeyErrors inside ``os.environ.get``)."""
    token = _fixed.set(compiled())
    try:
        yield
    finally:
        _fixed.reset(token)


def in_use() -> str:
    """``"compiled"`` or ``"numpy"``: what decoding uses now (for reports and benchmarks)."""
    return "compiled" if compiled() is not None else "numpy"


#: Decoded outputs of at least this many bytes get pages of their own from the extension.
OWN_PAGES_MIN_BYTES = 64 << 10


def output_array(count: int, dtype, reserve=None) -> np.ndarray:
    """A zero-filled 1-D array of ``count`` elements for a decoded tensor to be written into.

    With the compiled extension on Linux, a large one is mapped for itself: aligned for
    transparent huge pages from 2 MiB, populated in one call below (``output_pages`` in the
    C file says why: first touches of fresh 4 KiB pages were a third of a model's load), or
    taken from ``reserve`` (:func:`output_reserve`) while it lasts. Its memory is returned
    when the last array using it goes, as numpy's would be.
    """
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    native = compiled() if nbytes >= OWN_PAGES_MIN_BYTES else None
    pages = None
    if native is not None:
        pages = reserve.take(nbytes) if reserve is not None else None
        if pages is None:
            pages = native.output_pages(nbytes)
    if pages is None:
        return np.zeros(count, dtype=dtype)
    return np.frombuffer(pages, dtype=dtype, count=count)


def output_reserve(sizes) -> object | None:
    """Pages mapped at once for outputs of these byte sizes, for :func:`output_array` to take
    (those under ``OWN_PAGES_MIN_BYTES`` come from numpy and need none); None where the
    extension is not in use or nothing needs them. The ``Reserve`` in the C file says why."""
    native = compiled()
    if native is None:
        return None
    return native.output_reserve([int(size) for size in sizes if size >= OWN_PAGES_MIN_BYTES])
