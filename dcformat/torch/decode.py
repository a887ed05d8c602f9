"""Decoding a .dcf straight to torch tensors on a chosen device (CPU now, GPU when present).

Every check of a payload's structure is the core's: :meth:`DCFile.plan` makes the checked
plan on the host (those are small), and what can only be checked after decoding (a lane's
end, a symbol outside its alphabet, the last position) is checked by calling the core's
checks on what the torch kernels produced. The bulk work, symbol
unpacking, lockstep Huffman lanes, gaps to positions and the codebook gather, runs as
torch operations on ``device``. The result is bit-identical to the numpy decoder, which
``tests/torch/test_decode.py`` checks on every frozen vector.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codecs import huffman, streams
from ..errors import UnsupportedError
from ..format import decode as numpy_kernels
from ..format import float_split
from ..format.constants import DTYPE_ITEMSIZE, Coder, DType
from ..format.encodings import DensePlan, FloatSplitPlan, QuantPlan
from ..format.reader import DCFile
from ..interop.torch_arrays import TORCH_DTYPES

#: Wire dtypes decoded through the bits of another (numpy has no bfloat16 without ml_dtypes).
_BITS_VIEW = {DType.BFLOAT16: torch.int16}


def _bytes_on(data, device) -> torch.Tensor:
    """A uint8 tensor of ``data`` on ``device`` (copied: the source may be a read-only map)."""
    array = np.frombuffer(bytes(data), dtype=np.uint8)
    return torch.from_numpy(array.copy()).to(device)


def _windows(payload: torch.Tensor) -> torch.Tensor:
    """Overlapping 64-bit windows at 32-bit steps, as in the numpy decoder: window k holds
    payload bits 32k .. 32k+63 (int64; the top bit may wrap, only low bits are used)."""
    nwords = (payload.numel() + 3) // 4 + 2
    padded = torch.zeros(nwords * 4, dtype=torch.uint8, device=payload.device)
    padded[: payload.numel()] = payload
    bytes4 = padded.view(nwords, 4).to(torch.int64)
    words = bytes4[:, 0] | (bytes4[:, 1] << 8) | (bytes4[:, 2] << 16) | (bytes4[:, 3] << 24)
    return words[:-1] | (words[1:] << 32)


def unpack_bits(body, count: int, width: int, device) -> torch.Tensor:
    """Fixed-width LSB-first symbols (width <= 32) as int64, all gathered at once."""
    if count == 0 or width == 0:
        return torch.zeros(count, dtype=torch.int64, device=device)
    windows = _windows(_bytes_on(body, device))
    start = torch.arange(count, dtype=torch.int64, device=device) * width
    bits = windows[start >> 5] >> (start & 31)
    return bits & ((1 << width) - 1)


def huffman_lanes(plan: huffman.LanePlan, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Lockstep decoding of every lane at once: returns (symbols, end bit of each lane)."""
    n, lanes = plan.count, plan.lanes
    windows = _windows(_bytes_on(plan.payload, device))
    sym_table = torch.from_numpy(plan.sym_table.astype(np.int64)).to(device)
    len_table = torch.from_numpy(plan.len_table.astype(np.int64)).to(device)
    mask = (1 << plan.max_len) - 1
    pos = torch.from_numpy(plan.lane_start.astype(np.int64)).to(device)
    full, extra = divmod(n, lanes)
    out = torch.empty(n, dtype=torch.int64, device=device)
    grid = out[: full * lanes].view(full, lanes)
    last = windows.numel() - 1
    for step in range(full):  # lockstep steps: a handful of tensor ops on all lanes
        bits = (windows[(pos >> 5).clamp_(max=last)] >> (pos & 31)) & mask
        grid[step] = sym_table[bits]
        pos = pos + len_table[bits]
    if extra:
        p = pos[:extra]
        bits = (windows[(p >> 5).clamp_(max=last)] >> (p & 31)) & mask
        out[full * lanes :] = sym_table[bits]
        pos[:extra] = p + len_table[bits]
    return out, pos


