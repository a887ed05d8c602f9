"""Strict JSON for everything dcformat reads from a file: the metadata section (spec 4.1),
shard indexes (spec 14) and safetensors headers.

One parser with one set of rules: UTF-8 only (no byte-order mark), a top-level object,
no duplicate keys, no NaN or infinity, no escaped lone surrogates, nesting at most
:data:`MAX_DEPTH` levels deep (the top-level object is level 1), and every number finite
as a binary64 (``1e400`` and an integer of 2**1024 overflow it). Errors are
:class:`FormatError` naming the field, never ``ValueError`` or ``RecursionError``.

The depth is measured on the text before ``json.loads`` runs (spec 4.1.1), so the parser
never recurses deeper than that: escapes are dropped with ``bytes.replace``, quotes and
brackets kept with ``bytes.translate``, and the running depth of the brackets outside
strings is a cumulative sum, a chunk at a time. All of it is linear in the text and runs
in C. Numbers are checked by ``json.loads``'s ``parse_float``/``parse_int`` hooks.

Writers use :func:`dump_object`, which refuses (``EncodeError``) whatever
:func:`load_object` would reject, so nothing dcformat writes fails its own reader.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import EncodeError, FormatError

#: Spec 4.1: objects and arrays nest at most this deep, the top-level object being level 1.
MAX_DEPTH = 64
#: Decimal digits of the largest integer a JSON number may spell without overflowing a binary64
#: (the largest finite binary64 is about 1.8e308, so 309 digits; more always overflow).
_MAX_INT_DIGITS = 309

_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in _STRUCTURE)
_QUOTE = ord('"')
_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[list(b"[{")] = 1
_DELTA[list(b"]}")] = -1
_CHUNK = 1 << 20


def nesting_depth(data: bytes, *, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of objects and arrays in JSON text (0 for a scalar), or the first
    depth found above ``limit``. Brackets inside strings do not count.

    Escapes go first: pairs of backslashes, then escaped quotes (``bytes.replace`` pairs
    them left to right, as a JSON string does), so every quote left opens or closes a
    string. Of the quotes and brackets that remain, a bracket counts when an even number
    of quotes precede it. For invalid text the count may differ from a parser's, but
    never below the depth a parser reaches before the first error: up to there the text
    is valid JSON, where this count is exact.
    """
    marks = bytes(data).replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    deepest = depth = quotes = 0
    for start in range(0, len(marks), _CHUNK):
        chunk = np.frombuffer(marks, dtype=np.uint8, count=min(_CHUNK, len(marks) - start), offset=start)
        seen = np.cumsum(chunk == _QUOTE, dtype=np.int64)
        seen += quotes
        running = np.cumsum(np.where(seen & 1, 0, _DELTA[chunk]), dtype=np.int64)  # a quote's own delta is 0
        running += depth
        deepest = max(deepest, int(running.max()))
        if deepest > limit:
            break
        depth, quotes = int(running[-1]), int(seen[-1])
    return deepest


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constants(token):
    raise ValueError(f"{token} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} overflows a binary64")
    return value


def _finite_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {digits} digits overflows a binary64")
    value = int(text)
    if digits == _MAX_INT_DIGITS:
        try:
            float(value)  # rounds to nearest like any JSON reader; raises where that is infinite
        except OverflowError:
            raise ValueError(f"integer {text[:40]}... overflows a binary64") from None
    return value


def load_object(data: bytes, *, field: str, offset: int) -> dict:
    """Parse ``data`` as one JSON object under the rules above."""
    data = bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(field, f"not valid UTF-8 JSON ({exc.reason} at byte {exc.start})", offset=offset + exc.start) from None
    if text.startswith("\ufeff"):
        raise FormatError(field, "starts with a byte-order mark (not allowed)", offset=offset)
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise FormatError(field, f"objects and arrays nest deeper than {MAX_DEPTH} levels", offset=offset)
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float, parse_int=_finite_int)
    except (ValueError, RecursionError) as exc:
        raise FormatError(field, f"not valid UTF-8 JSON ({exc})", offset=offset) from None
    if not isinstance(value, dict):
        raise FormatError(field, f"must be a JSON object, got {type(value).__name__}", offset=offset)
    try:  # no escaped lone surrogates: they survive parsing but not UTF-8 encoding
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(field, "holds an escaped lone surrogate (not valid Unicode)", offset=offset) from None
    return value


def dump_object(value, *, what: str, indent: int | None = None) -> bytes:
    """UTF-8 JSON of ``value`` (a dict) that :func:`load_object` accepts, keys sorted, or
    :class:`EncodeError`: an encoder writes nothing its own reader would reject (spec 4.1:
    encoders MUST NOT write what decoders MUST reject)."""
    if not isinstance(value, dict):
        raise EncodeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        separators = (",", ":") if indent is None else (",", ": ")
        data = json.dumps(value, sort_keys=True, separators=separators, indent=indent, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise EncodeError(f"{what} is not JSON-serialisable as UTF-8 ({exc})") from None
    try:
        load_object(data, field=what, offset=0)
    except FormatError as exc:
        raise EncodeError(f"{what} breaks the JSON rules of spec 4.1 ({exc.reason})") from None
    return data
