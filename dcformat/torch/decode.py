"""Decoding a .dcf straight to torch tensors on a chosen device (CPU now, GPU when present).

The structure of every payload is checked by the core (``parse_quantized``, the Huffman
``prepare`` step), in numpy, on the host: those are small. The bulk work, symbol
unpacking, lockstep Huffman lanes, gaps to positions and the codebook gather, runs as
torch operations on ``device``. The result is bit-identical to the numpy decoder, which
``tests/torch/test_decode.py`` checks on every frozen vector.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codecs import bitpack, huffman
from ..constants import Coder, DType, Encoding
from ..container import DCFile, _safe
from ..encodings import StreamRef, decode_payload, parse_quantized
from ..errors import FormatError, UnsupportedError

#: torch dtypes of the wire's dtypes (torch has no uint16/32/64 arithmetic before 2.3;
#: they are returned as such where torch has them).
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
_BITS_VIEW = {DType.BFLOAT16: (DType.UINT16, torch.bfloat16)}


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


def huffman_lanes(plan: "huffman.LanePlan", device) -> tuple[torch.Tensor, torch.Tensor]:
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


def decode_stream(ref: StreamRef, device) -> torch.Tensor:
    """Symbols of a stream as int64 on ``device``, with the numpy decoder's checks."""
    if ref.coder == Coder.BITPACK:
        width = bitpack.width_for(ref.alphabet_size)
        expected = bitpack.packed_size(ref.count, width)
        if len(ref.body) != expected:
            raise FormatError(ref.field, f"bit-packed stream holds {len(ref.body)} bytes, {ref.count} symbols of {width} bits need {expected}", offset=ref.offset)
        if not bitpack.padding_is_zero(ref.body, ref.count, width):
            raise FormatError(ref.field, "unused bits after the last symbol are not zero", offset=ref.offset + expected - 1)
        symbols = unpack_bits(ref.body, ref.count, width, device)
    elif ref.coder == Coder.HUFFMAN:
        plan = huffman.prepare(ref.body, ref.count, ref.alphabet_size, field=ref.field, offset=ref.offset)
        if plan.single_symbol is not None or plan.count == 0:
            return torch.from_numpy(huffman.decode_plan(plan).astype(np.int64)).to(device)
        symbols, end = huffman_lanes(plan, device)
        huffman.check_lane_ends(plan, end.cpu().numpy())
        return symbols  # the table holds only symbols < alphabet size
    else:
        symbols = torch.from_numpy(ref.decode().astype(np.int64)).to(device)  # zstd runs on the host
    if symbols.numel() and int(symbols.max()) >= ref.alphabet_size:
        raise FormatError(ref.field, f"symbol {int(symbols.max())} is outside the alphabet of {ref.alphabet_size}", offset=ref.offset)
    return symbols


def get(reader: DCFile, name: str, *, device="cpu") -> torch.Tensor:
    """Decode one tensor of an open file to ``device`` with torch operations."""
    entry, data = reader.checked_payload(name)
    field = f"tensors[{_safe(name)}]"
    if not isinstance(entry.dtype, DType) or entry.dtype not in TORCH_DTYPES:
        raise UnsupportedError(field + ".dtype", f"dtype id {entry.dtype} has no torch equivalent here", offset=entry.entry_offset)
    target = TORCH_DTYPES[entry.dtype]
    if entry.encoding in (Encoding.RAW, Encoding.ZSTD):
        storage_dtype, view_as = _BITS_VIEW.get(entry.dtype, (entry.dtype, None))
        array = decode_payload(storage_dtype, entry.encoding, entry.shape, data, field=field, offset=entry.offset)
        tensor = torch.from_numpy(np.array(array, order="C"))  # a copy; keeps 0-D shapes
        if view_as is not None:
            tensor = tensor.view(view_as)
        return tensor.to(device)
    parsed = parse_quantized(entry.dtype, entry.encoding, entry.shape, data, field=field, offset=entry.offset)
    values = torch.from_numpy(parsed.codebook.astype(np.float64)).to(device=device).to(target)
    codes = decode_stream(parsed.codes, device)
    if parsed.gaps is None:
        return values[codes].reshape(entry.shape)
    gap_symbols = decode_stream(parsed.gaps, device)
    positions = torch.cumsum(gap_symbols + 1, 0) - 1
    if positions.numel() and int(positions[-1]) >= parsed.numel:
        raise FormatError(parsed.gaps.field, f"entries run to position {int(positions[-1])}, past the end of the tensor "
                          f"({parsed.numel} elements)", offset=parsed.gaps.offset)
    out = torch.zeros(parsed.numel, dtype=target, device=device)
    out[positions] = values[codes]
    return out.reshape(entry.shape)


def load_file(path, *, device="cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a file, decoded with torch operations on ``device``."""
    with DCFile(path) as reader:
        reader.check_padding()
        return {name: get(reader, name, device=device) for name in reader.keys()}


#: ``dcformat.torch.decode_file``: the package-level name of this module's :func:`load_file`.
decode_file = load_file
