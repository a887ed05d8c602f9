"""The options of post-training compression: defaults, per-name rules (``REGEX=VALUE``),
and the distortion weights (importance) of kinds of tensors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import numpy as np

from ..errors import EncodeError

#: Average bits per weight of the whole file that ``compress_tensors`` aims for by default.
DEFAULT_TARGET_BITS_PER_WEIGHT = 4.5
#: Float tensors with fewer elements stay exact (their codebook would cost more than it saves).
DEFAULT_MIN_ELEMENTS = 4096
#: The default distortion weights by kind of tensor, for transformer-style models:
#: ``(regex, weight)``, the first pattern found in a name (``re.search``) wins, and names
#: matching none weigh 1. Attention's query and key projections feed a softmax that
#: tolerates a small relative error in its logits far better than the value, output
#: and MLP projections tolerate one in theirs (the attention pattern barely moves).
TRANSFORMER_IMPORTANCE: tuple[tuple[str, float], ...] = ((r"(^|[._])(query|key|q_proj|k_proj|wq|wk|q|k)([._]|$)", 0.1),)


def patterns(value, *, option: str) -> list[re.Pattern]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise EncodeError(f"must be regular expressions (str), got {item!r}", field=option)
        try:
            out.append(re.compile(item))
        except re.error as exc:
            raise EncodeError(f"{item!r} is not a regular expression ({exc})", field=option) from None
    return out


def rules(value, *, option: str, check: Callable[[object], object]) -> list[tuple[re.Pattern, object]]:
    """A value for every tensor, or a mapping of regex -> value (first match wins)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = [(".*", value)]
    out = []
    for pattern, item in pairs:
        (compiled,) = patterns(pattern, option=option)
        out.append((compiled, check(item)))
    return out


def first_match(rules, name: str):
    for pattern, value in rules:
        if pattern.search(name):
            return value
    return None


def check_bits(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 16:
        raise EncodeError(f"must be an integer in 1..16, got {value!r}", field="bits")
    return int(value)


def check_prune(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) < 1.0:
        raise EncodeError(f"must be a fraction in [0, 1), got {value!r}", field="prune")
    return float(value)


def check_weight(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value) or value < 0:
        raise EncodeError(f"weights must be finite numbers >= 0, got {value!r}", field="importance")
    return float(value)


def importance_from_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """An ``importance`` mapping giving each named tensor exactly its score.

    ``scores`` are per-tensor sensitivities measured some other way (for example the
    loss in output similarity per unit of relative error); names are matched exactly.
    """
    return {"^" + re.escape(name) + "$": check_weight(score) for name, score in scores.items()}


def describe_importance(importance) -> object:
    if importance is None:
        return None
    if callable(importance) and not isinstance(importance, Mapping):
        return getattr(importance, "__name__", "callable")
    return {str(k): float(v) for k, v in dict(importance).items()}
