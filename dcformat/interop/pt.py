"""PyTorch weight files (format name ``torch``: ``.pt``, ``.pth``, ``.bin``), weights only.

Reading never unpickles code: files are loaded with ``torch.load(..., weights_only=True)``,
and may hold a state dict, or a training checkpoint (a dict with a ``"state_dict"`` or
``"model"`` entry that is one; its other entries are ignored). A state dict or an
``nn.Module`` in memory is read too. Writing is ``torch.save`` of a dict of tensors.

Kept: every dense tensor bit for bit (bfloat16 through ``ml_dtypes``). Lost: metadata
(not stored) and quantization (quantized tensors are dequantized; the writer returns
their names). A conversion's report notes each loss.

torch is optional: it is imported only inside these functions, and tensors become arrays
(and back) through :mod:`dcformat.interop.torch_arrays`, the one home of that conversion,
which imports torch and so is imported here only where a tensor is converted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import EncodeError, FormatError
from ..io.atomic import AtomicFile
from .common import Format, Read, Written, check_names, dense, require, user_metadata


def state_dict_arrays(obj) -> dict:
    """A state dict (or an ``nn.Module``'s) as numpy arrays; bfloat16 through ml_dtypes."""
    torch = require("torch", "reading PyTorch tensors")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise EncodeError(f"expected a state dict or an nn.Module, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise EncodeError(f"a state dict maps names to tensors; these entries do not: {[str(k) for k in bad[:5]]}")
    from .torch_arrays import to_numpy

    return {name: to_numpy(tensor, name=name) for name, tensor in obj.items()}


def read_torch(source) -> tuple[dict, dict]:
    """Tensors of a ``.pt`` file (weights only, never unpickling code), a state dict or an ``nn.Module``.

    A file may hold a state dict, or a dict with a ``"state_dict"`` or ``"model"`` entry
    that is one (a training checkpoint); its other entries are ignored.
    """
    torch = require("torch", "reading PyTorch files")
    if isinstance(source, (str, os.PathLike)):
        name = os.path.basename(os.fspath(source))
        try:
            obj = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as exc:  # torch raises many types for bad or unsafe files; none may escape raw
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FormatError(name, f"not a weights-only PyTorch file ({type(exc).__name__}: {reason[:200]})") from None
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                raise FormatError(
                    name, f"holds neither a state dict nor a dict with a 'state_dict' or 'model' state dict (keys: {[str(k) for k in list(obj)[:8]]})"
                )
            obj = inner
        if not isinstance(obj, Mapping):
            raise FormatError(name, f"holds a {type(obj).__name__}, not a state dict")
        source = obj
    return state_dict_arrays(source), {}


def write_torch(tensors: Mapping, path, *, metadata: Mapping | None = None) -> list[str]:
    """``torch.save`` of a dict of tensors; returns the names that were dequantized. Metadata is not kept."""
    torch = require("torch", "writing PyTorch files")
    check_names(tensors)
    arrays, dequantized = dense(tensors)
    from .torch_arrays import to_torch

    state = {name: to_torch(array) for name, array in arrays.items()}
    with AtomicFile(path) as out:
        torch.save(state, out.file)
    return dequantized


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _read(path, context) -> Read:
    return Read(*read_torch(path))


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    dequantized = write_torch(tensors, path, metadata=metadata)
    notes = ()
    if user_metadata(metadata):
        notes = (f"torch files hold no metadata: dropped keys {sorted(user_metadata(metadata))[:10]}",)
    return Written(dequantized, notes)


FORMAT = Format("torch", (".pt", ".pth", ".bin"), read=_read, write=_write)

__all__ = ["FORMAT", "read_torch", "state_dict_arrays", "write_torch"]