def decode_stream(stream: streams.StreamPlan, device) -> torch.Tensor:
    """Symbols of a planned stream as int64 on ``device``, checked by the core's checks."""
    if stream.coder == Coder.HUFFMAN:
        lanes = stream.lanes
        if lanes.single_symbol is not None or lanes.count == 0:
            return torch.from_numpy(huffman.decode_plan(lanes).astype(np.int64)).to(device)
        symbols, end = huffman_lanes(lanes, device)
        huffman.check_lane_ends(lanes, end.cpu().numpy())
        return symbols  # the table holds only symbols < alphabet size
    if stream.coder == Coder.BITPACK:
        symbols = unpack_bits(stream.body, stream.count, stream.bit_width, device)
    else:  # zstd runs on the host (and checks the symbols)
        return torch.from_numpy(streams.decode(stream).astype(np.int64)).to(device)
    if symbols.numel() and streams.symbols_need_checking(stream):
        streams.check_symbols(stream, int(symbols.max()))
    return symbols


def get(reader: DCFile, name: str, *, device="cpu") -> torch.Tensor:
    """Decode one tensor of an open file to ``device`` with torch operations."""
    plan = reader.plan(name)
    if plan.dtype not in TORCH_DTYPES:
        raise UnsupportedError(plan.field + ".dtype", f"dtype {plan.dtype.name.lower()} has no torch equivalent here", offset=plan.offset)
    target = TORCH_DTYPES[plan.dtype]
    if isinstance(plan, DensePlan):
        tensor = torch.from_numpy(np.array(numpy_kernels.storage_array(plan), order="C"))  # a copy; keeps 0-D shapes
        if plan.dtype in _BITS_VIEW:
            tensor = tensor.view(_BITS_VIEW[plan.dtype]).view(target)
        elif plan.dtype == DType.BOOL:
            tensor = tensor.to(torch.bool)
        return tensor.to(device)
    if isinstance(plan, FloatSplitPlan):
        return float_split_tensor(plan, device).view(target).reshape(plan.shape)
    assert isinstance(plan, QuantPlan)
    values = torch.from_numpy(plan.codebook.astype(np.float64)).to(device=device).to(target)
    codes = decode_stream(plan.codes, device)
    if plan.gaps is None:
        return values[codes].reshape(plan.shape)
    gap_symbols = decode_stream(plan.gaps, device)
    positions = torch.cumsum(gap_symbols + 1, 0) - 1
    if positions.numel():
        plan.check_last_position(int(positions[-1]))
    out = torch.zeros(plan.numel, dtype=target, device=device)
    out[positions] = values[codes]
    return out.reshape(plan.shape)


#: Signed torch integer type of each element width, to reinterpret assembled bits.
_SIGNED = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def float_split_tensor(plan: FloatSplitPlan, device) -> torch.Tensor:
    """A float_split tensor's element bits (spec 6.6), assembled with torch operations block
    by block, as a flat signed integer tensor of the element's width (view it as the float dtype)."""
    exponent_bits, mantissa_bits = float_split.fields(plan.dtype)
    low = mantissa_bits - plan.head_bits
    width = 8 * DTYPE_ITEMSIZE[plan.dtype]
    out = torch.empty(plan.numel, dtype=_SIGNED[DTYPE_ITEMSIZE[plan.dtype]], device=device)
    for (lo, hi), block in zip(float_split.blocks(plan.numel, plan.block_elements), plan.blocks):
        heads, *planes = (decode_stream(stream, device) for stream in block)
        rest = torch.zeros(hi - lo, dtype=torch.int64, device=device)
        for plane, plane_width in zip(planes, float_split.plane_widths(plan.dtype, plan.head_bits)):
            rest = (rest << plane_width) | plane
        bits = ((rest >> low) << (exponent_bits + mantissa_bits)) | (heads << low) | (rest & ((1 << low) - 1))
        if width < 64:  # two's complement of the top bit, so the narrowing keeps every bit
            bits = bits - (((bits >> (width - 1)) & 1) << width)
        out[lo:hi] = bits.to(out.dtype)
    return out


def load_file(path, *, device="cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a file, decoded with torch operations on ``device``."""
    with DCFile(path) as reader:
        reader.check_padding()
        return {name: get(reader, name, device=device) for name in reader.keys()}


#: ``dcformat.torch.decode_file``: the package-level name of this module's :func:`load_file`.
decode_file = load_file
