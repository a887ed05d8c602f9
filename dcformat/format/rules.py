"""Rules of the container that the reader, the writer and the shard index all apply
(spec sections 3-5): tensor names, shapes, payload alignment, checksums.

One home for each, low in the layers, so no module reaches into another's privates.
"""

from __future__ import annotations

import zlib

from .. import kernels
from ..errors import EncodeError
from .constants import ALIGNMENT, MAX_ELEMENTS, MAX_NAME_BYTES, MAX_RANK


def align(offset: int) -> int:
    """The first payload boundary at or after ``offset`` (spec 5.4)."""
    return -(-offset // ALIGNMENT) * ALIGNMENT


def crc32(data) -> int:
    """CRC-32 (ISO-HDLC, as zlib computes it) of a buffer, as an unsigned int (spec 2): the
    compiled kernel's (folded with carry-less multiplies, 3x zlib's speed here) where built."""
    native = kernels.compiled()
    return native.crc32(data) if native is not None else zlib.crc32(data) & 0xFFFFFFFF


def check_name(name) -> bytes:
    """A tensor name a writer may store, as its UTF-8 bytes (spec 5.1)."""
    if not isinstance(name, str):
        raise EncodeError(f"tensor names must be str, got {type(name).__name__}")
    try:
        key = name.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError("tensor name is not encodable as UTF-8", field=repr(name)) from None
    if not 1 <= len(key) <= MAX_NAME_BYTES:
        raise EncodeError(f"tensor names take 1 to {MAX_NAME_BYTES} UTF-8 bytes, this one {len(key)}", field=repr(name))
    return key


def name_order(names) -> list[str]:
    """Names sorted by their UTF-8 bytes, the directory's order: bytes then do not depend
    on the order a dict was filled in."""
    return sorted(names, key=check_name)


def extent(shape) -> int:
    """Spec 5.1.2: the product of the nonzero dimensions, which bounds the element count and
    also rules out shapes like (0, 2**62) that no array library can represent."""
    product = 1
    for dim in shape:  # per dimension, at most 32
        product *= dim or 1
    return product


def check_shape(shape, *, field: str) -> None:
    """A shape a writer may store (rank and extent within spec section 9's limits)."""
    if len(shape) > MAX_RANK:
        raise EncodeError(f"rank {len(shape)} is over the limit of {MAX_RANK}", field=field)
    if extent(shape) > MAX_ELEMENTS:
        raise EncodeError(f"shape {tuple(shape)}: the product of its nonzero dimensions is over the limit of {MAX_ELEMENTS}", field=field)


def quoted(name: str) -> str:
    """A name read from a file, quoted for an error message with control characters escaped."""
    return repr(name)
