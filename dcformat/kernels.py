"""Which kernels do the bulk work: the compiled extension ``dcformat._kernels``, or numpy.

The numpy kernels are the reference and the fallback; the compiled ones (one C file,
``dcformat/_kernels.c``, built by ``pip install``) must give the same bytes and are tested
against them. The choice follows python-zstandard's backend policy, read from the
environment variable ``DCFORMAT_KERNELS`` at each call:

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
from types import ModuleType

from .errors import DCFormatError

ENV_KERNELS = "DCFORMAT_KERNELS"
CHOICES = ("auto", "compiled", "numpy")

_loaded: tuple[ModuleType | None, str] | None = None  # (module, why it is missing)
_warned = False


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


def in_use() -> str:
    """``"compiled"`` or ``"numpy"``: what decoding uses now (for reports and benchmarks)."""
    return "compiled" if compiled() is not None else "numpy"
