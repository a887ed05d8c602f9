"""Post-training compression of a whole model: plan the bits per tensor from statistics,
then quantize and write tensor by tensor (``dcformat compress``)."""

from .pipeline import (
    DEFAULT_MIN_ELEMENTS,
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    TRANSFORMER_IMPORTANCE,
    CompressionPlan,
    compress_file,
    compress_tensors,
    importance_from_scores,
    plan_compression,
)

__all__ = [
    "DEFAULT_MIN_ELEMENTS",
    "DEFAULT_TARGET_BITS_PER_WEIGHT",
    "TRANSFORMER_IMPORTANCE",
    "CompressionPlan",
    "compress_file",
    "compress_tensors",
    "importance_from_scores",
    "plan_compression",
]
