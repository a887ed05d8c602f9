"""Strict JSON for everything dcformat reads from a file: the metadata section (spec 4.1),
shard indexes (spec 14) and safetensors headers.

One parser with one set of rules: UTF-8 only, a top-level object, no duplicate keys,
no NaN or infinity, no escaped lone surrogates. Errors are :class:`FormatError` naming
the field, never ``ValueError`` or ``RecursionError``.
"""

from __future__ import annotations

import json

from ..errors import FormatError


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constants(token):
    raise ValueError(f"{token} is not JSON")


def load_object(data: bytes, *, field: str, offset: int) -> dict:
    """Parse ``data`` as one JSON object under the rules above."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(field, f"not valid UTF-8 JSON ({exc.reason} at byte {exc.start})", offset=offset + exc.start) from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise FormatError(field, f"not valid UTF-8 JSON ({exc})", offset=offset) from None
    if not isinstance(value, dict):
        raise FormatError(field, f"must be a JSON object, got {type(value).__name__}", offset=offset)
    try:  # no escaped lone surrogates: they survive parsing but not UTF-8 encoding
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(field, "holds an escaped lone surrogate (not valid Unicode)", offset=offset) from None
    return value
