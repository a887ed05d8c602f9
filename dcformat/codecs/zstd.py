"""zstd as a symbol-stream coder and as the ZSTD tensor encoding (spec sections 6.2, 7.4).

Every decompression is given the exact expected output size as its limit, so a frame
that would expand past what the directory declares fails before it allocates more.
"""

from __future__ import annotations

import zstandard

from ..errors import FormatError

DEFAULT_LEVEL = 9


def compress(data, *, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame with the content size in its header (the spec requires it)."""
    params = zstandard.ZstdCompressionParameters.from_level(level, write_content_size=True, write_checksum=False, threads=0)
    return zstandard.ZstdCompressor(compression_params=params).compress(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data)


def decompress_exact(frame, expected_size: int, *, field: str, offset: int) -> bytes:
    """Decompress one frame that MUST declare and produce exactly ``expected_size`` bytes."""
    frame = bytes(frame)
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(field, f"not a zstd frame ({exc})", offset=offset) from None
    if params.content_size != expected_size:
        declared = "no content size" if params.content_size == zstandard.CONTENTSIZE_UNKNOWN else f"{params.content_size} bytes"
        raise FormatError(field, f"zstd frame declares {declared}, the tensor needs exactly {expected_size}", offset=offset)
    try:
        if expected_size == 0:
            out = _decompress_streaming(frame, field=field, offset=offset)
        else:
            out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected_size, allow_extra_data=False)
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
