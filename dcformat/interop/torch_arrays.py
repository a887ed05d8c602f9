"""The one bridge between torch tensors and the core's numpy arrays, and the one table of
torch dtypes for the wire's dtypes. Used by the ``.pt`` reader and writer, the torch
adapter's export and its torch-ops decoder. Importing it imports torch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EncodeError
from ..format import dtypes
from ..format.constants import DType

#: The torch dtype of each wire dtype (spec 5.2), and so the torch dtypes dcformat stores.
TORCH_DTYPES = {
    DType.FLOAT32: torch.float32,
    DType.FLOAT16: torch.float16,
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT64: torch.float64,
    DType.INT8: torch.int8,
    DType.INT16: torch.int16,
    DType.INT32: torch.int32,
    DType.INT64: torch.int64,
    DType.UINT8: torch.uint8,
    DType.UINT16: torch.uint16,
    DType.UINT32: torch.uint32,
    DType.UINT64: torch.uint64,
    DType.BOOL: torch.bool,
}
_WIRE_OF = {torch_dtype: wire for wire, torch_dtype in TORCH_DTYPES.items()}


def to_numpy(tensor: torch.Tensor, *, name: str) -> np.ndarray:
    """A dense torch tensor as a numpy array the core can store (bfloat16 needs ml_dtypes)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise EncodeError(f"{tensor.layout} / quantized torch tensors cannot be stored; make it dense first", field=repr(name))
    wire = _WIRE_OF.get(tensor.dtype)
    if wire is None:
        raise EncodeError(f"dcformat cannot store torch dtype {tensor.dtype}", field=repr(name))
    tensor = tensor.detach().to("cpu").contiguous()
    if wire == DType.BFLOAT16:
        bfloat16 = dtypes.bfloat16()
        if bfloat16 is None:
            raise EncodeError("bfloat16 tensors need the package ml_dtypes for numpy (pip install ml_dtypes)", field=repr(name))
        return tensor.view(torch.int16).numpy().view(bfloat16)
    return tensor.numpy()


def to_torch(array: np.ndarray, *, device="cpu") -> torch.Tensor:
    """A numpy array from the core as a torch tensor (copied: the core may hand out read-only views)."""
    if dtypes.is_bfloat16(array.dtype):
        return torch.from_numpy(np.array(array.view(np.int16))).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="))).to(device)
