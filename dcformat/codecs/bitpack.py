"""Fixed-width bit packing, least significant bit first (spec section 7.2).

Symbol ``i`` of width ``w`` occupies stream bits ``[i*w, (i+1)*w)``; stream bit ``k`` is
bit ``k % 8`` of byte ``k // 8``; a symbol's least significant bit comes first. Eight
symbols always fill exactly ``w`` bytes, so the work is done eight symbols at a time on
64-bit words: no Python loop per symbol.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import FormatError

#: Symbols handled per block, a multiple of 8 so blocks end on byte boundaries; it bounds
#: the temporaries to a few MiB whatever the stream length.
_BLOCK_SYMBOLS = 1 << 20
#: Widths whose symbols are whole little-endian bytes: packed and unpacked as plain arrays.
_BYTE_WIDTHS = {8: np.dtype("u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4"), 64: np.dtype("<u8")}


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` symbols of ``width`` bits."""
    return (count * width + 7) // 8


def width_for(alphabet_size: int) -> int:
    """Bits needed for symbols ``0 .. alphabet_size - 1`` (0 for a one-symbol alphabet)."""
    return max(int(alphabet_size) - 1, 0).bit_length()


def pack(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers ``< 2**width`` (``0 <= width <= 64``)."""
    values = np.ascontiguousarray(values).reshape(-1)
    if width == 0 or values.size == 0:
        return b""
    if width in _BYTE_WIDTHS:  # whole bytes: symbol i is simply bytes [i*w/8, (i+1)*w/8), little-endian
        return values.astype(_BYTE_WIDTHS[width], copy=False).tobytes()
    native = kernels.compiled()
    if native is not None:
        if values.dtype.kind not in "ui" or values.dtype.itemsize not in (1, 2, 4, 8):
            values = values.astype(np.uint64)
        return native.pack(values.view(np.uint8), values.dtype.itemsize, width)
    values = values.astype(np.uint64, copy=False)
    parts = []
    for start in range(0, values.size, _BLOCK_SYMBOLS):
        parts.append(_pack_block(values[start : start + _BLOCK_SYMBOLS], width))
    return b"".join(parts)[: packed_size(values.size, width)]


def unpack(data, count: int, width: int, *, dtype=np.uint32) -> np.ndarray:
    """Inverse of :func:`pack`. ``data`` must hold exactly ``packed_size(count, width)`` bytes."""
    if width in _BYTE_WIDTHS and count:
        return np.frombuffer(data, dtype=_BYTE_WIDTHS[width], count=count).astype(dtype)
    out = np.zeros(count, dtype=dtype)
    if width == 0 or count == 0:
        return out
    native = kernels.compiled()
    if native is not None and out.dtype.kind == "u" and 8 * out.dtype.itemsize >= width:
        native.unpack(data, count, width, out.view(np.uint8), out.dtype.itemsize)
        return out
    buf = np.frombuffer(data, dtype=np.uint8)
    for start in range(0, count, _BLOCK_SYMBOLS):
        stop = min(start + _BLOCK_SYMBOLS, count)
        first_byte = start * width // 8
        chunk = buf[first_byte : first_byte + packed_size(stop - start, width)]
        out[start:stop] = _unpack_block(chunk, stop - start, width)
    return out


def padding_is_zero(data, count: int, width: int) -> bool:
    """True when the unused high bits of the last byte are zero (a MUST of the spec)."""
    used = (count * width) % 8
    if used == 0 or len(data) == 0:
        return True
    return (data[-1] >> used) == 0


def check_packed(data, count: int, width: int, *, field: str, offset: int) -> None:
    """The decoder's checks of a bit-packed body (spec 7.2): its exact length and zero padding."""
    expected = packed_size(count, width)
    if len(data) != expected:
        raise FormatError(field, f"bit-packed stream holds {len(data)} bytes, {count} symbols of {width} bits need {expected}", offset=offset)
    if not padding_is_zero(data, count, width):
        raise FormatError(field, "unused bits after the last symbol are not zero", offset=offset + expected - 1)


def unpack_checked(data, count: int, width: int, *, field: str, offset: int, dtype=np.uint32) -> np.ndarray:
    """:func:`unpack` after :func:`check_packed`."""
    check_packed(data, count, width, field=field, offset=offset)
    return unpack(data, count, width, dtype=dtype)


def _pack_block(values: np.ndarray, width: int) -> bytes:
    groups = -(-values.size // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[: values.size] = values
    grid = padded.reshape(groups, 8)
    if width > 16:
        return _pack_wide(grid, width)
    # Eight symbols of at most 16 bits fit in 128 bits: build a low and a high word.
    lo = np.zeros(groups, dtype=np.uint64)
    hi = np.zeros(groups, dtype=np.uint64)
    for j in range(8):  # eight lanes of a group, not a loop per symbol
        shift = j * width
        if shift < 64:
            lo |= grid[:, j] << np.uint64(shift)
            if shift + width > 64:
                hi |= grid[:, j] >> np.uint64(64 - shift)
        else:
            hi |= grid[:, j] << np.uint64(shift - 64)
    words = np.empty((groups, 2), dtype="<u8")
    words[:, 0] = lo
    words[:, 1] = hi
    return words.view(np.uint8).reshape(groups, 16)[:, :width].tobytes()


def _pack_wide(grid: np.ndarray, width: int) -> bytes:
    bit_index = np.arange(width, dtype=np.uint64)
    bits = ((grid.reshape(-1, 1) >> bit_index) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _unpack_block(chunk: np.ndarray, count: int, width: int) -> np.ndarray:
    groups = -(-count // 8)
    if width > 16:
        bits = np.unpackbits(chunk, bitorder="little", count=count * width).reshape(count, width)
        weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
        return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    raw = np.zeros((groups, 16), dtype=np.uint8)
    flat = np.zeros(groups * width, dtype=np.uint8)
    flat[: chunk.size] = chunk
    raw[:, :width] = flat.reshape(groups, width)
    words = raw.view("<u8")
    lo, hi = words[:, 0], words[:, 1]
    mask = np.uint64((1 << width) - 1)
    grid = np.empty((groups, 8), dtype=np.uint64)
    for j in range(8):  # eight lanes of a group, not a loop per symbol
        shift = j * width
        if shift < 64:
            lane = lo >> np.uint64(shift)
            if shift + width > 64:
                lane = lane | (hi << np.uint64(64 - shift))
        else:
            lane = hi >> np.uint64(shift - 64)
        grid[:, j] = lane & mask
    return grid.reshape(-1)[:count]
