"""zstd as a symbol-stream coder and as the ZSTD tensor encoding (spec sections 6.2, 7.4).

Every decompression is given the exact expected output size as its limit, so a frame
that would expand past what the directory declares fails before it allocates more.
Before that, :func:`check_frame` holds the frame to spec 6.2: one frame with a content
size, no dictionary, a window of at most ``max(content size, 2**27)`` bytes, and every
block within RFC 8878's Block_Maximum_Size (``min(window, 128 KiB)``), found by walking
the 3-byte block headers; libzstd's one-shot decoder is lenient about both.
"""

from __future__ import annotations

import threading

import zstandard

from ..errors import FormatError

DEFAULT_LEVEL = 9
#: RFC 8878 section 3.1.1: the magic number that starts every zstd frame.
MAGIC = b"\x28\xb5\x2f\xfd"
#: Spec 6.2: a frame's window may exceed its content size only up to this (libzstd's default limit).
MAX_WINDOW = 1 << 27
#: RFC 8878 section 3.1.1.2: no block is larger than this, nor than the frame's window.
MAX_BLOCK = 128 * 1024
_BLOCK_HEADER = 3
_CHECKSUM = 4
_RESERVED_BLOCK = 3


def compress(data, *, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame with the content size in its header (the spec requires it).

    libzstd writes a single-segment frame (window = content size) whenever its window
    would cover the content, and otherwise a window smaller than the content, so its
    frames always keep spec 6.2's window rule.
    """
    params = zstandard.ZstdCompressionParameters.from_level(level, write_content_size=True, write_checksum=False, threads=0)
    return zstandard.ZstdCompressor(compression_params=params).compress(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data)


def check_frame(frame: bytes, expected_size: int, *, field: str, offset: int) -> None:
    """Spec 6.2 on one frame, before anything is decompressed: exactly one zstd frame
    declaring ``expected_size`` bytes of content, no dictionary, its window within
    ``max(content size, 2**27)``, every block within ``min(window, 128 KiB)``, and
    nothing after the frame. ``offset`` is the frame's file offset."""
    if frame[:4] != MAGIC:
        raise FormatError(field, "not a zstd frame (magic number missing)", offset=offset)
    try:
        params = zstandard.get_frame_parameters(frame)
        header_size = zstandard.frame_header_size(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(field, f"not a zstd frame ({exc})", offset=offset) from None
    if params.content_size != expected_size:
        declared = "no content size" if params.content_size == zstandard.CONTENTSIZE_UNKNOWN else f"{params.content_size} bytes"
        raise FormatError(field, f"zstd frame declares {declared}, the tensor needs exactly {expected_size}", offset=offset)
    if params.dict_id != 0:
        raise FormatError(field, f"zstd frame names dictionary {params.dict_id}; dictionaries are not allowed", offset=offset + 5)
    window = params.window_size  # RFC 8878 Window_Size: the content size in a single-segment frame
    if window > max(expected_size, MAX_WINDOW):
        raise FormatError(
            field, f"zstd window of {window} bytes exceeds the larger of the content size ({expected_size}) and {MAX_WINDOW}", offset=offset + 5
        )
    if header_size > len(frame):
        raise FormatError(field, "zstd frame is truncated (frame header)", offset=offset)
    _walk_blocks(frame, header_size, min(window, MAX_BLOCK), params.has_checksum, field=field, offset=offset)


def _walk_blocks(frame: bytes, pos: int, block_max: int, has_checksum: bool, *, field: str, offset: int) -> None:
    """RFC 8878 section 3.1.1.2: follow the block headers (bit 0: last block; bits 1-2: type,
    0 raw, 1 RLE, 2 compressed, 3 reserved; bits 3-23: Block_Size) to the frame's end.

    Every block costs at least 3 bytes of the frame, so the walk takes at most
    ``len(frame) / 3`` steps: bounded by the payload, whatever the frame claims.
    """
    end = len(frame)
    while True:
        if end - pos < _BLOCK_HEADER:
            raise FormatError(field, "zstd frame is truncated (block header)", offset=offset + pos)
        header = frame[pos] | frame[pos + 1] << 8 | frame[pos + 2] << 16
        kind = (header >> 1) & 3
        size = header >> 3
        if kind == _RESERVED_BLOCK:
            raise FormatError(field, "zstd block of the reserved type 3", offset=offset + pos)
        if size > block_max:
            raise FormatError(
                field, f"zstd block of {size} bytes exceeds the frame's Block_Maximum_Size, min(window, 128 KiB) = {block_max}", offset=offset + pos
            )
        pos += _BLOCK_HEADER + (1 if kind == 1 else size)
        if header & 1:
            break
    if has_checksum:
        pos += _CHECKSUM
    if pos > end:
        raise FormatError(field, "zstd frame is truncated", offset=offset + end)
    if pos < end:
        raise FormatError(field, f"{end - pos} bytes follow the zstd frame", offset=offset + pos)


_per_thread = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: one may not serve two threads at once, and making one per
    frame cost more than a small frame's decompression (a model has hundreds)."""
    decompressor = getattr(_per_thread, "decompressor", None)
    if decompressor is None:
        decompressor = _per_thread.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def decompress_exact(frame, expected_size: int, *, field: str, offset: int) -> bytes:
    """Decompress one frame that MUST declare and produce exactly ``expected_size`` bytes."""
    frame = bytes(frame)
    check_frame(frame, expected_size, field=field, offset=offset)
    try:
        if expected_size == 0:
            out = _decompress_streaming(frame, field=field, offset=offset)
        else:
            out = _decompressor().decompress(frame, max_output_size=expected_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise FormatError(field, f"corrupt zstd frame ({exc})", offset=offset) from None
    if len(out) != expected_size:
        raise FormatError(field, f"zstd frame decoded to {len(out)} bytes, expected {expected_size}", offset=offset)
    return out


def _decompress_streaming(frame: bytes, *, field: str, offset: int) -> bytes:
    """Decompress a frame that declares no content, reading every block.

    The one-shot API returns ``b""`` for a frame declaring content size 0 without reading
    its blocks, so garbage, a truncated block or a second frame would pass unnoticed.
    """
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    out = decompressor.decompress(frame)
    if not decompressor.eof:
        raise FormatError(field, "zstd frame is truncated", offset=offset)
    if decompressor.unused_data:
        raise FormatError(field, f"{len(decompressor.unused_data)} bytes follow the zstd frame", offset=offset)
    return out
